//! Runs the `drydock-dev-oidc-issuer` binary and exchanges its tokens with
//! `drydock_identity::OidcVerifier`.

use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use drydock_identity::{ExchangeError, OidcVerifier};
use drydock_store::Db;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_drydock-dev-oidc-issuer");

/// Time allowed for the issuer to generate its key and listen. RSA key generation is the
/// slow part, and its time varies with the machine and the build profile.
const START_TIMEOUT: Duration = Duration::from_secs(120);

struct RunningIssuer {
    url: String,
    http: reqwest::Client,
    // Kept so that the process is killed, and the folder removed, when the test ends.
    _child: Child,
    _dir: tempfile::TempDir,
}

impl RunningIssuer {
    async fn start() -> RunningIssuer {
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("issuer-url");
        let mut child = Command::new(BINARY)
            .args(["--listen", "127.0.0.1:0", "--url-file"])
            .arg(&url_file)
            // Only warnings reach the test output, such as rejected requests.
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start drydock-dev-oidc-issuer");
        let stdout = child.stdout.take().unwrap();
        let mut first_line = String::new();
        tokio::time::timeout(
            START_TIMEOUT,
            BufReader::new(stdout).read_line(&mut first_line),
        )
        .await
        .expect("issuer printed its URL in time")
        .unwrap();
        let url = first_line.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let from_file = std::fs::read_to_string(&url_file).unwrap();
        assert_eq!(from_file.trim(), url);

        RunningIssuer {
            url,
            http: reqwest::Client::new(),
            _child: child,
            _dir: dir,
        }
    }

    async fn post(
        &self,
        path: &str,
        authorization: Option<&str>,
        body: Value,
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        request.send().await.unwrap()
    }

    async fn token(&self, path: &str, authorization: Option<&str>, body: Value) -> String {
        let response = self.post(path, authorization, body).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["token"]
            .as_str()
            .expect("response has a token")
            .to_owned()
    }
}

/// Creates a database whose workspace "acme" trusts `issuer` for audience "drydock" and
/// pipeline acme/app.
async fn trusting_db(issuer: &str) -> Db {
    let db = Db::open_in_memory().await.unwrap();
    db.create_workspace("acme").await.unwrap();
    db.add_trust_rule(
        "acme",
        issuer,
        "drydock",
        "organization:acme:pipeline:app:*",
    )
    .await
    .unwrap();
    db
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn issuer_serves_discovery_and_jwks() {
    let issuer = RunningIssuer::start().await;
    let discovery: Value = issuer
        .http
        .get(format!("{}/.well-known/openid-configuration", issuer.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer.url.as_str());
    assert_eq!(
        discovery["jwks_uri"],
        format!("{}/jwks", issuer.url).as_str()
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(discovery["response_types_supported"], json!(["id_token"]));
    assert_eq!(discovery["subject_types_supported"], json!(["public"]));
    let claims_supported = discovery["claims_supported"].as_array().unwrap();
    assert!(
        claims_supported.contains(&json!("pipeline_slug")),
        "{claims_supported:?}"
    );

    let jwks: Value = issuer
        .http
        .get(format!("{}/jwks", issuer.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert!(
        keys[0]["kid"].as_str().is_some_and(|kid| kid.len() == 43),
        "{}",
        keys[0]
    );
}

#[tokio::test]
async fn minted_token_is_exchanged() {
    let issuer = RunningIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let request = json!({
        "audience": "drydock",
        "organization": "acme",
        "pipeline": "app",
        "branch": "feature",
        "commit": "abc123",
        "step": "build",
        "lifetime_secs": 300,
    });
    let token = issuer.token("/token", None, request).await;

    let claims = payload(&token);
    let subject = "organization:acme:pipeline:app:ref:refs/heads/feature:commit:abc123:step:build";
    assert_eq!(claims["sub"], subject);
    assert_eq!(claims["iss"], issuer.url.as_str());
    assert_eq!(claims["aud"], "drydock");
    assert_eq!(claims["build_branch"], "feature");
    assert_eq!(claims["build_commit"], "abc123");
    assert_eq!(claims["step_key"], "build");
    assert_eq!(claims["organization_slug"], "acme");
    assert_eq!(claims["pipeline_slug"], "app");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );

    let verifier = OidcVerifier::new(reqwest::Client::new());
    let exchanged = verifier
        .exchange(&db, &token, "acme", Duration::from_secs(600))
        .await
        .expect("token of the development issuer is exchanged");
    assert_eq!(exchanged.subject, subject);
    assert_eq!(exchanged.issuer, issuer.url);
    assert_eq!(exchanged.workspace, "acme");
}

#[tokio::test]
async fn negative_lifetime_gives_expired_token() {
    let issuer = RunningIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let token = issuer
        .token("/token", None, json!({"lifetime_secs": -120}))
        .await;

    let verifier = OidcVerifier::new(reqwest::Client::new());
    let err = verifier
        .exchange(&db, &token, "acme", Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::Expired { .. }), "{err}");
}

#[tokio::test]
async fn future_not_before_is_rejected() {
    let issuer = RunningIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let request = json!({"not_before_offset_secs": 600, "lifetime_secs": 900});
    let token = issuer.token("/token", None, request).await;

    let verifier = OidcVerifier::new(reqwest::Client::new());
    let err = verifier
        .exchange(&db, &token, "acme", Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::NotYetValid { .. }), "{err}");
}

#[tokio::test]
async fn agent_endpoint_mints_exchangeable_token() {
    let issuer = RunningIssuer::start().await;
    let db = trusting_db(&issuer.url).await;
    let job = "0190d0f1-5b6c-4a1e-9c2d-3e4f5a6b7c8d";
    let body = json!({"audience": "drydock", "lifetime": 120, "claims": ["pipeline_id"]});
    let path = format!("/v3/jobs/{job}/oidc/tokens");
    let token = issuer
        .token(&path, Some("Token agent-access-token"), body)
        .await;

    let claims = payload(&token);
    assert_eq!(claims["job_id"], job);
    assert_eq!(claims["aud"], "drydock");
    assert!(claims["pipeline_id"].as_str().is_some(), "{claims}");
    assert!(claims.get("organization_id").is_none(), "{claims}");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );

    let verifier = OidcVerifier::new(reqwest::Client::new());
    let exchanged = verifier
        .exchange(&db, &token, "acme", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        exchanged
            .subject
            .starts_with("organization:acme:pipeline:app:"),
        "{}",
        exchanged.subject
    );
}

#[tokio::test]
async fn agent_endpoint_rejects_bad_requests() {
    let issuer = RunningIssuer::start().await;
    let path = "/v3/jobs/job-1/oidc/tokens";

    let response = issuer
        .post(path, None, json!({"audience": "drydock"}))
        .await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("BUILDKITE_AGENT_ACCESS_TOKEN"),
        "{body}"
    );

    let response = issuer
        .post(path, Some("Token x"), json!({"claims": ["cluster_id"]}))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("\"cluster_id\""),
        "{body}"
    );

    let response = issuer
        .post(path, Some("Token x"), json!({"lifetime": -1}))
        .await;
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn subject_claim_replaces_the_subject() {
    let issuer = RunningIssuer::start().await;
    let body = json!({"audience": "drydock", "subject_claim": "pipeline_id"});
    let token = issuer
        .token("/v3/jobs/job-1/oidc/tokens", Some("Token x"), body)
        .await;
    let claims = payload(&token);
    assert_eq!(claims["sub"], claims["pipeline_id"]);
}

#[tokio::test]
async fn non_loopback_listen_address_is_rejected() {
    let output = Command::new(BINARY)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listens only on loopback"), "{stderr}");
}
