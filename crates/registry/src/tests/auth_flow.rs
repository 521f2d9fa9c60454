//! The token flow: challenges, the token endpoint, and registry tokens on `/v2`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use drydock_store::TokenKind;
use http::{Method, StatusCode};

use super::{basic, setup, TestRegistry};

const REALM: &str = "http://127.0.0.1:5000/auth/token";

/// Fetches a registry token with GET and Basic auth for `scopes`.
async fn fetch_token(registry: &TestRegistry, api_token: &str, scopes: &[&str]) -> String {
    let mut uri = "/auth/token?service=127.0.0.1%3A5000".to_owned();
    for scope in scopes {
        uri.push_str("&scope=");
        uri.push_str(&url::form_urlencoded::byte_serialize(scope.as_bytes()).collect::<String>());
    }
    let response = registry.call(api_token, Method::GET, &uri, &[], ()).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    response.json()["token"].as_str().unwrap().to_owned()
}

/// Decodes the `access` claim of a registry token without verifying the signature.
fn access_claim(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["access"].clone()
}

#[tokio::test]
async fn request_without_credentials_gets_challenge() {
    let registry = setup().await;
    let base = registry.send(Method::GET, "/v2/", None, &[], ()).await;
    assert_eq!(base.status, StatusCode::UNAUTHORIZED);
    assert_eq!(base.error_code(), "UNAUTHORIZED");
    assert_eq!(
        base.header("www-authenticate"),
        format!(r#"Bearer realm="{REALM}",service="127.0.0.1:5000""#)
    );

    let tags = registry
        .send(Method::GET, "/v2/acme/team/app/tags/list", None, &[], ())
        .await;
    assert_eq!(tags.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tags.header("www-authenticate"),
        format!(
            r#"Bearer realm="{REALM}",service="127.0.0.1:5000",scope="repository:acme/team/app:pull,push""#
        )
    );
    assert_eq!(
        tags.header("docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[tokio::test]
async fn base_endpoint_answers_authenticated_callers() {
    let registry = setup().await;
    for authorization in [
        basic(&registry.acme),
        format!("Bearer {}", registry.operator),
    ] {
        let response = registry
            .send(Method::GET, "/v2/", Some(&authorization), &[], ())
            .await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.json(), serde_json::json!({}));
    }
    let unknown = registry
        .send(Method::GET, "/v2/", Some(&basic("ddw_unknown")), &[], ())
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_endpoint_grants_the_reachable_subset() {
    let registry = setup().await;
    let token = fetch_token(
        &registry,
        &registry.acme,
        &[
            "repository:acme/app:pull,push",
            "repository:other/app:pull,push",
            "registry:catalog:*",
        ],
    )
    .await;
    assert_eq!(
        access_claim(&token),
        serde_json::json!([{"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}])
    );

    let operator = fetch_token(
        &registry,
        &registry.operator,
        &["repository:other/app:pull"],
    )
    .await;
    assert_eq!(access_claim(&operator)[0]["name"], "other/app");
}

#[tokio::test]
async fn token_response_has_the_documented_fields() {
    let registry = setup().await;
    let uri = "/auth/token?service=127.0.0.1:5000&scope=repository:acme/app:pull";
    let response = registry
        .call(&registry.acme, Method::GET, uri, &[], ())
        .await;
    let body = response.json();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 900);
    assert!(
        body["issued_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    assert_eq!(response.header("cache-control"), "no-store");
}

#[tokio::test]
async fn token_lifetime_stops_at_api_token_expiry() {
    let registry = setup().await;
    let expires_at = drydock_store::now_unix() + 120;
    let short = registry
        .db
        .issue_token(TokenKind::Workspace, Some("acme"), "ci", Some(expires_at))
        .await
        .unwrap();
    let response = registry
        .call(&short, Method::GET, "/auth/token", &[], ())
        .await;
    let expires_in = response.json()["expires_in"].as_i64().unwrap();
    assert!(expires_in <= 120, "{expires_in}");
    assert!(expires_in > 100, "{expires_in}");
}

#[tokio::test]
async fn token_endpoint_rejects_unknown_and_expired_tokens() {
    let registry = setup().await;
    let unknown = registry
        .call("ddw_not-issued", Method::GET, "/auth/token", &[], ())
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let message = unknown.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("exchange-oidc-token"), "{message}");
    assert!(
        !String::from_utf8_lossy(&unknown.body).contains("ddw_not-issued"),
        "token echoed"
    );

    let expired = registry
        .db
        .issue_token(TokenKind::Workspace, Some("acme"), "ci", Some(1))
        .await
        .unwrap();
    let response = registry
        .call(&expired, Method::GET, "/auth/token", &[], ())
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let message = response.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("expired"), "{message}");

    let missing = registry
        .send(Method::GET, "/auth/token", None, &[], ())
        .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn oauth_post_accepts_password_and_refresh_token_grants() {
    let registry = setup().await;
    let scope = "repository%3Aacme%2Fapp%3Apull%2Cpush+repository%3Aacme%2Fbase%3Apull";
    let forms = [
        format!(
            "grant_type=password&username=ci&password={}&service=s&scope={scope}",
            registry.acme
        ),
        format!(
            "grant_type=refresh_token&refresh_token={}&service=s&scope={scope}",
            registry.acme
        ),
    ];
    for form in forms {
        let response = registry
            .send(
                Method::POST,
                "/auth/token",
                None,
                &[("content-type", "application/x-www-form-urlencoded")],
                form,
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
        let token = response.json()["access_token"].as_str().unwrap().to_owned();
        let access = access_claim(&token);
        assert_eq!(access.as_array().map(Vec::len), Some(2), "{access}");
    }
    let bad_grant = registry
        .send(
            Method::POST,
            "/auth/token",
            None,
            &[],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(bad_grant.status, StatusCode::BAD_REQUEST);
    let bad_password = registry
        .send(
            Method::POST,
            "/auth/token",
            None,
            &[],
            "grant_type=password&username=u&password=x",
        )
        .await;
    assert_eq!(bad_password.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn registry_token_opens_its_scope_only() {
    let registry = setup().await;
    registry.push_image(&registry.acme, "acme/app", "v1").await;
    let pull_only = fetch_token(&registry, &registry.acme, &["repository:acme/app:pull"]).await;
    let bearer = format!("Bearer {pull_only}");

    let pull = registry
        .send(
            Method::GET,
            "/v2/acme/app/manifests/v1",
            Some(&bearer),
            &[],
            (),
        )
        .await;
    assert_eq!(pull.status, StatusCode::OK);

    let push = registry
        .send(
            Method::POST,
            "/v2/acme/app/blobs/uploads/",
            Some(&bearer),
            &[],
            (),
        )
        .await;
    assert_eq!(
        push.status,
        StatusCode::UNAUTHORIZED,
        "missing push scope asks for a new token"
    );
    assert!(push
        .header("www-authenticate")
        .contains(r#"scope="repository:acme/app:pull,push""#));

    let elsewhere = registry
        .send(
            Method::GET,
            "/v2/acme/base/manifests/v1",
            Some(&bearer),
            &[],
            (),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);

    let foreign = registry
        .send(
            Method::GET,
            "/v2/other/app/manifests/v1",
            Some(&bearer),
            &[],
            (),
        )
        .await;
    assert_eq!(
        foreign.status,
        StatusCode::FORBIDDEN,
        "another workspace is never reachable"
    );
    assert_eq!(foreign.error_code(), "DENIED");
}

#[tokio::test]
async fn tampered_registry_token_is_rejected() {
    let registry = setup().await;
    let token = fetch_token(&registry, &registry.acme, &["repository:acme/app:pull"]).await;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged_access = serde_json::json!({
        "iss": "drydock", "sub": "x", "aud": "127.0.0.1:5000", "exp": 4102444800i64,
        "nbf": 0, "iat": 0, "jti": "j",
        "access": [{"type": "repository", "name": "other/app", "actions": ["pull"]}]
    });
    parts[1] = URL_SAFE_NO_PAD.encode(forged_access.to_string());
    let forged = format!("Bearer {}", parts.join("."));
    let response = registry
        .send(
            Method::GET,
            "/v2/other/app/tags/list",
            Some(&forged),
            &[],
            (),
        )
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn raw_api_token_works_as_bearer() {
    let registry = setup().await;
    registry.push_image(&registry.acme, "acme/app", "v1").await;
    let bearer = format!("Bearer {}", registry.acme);
    let response = registry
        .send(
            Method::GET,
            "/v2/acme/app/tags/list",
            Some(&bearer),
            &[],
            (),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json()["tags"], serde_json::json!(["v1"]));
}
