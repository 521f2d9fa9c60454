use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use drydock_identity::{format_unix, Principal};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Builds the router for the `/v1` API and the health check.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/info", get(info))
        .route("/v1/auth/exchange-oidc-token", post(exchange_oidc_token))
        .route("/v1/auth/whoami", get(whoami))
        .route(
            "/v1/admin/workspaces",
            get(list_workspaces).post(create_workspace),
        )
        .route(
            "/v1/admin/trust-rules",
            get(list_trust_rules).post(add_trust_rule),
        )
        .route("/v1/admin/trust-rules/{id}", delete(remove_trust_rule))
        .route("/v1/builders", get(list_builders))
        .route(drydock_tunnel::TUNNEL_PATH, get(crate::tunnel::open_tunnel))
        .merge(crate::registry_admin::routes())
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    sqlx_ping(&state).await?;
    Ok("ok\n")
}

async fn sqlx_ping(state: &AppState) -> Result<(), ApiError> {
    state.db.list_workspaces().await?;
    Ok(())
}

async fn info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "public_url": state.public_url.as_str(),
        "registry": state.registry_host(),
        "platforms": drydock_builder::Platform::SUPPORTED.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
struct ExchangeRequest {
    token: String,
    workspace: String,
}

async fn exchange_oidc_token(
    State(state): State<AppState>,
    Json(request): Json<ExchangeRequest>,
) -> Result<Json<Value>, ApiError> {
    let exchanged = state
        .oidc
        .exchange(&state.db, &request.token, &request.workspace, state.token_lifetime)
        .await
        .map_err(|err| {
            let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            tracing::info!(workspace = %request.workspace, error = %err, "OIDC token exchange rejected");
            ApiError::new(status, "exchange_rejected", err.to_string())
        })?;
    Ok(Json(json!({
        "token": exchanged.token,
        "workspace": exchanged.workspace,
        "subject": exchanged.subject,
        "issuer": exchanged.issuer,
        "expires_at": exchanged.expires_at,
        "expires_at_rfc3339": format_unix(exchanged.expires_at),
        "registry": state.registry_host(),
    })))
}

async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let body = match state.principal(&headers).await? {
        Principal::Operator => json!({ "kind": "operator" }),
        Principal::Workspace {
            name,
            subject,
            expires_at,
            ..
        } => json!({
            "kind": "workspace",
            "workspace": name,
            "subject": subject,
            "expires_at": expires_at,
        }),
    };
    Ok(Json(body))
}

#[derive(Deserialize)]
struct CreateWorkspace {
    name: String,
}

async fn create_workspace(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<CreateWorkspace>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.operator(&headers).await?;
    let workspace = state.db.create_workspace(&request.name).await?;
    tracing::info!(workspace = %workspace.name, "workspace created");
    Ok((StatusCode::CREATED, Json(json!(workspace))))
}

async fn list_workspaces(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.operator(&headers).await?;
    Ok(Json(
        json!({ "workspaces": state.db.list_workspaces().await? }),
    ))
}

#[derive(Deserialize)]
struct AddTrustRule {
    workspace: String,
    issuer: String,
    audience: String,
    subject: String,
}

async fn add_trust_rule(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<AddTrustRule>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.operator(&headers).await?;
    validate_issuer(&request.issuer)?;
    for (name, value) in [
        ("audience", &request.audience),
        ("subject", &request.subject),
    ] {
        if value.trim().is_empty() {
            return Err(ApiError::bad_request(format!(
                "missing {name}: pass --{name}"
            )));
        }
    }
    let rule = state
        .db
        .add_trust_rule(
            &request.workspace,
            &request.issuer,
            &request.audience,
            &request.subject,
        )
        .await?;
    tracing::info!(
        workspace = %rule.workspace, rule = rule.id, issuer = %rule.issuer,
        audience = %rule.audience, subject = %rule.subject_pattern, "trust rule added"
    );
    Ok((StatusCode::CREATED, Json(json!(rule))))
}

/// Accepts the issuer only if the server may later fetch its discovery document: https, or
/// plain http on loopback (test and development issuers).
fn validate_issuer(issuer: &str) -> Result<(), ApiError> {
    drydock_identity::check_fetch_url(issuer).map(drop).map_err(|reason| {
        ApiError::bad_request(format!(
            "invalid issuer: {reason}; pass the issuer URL exactly as the token's `iss` claim has it"
        ))
    })
}

#[derive(Deserialize)]
struct TrustFilter {
    workspace: Option<String>,
}

async fn list_trust_rules(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Query<TrustFilter>,
) -> Result<Json<Value>, ApiError> {
    state.operator(&headers).await?;
    let rules = state
        .db
        .list_trust_rules(filter.workspace.as_deref())
        .await?;
    Ok(Json(json!({ "trust_rules": rules })))
}

async fn remove_trust_rule(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state.operator(&headers).await?;
    state.db.remove_trust_rule(id).await?;
    tracing::info!(rule = id, "trust rule removed");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_builders(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = state.principal(&headers).await?;
    let builders: Vec<Value> = state
        .builders
        .status()
        .into_iter()
        .filter(|b| principal.can_access_workspace(&b.workspace))
        .map(|b| json!(b))
        .collect();
    Ok(Json(json!({ "builders": builders })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_issuer_only_on_loopback() {
        assert!(validate_issuer("https://agent.buildkite.com").is_ok());
        assert!(validate_issuer("http://127.0.0.1:8080").is_ok());
        assert!(validate_issuer("http://localhost:8080").is_ok());
        assert!(validate_issuer("http://issuer.example").is_err());
        assert!(validate_issuer("not a url").is_err());
        assert!(validate_issuer("https://user:pass@issuer.example").is_err());
        assert!(validate_issuer("https://169.254.169.254").is_err());
        assert!(validate_issuer("https://[fe80::1]").is_err());
    }
}
