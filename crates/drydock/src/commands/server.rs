use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use drydock_server::{BlobStoreConfig, S3Config, S3Credentials, ServerConfig, TlsFiles};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{BlobStoreArgs, BlobStoreKind, ServerArgs};
use crate::env;

pub async fn run(args: ServerArgs) -> Result<ExitCode> {
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let ca_file = std::env::var_os(crate::env::CA_CERT).map(Into::into);
    let blob_store = blob_store_config(&args.blob_store, |name| std::env::var(name).ok())?;
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        blob_store,
        public_url: args.public_url,
        tls,
        ca_file,
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        builder_idle_timeout: Duration::from_secs(args.builder_idle_secs),
        buildkitd: args.buildkitd,
        insecure_registries: args.insecure_registries,
        drain_timeout: Duration::from_secs(args.drain_secs),
        url_file: args.url_file,
        registry_gc_grace: Duration::from_secs(args.registry_gc_grace_secs),
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

/// Builds the blob store settings from the flags, reading S3 credentials through `env_var`
/// (the process environment outside tests). Settings are checked in full when the server
/// connects to the bucket.
fn blob_store_config(
    args: &BlobStoreArgs,
    env_var: impl Fn(&str) -> Option<String>,
) -> Result<BlobStoreConfig> {
    if args.blob_store == BlobStoreKind::Filesystem {
        let s3_flags = [
            ("--s3-bucket", args.s3_bucket.is_some()),
            ("--s3-endpoint", args.s3_endpoint.is_some()),
            ("--s3-region", args.s3_region.is_some()),
            ("--s3-prefix", args.s3_prefix.is_some()),
            ("--s3-allow-http", args.s3_allow_http),
        ];
        if let Some((flag, _)) = s3_flags.iter().find(|(_, set)| *set) {
            bail!("{flag} applies only to the S3 blob store; add --blob-store s3 or remove it");
        }
        return Ok(BlobStoreConfig::Filesystem);
    }
    // clap enforces these three with --blob-store s3.
    let (Some(bucket), Some(endpoint), Some(region)) =
        (&args.s3_bucket, &args.s3_endpoint, &args.s3_region)
    else {
        bail!("--blob-store s3 needs --s3-bucket, --s3-endpoint and --s3-region");
    };
    let non_empty = |name: &str| env_var(name).filter(|value| !value.is_empty());
    let (Some(access_key_id), Some(secret_access_key)) = (
        non_empty(env::AWS_ACCESS_KEY_ID),
        non_empty(env::AWS_SECRET_ACCESS_KEY),
    ) else {
        bail!(
            "--blob-store s3 needs credentials: set {} and {} in the server's environment",
            env::AWS_ACCESS_KEY_ID,
            env::AWS_SECRET_ACCESS_KEY
        );
    };
    let mut credentials = S3Credentials::new(access_key_id, secret_access_key);
    if let Some(token) = non_empty(env::AWS_SESSION_TOKEN) {
        credentials = credentials.with_session_token(token);
    }
    Ok(BlobStoreConfig::S3(Box::new(S3Config {
        bucket: bucket.clone(),
        endpoint: endpoint.clone(),
        region: region.clone(),
        prefix: args.s3_prefix.clone().unwrap_or_default(),
        allow_http: args.s3_allow_http,
        credentials,
    })))
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(flags: &[&str]) -> Result<BlobStoreArgs, clap::Error> {
        let argv = ["drydock", "server", "--data-dir", "/tmp/unused"];
        let cli = Cli::try_parse_from(argv.iter().chain(flags))?;
        match cli.command {
            Command::Server(args) => Ok(args.blob_store),
            _ => unreachable!("the server subcommand was parsed"),
        }
    }

    fn credentials(name: &str) -> Option<String> {
        match name {
            env::AWS_ACCESS_KEY_ID => Some("AKIDEXAMPLE".into()),
            env::AWS_SECRET_ACCESS_KEY => Some("secret-example".into()),
            _ => None,
        }
    }

    const S3_FLAGS: [&str; 8] = [
        "--blob-store",
        "s3",
        "--s3-bucket",
        "blobs",
        "--s3-endpoint",
        "http://127.0.0.1:9000",
        "--s3-region",
        "us-east-1",
    ];

    #[test]
    fn filesystem_is_the_default() {
        let args = parse(&[]).unwrap();
        let config = blob_store_config(&args, credentials).unwrap();
        assert!(matches!(config, BlobStoreConfig::Filesystem));
    }

    #[test]
    fn s3_flags_and_environment_form_the_s3_config() {
        let flags: Vec<&str> = S3_FLAGS
            .iter()
            .copied()
            .chain(["--s3-prefix", "team/prod", "--s3-allow-http"])
            .collect();
        let args = parse(&flags).unwrap();
        let BlobStoreConfig::S3(config) = blob_store_config(&args, credentials).unwrap() else {
            panic!("expected the S3 blob store");
        };
        assert_eq!(config.bucket, "blobs");
        assert_eq!(config.endpoint.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.prefix, "team/prod");
        assert!(config.allow_http);
        let debug = format!("{config:?}");
        assert!(debug.contains("AKIDEXAMPLE"), "{debug}");
        assert!(!debug.contains("secret-example"), "{debug}");
    }

    #[test]
    fn s3_store_requires_bucket_endpoint_and_region() {
        for missing in ["--s3-bucket", "--s3-endpoint", "--s3-region"] {
            let position = S3_FLAGS.iter().position(|flag| *flag == missing).unwrap();
            let mut flags = S3_FLAGS.to_vec();
            flags.drain(position..position + 2);
            let error = parse(&flags).unwrap_err().to_string();
            assert!(error.contains(missing), "{missing}: {error}");
        }
    }

    #[test]
    fn s3_store_requires_credentials_in_the_environment() {
        let args = parse(&S3_FLAGS).unwrap();
        let error = blob_store_config(&args, |_| None).unwrap_err().to_string();
        assert!(error.contains("AWS_ACCESS_KEY_ID"), "{error}");
        assert!(error.contains("AWS_SECRET_ACCESS_KEY"), "{error}");
        let empty_secret = |name: &str| match name {
            env::AWS_SECRET_ACCESS_KEY => Some(String::new()),
            other => credentials(other),
        };
        assert!(blob_store_config(&args, empty_secret).is_err());
    }

    #[test]
    fn s3_flags_without_the_s3_store_are_rejected() {
        let args = parse(&["--s3-bucket", "blobs"]).unwrap();
        let error = blob_store_config(&args, credentials)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--s3-bucket"), "{error}");
        assert!(error.contains("--blob-store s3"), "{error}");
    }

    #[test]
    fn session_token_is_optional() {
        let args = parse(&S3_FLAGS).unwrap();
        let with_token = |name: &str| match name {
            env::AWS_SESSION_TOKEN => Some("session-example".into()),
            other => credentials(other),
        };
        let BlobStoreConfig::S3(config) = blob_store_config(&args, with_token).unwrap() else {
            panic!("expected the S3 blob store");
        };
        let debug = format!("{:?}", config.credentials);
        assert!(!debug.contains("session-example"), "{debug}");
        assert!(debug.contains("session_token: Some"), "{debug}");
    }
}
