//! Tests of `OidcVerifier::exchange` against a local issuer.

use std::time::Duration;

use drydock_store::{now_unix, Db};
use serde_json::{json, Value};

use crate::test_issuer::{sign, test_keys, TestIssuer};
use crate::{authenticate, format_unix, ExchangeError, ExchangedToken, OidcVerifier, Principal};

const AUDIENCE: &str = "drydock";
const SUBJECT: &str = "organization:acme:pipeline:app:ref:refs/heads/main:commit:abc123:step:build";
const LIFETIME: Duration = Duration::from_secs(3600);

/// Creates a database with workspace "acme" that trusts `issuer` for AUDIENCE and every
/// subject of pipeline acme/app.
async fn trusting_db(issuer: &str) -> Db {
    let db = Db::open_in_memory().await.unwrap();
    db.create_workspace("acme").await.unwrap();
    db.add_trust_rule("acme", issuer, AUDIENCE, "organization:acme:pipeline:app:*")
        .await
        .unwrap();
    db
}

fn verifier() -> OidcVerifier {
    OidcVerifier::new(reqwest::Client::new())
}

fn signed(claims: &Value) -> String {
    let key = &test_keys()[0];
    sign(key, key.kid, claims)
}

async fn exchange(db: &Db, token: &str) -> Result<ExchangedToken, ExchangeError> {
    verifier().exchange(db, token, "acme", LIFETIME).await
}

/// Unwraps an error and checks that its message does not leak the token's signature.
fn rejection(result: Result<ExchangedToken, ExchangeError>, token: &str) -> ExchangeError {
    let err = result.expect_err("exchange should be rejected");
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !err.to_string().contains(signature),
        "message contains the token: {err}"
    );
    err
}

async fn assert_exchanged(db: &Db, issuer: &TestIssuer, token: &str) {
    let before = now_unix();
    let exchanged = exchange(db, token).await.expect("exchange succeeds");
    assert_eq!(exchanged.workspace, "acme");
    assert_eq!(exchanged.subject, SUBJECT);
    assert_eq!(exchanged.issuer, issuer.url);
    let lifetime = LIFETIME.as_secs() as i64;
    assert!(
        exchanged.expires_at >= before + lifetime,
        "{}",
        exchanged.expires_at
    );
    assert!(
        exchanged.expires_at <= now_unix() + lifetime,
        "{}",
        exchanged.expires_at
    );

    let principal = authenticate(db, &exchanged.token)
        .await
        .expect("issued token is valid");
    match principal {
        Principal::Workspace {
            name,
            subject,
            expires_at,
            ..
        } => {
            assert_eq!(name, "acme");
            assert_eq!(subject, SUBJECT);
            assert_eq!(expires_at, Some(exchanged.expires_at));
        }
        Principal::Operator => panic!("exchange issued an operator token"),
    }
}

#[tokio::test]
async fn token_with_audience_string_is_exchanged() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let token = signed(&issuer.claims(json!(AUDIENCE), SUBJECT));
    assert_exchanged(&db, &issuer, &token).await;
}

#[tokio::test]
async fn token_with_audience_array_is_exchanged() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let token = signed(&issuer.claims(json!(["https://other.test", AUDIENCE]), SUBJECT));
    assert_exchanged(&db, &issuer, &token).await;
}

#[tokio::test]
async fn issuer_keys_are_cached() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let token = signed(&issuer.claims(json!(AUDIENCE), SUBJECT));
    let verifier = verifier();
    verifier
        .exchange(&db, &token, "acme", LIFETIME)
        .await
        .unwrap();
    assert_eq!(issuer.requests(), 2, "discovery and JWKS");
    verifier
        .exchange(&db, &token, "acme", LIFETIME)
        .await
        .unwrap();
    assert_eq!(
        issuer.requests(),
        2,
        "the second exchange uses the cached keys"
    );
}

#[tokio::test]
async fn issuer_with_trailing_slash_is_discovered() {
    let issuer = TestIssuer::start().await;
    let with_slash = format!("{}/", issuer.url);
    issuer.set_discovery_issuer(&with_slash);
    let db = trusting_db(&with_slash).await;
    let mut claims = issuer.claims(json!(AUDIENCE), SUBJECT);
    claims["iss"] = json!(with_slash);
    let exchanged = exchange(&db, &signed(&claims))
        .await
        .expect("exchange succeeds");
    assert_eq!(exchanged.issuer, with_slash);
}

#[tokio::test]
async fn untrusted_issuer_is_rejected_without_a_request() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db("https://ci.example.test").await;
    // Another workspace trusting the issuer must not admit the token into "acme".
    db.create_workspace("other").await.unwrap();
    db.add_trust_rule("other", &issuer.url, AUDIENCE, "*")
        .await
        .unwrap();
    let token = signed(&issuer.claims(json!(AUDIENCE), SUBJECT));

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::NoMatchingRule { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("no trust rule"), "{message}");
    assert!(message.contains(&issuer.url), "{message}");
    assert!(message.contains(SUBJECT), "{message}");
    assert!(message.contains("\"acme\""), "{message}");
    assert_eq!(err.http_status(), 403);
    assert_eq!(issuer.requests(), 0, "the untrusted issuer was contacted");
}

#[tokio::test]
async fn wrong_audience_names_both_audiences() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let token = signed(&issuer.claims(json!("sts.amazonaws.com"), SUBJECT));

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::WrongAudience { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("sts.amazonaws.com"), "{message}");
    assert!(message.contains("expect \"drydock\""), "{message}");
    assert!(message.contains(SUBJECT), "{message}");
    assert_eq!(err.http_status(), 403);
    assert_eq!(issuer.requests(), 0);
}

#[tokio::test]
async fn subject_outside_the_pattern_is_rejected() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let other_pipeline = SUBJECT.replace("pipeline:app", "pipeline:web");
    let token = signed(&issuer.claims(json!(AUDIENCE), &other_pipeline));

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::NoMatchingRule { .. }), "{err}");
    assert!(err.to_string().contains(&other_pipeline), "{err}");
    assert_eq!(issuer.requests(), 0);
}

#[tokio::test]
async fn unknown_workspace_is_not_found() {
    let issuer = TestIssuer::start().await;
    let db = Db::open_in_memory().await.unwrap();
    let token = signed(&issuer.claims(json!(AUDIENCE), SUBJECT));

    let err = rejection(exchange(&db, &token).await, &token);
    let message = err.to_string();
    assert!(message.contains("\"acme\" not found"), "{message}");
    assert!(
        message.contains("drydock admin workspace create acme"),
        "{message}"
    );
    assert_eq!(err.http_status(), 404);
    assert_eq!(issuer.requests(), 0);
}

#[tokio::test]
async fn expired_token_names_its_expiry() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let mut claims = issuer.claims(json!(AUDIENCE), SUBJECT);
    let exp = now_unix() - 3600;
    claims["exp"] = json!(exp);
    let token = signed(&claims);

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::Expired { .. }), "{err}");
    assert!(err.to_string().contains(&format_unix(exp)), "{err}");
    assert_eq!(err.http_status(), 401);
}

#[tokio::test]
async fn token_expired_within_leeway_is_accepted() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let mut claims = issuer.claims(json!(AUDIENCE), SUBJECT);
    claims["exp"] = json!(now_unix() - 30);
    assert_exchanged(&db, &issuer, &signed(&claims)).await;
}

#[tokio::test]
async fn token_not_yet_valid_is_rejected() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let mut claims = issuer.claims(json!(AUDIENCE), SUBJECT);
    let nbf = now_unix() + 3600;
    claims["nbf"] = json!(nbf);
    claims["exp"] = json!(nbf + 300);
    let token = signed(&claims);

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::NotYetValid { .. }), "{err}");
    assert!(err.to_string().contains(&format_unix(nbf)), "{err}");
}

#[tokio::test]
async fn signature_of_another_key_is_rejected() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let [published, other] = test_keys();
    // Signed by a key the issuer never published, under the kid of the one it did.
    let token = sign(
        other,
        published.kid,
        &issuer.claims(json!(AUDIENCE), SUBJECT),
    );

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains(published.kid), "{err}");
    assert_eq!(err.http_status(), 401);
}

#[tokio::test]
async fn altered_payload_is_rejected() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let genuine = signed(&issuer.claims(json!(AUDIENCE), "organization:acme:pipeline:app:x"));
    let forged_claims = issuer.claims(json!(AUDIENCE), SUBJECT);
    let forged_payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        forged_claims.to_string(),
    );
    let parts: Vec<&str> = genuine.split('.').collect();
    let token = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::BadSignature { .. }), "{err}");
}

#[tokio::test]
async fn unknown_key_id_is_rejected_without_refetch_storm() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let verifier = verifier();
    let claims = issuer.claims(json!(AUDIENCE), SUBJECT);
    verifier
        .exchange(&db, &signed(&claims), "acme", LIFETIME)
        .await
        .unwrap();

    let second = &test_keys()[1];
    let token = sign(second, second.kid, &claims);
    for _ in 0..3 {
        let err = rejection(
            verifier.exchange(&db, &token, "acme", LIFETIME).await,
            &token,
        );
        assert!(matches!(err, ExchangeError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains(second.kid), "{err}");
    }
    assert_eq!(
        issuer.requests(),
        2,
        "keys were fetched again within the refetch interval"
    );
}

#[tokio::test]
async fn rotated_key_is_found_by_refetch() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let verifier = OidcVerifier::with_key_intervals(
        reqwest::Client::new(),
        Duration::from_secs(600),
        Duration::ZERO,
    );
    let claims = issuer.claims(json!(AUDIENCE), SUBJECT);
    verifier
        .exchange(&db, &signed(&claims), "acme", LIFETIME)
        .await
        .unwrap();

    let [first, second] = test_keys();
    issuer.publish(&[first, second]);
    let token = sign(second, second.kid, &claims);
    verifier
        .exchange(&db, &token, "acme", LIFETIME)
        .await
        .expect("rotated key is fetched");
    assert_eq!(issuer.requests(), 4, "one refetch of discovery and JWKS");
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_rejected() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    issuer.set_discovery_issuer("https://impostor.test");
    let token = signed(&issuer.claims(json!(AUDIENCE), SUBJECT));

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::Discovery { .. }), "{err}");
    assert!(err.to_string().contains("impostor.test"), "{err}");
    assert_eq!(err.http_status(), 502);
}

#[tokio::test]
async fn unreachable_issuer_is_reported() {
    // Bind and drop a listener to get a loopback port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let db = trusting_db(&url).await;
    let claims = json!({"iss": url, "sub": SUBJECT, "aud": AUDIENCE, "exp": now_unix() + 300});
    let token = signed(&claims);

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(matches!(err, ExchangeError::Discovery { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "GET {url}/.well-known/openid-configuration failed"
        )),
        "{message}"
    );
    assert_eq!(err.http_status(), 502);
}

#[tokio::test]
async fn failing_issuer_is_not_asked_again_at_once() {
    let issuer = TestIssuer::start().await;
    issuer.set_unavailable();
    let db = trusting_db(&issuer.url).await;
    let token = signed(&issuer.claims(json!(AUDIENCE), SUBJECT));
    let verifier = verifier();

    let first = rejection(
        verifier.exchange(&db, &token, "acme", LIFETIME).await,
        &token,
    );
    assert!(matches!(first, ExchangeError::Discovery { .. }), "{first}");
    assert!(first.to_string().contains("503"), "{first}");
    let second = rejection(
        verifier.exchange(&db, &token, "acme", LIFETIME).await,
        &token,
    );
    assert_eq!(second.to_string(), first.to_string());
    assert_eq!(
        issuer.requests(),
        1,
        "the failing issuer was asked again at once"
    );
}

#[tokio::test]
async fn hmac_token_is_rejected_before_any_request() {
    let issuer = TestIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let claims = issuer.claims(json!(AUDIENCE), SUBJECT);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();

    let err = rejection(exchange(&db, &token).await, &token);
    assert!(
        matches!(err, ExchangeError::UnsupportedAlgorithm { .. }),
        "{err}"
    );
    assert_eq!(err.http_status(), 400);
    assert_eq!(issuer.requests(), 0);
}

#[tokio::test]
async fn malformed_token_is_rejected() {
    let db = trusting_db("https://ci.example.test").await;
    let err = rejection(exchange(&db, "not-a-jwt").await, "not-a-jwt");
    assert!(matches!(err, ExchangeError::MalformedToken { .. }), "{err}");
    assert_eq!(err.http_status(), 400);
}
