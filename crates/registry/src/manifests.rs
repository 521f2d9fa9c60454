//! `PUT`, `HEAD`, `GET` and `DELETE` on `/v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::{ApiError, ErrorCode};
use crate::manifest_doc::{self, ManifestKind};
use crate::metadata::{self, NewManifest};
use crate::reference::{Digest, DigestHasher, Reference, RepositoryName};
use crate::uploads::insert;
use crate::Registry;

/// Maximum accepted manifest size. The OCI distribution specification, section "Pushing
/// Manifests", expects registries to accept at least 4 MiB and to reject more with a 413.
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Stores a manifest under a tag or a digest.
pub(crate) async fn put(
    registry: &Registry,
    repository: &RepositoryName,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reference = Reference::parse(reference)?;
    let content = read_limited(headers, body).await?;

    let digest = match &reference {
        Reference::Digest(expected) => {
            let mut hasher = DigestHasher::new(expected.algorithm());
            hasher.update(&content);
            let actual = hasher.finish();
            if &actual != expected {
                return Err(ApiError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest has digest {actual}, not the {expected} it was pushed as"),
                ));
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256_of(&content),
    };
    tracing::Span::current().record("digest", digest.as_str());

    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let parsed = manifest_doc::parse(&content, content_type)?;
    // Shared from the reference check to the commit, so that garbage collection cannot
    // delete a referenced blob or child manifest in between.
    let shared = registry.inner.push_lock.read().await;
    check_references(registry, repository, &parsed).await?;

    let tag = match &reference {
        Reference::Tag(tag) => Some(tag.as_str()),
        Reference::Digest(_) => None,
    };
    let manifest = NewManifest {
        digest: &digest,
        media_type: &parsed.media_type,
        content: &content,
        subject: parsed.subject.as_deref(),
        artifact_type: parsed.artifact_type.as_deref(),
    };
    metadata::put_manifest(&registry.inner.db, repository, &manifest, tag).await?;
    drop(shared);
    tracing::info!(reference = %reference, media_type = %parsed.media_type, "stored a manifest");

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::CREATED;
    let response_headers = response.headers_mut();
    response_headers.insert(CONTENT_LENGTH, 0.into());
    insert(
        response_headers,
        LOCATION.as_str(),
        &format!("/v2/{repository}/manifests/{digest}"),
    );
    insert(response_headers, "docker-content-digest", digest.as_str());
    if let Some(subject) = &parsed.subject {
        insert(response_headers, "oci-subject", subject);
    }
    Ok(response)
}

/// Reads a manifest body of at most [`MAX_MANIFEST_BYTES`].
async fn read_limited(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("manifest is larger than the {MAX_MANIFEST_BYTES} byte limit"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared: Option<u64> = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if declared.is_some_and(|length| length > MAX_MANIFEST_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_MANIFEST_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("failed to read the manifest body: {error}"),
        )),
    }
}

/// Checks that an image manifest's blobs are linked in the repository and that an index's
/// manifests exist in it. A subject may be missing: it can be pushed later.
async fn check_references(
    registry: &Registry,
    repository: &RepositoryName,
    parsed: &manifest_doc::ParsedManifest,
) -> Result<(), ApiError> {
    let db = &registry.inner.db;
    match parsed.kind {
        ManifestKind::Image => {
            let digests: Vec<&str> = parsed.blobs.iter().map(String::as_str).collect();
            let missing = metadata::unlinked_blobs(db, repository, &digests).await?;
            if let Some(first) = missing.first() {
                return Err(ApiError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!(
                        "manifest refers to blob {first}, which is not in repository \
                         \"{repository}\"; push the blob before the manifest"
                    ),
                )
                .with_detail(serde_json::json!({ "digests": missing })));
            }
        }
        ManifestKind::Index => {
            let digests: Vec<&str> = parsed.children.iter().map(String::as_str).collect();
            let missing = metadata::missing_manifests(db, repository, &digests).await?;
            if let Some(first) = missing.first() {
                return Err(ApiError::new(
                    ErrorCode::ManifestUnknown,
                    format!(
                        "index refers to manifest {first}, which is not in repository \
                         \"{repository}\"; push it before the index"
                    ),
                )
                .with_status(StatusCode::BAD_REQUEST)
                .with_detail(serde_json::json!({ "digests": missing })));
            }
        }
    }
    Ok(())
}

/// Returns a manifest's headers, and with `with_body` its stored bytes.
pub(crate) async fn get(
    registry: &Registry,
    repository: &RepositoryName,
    reference: &str,
    with_body: bool,
) -> Result<Response, ApiError> {
    let reference = Reference::parse(reference)?;
    let (key, is_tag) = match &reference {
        Reference::Tag(tag) => (tag.as_str(), true),
        Reference::Digest(digest) => (digest.as_str(), false),
    };
    let manifest = metadata::get_manifest(&registry.inner.db, repository, key, is_tag)
        .await?
        .ok_or_else(|| manifest_unknown(repository, &reference))?;
    tracing::Span::current().record("digest", manifest.digest.as_str());

    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    insert(headers, CONTENT_TYPE.as_str(), &manifest.media_type);
    insert(
        headers,
        CONTENT_LENGTH.as_str(),
        &manifest.content.len().to_string(),
    );
    insert(headers, "docker-content-digest", &manifest.digest);
    insert(headers, ETAG.as_str(), &format!("\"{}\"", manifest.digest));
    if with_body {
        *response.body_mut() = Body::from(manifest.content);
    }
    Ok(response)
}

/// Deletes a manifest by digest (with the tags pointing at it) or a tag.
pub(crate) async fn delete(
    registry: &Registry,
    repository: &RepositoryName,
    reference: &str,
) -> Result<Response, ApiError> {
    let reference = Reference::parse(reference)?;
    let db = &registry.inner.db;
    let deleted = match &reference {
        Reference::Digest(digest) => {
            tracing::Span::current().record("digest", digest.as_str());
            metadata::delete_manifest(db, repository, digest).await?
        }
        Reference::Tag(tag) => metadata::delete_tag(db, repository, tag).await?,
    };
    if !deleted {
        return Err(manifest_unknown(repository, &reference));
    }
    tracing::info!(reference = %reference, "deleted a manifest reference");
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(CONTENT_LENGTH, 0.into());
    Ok(response)
}

fn manifest_unknown(repository: &RepositoryName, reference: &Reference) -> ApiError {
    ApiError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} not found in repository \"{repository}\""),
    )
}
