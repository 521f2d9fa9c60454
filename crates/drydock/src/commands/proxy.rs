//! The local proxy: one unix socket per platform; each connection becomes a tunnel to the
//! workspace's builder on the server. The workspace token is read at every connection, so a
//! fresh `drydock auth exchange-oidc-token` takes effect without restarting the proxy.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use drydock_tunnel::{dial, serve_grpc_error, splice, DialError, Endpoint, GrpcCode};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};

use super::client_config_dir;
use crate::cli::{GlobalArgs, ProxyArgs};
use crate::state::{ensure_private_dir, proxy_run_dir, socket_name, Credentials, ProxyRecord};

/// How often a background proxy checks that its record still names it.
const RECORD_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

struct Proxy {
    config_dir: PathBuf,
    ca_cert: Option<PathBuf>,
    /// The endpoint of the last server used, rebuilt when the stored credentials name another.
    endpoint: Mutex<Option<(String, Endpoint)>>,
}

pub async fn run(global: &GlobalArgs, args: ProxyArgs) -> Result<ExitCode> {
    let config_dir = client_config_dir(global)?;
    let run_dir = proxy_run_dir(&config_dir, &args.name);
    ensure_private_dir(&run_dir)?;
    let proxy = Arc::new(Proxy {
        config_dir,
        ca_cert: global.ca_cert.clone(),
        endpoint: Mutex::new(None),
    });

    let mut sockets = Vec::new();
    for platform in &args.platform {
        super::buildx::validate_platform(platform)?;
        let path = run_dir.join(socket_name(platform));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("failed to listen on socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to make socket {} private", path.display()))?;
        tracing::info!(%platform, socket = %path.display(), "proxy listening");
        tokio::spawn(accept_loop(proxy.clone(), listener, platform.clone()));
        sockets.push(path);
    }

    let mut terminate = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to watch SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
        () = record_replaced(proxy.config_dir.clone(), args.name.clone()) => {
            tracing::info!("proxy record removed or taken over by another proxy");
        }
    }
    for path in &sockets {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("proxy stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes once this process's proxy record has been removed or names another process,
/// so that a proxy whose setup was cleaned up or replaced does not linger. A proxy run in the
/// foreground, which has no record, never finds one and keeps running.
async fn record_replaced(config_dir: PathBuf, name: String) {
    let own_pid = std::process::id();
    let mut seen_own_record = false;
    loop {
        tokio::time::sleep(RECORD_CHECK_INTERVAL).await;
        let record = ProxyRecord::load(&config_dir, &name).ok().flatten();
        match record {
            Some(record) if record.pid == own_pid => seen_own_record = true,
            _ if seen_own_record || !config_dir.exists() => return,
            _ => {}
        }
    }
}

async fn accept_loop(proxy: Arc<Proxy>, listener: UnixListener, platform: String) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(proxy.clone().handle(stream, platform.clone()));
            }
            Err(err) => {
                tracing::warn!(%platform, error = %err, "failed to accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

impl Proxy {
    async fn handle(self: Arc<Self>, stream: UnixStream, platform: String) {
        // Readiness probes (`setup --background`, `buildx status`) connect and close without
        // sending anything; only a client that speaks opens a tunnel and wakes a builder.
        if !has_data(&stream).await {
            return;
        }
        let credentials = match Credentials::load(&self.config_dir) {
            Ok(Some(credentials)) => credentials,
            Ok(None) => {
                let message =
                    "drydock: no workspace token; run `drydock auth exchange-oidc-token` first";
                return serve_grpc_error(stream, GrpcCode::Unauthenticated, message.into()).await;
            }
            Err(err) => {
                let message = format!("drydock: {err:#}");
                return serve_grpc_error(stream, GrpcCode::Unauthenticated, message).await;
            }
        };
        if let Some(expired_at) = credentials.expired_at() {
            let message = format!(
                "drydock: workspace token for {} expired at {expired_at}; run `drydock auth exchange-oidc-token` again",
                credentials.workspace
            );
            tracing::warn!(%platform, "rejected a build: the workspace token has expired");
            return serve_grpc_error(stream, GrpcCode::Unauthenticated, message).await;
        }
        let endpoint = match self.endpoint(&credentials.server) {
            Ok(endpoint) => endpoint,
            Err(err) => {
                return serve_grpc_error(
                    stream,
                    GrpcCode::InvalidArgument,
                    format!("drydock: {err}"),
                )
                .await
            }
        };
        match dial(&endpoint, &credentials.token, &platform).await {
            Ok(tunnel) => {
                if let Err(err) = splice(stream, tunnel).await {
                    tracing::debug!(%platform, error = %err, "tunnel ended with an error");
                }
            }
            Err(DialError::Rejected { status, message }) => {
                tracing::warn!(%platform, %status, %message, "server rejected the tunnel");
                let code = match status.as_u16() {
                    401 => GrpcCode::Unauthenticated,
                    403 => GrpcCode::PermissionDenied,
                    400 => GrpcCode::InvalidArgument,
                    // Not Unavailable: gRPC clients retry that code silently until their
                    // deadline, so the server's explanation would never be shown.
                    _ => GrpcCode::FailedPrecondition,
                };
                serve_grpc_error(stream, code, format!("drydock: {message}")).await
            }
            Err(err) => {
                tracing::warn!(%platform, error = %err, "failed to open a tunnel");
                serve_grpc_error(stream, GrpcCode::Unavailable, format!("drydock: {err}")).await
            }
        }
    }

    fn endpoint(&self, server: &str) -> Result<Endpoint, DialError> {
        let mut cached = self
            .endpoint
            .lock()
            .expect("endpoint lock is never poisoned");
        if let Some((url, endpoint)) = cached.as_ref() {
            if url == server {
                return Ok(endpoint.clone());
            }
        }
        let endpoint = Endpoint::new(server, self.ca_cert.as_deref())?;
        *cached = Some((server.to_owned(), endpoint.clone()));
        Ok(endpoint)
    }
}

/// Waits until the peer sends its first byte, without consuming it; `false` on end of file.
async fn has_data(stream: &UnixStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;

    let mut byte = [0u8; 1];
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        // try_io clears tokio's readiness flag when the peek would block.
        let peeked = stream.try_io(Interest::READABLE, || {
            recv(
                stream.as_raw_fd(),
                &mut byte,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)
        });
        match peeked {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return false,
        }
    }
}

/// Waits until every socket accepts a connection, or fails after `timeout`.
pub async fn wait_for_sockets(paths: &[PathBuf], timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut ready = true;
        for path in paths {
            if !socket_accepts(path).await {
                ready = false;
                break;
            }
        }
        if ready {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub async fn socket_accepts(path: &Path) -> bool {
    UnixStream::connect(path).await.is_ok()
}
