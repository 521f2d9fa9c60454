use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drydock_builder::{BuilderConfig, BuilderManager, RegistryTrust};
use drydock_identity::OidcVerifier;
use drydock_registry::{Registry, RegistryConfig, S3BlobStore, S3Config};
use drydock_store::Db;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use url::Url;

use crate::operator_token::ensure_operator_token;
use crate::state::{host_port, AppState};
use crate::{BlobStoreConfig, ServerConfig, ServerError, TlsFiles};

/// How often expired tokens and abandoned uploads are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Expired tokens are kept this long so that `whoami` can still report when they expired.
const EXPIRED_TOKEN_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// An upload session untouched this long is abandoned; its partial data is deleted.
const STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

/// Runs the server until `shutdown` completes, then drains connections and tunnels for at most
/// `config.drain_timeout` and stops the builders.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    prepare_data_dir(&config)?;
    // Held until the server exits: a second server on this folder would take over its builders.
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    let db = Db::open(&config.data_dir.join("metadata.db")).await?;
    restrict_file(&config.data_dir.join("metadata.db"))?;
    let token_path = config.data_dir.join("admin-token");
    if ensure_operator_token(&db, &token_path).await? {
        tracing::info!(path = %token_path.display(), "operator token created");
    }

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            address: config.listen.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        address: config.listen.to_string(),
        source,
    })?;
    let tls = config.tls.as_ref().map(load_tls).transpose()?;
    let public_url = match &config.public_url {
        Some(url) => url.clone(),
        None => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            Url::parse(&format!("{scheme}://{local}")).expect("a socket address forms a valid URL")
        }
    };
    validate_public_url(&public_url)?;

    let registry = open_registry(&config, &db, &public_url).await?;
    let builders = BuilderManager::new(builder_config(&config, &public_url)).await?;
    let oidc = OidcVerifier::new(oidc_http_client(&config)?);
    let tunnels = TaskTracker::new();
    let draining = Arc::new(AtomicBool::new(false));
    let state = AppState {
        db: db.clone(),
        oidc,
        builders: builders.clone(),
        public_url: public_url.clone(),
        token_lifetime: config.token_lifetime,
        tunnels: tunnels.clone(),
        draining: draining.clone(),
        registry: registry.clone(),
        gc_grace: config.registry_gc_grace,
    };
    let app = crate::api::router(state).merge(registry.router());
    spawn_purges(db.clone(), registry.clone());

    if let Some(path) = &config.url_file {
        write_url_file(path, &public_url)?;
    }
    tracing::info!(address = %local, public_url = %public_url, tls = tls.is_some(), "server listening");
    let graceful = GracefulShutdown::new();
    let serve = |tcp: TcpStream, peer: SocketAddr| {
        tokio::spawn(serve_connection(
            app.clone(),
            tls.clone(),
            graceful.watcher(),
            tcp,
            peer,
        ));
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => serve(tcp, peer),
                Err(err) => accept_failed(err).await,
            },
            () = &mut shutdown => break,
        }
    }

    // Builds still running through open tunnels push their results to this server's registry,
    // so connections are accepted until the last tunnel closes. Only new tunnels are rejected.
    tracing::info!(
        drain_secs = config.drain_timeout.as_secs(),
        "shutting down: draining builds"
    );
    draining.store(true, Ordering::SeqCst);
    tunnels.close();
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => serve(tcp, peer),
                Err(err) => accept_failed(err).await,
            },
            () = tunnels.wait() => break,
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(open_tunnels = tunnels.len(), "drain timed out; stopping builds still running");
                break;
            }
        }
    }
    drop(listener);
    let grace = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("closing connections that were still busy after the drain");
    }
    builders.shutdown().await;
    tracing::info!("server stopped");
    Ok(())
}

/// Serves one accepted connection (HTTP/1.1 with upgrades, or HTTP/2), over TLS if configured.
async fn serve_connection(
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    watcher: hyper_util::server::graceful::Watcher,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let service = hyper::service::service_fn(move |request| app.clone().oneshot(request));
    let builder = auto::Builder::new(TokioExecutor::new());
    let result = match tls {
        None => {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            watcher.watch(connection.into_owned()).await
        }
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => {
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(connection.into_owned()).await
            }
            Err(err) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                return;
            }
        },
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

async fn accept_failed(err: std::io::Error) {
    // Typically EMFILE: back off briefly rather than spin.
    tracing::warn!(error = %err, "failed to accept a connection");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Checks that clients and builders can use the public URL as the registry's address.
fn validate_public_url(url: &Url) -> Result<(), ServerError> {
    let invalid = |reason: &str| ServerError::PublicUrl {
        url: url.to_string(),
        reason: reason.into(),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    match url.host() {
        None => Err(invalid("it has no host")),
        Some(url::Host::Ipv4(ip)) if ip.is_unspecified() => Err(invalid(
            "0.0.0.0 is not an address clients can use; pass --public-url with this machine's name",
        )),
        Some(url::Host::Ipv6(ip)) if ip.is_unspecified() => Err(invalid(
            ":: is not an address clients can use; pass --public-url with this machine's name",
        )),
        Some(_) if url.path() != "/" => Err(invalid(
            "it must not have a path; the registry lives at /v2/",
        )),
        Some(_) => Ok(()),
    }
}

/// Writes the URL atomically, so a reader never sees a partial line.
fn write_url_file(path: &std::path::Path, url: &Url) -> Result<(), ServerError> {
    let error = |source| ServerError::UrlFile {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", url.as_str().trim_end_matches('/'))).map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)
}

/// Creates the registry with the configured blob store. An S3 bucket is checked first, so a
/// wrong endpoint, bucket or key stops the server at start instead of failing pushes.
async fn open_registry(
    config: &ServerConfig,
    db: &Db,
    public_url: &Url,
) -> Result<Registry, ServerError> {
    let registry_config = RegistryConfig {
        data_dir: config.data_dir.clone(),
        public_url: public_url.clone(),
    };
    let registry = match &config.blob_store {
        BlobStoreConfig::Filesystem => {
            tracing::info!(path = %config.data_dir.join("blobs").display(), "blob store: filesystem");
            Registry::new(db.clone(), registry_config).await?
        }
        BlobStoreConfig::S3(s3) => {
            let store = S3BlobStore::connect(S3Config::clone(s3)).await?;
            tracing::info!(
                bucket = %s3.bucket,
                endpoint = %s3.endpoint,
                prefix = store.prefix(),
                "blob store: S3"
            );
            Registry::with_blob_store(db.clone(), registry_config, Arc::new(store)).await?
        }
    };
    Ok(registry)
}

/// Takes an exclusive lock on `DATA_DIR/server.lock` and records this process's pid in it.
fn lock_data_dir(data_dir: &Path) -> Result<Flock<std::fs::File>, ServerError> {
    let path = data_dir.join("server.lock");
    let error = |source| ServerError::DataDir {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(error)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((file, _)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            drop(file);
            return Err(ServerError::DataDirInUse {
                path: data_dir.display().to_string(),
                pid: holder.trim().to_owned(),
            });
        }
    };
    lock.set_len(0).map_err(error)?;
    lock.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(error)?;
    Ok(lock)
}

/// Makes a file readable by its owner only: the metadata database contains the registry's
/// token-signing key.
fn restrict_file(path: &Path) -> Result<(), ServerError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServerError::DataDir {
            path: path.display().to_string(),
            source,
        }
    })
}

fn prepare_data_dir(config: &ServerConfig) -> Result<(), ServerError> {
    let error = |source| ServerError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(error)?;
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(error)?;
    Ok(())
}

fn builder_config(config: &ServerConfig, public_url: &Url) -> BuilderConfig {
    let https = public_url.scheme() == "https";
    let mut registries = vec![RegistryTrust {
        host: host_port(public_url),
        http: !https,
        ca_file: if https { config.ca_file.clone() } else { None },
    }];
    registries.extend(config.insecure_registries.iter().map(|host| RegistryTrust {
        host: host.clone(),
        http: true,
        ca_file: None,
    }));
    BuilderConfig {
        data_dir: config.data_dir.clone(),
        buildkitd: config.buildkitd.clone(),
        registries,
        idle_timeout: config.builder_idle_timeout,
        start_timeout: Duration::from_secs(60),
    }
}

fn oidc_http_client(config: &ServerConfig) -> Result<reqwest::Client, ServerError> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        // Discovery documents and key sets are fetched from the issuer itself, never elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("drydock/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ServerError::HttpClient(format!("failed to read --ca-cert {}: {e}", path.display()))
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            ServerError::HttpClient(format!("invalid --ca-cert {}: {e}", path.display()))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| ServerError::HttpClient(e.to_string()))
}

fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    let error = |reason: String| ServerError::Tls {
        cert: files.cert.display().to_string(),
        key: files.key.display().to_string(),
        reason,
    };
    let cert_pem =
        std::fs::read(&files.cert).map_err(|e| error(format!("reading the certificate: {e}")))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| error(format!("reading the key: {e}")))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("parsing the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            "the certificate file holds no PEM certificate".into(),
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| error(format!("parsing the key: {e}")))?
        .ok_or_else(|| error("the key file holds no PEM private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| error(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// Deletes expired workspace tokens and abandoned registry uploads, once an interval.
fn spawn_purges(db: Db, registry: Registry) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(PURGE_INTERVAL);
        loop {
            interval.tick().await;
            match db
                .purge_expired_tokens(EXPIRED_TOKEN_RETENTION.as_secs() as i64)
                .await
            {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "deleted expired workspace tokens"),
                Err(err) => tracing::warn!(error = %err, "failed to delete expired tokens"),
            }
            match registry.purge_stale_uploads(STALE_UPLOAD_AGE).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "deleted abandoned registry uploads"),
                Err(err) => tracing::warn!(error = %err, "failed to delete abandoned uploads"),
            }
        }
    });
}
