//! A local OIDC issuer for tests: serves discovery and a JWKS on 127.0.0.1 and counts
//! every request it receives.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

/// An RSA signing key with its public half as a JWK.
pub(crate) struct TestKey {
    pub kid: &'static str,
    encoding: EncodingKey,
    jwk: Value,
}

/// Two RSA-2048 keys, generated once per test run because generation takes seconds.
/// Smaller keys would not do, because ring's RSA verification algorithms start at 2048 bits.
pub(crate) fn test_keys() -> &'static [TestKey; 2] {
    static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| [generate_key("key-a"), generate_key("key-b")])
}

fn generate_key(kid: &'static str) -> TestKey {
    let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("generate RSA key");
    let der = private.to_pkcs1_der().expect("encode RSA key");
    let jwk = json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
    });
    TestKey {
        kid,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk,
    }
}

struct IssuerState {
    requests: AtomicUsize,
    /// When set, discovery responds with 503.
    unavailable: AtomicBool,
    /// The `issuer` that the discovery document states.
    issuer: Mutex<String>,
    jwks_uri: String,
    keys: Mutex<Vec<Value>>,
}

/// A running test issuer. The server stops when the test's runtime ends.
pub(crate) struct TestIssuer {
    /// Base URL, such as `http://127.0.0.1:41234`, which is also the issuer.
    pub url: String,
    state: Arc<IssuerState>,
}

impl TestIssuer {
    /// Starts an issuer that publishes the first of [`test_keys`].
    pub async fn start() -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind issuer");
        let url = format!("http://{}", listener.local_addr().expect("issuer address"));
        let state = Arc::new(IssuerState {
            requests: AtomicUsize::new(0),
            unavailable: AtomicBool::new(false),
            issuer: Mutex::new(url.clone()),
            jwks_uri: format!("{url}/jwks"),
            keys: Mutex::new(vec![test_keys()[0].jwk.clone()]),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .fallback(not_found)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        TestIssuer { url, state }
    }

    /// Number of HTTP requests received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Makes discovery respond with 503 Service Unavailable.
    pub fn set_unavailable(&self) {
        self.state.unavailable.store(true, Ordering::SeqCst);
    }

    /// Sets the `issuer` that the discovery document states.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        *self.state.issuer.lock().unwrap() = issuer.to_owned();
    }

    /// Publishes `keys` in place of the current JWKS.
    pub fn publish(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|key| key.jwk.clone()).collect();
    }

    /// Claims of a valid token from this issuer, valid from a minute ago for five minutes.
    pub fn claims(&self, audience: Value, subject: &str) -> Value {
        let now = drydock_store::now_unix();
        json!({
            "iss": self.url,
            "sub": subject,
            "aud": audience,
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 300,
        })
    }
}

/// Signs `claims` with RS256 and `key`, putting `kid` in the header.
pub(crate) fn sign(key: &TestKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign test token")
}

async fn discovery(State(state): State<Arc<IssuerState>>) -> Result<Json<Value>, StatusCode> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if state.unavailable.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let issuer = state.issuer.lock().unwrap().clone();
    Ok(Json(json!({
        "issuer": issuer,
        "jwks_uri": state.jwks_uri,
        "id_token_signing_alg_values_supported": ["RS256"],
    })))
}

async fn jwks(State(state): State<Arc<IssuerState>>) -> Json<Value> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let keys = state.keys.lock().unwrap().clone();
    Json(json!({ "keys": keys }))
}

async fn not_found(State(state): State<Arc<IssuerState>>) -> StatusCode {
    state.requests.fetch_add(1, Ordering::SeqCst);
    StatusCode::NOT_FOUND
}
