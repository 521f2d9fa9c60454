//! Manifests, tags and referrers.

use http::{Method, StatusCode};

use super::{image_manifest, setup};
use crate::manifest_doc::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::reference::Digest;

#[tokio::test]
async fn manifest_round_trip_is_byte_exact() {
    let registry = setup().await;
    let token = &registry.acme;
    let (manifest, digest) = registry.push_image(token, "acme/app", "v1").await;

    for reference in ["v1", digest.as_str()] {
        let uri = format!("/v2/acme/app/manifests/{reference}");
        let get = registry.call(token, Method::GET, &uri, &[], ()).await;
        assert_eq!(get.status, StatusCode::OK, "{reference}");
        assert_eq!(&get.body[..], &manifest[..], "{reference}: bytes as pushed");
        assert_eq!(get.header("content-type"), OCI_MANIFEST);
        assert_eq!(get.header("docker-content-digest"), digest.as_str());
        assert_eq!(get.header("content-length"), manifest.len().to_string());

        let head = registry.call(token, Method::HEAD, &uri, &[], ()).await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty());
        for name in [
            "content-type",
            "content-length",
            "docker-content-digest",
            "etag",
        ] {
            assert_eq!(
                head.header(name),
                get.header(name),
                "{reference}: header {name}"
            );
        }
    }
}

#[tokio::test]
async fn manifest_put_returns_location_and_digest() {
    let registry = setup().await;
    let token = &registry.acme;
    let config = registry.push_blob(token, "acme/app", b"{}").await;
    let layer = registry.push_blob(token, "acme/app", b"layer").await;
    let manifest = image_manifest(&config, 2, &layer, 5);
    let digest = Digest::sha256_of(&manifest);
    let created = registry
        .put_manifest(token, "acme/app", "latest", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.header("location"),
        format!("/v2/acme/app/manifests/{digest}")
    );
    assert_eq!(created.header("docker-content-digest"), digest.as_str());
    assert_eq!(created.header("oci-subject"), "");
}

#[tokio::test]
async fn manifest_with_unknown_blob_is_rejected() {
    let registry = setup().await;
    let token = &registry.acme;
    let config = registry.push_blob(token, "acme/app", b"{}").await;
    let missing = Digest::sha256_of(b"never pushed");
    let manifest = image_manifest(&config, 2, &missing, 12);
    let rejected = registry
        .put_manifest(token, "acme/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(rejected.status, StatusCode::BAD_REQUEST);
    assert_eq!(rejected.error_code(), "MANIFEST_BLOB_UNKNOWN");
    let lookup = registry
        .call(token, Method::GET, "/v2/acme/app/manifests/v1", &[], ())
        .await;
    assert_eq!(lookup.status, StatusCode::NOT_FOUND);
    assert_eq!(lookup.error_code(), "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn manifest_pushed_by_digest_must_match() {
    let registry = setup().await;
    let token = &registry.acme;
    let config = registry.push_blob(token, "acme/app", b"{}").await;
    let layer = registry.push_blob(token, "acme/app", b"layer").await;
    let manifest = image_manifest(&config, 2, &layer, 5);
    let wrong = Digest::sha256_of(b"something else");
    let rejected = registry
        .put_manifest(token, "acme/app", wrong.as_str(), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(rejected.error_code(), "DIGEST_INVALID");

    let right = Digest::sha256_of(&manifest);
    let created = registry
        .put_manifest(token, "acme/app", right.as_str(), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let tags = registry
        .call(token, Method::GET, "/v2/acme/app/tags/list", &[], ())
        .await;
    assert_eq!(
        tags.json()["tags"],
        serde_json::json!([]),
        "a push by digest adds no tag"
    );
}

#[tokio::test]
async fn docker_manifest_keeps_its_media_type() {
    let registry = setup().await;
    let token = &registry.acme;
    let config = registry.push_blob(token, "acme/app", b"{}").await;
    let layer = registry.push_blob(token, "acme/app", b"layer").await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config.as_str(), "size": 2},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": layer.as_str(), "size": 5}]
    }))
    .unwrap();
    let created = registry
        .put_manifest(token, "acme/app", "docker", DOCKER_MANIFEST, &manifest)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let get = registry
        .call(token, Method::GET, "/v2/acme/app/manifests/docker", &[], ())
        .await;
    assert_eq!(get.header("content-type"), DOCKER_MANIFEST);
}

#[tokio::test]
async fn index_needs_its_manifests_in_the_repository() {
    let registry = setup().await;
    let token = &registry.acme;
    let (image, image_digest) = registry.push_image(token, "acme/app", "amd64").await;
    // An attestation manifest as BuildKit pushes it beside the image.
    let statement = registry
        .push_blob(token, "acme/app", br#"{"_type":"statement"}"#)
        .await;
    let attestation_config = registry
        .push_blob(token, "acme/app", br#"{"rootfs":{}}"#)
        .await;
    let attestation = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": attestation_config.as_str(), "size": 13},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": statement.as_str(),
                    "size": 21,
                    "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]
    }))
    .unwrap();
    let attestation_digest = Digest::sha256_of(&attestation);
    let created = registry
        .put_manifest(
            token,
            "acme/app",
            attestation_digest.as_str(),
            OCI_MANIFEST,
            &attestation,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);

    let index = |children: &[(&Digest, usize)]| {
        let manifests: Vec<_> = children
            .iter()
            .map(|(digest, size)| {
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest.as_str(), "size": size})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests
        }))
        .unwrap()
    };
    let missing = Digest::sha256_of(b"no such manifest");
    let incomplete = index(&[(&image_digest, image.len()), (&missing, 10)]);
    let rejected = registry
        .put_manifest(token, "acme/app", "latest", OCI_INDEX, &incomplete)
        .await;
    assert_eq!(rejected.error_code(), "MANIFEST_UNKNOWN");

    let complete = index(&[
        (&image_digest, image.len()),
        (&attestation_digest, attestation.len()),
    ]);
    let created = registry
        .put_manifest(token, "acme/app", "latest", OCI_INDEX, &complete)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let get = registry
        .call(token, Method::GET, "/v2/acme/app/manifests/latest", &[], ())
        .await;
    assert_eq!(&get.body[..], &complete[..]);
    assert_eq!(get.header("content-type"), OCI_INDEX);
}

#[tokio::test]
async fn oversized_manifest_gets_413() {
    let registry = setup().await;
    let body = vec![b' '; crate::manifests::MAX_MANIFEST_BYTES + 1];
    let rejected = registry
        .put_manifest(&registry.acme, "acme/app", "big", OCI_MANIFEST, &body)
        .await;
    assert_eq!(rejected.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(rejected.error_code(), "MANIFEST_INVALID");
}

#[tokio::test]
async fn tag_list_pages_in_lexical_order() {
    let registry = setup().await;
    let token = &registry.acme;
    for tag in ["v2", "latest", "v10", "alpha"] {
        registry.push_image(token, "acme/app", tag).await;
    }
    let all = registry
        .call(token, Method::GET, "/v2/acme/app/tags/list", &[], ())
        .await;
    assert_eq!(all.json()["name"], "acme/app");
    assert_eq!(
        all.json()["tags"],
        serde_json::json!(["alpha", "latest", "v10", "v2"])
    );
    assert_eq!(all.header("link"), "");

    let first = registry
        .call(token, Method::GET, "/v2/acme/app/tags/list?n=2", &[], ())
        .await;
    assert_eq!(first.json()["tags"], serde_json::json!(["alpha", "latest"]));
    let link = first.header("link").to_owned();
    assert_eq!(
        link,
        r#"</v2/acme/app/tags/list?n=2&last=latest>; rel="next""#
    );

    let next_uri = link.trim_start_matches('<').split('>').next().unwrap();
    let second = registry.call(token, Method::GET, next_uri, &[], ()).await;
    assert_eq!(second.json()["tags"], serde_json::json!(["v10", "v2"]));
    assert_eq!(second.header("link"), "", "the last page has no next link");

    let none = registry
        .call(token, Method::GET, "/v2/acme/app/tags/list?n=0", &[], ())
        .await;
    assert_eq!(none.json()["tags"], serde_json::json!([]));
}

#[tokio::test]
async fn tag_list_of_unknown_repository_is_name_unknown() {
    let registry = setup().await;
    let response = registry
        .call(
            &registry.acme,
            Method::GET,
            "/v2/acme/nothing/tags/list",
            &[],
            (),
        )
        .await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.error_code(), "NAME_UNKNOWN");
}

#[tokio::test]
async fn delete_by_tag_keeps_the_manifest() {
    let registry = setup().await;
    let token = &registry.acme;
    let (_, digest) = registry.push_image(token, "acme/app", "v1").await;
    let deleted = registry
        .call(token, Method::DELETE, "/v2/acme/app/manifests/v1", &[], ())
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    let by_tag = registry
        .call(token, Method::GET, "/v2/acme/app/manifests/v1", &[], ())
        .await;
    assert_eq!(by_tag.status, StatusCode::NOT_FOUND);
    let by_digest_uri = format!("/v2/acme/app/manifests/{digest}");
    let by_digest = registry
        .call(token, Method::GET, &by_digest_uri, &[], ())
        .await;
    assert_eq!(by_digest.status, StatusCode::OK);
}

#[tokio::test]
async fn delete_by_digest_removes_manifest_and_tags() {
    let registry = setup().await;
    let token = &registry.acme;
    let (manifest, digest) = registry.push_image(token, "acme/app", "v1").await;
    let retag = registry
        .put_manifest(token, "acme/app", "stable", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(retag.status, StatusCode::CREATED);
    let uri = format!("/v2/acme/app/manifests/{digest}");
    let deleted = registry.call(token, Method::DELETE, &uri, &[], ()).await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    for reference in ["v1", "stable", digest.as_str()] {
        let uri = format!("/v2/acme/app/manifests/{reference}");
        let lookup = registry.call(token, Method::HEAD, &uri, &[], ()).await;
        assert_eq!(lookup.status, StatusCode::NOT_FOUND, "{reference}");
    }
    let tags = registry
        .call(token, Method::GET, "/v2/acme/app/tags/list", &[], ())
        .await;
    assert_eq!(tags.json()["tags"], serde_json::json!([]));
    let again = registry.call(token, Method::DELETE, &uri, &[], ()).await;
    assert_eq!(again.error_code(), "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn referrers_lists_manifests_with_that_subject() {
    let registry = setup().await;
    let token = &registry.acme;
    let (subject, subject_digest) = registry.push_image(token, "acme/app", "v1").await;
    let empty_config = registry.push_blob(token, "acme/app", b"{}").await;
    let signature = registry.push_blob(token, "acme/app", b"signature").await;
    let artifact = |artifact_type: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": empty_config.as_str(), "size": 2},
            "layers": [{"mediaType": "application/octet-stream",
                        "digest": signature.as_str(), "size": 9}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest.as_str(),
                        "size": subject.len()},
            "annotations": {"org.example.kind": artifact_type}
        }))
        .unwrap()
    };
    let sbom = artifact("application/spdx+json");
    let sig = artifact("application/vnd.example.signature");
    for manifest in [&sbom, &sig] {
        let digest = Digest::sha256_of(manifest);
        let created = registry
            .put_manifest(token, "acme/app", digest.as_str(), OCI_MANIFEST, manifest)
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        assert_eq!(created.header("oci-subject"), subject_digest.as_str());
    }

    let uri = format!("/v2/acme/app/referrers/{subject_digest}");
    let all = registry.call(token, Method::GET, &uri, &[], ()).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.header("content-type"), OCI_INDEX);
    let index = all.json();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
    let first = &index["manifests"][0];
    assert_eq!(first["digest"], Digest::sha256_of(&sbom).as_str());
    assert_eq!(first["size"], sbom.len());
    assert_eq!(first["artifactType"], "application/spdx+json");
    assert_eq!(
        first["annotations"]["org.example.kind"],
        "application/spdx+json"
    );
    assert_eq!(all.header("oci-filters-applied"), "");

    let filtered_uri = format!("{uri}?artifactType=application%2Fvnd.example.signature");
    let filtered = registry
        .call(token, Method::GET, &filtered_uri, &[], ())
        .await;
    assert_eq!(filtered.header("oci-filters-applied"), "artifactType");
    let manifests = filtered.json()["manifests"].clone();
    assert_eq!(manifests.as_array().map(Vec::len), Some(1));
    assert_eq!(manifests[0]["digest"], Digest::sha256_of(&sig).as_str());

    let unknown = Digest::sha256_of(b"no subject");
    let empty_uri = format!("/v2/acme/app/referrers/{unknown}");
    let empty = registry.call(token, Method::GET, &empty_uri, &[], ()).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json()["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn manifest_with_absent_subject_is_accepted() {
    let registry = setup().await;
    let token = &registry.acme;
    let config = registry.push_blob(token, "acme/app", b"{}").await;
    let absent = Digest::sha256_of(b"subject pushed later");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": config.as_str(), "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": absent.as_str(), "size": 5}
    }))
    .unwrap();
    let digest = Digest::sha256_of(&manifest);
    let created = registry
        .put_manifest(token, "acme/app", digest.as_str(), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.header("oci-subject"), absent.as_str());
}
