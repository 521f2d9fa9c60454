//! The token endpoint, `/auth/token`: trades a Drydock API token for a registry token.
//!
//! `GET` follows the Docker token specification (HTTP Basic auth with the API token as the
//! password, `?service=` and repeated `?scope=`). `POST` follows its OAuth2 variant
//! (<https://distribution.github.io/distribution/spec/auth/oauth/>), a form with
//! `grant_type=password` or `grant_type=refresh_token`; containerd and BuildKit use it.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL};
use http::{HeaderMap, HeaderValue};
use serde::Serialize;
use tracing::Instrument;

use crate::auth::{basic_password, grant_scopes, principal_of_api_token};
use crate::error::{ApiError, ErrorCode};
use crate::Registry;

/// The `WWW-Authenticate` value of a 401 from the token endpoint itself.
const TOKEN_ENDPOINT_CHALLENGE: &str = r#"Basic realm="drydock registry token""#;

#[derive(Serialize)]
struct TokenResponse {
    token: String,
    access_token: String,
    expires_in: i64,
    issued_at: String,
}

/// `GET /auth/token`.
pub(crate) async fn token_get(
    State(registry): State<Registry>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let scopes = form_values(query.unwrap_or_default().as_bytes(), "scope");
    let api_token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .and_then(|(scheme, rest)| {
            if scheme.eq_ignore_ascii_case("basic") {
                basic_password(rest)
            } else if scheme.eq_ignore_ascii_case("bearer") {
                Some(rest.trim().to_owned())
            } else {
                None
            }
        });
    respond(&registry, api_token, &scopes).await
}

/// `POST /auth/token` with an OAuth2 form.
pub(crate) async fn token_post(State(registry): State<Registry>, body: Bytes) -> Response {
    let field = |name: &str| form_values(&body, name).into_iter().next();
    let scopes = form_values(&body, "scope");
    let api_token = match field("grant_type").as_deref() {
        Some("password") => field("password"),
        Some("refresh_token") => field("refresh_token"),
        other => {
            let error = ApiError::new(
                ErrorCode::Unsupported,
                format!(
                    "unsupported grant_type {:?}: use \"password\" or \"refresh_token\"",
                    other.unwrap_or_default()
                ),
            )
            .with_status(http::StatusCode::BAD_REQUEST);
            tracing::info!(error = %error.message, "rejected registry token request");
            return error.into_response();
        }
    };
    respond(&registry, api_token, &scopes).await
}

/// Issues a token for `api_token` holding the subset of `scopes` its principal may hold.
async fn respond(registry: &Registry, api_token: Option<String>, scopes: &[String]) -> Response {
    let span = tracing::info_span!("registry_token", workspace = tracing::field::Empty);
    async move {
        match issue(registry, api_token.as_deref().unwrap_or_default(), scopes).await {
            Ok(response) => {
                let mut response = Json(response).into_response();
                response
                    .headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Err(error) => {
                if error.code == ErrorCode::Unknown {
                    tracing::error!(cause = ?error.cause, "failed to issue a registry token");
                } else {
                    tracing::info!(error = %error.message, "rejected registry token request");
                }
                error.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

async fn issue(
    registry: &Registry,
    api_token: &str,
    scopes: &[String],
) -> Result<TokenResponse, ApiError> {
    let inner = &registry.inner;
    let (principal, api_token_expires_at) =
        principal_of_api_token(&inner.db, api_token, TOKEN_ENDPOINT_CHALLENGE).await?;
    tracing::Span::current().record("workspace", principal.workspace().unwrap_or("operator"));
    let granted = grant_scopes(&principal, scopes);
    let issued = inner
        .auth
        .issue(&principal, granted, api_token_expires_at)?;
    tracing::debug!(expires_in = issued.expires_in, "issued a registry token");
    Ok(TokenResponse {
        token: issued.token.clone(),
        access_token: issued.token,
        expires_in: issued.expires_in,
        issued_at: drydock_identity::format_unix(issued.issued_at),
    })
}

/// Returns every value of `name` in a URL-encoded form or query string.
fn form_values(form: &[u8], name: &str) -> Vec<String> {
    url::form_urlencoded::parse(form)
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_form_values_are_all_kept() {
        let query = b"service=r&scope=repository%3Aa%2Fb%3Apull&scope=repository:a/c:push";
        assert_eq!(
            form_values(query, "scope"),
            vec!["repository:a/b:pull", "repository:a/c:push"]
        );
        assert!(form_values(query, "account").is_empty());
    }
}
