//! A development OIDC issuer on loopback that mints tokens shaped like Buildkite's, for
//! tests and demos of Drydock's token exchange. It is not part of the `drydock` binary.

mod claims;
mod routes;
mod signing;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::routes::Issuer;
use crate::signing::Signer;

/// Serves OpenID discovery, a JWKS, `POST /token` and the Buildkite agent API's
/// `POST /v3/jobs/{job_id}/oidc/tokens`, signing with an RSA key generated at start.
#[derive(Debug, Parser)]
#[command(name = "drydock-dev-oidc-issuer", version)]
struct Args {
    /// Loopback address and port to listen on. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// File to write the issuer's base URL to once it listens, replaced atomically.
    #[arg(long)]
    url_file: Option<PathBuf>,

    /// Organization slug of tokens from the agent API endpoint, and the default for
    /// `POST /token`.
    #[arg(long, default_value = "acme")]
    organization: String,

    /// Pipeline slug of tokens from the agent API endpoint, and the default for
    /// `POST /token`.
    #[arg(long, default_value = "app")]
    pipeline: String,

    /// Audience of tokens whose request names none.
    #[arg(long, default_value = "drydock")]
    default_audience: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    // Plain-http issuers are trusted only on loopback, and this one has no TLS.
    if !args.listen.ip().is_loopback() {
        bail!(
            "invalid --listen {}: the development issuer serves plain http and listens only \
             on loopback, such as 127.0.0.1:0",
            args.listen
        );
    }

    let signer = Signer::generate()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let address = listener
        .local_addr()
        .context("failed to read the listening address")?;
    let url = format!("http://{address}");

    tracing::info!(%url, kid = %signer.kid, "OIDC issuer listening");
    let issuer = Arc::new(Issuer {
        url: url.clone(),
        signer,
        default_audience: args.default_audience,
        organization: args.organization,
        pipeline: args.pipeline,
        organization_id: uuid::Uuid::new_v4().to_string(),
        pipeline_id: uuid::Uuid::new_v4().to_string(),
        agent_id: uuid::Uuid::new_v4().to_string(),
    });

    if let Some(path) = &args.url_file {
        write_atomically(path, &url)?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{url}").context("failed to write the URL to stdout")?;
    stdout
        .flush()
        .context("failed to write the URL to stdout")?;
    drop(stdout);

    axum::serve(listener, routes::router(issuer))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("failed to serve HTTP")?;
    tracing::info!("OIDC issuer stopped");
    Ok(())
}

/// Writes `contents` to a temporary file beside `path` and renames it over `path`, so a
/// reader sees either no file or the whole URL.
fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("invalid --url-file {}: it names no file", path.display()))?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    std::fs::write(&temporary, format!("{contents}\n"))
        .with_context(|| format!("failed to write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| {
        format!(
            "failed to rename {} to {}",
            temporary.display(),
            path.display()
        )
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "failed to watch for SIGTERM; stop with Ctrl-C");
                let _ = interrupt.await;
                return;
            }
        };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping OIDC issuer");
}
