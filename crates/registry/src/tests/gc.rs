//! Garbage collection and storage usage through the registry API.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use super::{setup, TestRegistry};
use crate::reference::Digest;
use crate::WorkspaceUsage;

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux"}"#;

fn layer(repository: &str, tag: &str) -> Vec<u8> {
    format!("layer of {repository}:{tag}").into_bytes()
}

fn blob_path(registry: &TestRegistry, digest: &Digest) -> std::path::PathBuf {
    let hex = digest.hex();
    registry
        .dir
        .path()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

async fn status(registry: &TestRegistry, uri: &str) -> StatusCode {
    let token = &registry.operator;
    registry.call(token, Method::GET, uri, &[], ()).await.status
}

async fn usage_of(registry: &TestRegistry, workspace: &str) -> WorkspaceUsage {
    let usage = registry.registry.usage().await.unwrap();
    usage
        .into_iter()
        .find(|entry| entry.workspace == workspace)
        .unwrap()
}

/// Moves every blob, link and manifest touch time an hour back, as if pushed long ago.
async fn age_everything(registry: &TestRegistry) {
    for table in [
        "registry_blobs",
        "registry_blob_links",
        "registry_manifests",
    ] {
        sqlx::query(&format!(
            "UPDATE {table} SET touched_at = touched_at - 3600"
        ))
        .execute(registry.db.pool())
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn gc_frees_untagged_image_and_keeps_tagged_one() {
    let registry = setup().await;
    let token = &registry.acme;
    let (_, old) = registry.push_image(token, "acme/app", "old").await;
    let (kept_bytes, kept) = registry.push_image(token, "acme/app", "kept").await;
    let deleted = registry
        .call(token, Method::DELETE, "/v2/acme/app/manifests/old", &[], ())
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    let old_layer = Digest::sha256_of(&layer("acme/app", "old"));
    let before = usage_of(&registry, "acme").await;
    assert_eq!(before.manifests, 2);
    assert_eq!(before.tags, 1);
    assert_eq!(before.blobs, 3, "shared config and two layers");

    let dry = registry
        .registry
        .collect_garbage(Duration::ZERO, true)
        .await
        .unwrap();
    assert!(dry.dry_run);
    let freed = &dry.workspaces["acme"];
    assert_eq!(freed.manifests, 1);
    assert_eq!(freed.blobs, 1);
    assert_eq!(freed.bytes, layer("acme/app", "old").len() as u64);
    assert_eq!(dry.blobs_deleted, 1);
    assert_eq!(
        usage_of(&registry, "acme").await,
        before,
        "dry run deletes nothing"
    );
    assert!(blob_path(&registry, &old_layer).is_file());

    let report = registry
        .registry
        .collect_garbage(Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(report.workspaces, dry.workspaces);
    assert_eq!(report.blobs_deleted, 1);
    assert_eq!(report.bytes_deleted, freed.bytes);
    assert!(!blob_path(&registry, &old_layer).exists());
    let old_uri = format!("/v2/acme/app/manifests/{old}");
    assert_eq!(status(&registry, &old_uri).await, StatusCode::NOT_FOUND);
    let old_blob_uri = format!("/v2/acme/app/blobs/{old_layer}");
    assert_eq!(
        status(&registry, &old_blob_uri).await,
        StatusCode::NOT_FOUND
    );

    let pulled = registry
        .call(token, Method::GET, "/v2/acme/app/manifests/kept", &[], ())
        .await;
    assert_eq!(&pulled.body[..], &kept_bytes[..]);
    assert_eq!(pulled.header("docker-content-digest"), kept.as_str());
    for content in [CONFIG.to_vec(), layer("acme/app", "kept")] {
        let uri = format!("/v2/acme/app/blobs/{}", Digest::sha256_of(&content));
        let blob = registry.call(token, Method::GET, &uri, &[], ()).await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(&blob.body[..], &content[..]);
    }

    let after = usage_of(&registry, "acme").await;
    assert_eq!(after.manifests, 1);
    assert_eq!(after.blobs, 2);
    assert_eq!(after.bytes, before.bytes - freed.bytes);
}

#[tokio::test]
async fn gc_keeps_untagged_image_within_grace() {
    let registry = setup().await;
    let token = &registry.acme;
    let (_, digest) = registry.push_image(token, "acme/app", "v1").await;
    registry
        .call(token, Method::DELETE, "/v2/acme/app/manifests/v1", &[], ())
        .await;

    let report = registry
        .registry
        .collect_garbage(Duration::from_secs(3600), false)
        .await
        .unwrap();

    assert!(report.workspaces.is_empty(), "{:?}", report.workspaces);
    let uri = format!("/v2/acme/app/manifests/{digest}");
    assert_eq!(status(&registry, &uri).await, StatusCode::OK);
}

#[tokio::test]
async fn usage_counts_shared_blob_once_per_workspace() {
    let registry = setup().await;
    registry.push_image(&registry.acme, "acme/one", "v1").await;
    registry.push_image(&registry.acme, "acme/two", "v1").await;
    registry
        .push_image(&registry.other, "other/app", "v1")
        .await;

    let acme = usage_of(&registry, "acme").await;
    assert_eq!(acme.repositories, 2);
    assert_eq!(acme.manifests, 2);
    assert_eq!(acme.tags, 2);
    assert_eq!(acme.blobs, 3, "one shared config and two layers");
    let layers = layer("acme/one", "v1").len() + layer("acme/two", "v1").len();
    assert_eq!(acme.bytes, (CONFIG.len() + layers) as u64);
    let other = usage_of(&registry, "other").await;
    assert_eq!(other.repositories, 1);
    assert_eq!(other.blobs, 2);
}

/// Untagged images pushed an hour ago are collected while the same images (same blobs and
/// manifests) are pushed again. Every push must succeed and stay complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_racing_gc_lose_nothing() {
    let registry = Arc::new(setup().await);
    let token = registry.acme.clone();
    let tags: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    for tag in &tags {
        registry.push_image(&token, "acme/app", tag).await;
        let uri = format!("/v2/acme/app/manifests/{tag}");
        registry.call(&token, Method::DELETE, &uri, &[], ()).await;
    }
    age_everything(&registry).await;

    let mut pushes = Vec::new();
    for tag in tags.clone() {
        let registry = registry.clone();
        let token = token.clone();
        pushes.push(tokio::spawn(async move {
            registry.push_image(&token, "acme/app", &tag).await
        }));
    }
    let collector = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut freed = 0;
            for _ in 0..20 {
                let report = registry
                    .registry
                    .collect_garbage(Duration::from_secs(60), false)
                    .await
                    .unwrap();
                freed += report.blobs_deleted;
                tokio::task::yield_now().await;
            }
            freed
        })
    };
    let mut pushed = Vec::new();
    for push in pushes {
        pushed.push(push.await.unwrap());
    }
    collector.await.unwrap();

    for (tag, (manifest, _)) in tags.iter().zip(&pushed) {
        let uri = format!("/v2/acme/app/manifests/{tag}");
        let got = registry.call(&token, Method::GET, &uri, &[], ()).await;
        assert_eq!(got.status, StatusCode::OK, "{tag}");
        assert_eq!(&got.body[..], &manifest[..], "{tag}");
        for content in [CONFIG.to_vec(), layer("acme/app", tag)] {
            let digest = Digest::sha256_of(&content);
            let uri = format!("/v2/acme/app/blobs/{digest}");
            let blob = registry.call(&token, Method::GET, &uri, &[], ()).await;
            assert_eq!(blob.status, StatusCode::OK, "{tag}: blob {digest}");
            assert_eq!(&blob.body[..], &content[..], "{tag}: blob {digest}");
            assert!(blob_path(&registry, &digest).is_file(), "{tag}: {digest}");
        }
    }
}
