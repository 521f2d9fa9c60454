//! Blob uploads: `POST`, `PATCH`, `PUT`, `GET` and `DELETE` on `/v2/<name>/blobs/uploads/`.
//!
//! Data streams into a staging file. On completion its digest is checked against the one the
//! client named, and only a matching file moves into the blob store and gets linked into the
//! repository.

use axum::body::Body;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, LOCATION, RANGE};
use http::{HeaderMap, StatusCode};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::metadata;
use crate::reference::{Digest, DigestHasher, RepositoryName};
use crate::staging::parse_upload_id;
use crate::Registry;

const UPLOAD_UUID: &str = "docker-upload-uuid";
const CONTENT_DIGEST: &str = "docker-content-digest";

/// The query parameters of upload requests.
#[derive(Default)]
pub(crate) struct UploadQuery {
    pub digest: Option<String>,
    pub mount: Option<String>,
    pub from: Option<String>,
}

impl UploadQuery {
    pub fn parse(query: Option<&str>) -> UploadQuery {
        let mut parsed = UploadQuery::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "digest" => parsed.digest = Some(value.into_owned()),
                "mount" => parsed.mount = Some(value.into_owned()),
                "from" => parsed.from = Some(value.into_owned()),
                _ => {}
            }
        }
        parsed
    }
}

/// `POST /v2/<name>/blobs/uploads/`: mounts a blob from another repository, stores a
/// monolithic upload (`?digest=`), or starts an upload session.
pub(crate) async fn start(
    registry: &Registry,
    caller: &Caller,
    repository: &RepositoryName,
    query: UploadQuery,
    body: Body,
) -> Result<Response, ApiError> {
    require_workspace(registry, repository).await?;

    if let (Some(mount), Some(from)) = (&query.mount, &query.from) {
        let digest = Digest::parse(mount)?;
        if let Some(response) = try_mount(registry, caller, repository, &digest, from).await? {
            return Ok(response);
        }
    }

    if let Some(digest) = &query.digest {
        let digest = Digest::parse(digest)?;
        return store_monolithic(registry, repository, &digest, body).await;
    }

    let inner = &registry.inner;
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    inner.uploads.create(&id).await?;
    metadata::create_upload(&inner.db, &id, repository).await?;
    tracing::debug!(upload = %id, "started a blob upload");
    Ok(upload_response(StatusCode::ACCEPTED, repository, &id, 0))
}

/// Fails with `NAME_UNKNOWN` when the repository's workspace does not exist. Only the
/// operator can name such a workspace, and checking before an upload keeps data that could
/// never be linked out of the blob store.
async fn require_workspace(
    registry: &Registry,
    repository: &RepositoryName,
) -> Result<(), ApiError> {
    let workspace = repository.workspace();
    let found = registry.inner.db.workspace_by_name(workspace).await?;
    if found.is_none() {
        return Err(ApiError::new(
            ErrorCode::NameUnknown,
            format!(
                "workspace {workspace:?} of repository \"{repository}\" not found; an operator \
                 creates it with `drydock admin workspace create {workspace}`"
            ),
        ));
    }
    Ok(())
}

/// Stores a blob sent whole in the body of the `POST` that names its digest.
async fn store_monolithic(
    registry: &Registry,
    repository: &RepositoryName,
    digest: &Digest,
    body: Body,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("digest", digest.as_str());
    let uploads = &registry.inner.uploads;
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    uploads.create(&id).await?;
    let _lock = uploads.lock(&id)?;

    let mut hasher = DigestHasher::new(digest.algorithm());
    let size = match uploads.append(&id, 0, body, Some(&mut hasher)).await {
        Ok(size) => size,
        Err(error) => {
            uploads.remove(&id).await;
            return Err(error);
        }
    };
    let computed = Some(hasher.finish());
    finish(registry, repository, &id, digest, computed, size).await
}

/// Links `digest` from `from` into `repository` when the caller may pull from `from` and the
/// blob is linked there. Returns `None` otherwise, so that a normal upload starts, or a 401
/// when the caller's registry token only lacks the scope for `from`.
async fn try_mount(
    registry: &Registry,
    caller: &Caller,
    repository: &RepositoryName,
    digest: &Digest,
    from: &str,
) -> Result<Option<Response>, ApiError> {
    tracing::Span::current().record("digest", digest.as_str());
    let Ok(from) = RepositoryName::parse(from) else {
        return Ok(None);
    };
    if !caller.may_mount_from(&registry.inner.auth, repository, &from)? {
        tracing::debug!(%from, "mount source not readable by the caller; starting an upload");
        return Ok(None);
    }
    let db = &registry.inner.db;
    let _shared = registry.inner.push_lock.read().await;
    let Some(size) = metadata::linked_blob_size(db, &from, digest).await? else {
        return Ok(None);
    };
    metadata::link_blob(db, repository, digest, size, None).await?;
    tracing::info!(%from, "mounted a blob");
    Ok(Some(blob_created(repository, digest)))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: appends a chunk. With `Content-Range` the chunk
/// must start where the data so far ends; without it the body is appended as a stream.
pub(crate) async fn patch(
    registry: &Registry,
    repository: &RepositoryName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_upload_id(id)?;
    let inner = &registry.inner;
    let _lock = inner.uploads.lock(&id)?;
    let offset = session_size(registry, repository, &id).await?;
    let size = append_chunk(registry, repository, &id, offset, headers, body, None).await?;
    Ok(upload_response(StatusCode::ACCEPTED, repository, &id, size))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: appends an optional last chunk and completes
/// the upload.
pub(crate) async fn put(
    registry: &Registry,
    repository: &RepositoryName,
    id: &str,
    query: UploadQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_upload_id(id)?;
    let Some(digest) = &query.digest else {
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            "missing ?digest= on the request that completes an upload",
        ));
    };
    let digest = Digest::parse(digest)?;
    tracing::Span::current().record("digest", digest.as_str());
    let inner = &registry.inner;
    let _lock = inner.uploads.lock(&id)?;
    let offset = session_size(registry, repository, &id).await?;
    // When this request carries all of the data, hash it on the way in.
    let mut hasher = (offset == 0).then(|| DigestHasher::new(digest.algorithm()));
    let size = append_chunk(
        registry,
        repository,
        &id,
        offset,
        headers,
        body,
        hasher.as_mut(),
    )
    .await?;
    let computed = hasher.map(DigestHasher::finish);
    finish(registry, repository, &id, &digest, computed, size).await
}

/// `GET /v2/<name>/blobs/uploads/<id>`: reports how much data the upload holds.
pub(crate) async fn status(
    registry: &Registry,
    repository: &RepositoryName,
    id: &str,
) -> Result<Response, ApiError> {
    let id = parse_upload_id(id)?;
    let size = session_size(registry, repository, &id).await?;
    Ok(upload_response(
        StatusCode::NO_CONTENT,
        repository,
        &id,
        size,
    ))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancels the upload and drops its data.
pub(crate) async fn cancel(
    registry: &Registry,
    repository: &RepositoryName,
    id: &str,
) -> Result<Response, ApiError> {
    let id = parse_upload_id(id)?;
    let inner = &registry.inner;
    let _lock = inner.uploads.lock(&id)?;
    session_size(registry, repository, &id).await?;
    metadata::delete_upload(&inner.db, &id).await?;
    inner.uploads.remove(&id).await;
    tracing::debug!(upload = %id, "cancelled a blob upload");
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// Returns the size of an upload session of `repository`, or `BLOB_UPLOAD_UNKNOWN`.
async fn session_size(
    registry: &Registry,
    repository: &RepositoryName,
    id: &str,
) -> Result<u64, ApiError> {
    metadata::upload_size(&registry.inner.db, id, repository)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BlobUploadUnknown,
                format!("upload {id} not found in repository \"{repository}\"; start a new upload"),
            )
        })
}

/// Appends a request body at `offset`, checking `Content-Range` when present, and records
/// the new size. Returns the size of the data after the chunk.
async fn append_chunk(
    registry: &Registry,
    repository: &RepositoryName,
    id: &str,
    offset: u64,
    headers: &HeaderMap,
    body: Body,
    hasher: Option<&mut DigestHasher>,
) -> Result<u64, ApiError> {
    let range = match headers.get(http::header::CONTENT_RANGE) {
        Some(value) => {
            let text = value.to_str().unwrap_or_default();
            let (start, end) = parse_content_range(text).ok_or_else(|| {
                range_error(
                    repository,
                    id,
                    offset,
                    format!("invalid Content-Range {text:?}"),
                )
            })?;
            if start != offset {
                return Err(range_error(
                    repository,
                    id,
                    offset,
                    format!("chunk starts at byte {start}, but the upload holds {offset} bytes"),
                ));
            }
            let declared_length = header_u64(headers, CONTENT_LENGTH.as_str());
            if declared_length.is_some_and(|length| length != end - start + 1) {
                return Err(range_error(
                    repository,
                    id,
                    offset,
                    format!("Content-Range {text:?} does not match Content-Length"),
                ));
            }
            Some((start, end))
        }
        None => None,
    };

    let inner = &registry.inner;
    let written = inner.uploads.append(id, offset, body, hasher).await?;
    if let Some((start, end)) = range {
        if written != end - start + 1 {
            inner.uploads.truncate(id, offset).await?;
            return Err(ApiError::new(
                ErrorCode::SizeInvalid,
                format!(
                    "Content-Range announced {} bytes but the body held {written}",
                    end - start + 1
                ),
            ));
        }
    }
    let size = offset + written;
    metadata::set_upload_size(&inner.db, id, size).await?;
    Ok(size)
}

/// Verifies the staged data against `digest` and moves it into the blob store. On a digest
/// mismatch the upload is discarded and nothing is stored.
async fn finish(
    registry: &Registry,
    repository: &RepositoryName,
    id: &str,
    digest: &Digest,
    computed: Option<Digest>,
    size: u64,
) -> Result<Response, ApiError> {
    let inner = &registry.inner;
    let actual = match computed {
        Some(actual) => actual,
        None => inner.uploads.hash(id, digest.algorithm()).await?,
    };
    if &actual != digest {
        metadata::delete_upload(&inner.db, id).await?;
        inner.uploads.remove(id).await;
        return Err(ApiError::new(
            ErrorCode::DigestInvalid,
            format!("uploaded data has digest {actual}, not the {digest} named in the request"),
        )
        .with_detail(serde_json::json!({"expected": digest.as_str(), "actual": actual.as_str()})));
    }
    // Held until the link commits, so that garbage collection cannot delete the content
    // between the store finding a copy and the link recording it.
    let _shared = inner.push_lock.read().await;
    if let Err(error) = inner.blobs.commit(digest, &inner.uploads.path(id)).await {
        inner.uploads.remove(id).await;
        metadata::delete_upload(&inner.db, id).await?;
        return Err(ApiError::internal("store the uploaded blob", error));
    }
    metadata::link_blob(&inner.db, repository, digest, size, Some(id)).await?;
    tracing::info!(size, "stored a blob");
    Ok(blob_created(repository, digest))
}

/// Parses `Content-Range` as `START-END`, also accepting a `bytes ` or `bytes=` prefix and
/// a `/TOTAL` suffix.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let value = value.trim();
    let value = value
        .strip_prefix("bytes=")
        .or_else(|| value.strip_prefix("bytes "))
        .unwrap_or(value);
    let range = value.split('/').next()?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (
        start.trim().parse::<u64>().ok()?,
        end.trim().parse::<u64>().ok()?,
    );
    (end >= start).then_some((start, end))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn range_error(repository: &RepositoryName, id: &str, size: u64, message: String) -> ApiError {
    ApiError::new(ErrorCode::RangeInvalid, message)
        .with_header(LOCATION, &upload_location(repository, id))
        .with_header(RANGE, &range_value(size))
        .with_header(http::HeaderName::from_static(UPLOAD_UUID), id)
}

fn upload_location(repository: &RepositoryName, id: &str) -> String {
    format!("/v2/{repository}/blobs/uploads/{id}")
}

/// Formats the `Range` header of an upload of `size` bytes: `0-(size-1)`, and `0-0` when
/// empty, as the reference registry (distribution/distribution) sends it.
fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn empty_response(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_LENGTH, 0.into());
    response
}

fn upload_response(
    status: StatusCode,
    repository: &RepositoryName,
    id: &str,
    size: u64,
) -> Response {
    let mut response = empty_response(status);
    let headers = response.headers_mut();
    insert(headers, LOCATION.as_str(), &upload_location(repository, id));
    insert(headers, RANGE.as_str(), &range_value(size));
    insert(headers, UPLOAD_UUID, id);
    response
}

/// Builds the 201 response for a stored or mounted blob.
fn blob_created(repository: &RepositoryName, digest: &Digest) -> Response {
    let mut response = empty_response(StatusCode::CREATED);
    let headers = response.headers_mut();
    insert(
        headers,
        LOCATION.as_str(),
        &format!("/v2/{repository}/blobs/{digest}"),
    );
    insert(headers, CONTENT_DIGEST, digest.as_str());
    response
}

/// Inserts a header whose value is built from validated names, digests and numbers.
pub(crate) fn insert(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        http::HeaderName::try_from(name),
        http::HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms_are_accepted() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-5"), Some((5, 5)));
        assert_eq!(parse_content_range("9-3"), None);
        assert_eq!(parse_content_range("abc"), None);
    }

    #[test]
    fn range_header_counts_from_zero() {
        assert_eq!(range_value(0), "0-0");
        assert_eq!(range_value(10), "0-9");
    }
}
