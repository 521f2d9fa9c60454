//! Blob uploads and blob reads.

use std::time::Duration;

use http::{Method, StatusCode};

use super::setup;
use crate::reference::Digest;

#[tokio::test]
async fn monolithic_upload_is_readable() {
    let registry = setup().await;
    let content = b"monolithic blob content";
    let digest = Digest::sha256_of(content);
    let uri = format!("/v2/acme/app/blobs/uploads/?digest={digest}");
    let created = registry
        .call(&registry.acme, Method::POST, &uri, &[], content.to_vec())
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.header("location"),
        format!("/v2/acme/app/blobs/{digest}")
    );
    assert_eq!(created.header("docker-content-digest"), digest.as_str());

    let blob_uri = format!("/v2/acme/app/blobs/{digest}");
    let head = registry
        .call(&registry.acme, Method::HEAD, &blob_uri, &[], ())
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), content.len().to_string());
    assert_eq!(head.header("docker-content-digest"), digest.as_str());
    assert_eq!(head.header("content-type"), "application/octet-stream");
    assert!(head.body.is_empty());

    let get = registry
        .call(&registry.acme, Method::GET, &blob_uri, &[], ())
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(&get.body[..], content);
    assert_eq!(get.header("content-length"), head.header("content-length"));

    let hex = digest.hex();
    let stored = registry
        .dir
        .path()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    assert_eq!(std::fs::read(stored).unwrap(), content);
}

#[tokio::test]
async fn sha512_digests_are_verified() {
    let registry = setup().await;
    let content = b"sha512 content";
    let mut hasher = crate::reference::DigestHasher::new(crate::Algorithm::Sha512);
    hasher.update(content);
    let digest = hasher.finish();
    let uri = format!("/v2/acme/app/blobs/uploads/?digest={digest}");
    let created = registry
        .call(&registry.acme, Method::POST, &uri, &[], content.to_vec())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let get = registry
        .call(
            &registry.acme,
            Method::GET,
            &format!("/v2/acme/app/blobs/{digest}"),
            &[],
            (),
        )
        .await;
    assert_eq!(&get.body[..], content);
}

#[tokio::test]
async fn blob_range_request_returns_part() {
    let registry = setup().await;
    let digest = registry
        .push_blob(&registry.acme, "acme/app", b"0123456789")
        .await;
    let uri = format!("/v2/acme/app/blobs/{digest}");
    let part = registry
        .call(
            &registry.acme,
            Method::GET,
            &uri,
            &[("range", "bytes=2-5")],
            (),
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&part.body[..], b"2345");
    assert_eq!(part.header("content-range"), "bytes 2-5/10");
    assert_eq!(part.header("content-length"), "4");

    let past_end = registry
        .call(
            &registry.acme,
            Method::GET,
            &uri,
            &[("range", "bytes=20-")],
            (),
        )
        .await;
    assert_eq!(past_end.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past_end.error_code(), "RANGE_INVALID");
}

#[tokio::test]
async fn chunked_upload_assembles_chunks() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    assert_eq!(started.header("range"), "0-0");
    let location = started.header("location").to_owned();
    let id = started.header("docker-upload-uuid").to_owned();
    assert_eq!(location, format!("/v2/acme/app/blobs/uploads/{id}"));

    let first = registry
        .call(
            token,
            Method::PATCH,
            &location,
            &[("content-range", "0-4"), ("content-length", "5")],
            "hello",
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert_eq!(first.header("range"), "0-4");
    assert_eq!(first.header("location"), location);

    let status = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), "0-4");
    assert_eq!(status.header("docker-upload-uuid"), id);

    let second = registry
        .call(
            token,
            Method::PATCH,
            &location,
            &[("content-range", "5-10")],
            " world",
        )
        .await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.header("range"), "0-10");

    let digest = Digest::sha256_of(b"hello world!");
    let done = registry
        .call(
            token,
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[("content-range", "11-11")],
            "!",
        )
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);
    assert_eq!(done.header("docker-content-digest"), digest.as_str());

    let blob = registry
        .call(
            token,
            Method::GET,
            &format!("/v2/acme/app/blobs/{digest}"),
            &[],
            (),
        )
        .await;
    assert_eq!(&blob.body[..], b"hello world!");
    let gone = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(
        gone.status,
        StatusCode::NOT_FOUND,
        "a finished upload is closed"
    );
    assert_eq!(gone.error_code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn streamed_patch_without_content_range_is_appended() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let location = started.header("location").to_owned();
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("str"), Ok("eam"), Ok("ed")];
    let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
    let patched = registry
        .call(token, Method::PATCH, &location, &[], body)
        .await;
    assert_eq!(patched.status, StatusCode::ACCEPTED);
    assert_eq!(patched.header("range"), "0-7");

    let digest = Digest::sha256_of(b"streamed");
    let done = registry
        .call(
            token,
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[],
            (),
        )
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);
}

#[tokio::test]
async fn out_of_order_chunk_gets_416() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let location = started.header("location").to_owned();
    registry
        .call(
            token,
            Method::PATCH,
            &location,
            &[("content-range", "0-4")],
            "hello",
        )
        .await;

    let skipped = registry
        .call(
            token,
            Method::PATCH,
            &location,
            &[("content-range", "10-14")],
            "later",
        )
        .await;
    assert_eq!(skipped.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(skipped.error_code(), "RANGE_INVALID");
    assert_eq!(skipped.header("range"), "0-4");
    assert_eq!(skipped.header("location"), location);

    let repeated = registry
        .call(
            token,
            Method::PATCH,
            &location,
            &[("content-range", "0-4")],
            "hello",
        )
        .await;
    assert_eq!(repeated.status, StatusCode::RANGE_NOT_SATISFIABLE);

    let status = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(status.header("range"), "0-4", "rejected chunks add nothing");
}

#[tokio::test]
async fn chunk_shorter_than_its_range_is_dropped() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let location = started.header("location").to_owned();
    let short = registry
        .call(
            token,
            Method::PATCH,
            &location,
            &[("content-range", "0-9")],
            "abc",
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert_eq!(short.error_code(), "SIZE_INVALID");
    let status = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(status.header("range"), "0-0");
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let registry = setup().await;
    let token = &registry.acme;
    let claimed = Digest::sha256_of(b"what the client claims");
    let actual = Digest::sha256_of(b"what it sends");

    let uri = format!("/v2/acme/app/blobs/uploads/?digest={claimed}");
    let rejected = registry
        .call(token, Method::POST, &uri, &[], "what it sends")
        .await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    assert_eq!(rejected.error_code(), "DIGEST_INVALID");

    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let location = started.header("location").to_owned();
    registry
        .call(token, Method::PATCH, &location, &[], "what it sends")
        .await;
    let put_uri = format!("{location}?digest={claimed}");
    let rejected = registry.call(token, Method::PUT, &put_uri, &[], ()).await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    assert_eq!(rejected.error_code(), "DIGEST_INVALID");
    let session = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(
        session.status,
        StatusCode::NOT_FOUND,
        "the failed upload is discarded"
    );

    for digest in [&claimed, &actual] {
        let uri = format!("/v2/acme/app/blobs/{digest}");
        let head = registry.call(token, Method::HEAD, &uri, &[], ()).await;
        assert_eq!(head.status, StatusCode::NOT_FOUND, "{digest}");
    }
    let blob_files = walk_files(&registry.dir.path().join("blobs"));
    assert!(blob_files.is_empty(), "{blob_files:?}");
    let staged = walk_files(&registry.dir.path().join("uploads"));
    assert!(staged.is_empty(), "{staged:?}");
}

#[tokio::test]
async fn cancelled_upload_is_removed() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let location = started.header("location").to_owned();
    registry
        .call(token, Method::PATCH, &location, &[], "partial")
        .await;
    let cancelled = registry
        .call(token, Method::DELETE, &location, &[], ())
        .await;
    assert_eq!(cancelled.status, StatusCode::NO_CONTENT);
    let status = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(status.error_code(), "BLOB_UPLOAD_UNKNOWN");
    assert!(walk_files(&registry.dir.path().join("uploads")).is_empty());
}

#[tokio::test]
async fn upload_session_is_bound_to_its_repository() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let id = started.header("docker-upload-uuid").to_owned();
    let elsewhere = format!("/v2/acme/other-app/blobs/uploads/{id}");
    let response = registry
        .call(token, Method::PATCH, &elsewhere, &[], "data")
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.error_code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn deleted_blob_is_unlinked_from_the_repository() {
    let registry = setup().await;
    let token = &registry.acme;
    let digest = registry.push_blob(token, "acme/app", b"shared").await;
    registry.push_blob(token, "acme/other", b"shared").await;
    let uri = format!("/v2/acme/app/blobs/{digest}");
    let deleted = registry.call(token, Method::DELETE, &uri, &[], ()).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    let gone = registry.call(token, Method::GET, &uri, &[], ()).await;
    assert_eq!(gone.error_code(), "BLOB_UNKNOWN");
    let again = registry.call(token, Method::DELETE, &uri, &[], ()).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    let other_uri = format!("/v2/acme/other/blobs/{digest}");
    let kept = registry.call(token, Method::GET, &other_uri, &[], ()).await;
    assert_eq!(
        &kept.body[..],
        b"shared",
        "other repositories keep the blob"
    );
}

#[tokio::test]
async fn stale_uploads_are_purged() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let location = started.header("location").to_owned();
    let config = crate::RegistryConfig {
        data_dir: registry.dir.path().to_owned(),
        public_url: "http://127.0.0.1:5000".parse().unwrap(),
    };
    let handle = crate::Registry::new(registry.db.clone(), config)
        .await
        .unwrap();

    assert_eq!(
        handle
            .purge_stale_uploads(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let kept = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(
        kept.status,
        StatusCode::NO_CONTENT,
        "a fresh upload is kept"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(handle.purge_stale_uploads(Duration::ZERO).await.unwrap(), 1);
    let purged = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(purged.status, StatusCode::NOT_FOUND);
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}
