//! HTTP endpoints: OpenID discovery, the JWKS, a token endpoint for tests, and the
//! Buildkite agent API's OIDC token endpoint.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::claims::{build_claims, Build, BuildkiteClaims, Validity, CLAIMS_SUPPORTED};
use crate::signing::Signer;

/// Lifetime of a token whose request names none, in seconds.
const DEFAULT_LIFETIME_SECS: i64 = 300;

/// Build values used where a request names none.
const DEFAULT_BRANCH: &str = "main";
const DEFAULT_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const DEFAULT_STEP: &str = "build";

/// Settings and keys shared by every request.
pub struct Issuer {
    /// Base URL, which is also the `iss` claim.
    pub url: String,
    pub signer: Signer,
    pub default_audience: String,
    /// Organization and pipeline of tokens minted through the agent API endpoint.
    pub organization: String,
    pub pipeline: String,
    /// Values of the optional `organization_id` and `pipeline_id` claims.
    pub organization_id: String,
    pub pipeline_id: String,
    /// The `agent_id` claim of every token.
    pub agent_id: String,
}

pub fn router(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(mint_token))
        .route("/v3/jobs/{job_id}/oidc/tokens", post(agent_token))
        .with_state(issuer)
}

/// An error response in the Buildkite API's shape, `{"message": "..."}`, which the agent
/// prints when a request fails.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::warn!(status = %self.status, error = %self.message, "rejected token request");
        (self.status, Json(json!({ "message": self.message }))).into_response()
    }
}

async fn discovery(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(json!({
        "issuer": issuer.url,
        "jwks_uri": format!("{}/jwks", issuer.url),
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "claims_supported": CLAIMS_SUPPORTED,
    }))
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(json!({ "keys": [issuer.signer.jwk] }))
}

/// Body of `POST /token`. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TokenRequest {
    audience: Option<String>,
    organization: Option<String>,
    pipeline: Option<String>,
    branch: Option<String>,
    commit: Option<String>,
    step: Option<String>,
    build_number: Option<u64>,
    job_id: Option<String>,
    /// Seconds from now until `exp`. Negative values give an already expired token.
    lifetime_secs: Option<i64>,
    not_before_offset_secs: i64,
    issued_at_offset_secs: i64,
}

async fn mint_token(
    State(issuer): State<Arc<Issuer>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: TokenRequest = parse_body(&body)?;
    let build = Build {
        organization: request
            .organization
            .unwrap_or_else(|| issuer.organization.clone()),
        pipeline: request.pipeline.unwrap_or_else(|| issuer.pipeline.clone()),
        branch: request.branch.unwrap_or_else(|| DEFAULT_BRANCH.to_owned()),
        commit: request.commit.unwrap_or_else(|| DEFAULT_COMMIT.to_owned()),
        step: request.step.unwrap_or_else(|| DEFAULT_STEP.to_owned()),
        number: request.build_number.unwrap_or(1),
        job_id: request
            .job_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    };
    let validity = Validity {
        now: chrono::Utc::now().timestamp(),
        lifetime_secs: request.lifetime_secs.unwrap_or(DEFAULT_LIFETIME_SECS),
        not_before_offset_secs: request.not_before_offset_secs,
        issued_at_offset_secs: request.issued_at_offset_secs,
    };
    let audience = request
        .audience
        .unwrap_or_else(|| issuer.default_audience.clone());
    let claims = build_claims(&issuer.url, &audience, &build, validity, &issuer.agent_id);
    sign(&issuer, &claims)
}

/// Body that `buildkite-agent oidc request-token` sends (agent `api/oidc.go`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AgentTokenRequest {
    audience: Option<String>,
    /// Lifetime in seconds. The agent omits the field or sends 0 to leave the choice to
    /// the API.
    lifetime: i64,
    claims: Vec<String>,
    aws_session_tags: Vec<String>,
    subject_claim: Option<String>,
}

async fn agent_token(
    State(issuer): State<Arc<Issuer>>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_agent_token(&headers)?;
    let request: AgentTokenRequest = parse_body(&body)?;
    if request.lifetime < 0 {
        let message = format!(
            "invalid lifetime {}: use 0 or more seconds",
            request.lifetime
        );
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    if !request.aws_session_tags.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "aws_session_tags are not supported by this development issuer",
        ));
    }

    let build = Build {
        organization: issuer.organization.clone(),
        pipeline: issuer.pipeline.clone(),
        branch: DEFAULT_BRANCH.to_owned(),
        commit: DEFAULT_COMMIT.to_owned(),
        step: DEFAULT_STEP.to_owned(),
        number: 1,
        job_id,
    };
    let lifetime_secs = if request.lifetime == 0 {
        DEFAULT_LIFETIME_SECS
    } else {
        request.lifetime
    };
    let validity = Validity {
        now: chrono::Utc::now().timestamp(),
        lifetime_secs,
        not_before_offset_secs: 0,
        issued_at_offset_secs: 0,
    };
    let audience = request
        .audience
        .unwrap_or_else(|| issuer.default_audience.clone());
    let mut claims = build_claims(&issuer.url, &audience, &build, validity, &issuer.agent_id);
    add_optional_claims(
        &issuer,
        &mut claims,
        &request.claims,
        request.subject_claim.as_deref(),
    )?;
    sign(&issuer, &claims)
}

/// Rejects a request without the agent's `Authorization: Token ...` header. Any token is
/// accepted, because this issuer has no agents to check it against.
fn check_agent_token(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match value.strip_prefix("Token ") {
        Some(token) if !token.trim().is_empty() => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing agent access token: send \"Authorization: Token TOKEN\" \
             (buildkite-agent reads it from BUILDKITE_AGENT_ACCESS_TOKEN)",
        )),
    }
}

/// Adds the optional claims that a request names, and makes one of them the subject when
/// `subject_claim` names it.
fn add_optional_claims(
    issuer: &Issuer,
    claims: &mut BuildkiteClaims,
    names: &[String],
    subject_claim: Option<&str>,
) -> Result<(), ApiError> {
    let names = names.iter().map(String::as_str).chain(subject_claim);
    for name in names {
        match name {
            "organization_id" => claims.organization_id = Some(issuer.organization_id.clone()),
            "pipeline_id" => claims.pipeline_id = Some(issuer.pipeline_id.clone()),
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "unsupported claim {other:?}: this development issuer adds only \
                         organization_id and pipeline_id"
                    ),
                ))
            }
        }
    }
    match subject_claim {
        Some("organization_id") => claims.sub = issuer.organization_id.clone(),
        Some("pipeline_id") => claims.sub = issuer.pipeline_id.clone(),
        _ => {}
    }
    Ok(())
}

/// Parses a JSON body, treating an empty body as `{}` so that a bare `curl -X POST` works.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON request body: {e}"),
        )
    })
}

fn sign(issuer: &Issuer, claims: &BuildkiteClaims) -> Result<Json<Value>, ApiError> {
    let token = issuer
        .signer
        .sign(claims)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    tracing::info!(
        sub = %claims.sub,
        aud = %claims.aud,
        exp = claims.exp,
        job_id = %claims.job_id,
        "minted OIDC token"
    );
    Ok(Json(json!({ "token": token })))
}
