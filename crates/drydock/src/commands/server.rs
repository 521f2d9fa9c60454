use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use drydock_server::{ServerConfig, TlsFiles};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::ServerArgs;

pub async fn run(args: ServerArgs) -> Result<ExitCode> {
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let ca_file = std::env::var_os(crate::env::CA_CERT).map(Into::into);
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        public_url: args.public_url,
        tls,
        ca_file,
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        builder_idle_timeout: Duration::from_secs(args.builder_idle_secs),
        buildkitd: args.buildkitd,
        insecure_registries: args.insecure_registries,
        drain_timeout: Duration::from_secs(args.drain_secs),
        url_file: args.url_file,
    };
    let mut terminate = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to watch SIGINT")?;
    let stop_on_stdin_close = args.stop_on_stdin_close;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
            () = stdin_closed(stop_on_stdin_close) => tracing::info!("standard input closed"),
        }
    };
    drydock_server::run(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes when standard input reaches end of file, if `enabled`; otherwise never.
async fn stdin_closed(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
