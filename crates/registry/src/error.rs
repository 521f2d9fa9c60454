//! The OCI distribution error envelope and its codes, and the crate's public error type.
//!
//! Error codes and their HTTP statuses follow the OCI distribution specification v1.1,
//! section "Error Codes": <https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#error-codes>.

use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Serialize;

/// Errors from setting up the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("failed to create the registry folder {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to load the registry token signing key: {0}")]
    SigningKey(#[source] drydock_store::StoreError),
    #[error("failed to remove stale uploads: {0}")]
    PurgeUploads(String),
    #[error("failed to {action} in the registry metadata database: {source}")]
    Metadata {
        action: &'static str,
        source: sqlx::Error,
    },
    #[error("invalid registry public URL {url}: it needs a host, such as http://127.0.0.1:5000")]
    PublicUrl { url: String },
    #[error("invalid S3 blob store settings: {reason}")]
    S3Config { reason: String },
    #[error("failed to set up the S3 client for bucket {bucket} at {endpoint}: {reason}")]
    S3Client {
        bucket: String,
        endpoint: String,
        reason: String,
    },
    #[error("failed to use the S3 bucket {bucket} at {endpoint}: {reason}; {fix}")]
    S3Bucket {
        bucket: String,
        endpoint: String,
        reason: String,
        fix: String,
    },
}

/// An error code of the OCI distribution specification, plus `UNKNOWN` for server faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    /// A `Range` or `Content-Range` that does not fit the blob or upload.
    RangeInvalid,
    /// A fault on the server side, such as a failed database query. The spec has no code for
    /// it; `UNKNOWN` is what the reference registry (distribution/distribution) sends.
    Unknown,
}

impl ErrorCode {
    /// Returns the code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// Returns the HTTP status for the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error response to a registry client: a code, a message for people, optional detail,
/// and headers such as `WWW-Authenticate`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<Box<serde_json::Value>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The underlying fault of an `UNKNOWN` error, logged but never sent to the client.
    pub cause: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            cause: None,
        }
    }

    /// Builds a server fault. The client sees that `action` failed, and `cause` goes to the
    /// log only.
    pub fn internal(action: &str, cause: impl std::fmt::Display) -> ApiError {
        let mut error = ApiError::new(ErrorCode::Unknown, format!("failed to {action}"));
        error.cause = Some(cause.to_string());
        error
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(Box::new(detail));
        self
    }

    /// Adds a header; values that are not valid header text are skipped.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> ApiError {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((name, value));
        }
        self
    }

    /// Builds a 401 whose challenge names the token endpoint and the scope to request.
    pub fn unauthorized(message: impl Into<String>, challenge: &str) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message).with_header(WWW_AUTHENTICATE, challenge)
    }
}

impl From<drydock_store::StoreError> for ApiError {
    fn from(error: drydock_store::StoreError) -> ApiError {
        ApiError::internal("query the registry metadata", error)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> ApiError {
        ApiError::internal("query the registry metadata", error)
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    errors: [EnvelopeError<'a>; 1],
}

#[derive(Serialize)]
struct EnvelopeError<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = Envelope {
            errors: [EnvelopeError {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.detail.as_deref(),
            }],
        };
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_body_is_the_oci_envelope() {
        let error = ApiError::new(ErrorCode::BlobUnknown, "blob not found")
            .with_detail(serde_json::json!({"digest": "sha256:00"}));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(value["errors"][0]["message"], "blob not found");
        assert_eq!(value["errors"][0]["detail"]["digest"], "sha256:00");
    }

    #[test]
    fn range_invalid_is_416() {
        assert_eq!(
            ErrorCode::RangeInvalid.status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
    }
}
