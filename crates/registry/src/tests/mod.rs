//! Router tests: requests sent in-process to the registry router, with an in-memory
//! database and blobs in a temporary folder.

mod auth_flow;
mod blob_uploads;
mod edge_cases;
mod gc;
mod manifest_api;
mod tenancy;

use axum::body::Body;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use drydock_store::{Db, TokenKind};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::reference::Digest;
use crate::{Registry, RegistryConfig};

pub(crate) struct TestRegistry {
    pub registry: Registry,
    pub router: Router,
    pub db: Db,
    pub dir: tempfile::TempDir,
    /// Workspace token of "acme".
    pub acme: String,
    /// Workspace token of "other".
    pub other: String,
    pub operator: String,
}

pub(crate) struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Returns the code of the first error in an OCI error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub(crate) async fn setup() -> TestRegistry {
    let db = Db::open_in_memory().await.unwrap();
    db.create_workspace("acme").await.unwrap();
    db.create_workspace("other").await.unwrap();
    let acme = db
        .issue_token(TokenKind::Workspace, Some("acme"), "ci-acme", None)
        .await
        .unwrap();
    let other = db
        .issue_token(TokenKind::Workspace, Some("other"), "ci-other", None)
        .await
        .unwrap();
    let operator = db
        .issue_token(TokenKind::Operator, None, "admin", None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = RegistryConfig {
        data_dir: dir.path().to_owned(),
        public_url: "http://127.0.0.1:5000".parse().unwrap(),
    };
    let registry = Registry::new(db.clone(), config).await.unwrap();
    TestRegistry {
        router: registry.router(),
        registry,
        db,
        dir,
        acme,
        other,
        operator,
    }
}

/// Formats an `Authorization` value with an API token as the Basic password.
pub(crate) fn basic(token: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("user:{token}")))
}

impl TestRegistry {
    /// Sends a request with optional `Authorization` value and extra headers.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        authorization: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(value) = authorization {
            builder = builder.header("authorization", value);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(builder.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// Sends a request authenticated with an API token as the Basic password.
    pub async fn call(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> TestResponse {
        self.send(method, uri, Some(&basic(token)), headers, body)
            .await
    }

    /// Pushes a blob monolithically and returns its digest.
    pub async fn push_blob(&self, token: &str, repository: &str, content: &[u8]) -> Digest {
        let digest = Digest::sha256_of(content);
        let uri = format!("/v2/{repository}/blobs/uploads/?digest={digest}");
        let response = self
            .call(token, Method::POST, &uri, &[], content.to_vec())
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        digest
    }

    /// Pushes a manifest under `reference` and returns the response.
    pub async fn put_manifest(
        &self,
        token: &str,
        repository: &str,
        reference: &str,
        media_type: &str,
        content: &[u8],
    ) -> TestResponse {
        let uri = format!("/v2/{repository}/manifests/{reference}");
        self.call(
            token,
            Method::PUT,
            &uri,
            &[("content-type", media_type)],
            content.to_vec(),
        )
        .await
    }

    /// Pushes a config and a layer and an OCI image manifest referring to them, tagged
    /// `tag`; returns the manifest bytes and digest.
    pub async fn push_image(&self, token: &str, repository: &str, tag: &str) -> (Vec<u8>, Digest) {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let layer = format!("layer of {repository}:{tag}").into_bytes();
        let config_digest = self.push_blob(token, repository, config).await;
        let layer_digest = self.push_blob(token, repository, &layer).await;
        let manifest = image_manifest(&config_digest, config.len(), &layer_digest, layer.len());
        let response = self
            .put_manifest(
                token,
                repository,
                tag,
                crate::manifest_doc::OCI_MANIFEST,
                &manifest,
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
        let digest = Digest::sha256_of(&manifest);
        (manifest, digest)
    }
}

/// Builds an OCI image manifest, pretty-printed so that its bytes differ from a
/// re-serialisation.
pub(crate) fn image_manifest(
    config: &Digest,
    config_size: usize,
    layer: &Digest,
    layer_size: usize,
) -> Vec<u8> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest_doc::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.as_str(),
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer.as_str(),
            "size": layer_size,
        }],
    });
    serde_json::to_vec_pretty(&manifest).unwrap()
}
