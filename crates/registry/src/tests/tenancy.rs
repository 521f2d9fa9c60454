//! Workspace isolation: repositories, blobs and mounts across workspaces.

use http::{Method, StatusCode};

use super::{setup, TestRegistry};
use crate::reference::Digest;

#[tokio::test]
async fn cross_workspace_pull_is_denied() {
    let registry = setup().await;
    let (_, digest) = registry.push_image(&registry.acme, "acme/app", "v1").await;
    for uri in [
        "/v2/acme/app/manifests/v1".to_owned(),
        format!("/v2/acme/app/manifests/{digest}"),
        "/v2/acme/app/tags/list".to_owned(),
    ] {
        let response = registry
            .call(&registry.other, Method::GET, &uri, &[], ())
            .await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(response.error_code(), "DENIED", "{uri}");
        let message = response.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("\"other\""), "{message}");
        assert!(message.contains("\"acme/app\""), "{message}");
    }
}

#[tokio::test]
async fn cross_workspace_push_is_denied() {
    let registry = setup().await;
    let upload = registry
        .call(
            &registry.other,
            Method::POST,
            "/v2/acme/app/blobs/uploads/",
            &[],
            (),
        )
        .await;
    assert_eq!(upload.status, StatusCode::FORBIDDEN);
    assert_eq!(upload.error_code(), "DENIED");

    let manifest = registry
        .put_manifest(
            &registry.other,
            "acme/app",
            "v1",
            crate::manifest_doc::OCI_MANIFEST,
            b"{}",
        )
        .await;
    assert_eq!(manifest.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn blob_is_invisible_outside_its_repositories() {
    let registry = setup().await;
    let digest = registry
        .push_blob(&registry.acme, "acme/app", b"acme secret layer")
        .await;
    registry
        .push_blob(&registry.other, "other/app", b"unrelated")
        .await;
    let uri = format!("/v2/other/app/blobs/{digest}");
    for method in [Method::HEAD, Method::GET] {
        let response = registry
            .call(&registry.other, method.clone(), &uri, &[], ())
            .await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{method}");
        assert!(!response.body.starts_with(b"acme secret"), "{method}");
    }
    let same_workspace = format!("/v2/acme/base/blobs/{digest}");
    let response = registry
        .call(&registry.acme, Method::GET, &same_workspace, &[], ())
        .await;
    assert_eq!(
        response.status,
        StatusCode::NOT_FOUND,
        "links are per repository"
    );
}

#[tokio::test]
async fn manifest_cannot_use_blobs_of_another_repository() {
    let registry = setup().await;
    let config = registry.push_blob(&registry.acme, "acme/app", b"{}").await;
    let layer = registry
        .push_blob(&registry.acme, "acme/app", b"layer")
        .await;
    let manifest = super::image_manifest(&config, 2, &layer, 5);
    registry
        .push_blob(&registry.other, "other/app", b"unrelated")
        .await;
    let response = registry
        .put_manifest(
            &registry.other,
            "other/app",
            "v1",
            crate::manifest_doc::OCI_MANIFEST,
            &manifest,
        )
        .await;
    assert_eq!(response.error_code(), "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn mount_needs_read_access_to_the_source() {
    let registry = setup().await;
    let digest = registry
        .push_blob(&registry.acme, "acme/app", b"mountable")
        .await;
    let mount = |target: &str, from: &str| {
        format!("/v2/{target}/blobs/uploads/?mount={digest}&from={from}")
    };

    let foreign = registry
        .call(
            &registry.other,
            Method::POST,
            &mount("other/app", "acme/app"),
            &[],
            (),
        )
        .await;
    assert_eq!(
        foreign.status,
        StatusCode::ACCEPTED,
        "falls back to an upload session"
    );
    assert!(!foreign.header("docker-upload-uuid").is_empty());
    let blob_uri = format!("/v2/other/app/blobs/{digest}");
    let hidden = registry
        .call(&registry.other, Method::HEAD, &blob_uri, &[], ())
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);

    let not_linked = registry
        .call(
            &registry.acme,
            Method::POST,
            &mount("acme/copy", "acme/base"),
            &[],
            (),
        )
        .await;
    assert_eq!(
        not_linked.status,
        StatusCode::ACCEPTED,
        "the source lacks the blob"
    );

    let mounted = registry
        .call(
            &registry.acme,
            Method::POST,
            &mount("acme/copy", "acme/app"),
            &[],
            (),
        )
        .await;
    assert_eq!(mounted.status, StatusCode::CREATED);
    assert_eq!(
        mounted.header("location"),
        format!("/v2/acme/copy/blobs/{digest}")
    );
    assert_eq!(mounted.header("docker-content-digest"), digest.as_str());
    let copy = registry
        .call(
            &registry.acme,
            Method::GET,
            &format!("/v2/acme/copy/blobs/{digest}"),
            &[],
            (),
        )
        .await;
    assert_eq!(&copy.body[..], b"mountable");
}

#[tokio::test]
async fn mount_without_source_scope_gets_challenge() {
    let registry = setup().await;
    let digest = registry
        .push_blob(&registry.acme, "acme/app", b"mountable")
        .await;
    let mount = format!("/v2/acme/copy/blobs/uploads/?mount={digest}&from=acme/app");

    let narrow = registry_token(&registry, &registry.acme, "repository:acme/copy:pull,push").await;
    let response = registry
        .send(Method::POST, &mount, Some(&narrow), &[], ())
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let challenge = response.header("www-authenticate");
    assert!(
        challenge.ends_with(r#"scope="repository:acme/copy:pull,push repository:acme/app:pull""#),
        "{challenge}"
    );

    let scopes = "repository:acme/copy:pull,push%20repository:acme/app:pull";
    let wide = registry_token(&registry, &registry.acme, scopes).await;
    let response = registry
        .send(Method::POST, &mount, Some(&wide), &[], ())
        .await;
    assert_eq!(response.status, StatusCode::CREATED);
}

#[tokio::test]
async fn foreign_mount_source_starts_upload_with_registry_token() {
    let registry = setup().await;
    let digest = registry
        .push_blob(&registry.acme, "acme/app", b"mountable")
        .await;
    let scopes = "repository:other/app:pull,push&scope=repository:acme/app:pull";
    let bearer = registry_token(&registry, &registry.other, scopes).await;
    let mount = format!("/v2/other/app/blobs/uploads/?mount={digest}&from=acme/app");
    let response = registry
        .send(Method::POST, &mount, Some(&bearer), &[], ())
        .await;
    assert_eq!(
        response.status,
        StatusCode::ACCEPTED,
        "never a 401 or 403 that hints at acme"
    );
}

/// Fetches a registry token for the query value `scopes` and formats it as a bearer value.
async fn registry_token(registry: &TestRegistry, api_token: &str, scopes: &str) -> String {
    let uri = format!("/auth/token?scope={scopes}");
    let response = registry.call(api_token, Method::GET, &uri, &[], ()).await;
    format!("Bearer {}", response.json()["token"].as_str().unwrap())
}

#[tokio::test]
async fn operator_reaches_every_workspace() {
    let registry = setup().await;
    registry
        .push_image(&registry.operator, "acme/app", "v1")
        .await;
    registry
        .push_image(&registry.operator, "other/team/app", "v1")
        .await;
    let response = registry
        .call(
            &registry.operator,
            Method::GET,
            "/v2/acme/app/manifests/v1",
            &[],
            (),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let pulled = registry
        .call(
            &registry.acme,
            Method::GET,
            "/v2/acme/app/manifests/v1",
            &[],
            (),
        )
        .await;
    assert_eq!(
        pulled.status,
        StatusCode::OK,
        "the workspace sees what the operator pushed"
    );
}

#[tokio::test]
async fn push_to_missing_workspace_is_name_unknown() {
    let registry = setup().await;
    let digest = Digest::sha256_of(b"x");
    let uri = format!("/v2/ghost/app/blobs/uploads/?digest={digest}");
    let response = registry
        .call(&registry.operator, Method::POST, &uri, &[], "x")
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.error_code(), "NAME_UNKNOWN");
    let message = response.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("drydock admin workspace create ghost"),
        "{message}"
    );
}

#[tokio::test]
async fn invalid_repository_name_is_rejected() {
    let registry = setup().await;
    for uri in [
        "/v2/Acme/App/tags/list",
        "/v2/app/tags/list",
        "/v2/acme/a..b/tags/list",
    ] {
        let response = registry
            .call(&registry.acme, Method::GET, uri, &[], ())
            .await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(response.error_code(), "NAME_INVALID", "{uri}");
    }
}
