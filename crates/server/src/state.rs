use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use drydock_builder::BuilderManager;
use drydock_identity::{authenticate, OidcVerifier, Principal};
use drydock_registry::Registry;
use drydock_store::Db;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::error::ApiError;

/// State shared by every request handler.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub oidc: OidcVerifier,
    pub builders: Arc<BuilderManager>,
    pub public_url: Url,
    pub token_lifetime: Duration,
    /// Open tunnels, so that shutdown can wait for them.
    pub tunnels: TaskTracker,
    /// Set once shutdown starts: open tunnels finish, new ones are refused.
    pub draining: Arc<AtomicBool>,
    pub registry: Registry,
    /// Registry rows touched more recently than this survive garbage collection.
    pub gc_grace: Duration,
}

impl AppState {
    /// Authenticates the request's `Authorization: Bearer` token.
    pub async fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = bearer_token(headers).unwrap_or_default();
        Ok(authenticate(&self.db, token).await?)
    }

    /// Authenticates the request and requires the operator token.
    pub async fn operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.principal(headers).await? {
            Principal::Operator => Ok(()),
            Principal::Workspace { .. } => {
                Err(drydock_identity::AuthError::OperatorRequired.into())
            }
        }
    }

    /// Returns the registry's `host:port`, as image references name it.
    pub fn registry_host(&self) -> String {
        host_port(&self.public_url)
    }
}

/// Returns `host:port` of a URL, with the scheme's default port filled in.
pub fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
