//! Operator endpoints for registry storage: garbage collection and per-workspace usage.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use drydock_registry::{GcReport, RegistryError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Routes under `/v1/admin/registry`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/registry/gc", post(collect_garbage))
        .route("/v1/admin/registry/usage", get(usage))
}

#[derive(Deserialize)]
struct GcRequest {
    #[serde(default)]
    dry_run: bool,
    /// Shortens the server's grace period for this run; it cannot lengthen it.
    grace_secs: Option<u64>,
}

async fn collect_garbage(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<GcRequest>,
) -> Result<Json<GcReport>, ApiError> {
    state.operator(&headers).await?;
    let grace = effective_grace(state.gc_grace, request.grace_secs)?;
    tracing::info!(
        dry_run = request.dry_run,
        grace_secs = grace.as_secs(),
        "registry garbage collection started"
    );
    let report = state
        .registry
        .collect_garbage(grace, request.dry_run)
        .await
        .map_err(registry_failure)?;
    Ok(Json(report))
}

async fn usage(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    state.operator(&headers).await?;
    let usage = state.registry.usage().await.map_err(registry_failure)?;
    Ok(Json(json!({ "workspaces": usage })))
}

/// Returns the grace period for one run: the server's, or a shorter one from the request.
fn effective_grace(server: Duration, requested: Option<u64>) -> Result<Duration, ApiError> {
    match requested {
        None => Ok(server),
        Some(secs) if secs <= server.as_secs() => Ok(Duration::from_secs(secs)),
        Some(secs) => Err(ApiError::bad_request(format!(
            "invalid grace_secs {secs}: a run may only shorten the server's grace period of {} \
             seconds; restart the server with a longer --registry-gc-grace-secs instead",
            server.as_secs()
        ))),
    }
}

fn registry_failure(error: RegistryError) -> ApiError {
    tracing::error!(%error, "registry storage request failed");
    ApiError::internal(format!("{error}; see the server log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_can_only_be_shortened() {
        let server = Duration::from_secs(3600);
        assert_eq!(effective_grace(server, None).unwrap(), server);
        assert_eq!(effective_grace(server, Some(0)).unwrap(), Duration::ZERO);
        assert_eq!(effective_grace(server, Some(3600)).unwrap(), server);
        let error = effective_grace(server, Some(3601)).unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(error.message.contains("3601"), "{}", error.message);
    }
}
