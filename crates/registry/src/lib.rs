//! Drydock's OCI registry: the OCI distribution API (Docker Registry HTTP API v2) under
//! `/v2/`, and the Docker token endpoint at `/auth/token`.
//!
//! Repositories are named `WORKSPACE/NAME[/MORE]`. A workspace token reaches only its own
//! workspace's repositories; the operator token reaches all. Blobs are stored once by digest
//! but are visible only in the repositories they were pushed or mounted into.

mod auth;
mod blob_store;
mod blobs;
mod dispatch;
mod error;
mod gc;
mod listing;
mod manifest_doc;
mod manifests;
mod metadata;
mod reference;
mod route;
mod s3;
mod staging;
mod token;
mod uploads;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{any, get};
use axum::Router;
use drydock_store::{now_unix, Db};

pub use blob_store::{BlobReader, BlobStore, FsBlobStore};
pub use error::{ErrorCode, RegistryError};
pub use gc::{GcReport, WorkspaceFreed, WorkspaceUsage};
pub use reference::{Algorithm, Digest};
pub use s3::{S3BlobStore, S3Config, S3Credentials};

use auth::TokenAuthority;
use staging::UploadArea;

/// Name of the server key that signs registry tokens.
const SIGNING_KEY_NAME: &str = "registry-token";

/// Registry settings: the data folder and the URL clients use.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Blobs go under `data_dir/blobs`, staged uploads under `data_dir/uploads`. Both must be
    /// on one file system, because a finished upload is renamed into place.
    pub data_dir: PathBuf,
    /// The URL clients use, such as `http://127.0.0.1:5000`. The token endpoint is
    /// `{public_url}/auth/token`, and the token service name is its `host:port`.
    pub public_url: url::Url,
}

/// The registry: state shared by its handlers. Cloning is cheap.
#[derive(Clone)]
pub struct Registry {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub db: Db,
    pub blobs: Arc<dyn BlobStore>,
    pub uploads: UploadArea,
    pub auth: TokenAuthority,
    /// Held shared by every write that adds a blob or a manifest, from its checks to its
    /// commit, and exclusively by the garbage collector's sweep (see the `gc` module).
    pub push_lock: tokio::sync::RwLock<()>,
}

impl Registry {
    /// Creates the registry with blobs in the local folder `data_dir/blobs`.
    pub async fn new(db: Db, config: RegistryConfig) -> Result<Registry, RegistryError> {
        let blobs = Arc::new(FsBlobStore::new(config.data_dir.join("blobs")));
        Registry::with_blob_store(db, config, blobs).await
    }

    /// Creates the registry with another blob store. Uploads are still staged under
    /// `data_dir/uploads`.
    pub async fn with_blob_store(
        db: Db,
        config: RegistryConfig,
        blobs: Arc<dyn BlobStore>,
    ) -> Result<Registry, RegistryError> {
        let host = config
            .public_url
            .host_str()
            .ok_or_else(|| RegistryError::PublicUrl {
                url: config.public_url.to_string(),
            })?;
        let service = match config.public_url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let realm = format!(
            "{}/auth/token",
            config.public_url.as_str().trim_end_matches('/')
        );

        let uploads_dir = config.data_dir.join("uploads");
        for dir in [config.data_dir.join("blobs"), uploads_dir.clone()] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|source| RegistryError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
        }
        let key = db
            .server_key(SIGNING_KEY_NAME, 32)
            .await
            .map_err(RegistryError::SigningKey)?;
        let inner = Inner {
            db,
            blobs,
            uploads: UploadArea::new(uploads_dir),
            auth: TokenAuthority::new(&key, realm, service),
            push_lock: tokio::sync::RwLock::new(()),
        };
        Ok(Registry {
            inner: Arc::new(inner),
        })
    }

    /// Routes for `/v2/` and everything under it, and `/auth/token` (`GET` and `POST`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2", get(dispatch::base))
            .route("/v2/", get(dispatch::base))
            .route("/v2/{*path}", any(dispatch::dispatch))
            .route("/auth/token", get(token::token_get).post(token::token_post))
            .with_state(self.clone())
    }

    /// Deletes upload sessions and staged data not written to for `max_age`, and returns how
    /// many staging files were removed. Clients abandon uploads when they crash or lose
    /// the connection; the server calls this periodically, such as hourly with a day's age.
    pub async fn purge_stale_uploads(&self, max_age: Duration) -> Result<usize, RegistryError> {
        let before = now_unix() - i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        let sessions = metadata::delete_stale_uploads(&self.inner.db, before)
            .await
            .map_err(|error| RegistryError::PurgeUploads(error.cause.unwrap_or(error.message)))?;
        let removed = self
            .inner
            .uploads
            .remove_stale(max_age)
            .await
            .map_err(|error| RegistryError::PurgeUploads(error.to_string()))?;
        tracing::info!(
            sessions = sessions.len(),
            files = removed,
            "removed stale uploads"
        );
        Ok(removed)
    }
}
