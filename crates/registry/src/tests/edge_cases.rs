//! Protocol cases that the OCI conformance suite does not reach: rejected chunks leave the
//! staged data as it was, streamed and ranged chunks mix, `HEAD` and `GET` agree, and tag
//! pages are clamped to the largest page size.

use http::{Method, StatusCode};

use super::setup;
use crate::listing::MAX_TAGS_PER_PAGE;
use crate::manifest_doc::OCI_MANIFEST;
use crate::reference::Digest;

#[tokio::test]
async fn rejected_chunks_leave_staged_data_unchanged() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let location = started.header("location").to_owned();
    let id = started.header("docker-upload-uuid").to_owned();
    let first = registry
        .call(
            token,
            Method::PATCH,
            &location,
            &[("content-range", "0-4")],
            "hello",
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);

    // A chunk that rewrites acknowledged bytes, one that overlaps their end, and one whose
    // Content-Length disagrees with its Content-Range.
    let rejected: [(&str, Option<&str>, &str); 3] = [
        ("0-4", None, "HELLO"),
        ("3-7", None, "LOWOR"),
        ("5-10", Some("3"), " world"),
    ];
    for (content_range, content_length, body) in rejected {
        let mut headers = vec![("content-range", content_range)];
        if let Some(length) = content_length {
            headers.push(("content-length", length));
        }
        let response = registry
            .call(token, Method::PATCH, &location, &headers, body)
            .await;
        assert_eq!(
            response.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{content_range}"
        );
        assert_eq!(response.error_code(), "RANGE_INVALID", "{content_range}");
        assert_eq!(response.header("range"), "0-4", "{content_range}");
        assert_eq!(response.header("location"), location, "{content_range}");
        assert_eq!(response.header("docker-upload-uuid"), id, "{content_range}");
    }

    let status = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(status.status, StatusCode::NO_CONTENT);
    assert_eq!(status.header("range"), "0-4");
    assert_eq!(status.header("location"), location);
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
    assert_eq!(second.status, StatusCode::ACCEPTED, "{:?}", second.body);
    assert_eq!(second.header("range"), "0-10");

    // Only the acknowledged bytes are in the blob, so its digest matches.
    let digest = Digest::sha256_of(b"hello world");
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
    let blob = registry
        .call(
            token,
            Method::GET,
            &format!("/v2/acme/app/blobs/{digest}"),
            &[],
            (),
        )
        .await;
    assert_eq!(&blob.body[..], b"hello world");
}

#[tokio::test]
async fn streamed_and_ranged_chunks_continue_each_other() {
    let registry = setup().await;
    let token = &registry.acme;
    let started = registry
        .call(token, Method::POST, "/v2/acme/app/blobs/uploads/", &[], ())
        .await;
    let location = started.header("location").to_owned();

    let streamed = registry
        .call(token, Method::PATCH, &location, &[], "stream")
        .await;
    assert_eq!(streamed.status, StatusCode::ACCEPTED);
    assert_eq!(streamed.header("range"), "0-5");
    let streamed_again = registry
        .call(token, Method::PATCH, &location, &[], "ed ")
        .await;
    assert_eq!(streamed_again.status, StatusCode::ACCEPTED);
    assert_eq!(streamed_again.header("range"), "0-8");
    let ranged = registry
        .call(
            token,
            Method::PATCH,
            &location,
            &[("content-range", "9-13")],
            "chunk",
        )
        .await;
    assert_eq!(ranged.status, StatusCode::ACCEPTED, "{:?}", ranged.body);
    assert_eq!(ranged.header("range"), "0-13");

    let status = registry.call(token, Method::GET, &location, &[], ()).await;
    assert_eq!(status.header("range"), "0-13");

    // The closing PUT carries the last byte without a Content-Range.
    let digest = Digest::sha256_of(b"streamed chunk!");
    let done = registry
        .call(
            token,
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[],
            "!",
        )
        .await;
    assert_eq!(done.status, StatusCode::CREATED, "{:?}", done.body);
    let blob = registry
        .call(
            token,
            Method::GET,
            &format!("/v2/acme/app/blobs/{digest}"),
            &[],
            (),
        )
        .await;
    assert_eq!(&blob.body[..], b"streamed chunk!");
}

#[tokio::test]
async fn blob_head_and_get_agree() {
    let registry = setup().await;
    let token = &registry.acme;
    let digest = registry.push_blob(token, "acme/app", b"head and get").await;
    let missing = Digest::sha256_of(b"never pushed");

    for (digest, status) in [(&digest, StatusCode::OK), (&missing, StatusCode::NOT_FOUND)] {
        let uri = format!("/v2/acme/app/blobs/{digest}");
        let get = registry.call(token, Method::GET, &uri, &[], ()).await;
        let head = registry.call(token, Method::HEAD, &uri, &[], ()).await;
        assert_eq!(get.status, status, "{digest}");
        assert_eq!(head.status, status, "{digest}");
        assert!(head.body.is_empty(), "{digest}: HEAD has no body");
        assert_eq!(
            head.header("content-length"),
            get.body.len().to_string(),
            "{digest}"
        );
        for name in [
            "content-length",
            "content-type",
            "docker-content-digest",
            "etag",
            "accept-ranges",
        ] {
            assert_eq!(head.header(name), get.header(name), "{digest}: {name}");
        }
    }
}

#[tokio::test]
async fn tag_list_clamps_oversized_page() {
    let registry = setup().await;
    let token = &registry.acme;
    let (manifest, _) = registry.push_image(token, "acme/app", "t0000").await;
    let tag_count = MAX_TAGS_PER_PAGE as usize + 1;
    for number in 1..tag_count {
        let tag = format!("t{number:04}");
        let response = registry
            .put_manifest(token, "acme/app", &tag, OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{tag}");
    }

    let oversized = format!("/v2/acme/app/tags/list?n={}", 5 * MAX_TAGS_PER_PAGE);
    let first = registry.call(token, Method::GET, &oversized, &[], ()).await;
    assert_eq!(first.status, StatusCode::OK);
    let tags = first.json()["tags"].as_array().unwrap().clone();
    assert_eq!(tags.len(), MAX_TAGS_PER_PAGE as usize);
    assert_eq!(tags[0], "t0000");
    let last_tag = format!("t{:04}", MAX_TAGS_PER_PAGE - 1);
    assert_eq!(tags[tags.len() - 1], last_tag.as_str());
    let link = first.header("link").to_owned();
    assert_eq!(
        link,
        format!("</v2/acme/app/tags/list?n={MAX_TAGS_PER_PAGE}&last={last_tag}>; rel=\"next\"")
    );

    let next_uri = link.trim_start_matches('<').split('>').next().unwrap();
    let second = registry.call(token, Method::GET, next_uri, &[], ()).await;
    let last = format!("t{:04}", tag_count - 1);
    assert_eq!(second.json()["tags"], serde_json::json!([last]));
    assert_eq!(second.header("link"), "", "the last page has no next link");

    let after_all = format!("/v2/acme/app/tags/list?last={last}");
    let empty = registry.call(token, Method::GET, &after_all, &[], ()).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json()["tags"], serde_json::json!([]));
    assert_eq!(empty.header("link"), "");
}
