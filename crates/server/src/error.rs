use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Failures that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to prepare the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is in use by another drydock server (pid {pid}); stop it or \
         pass another --data-dir"
    )]
    DataDirInUse { path: String, pid: String },
    #[error("failed to write the URL file {path} (--url-file): {source}")]
    UrlFile {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to write the operator token file {path}: {source}")]
    OperatorToken {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("failed to load TLS files (--tls-cert {cert}, --tls-key {key}): {reason}")]
    Tls {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("invalid public URL {url}: {reason}")]
    PublicUrl { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] drydock_store::StoreError),
    #[error(transparent)]
    Registry(#[from] drydock_registry::RegistryError),
    #[error(transparent)]
    Builder(#[from] drydock_builder::BuilderError),
    #[error("failed to build the HTTP client for OIDC discovery: {0}")]
    HttpClient(String),
}

/// An API error, sent as `{"error": {"code": .., "message": ..}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<drydock_store::StoreError> for ApiError {
    fn from(err: drydock_store::StoreError) -> ApiError {
        use drydock_store::StoreError;
        match err {
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            StoreError::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            other => {
                tracing::error!(error = %other, "metadata store failed");
                ApiError::internal("the server's metadata store failed; see the server log")
            }
        }
    }
}

impl From<drydock_identity::AuthError> for ApiError {
    fn from(err: drydock_identity::AuthError) -> ApiError {
        use drydock_identity::AuthError;
        match err {
            AuthError::Store(store) => store.into(),
            AuthError::OperatorRequired => ApiError::forbidden(err.to_string()),
            other => ApiError::unauthorized(other.to_string()),
        }
    }
}
