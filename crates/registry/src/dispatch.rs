//! Routes requests under `/v2/` to their handlers: parses the repository name, checks
//! authentication and permission, and logs the outcome once.

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Method};
use tracing::Instrument;

use crate::auth::{Action, Caller};
use crate::error::{ApiError, ErrorCode};
use crate::reference::RepositoryName;
use crate::route::{self, Endpoint};
use crate::uploads::UploadQuery;
use crate::{blobs, listing, manifests, uploads, Registry};

/// `GET /v2/`: 200 with `{}` for an authenticated caller, so clients can probe for the API
/// and for the token endpoint.
pub(crate) async fn base(
    State(registry): State<Registry>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let span = tracing::info_span!("registry", workspace = tracing::field::Empty);
    let result = async {
        let inner = &registry.inner;
        let caller = Caller::authenticate(&inner.db, &inner.auth, &headers, None).await?;
        tracing::Span::current().record("workspace", caller.label());
        Ok(Json(serde_json::json!({})).into_response())
    }
    .instrument(span.clone())
    .await;
    finish(result, &method, &span)
}

/// Handles every other path under `/v2/`.
pub(crate) async fn dispatch(
    State(registry): State<Registry>,
    Path(path): Path<String>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let span = tracing::info_span!(
        "registry",
        %method,
        repository = tracing::field::Empty,
        digest = tracing::field::Empty,
        workspace = tracing::field::Empty,
    );
    let result = route_request(&registry, &path, request)
        .instrument(span.clone())
        .await;
    finish(result, &method, &span)
}

async fn route_request(
    registry: &Registry,
    path: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let Some((name, endpoint)) = route::parse(path) else {
        return Err(ApiError::new(
            ErrorCode::NameUnknown,
            format!("no registry endpoint at /v2/{path}"),
        ));
    };
    let repository = RepositoryName::parse(name)?;
    tracing::Span::current().record("repository", repository.as_str());
    let (parts, body) = request.into_parts();
    let method = parts.method;
    let action = action_for(&endpoint, &method).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unsupported,
            format!("method {method} is not supported on /v2/{path}"),
        )
    })?;

    let inner = &registry.inner;
    let caller =
        Caller::authenticate(&inner.db, &inner.auth, &parts.headers, Some(&repository)).await?;
    tracing::Span::current().record("workspace", caller.label());
    caller.authorize(&inner.auth, &repository, action)?;

    let query = parts.uri.query();
    let headers = &parts.headers;
    let repo = &repository;
    match (endpoint, method) {
        (Endpoint::UploadStart, _) => {
            uploads::start(registry, &caller, repo, UploadQuery::parse(query), body).await
        }
        (Endpoint::Upload(id), Method::PATCH) => {
            uploads::patch(registry, repo, id, headers, body).await
        }
        (Endpoint::Upload(id), Method::PUT) => {
            uploads::put(registry, repo, id, UploadQuery::parse(query), headers, body).await
        }
        (Endpoint::Upload(id), Method::GET) => uploads::status(registry, repo, id).await,
        (Endpoint::Upload(id), _) => uploads::cancel(registry, repo, id).await,
        (Endpoint::Blob(digest), Method::DELETE) => blobs::delete(registry, repo, digest).await,
        (Endpoint::Blob(digest), method) => {
            blobs::get(registry, repo, digest, headers, method == Method::GET).await
        }
        (Endpoint::Manifest(reference), Method::PUT) => {
            manifests::put(registry, repo, reference, headers, body).await
        }
        (Endpoint::Manifest(reference), Method::DELETE) => {
            manifests::delete(registry, repo, reference).await
        }
        (Endpoint::Manifest(reference), method) => {
            manifests::get(registry, repo, reference, method == Method::GET).await
        }
        (Endpoint::TagList, _) => listing::tags(registry, repo, query).await,
        (Endpoint::Referrers(digest), _) => listing::referrers(registry, repo, digest, query).await,
    }
}

/// The permission a request needs, or `None` when the endpoint has no such method.
fn action_for(endpoint: &Endpoint<'_>, method: &Method) -> Option<Action> {
    let read = method == Method::GET || method == Method::HEAD;
    match endpoint {
        Endpoint::UploadStart => (method == Method::POST).then_some(Action::Push),
        Endpoint::Upload(_) => {
            let known = [Method::GET, Method::PATCH, Method::PUT, Method::DELETE];
            known.contains(method).then_some(Action::Push)
        }
        Endpoint::Blob(_) | Endpoint::Manifest(_) if read => Some(Action::Pull),
        Endpoint::Blob(_) | Endpoint::Manifest(_) if method == Method::DELETE => {
            Some(Action::Delete)
        }
        Endpoint::Manifest(_) if method == Method::PUT => Some(Action::Push),
        Endpoint::TagList | Endpoint::Referrers(_) if method == Method::GET => Some(Action::Pull),
        _ => None,
    }
}

/// Logs the outcome once and turns it into the response, without a body for `HEAD`.
fn finish(result: Result<Response, ApiError>, method: &Method, span: &tracing::Span) -> Response {
    let mut response = match result {
        Ok(response) => {
            span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "handled"));
            response
        }
        Err(error) => {
            span.in_scope(|| log_error(&error));
            error.into_response()
        }
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    if method == Method::HEAD {
        if !response.headers().contains_key(CONTENT_LENGTH) {
            if let Some(length) = response.body().size_hint().exact() {
                response.headers_mut().insert(CONTENT_LENGTH, length.into());
            }
        }
        *response.body_mut() = Body::empty();
    }
    response
}

fn log_error(error: &ApiError) {
    let code = error.code.as_str();
    let status = error.status.as_u16();
    if error.status.is_server_error() {
        tracing::error!(code, status, cause = ?error.cause, "{}", error.message);
    } else if matches!(
        error.code,
        ErrorCode::Unauthorized | ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown
    ) {
        // Every token exchange starts with a 401, and clients check whether blobs and
        // manifests exist before pushing them, so these are routine.
        tracing::debug!(code, status, "{}", error.message);
    } else {
        tracing::info!(code, status, "{}", error.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_follow_the_method() {
        let manifest = Endpoint::Manifest("latest");
        assert_eq!(action_for(&manifest, &Method::GET), Some(Action::Pull));
        assert_eq!(action_for(&manifest, &Method::HEAD), Some(Action::Pull));
        assert_eq!(action_for(&manifest, &Method::PUT), Some(Action::Push));
        assert_eq!(action_for(&manifest, &Method::DELETE), Some(Action::Delete));
        assert_eq!(action_for(&manifest, &Method::POST), None);
        assert_eq!(
            action_for(&Endpoint::UploadStart, &Method::POST),
            Some(Action::Push)
        );
        assert_eq!(action_for(&Endpoint::UploadStart, &Method::GET), None);
        assert_eq!(action_for(&Endpoint::Blob("d"), &Method::PUT), None);
        assert_eq!(
            action_for(&Endpoint::TagList, &Method::GET),
            Some(Action::Pull)
        );
    }
}
