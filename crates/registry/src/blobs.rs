//! `HEAD`, `GET` and `DELETE` on `/v2/<name>/blobs/<digest>`.

use std::io;
use std::ops::Range;

use axum::body::Body;
use axum::response::Response;
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG};
use http::{HeaderMap, StatusCode};
use tokio_util::io::ReaderStream;

/// Size of each read when streaming a blob to a client.
const BLOB_READ_CHUNK: usize = 256 * 1024;

use crate::error::{ApiError, ErrorCode};
use crate::metadata;
use crate::reference::{Digest, RepositoryName};
use crate::uploads::insert;
use crate::Registry;

/// Returns a blob's headers, and with `with_body` its bytes (or the single range that the
/// `Range` header requests).
pub(crate) async fn get(
    registry: &Registry,
    repository: &RepositoryName,
    digest: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, ApiError> {
    let digest = Digest::parse(digest)?;
    tracing::Span::current().record("digest", digest.as_str());
    let inner = &registry.inner;
    let size = metadata::linked_blob_size(&inner.db, repository, &digest)
        .await?
        .ok_or_else(|| blob_unknown(repository, &digest))?;

    let range = match headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) if with_body => parse_range(value, size).map_err(|message| {
            ApiError::new(ErrorCode::RangeInvalid, message)
                .with_header(CONTENT_RANGE, &format!("bytes */{size}"))
        })?,
        _ => None,
    };

    let mut response = Response::new(Body::empty());
    let response_headers = response.headers_mut();
    insert(response_headers, "docker-content-digest", digest.as_str());
    insert(
        response_headers,
        CONTENT_TYPE.as_str(),
        "application/octet-stream",
    );
    insert(response_headers, ETAG.as_str(), &format!("\"{digest}\""));
    insert(response_headers, ACCEPT_RANGES.as_str(), "bytes");
    let bytes = match &range {
        Some(range) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let content_range = format!("bytes {}-{}/{size}", range.start, range.end - 1);
            insert(
                response.headers_mut(),
                CONTENT_RANGE.as_str(),
                &content_range,
            );
            range.clone()
        }
        None => 0..size,
    };
    insert(
        response.headers_mut(),
        CONTENT_LENGTH.as_str(),
        &(bytes.end - bytes.start).to_string(),
    );
    if !with_body {
        return Ok(response);
    }

    let reader = match inner.blobs.read(&digest, bytes).await {
        Ok(reader) => reader,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            tracing::error!(
                "blob is linked in the metadata but missing from the blob store; it must be \
                 pushed again"
            );
            return Err(blob_unknown(repository, &digest));
        }
        Err(error) => return Err(ApiError::internal("read the blob", error)),
    };
    // 256 KiB reads: the default 4 KiB made large pulls spend most of their time waking tasks
    // (measured with perf in bench/, see docs/benchmarks.md).
    *response.body_mut() = Body::from_stream(ReaderStream::with_capacity(reader, BLOB_READ_CHUNK));
    Ok(response)
}

/// Removes a blob from `repository`. The content stays stored for other repositories that
/// link it.
pub(crate) async fn delete(
    registry: &Registry,
    repository: &RepositoryName,
    digest: &str,
) -> Result<Response, ApiError> {
    let digest = Digest::parse(digest)?;
    tracing::Span::current().record("digest", digest.as_str());
    if !metadata::unlink_blob(&registry.inner.db, repository, &digest).await? {
        return Err(blob_unknown(repository, &digest));
    }
    tracing::info!("deleted a blob from the repository");
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(CONTENT_LENGTH, 0.into());
    Ok(response)
}

fn blob_unknown(repository: &RepositoryName, digest: &Digest) -> ApiError {
    ApiError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} not found in repository \"{repository}\""),
    )
    .with_detail(serde_json::json!({ "digest": digest.as_str() }))
}

/// Parses a `Range` header into one byte range (end exclusive) of a blob of `size` bytes.
/// Forms: `bytes=A-B`, `bytes=A-` and `bytes=-N` (the last N bytes). A header with several
/// ranges is ignored, so the whole blob is sent, which RFC 9110 section 14.2 allows.
fn parse_range(value: &str, size: u64) -> Result<Option<Range<u64>>, String> {
    let invalid = || format!("invalid Range {value:?} for a blob of {size} bytes");
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(invalid)?;
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or_else(invalid)?;
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let suffix: u64 = end.parse().map_err(|_| invalid())?;
        if suffix == 0 {
            return Err(invalid());
        }
        size.saturating_sub(suffix)..size
    } else {
        let start: u64 = start.parse().map_err(|_| invalid())?;
        let end = match end {
            "" => size,
            end => end
                .parse::<u64>()
                .map_err(|_| invalid())?
                .saturating_add(1)
                .min(size),
        };
        start..end
    };
    if range.start >= range.end || range.start >= size {
        return Err(invalid());
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_forms_resolve_against_the_size() {
        assert_eq!(parse_range("bytes=0-3", 10), Ok(Some(0..4)));
        assert_eq!(parse_range("bytes=5-", 10), Ok(Some(5..10)));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some(7..10)));
        assert_eq!(parse_range("bytes=8-100", 10), Ok(Some(8..10)));
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Ok(None));
    }

    #[test]
    fn unsatisfiable_ranges_are_rejected() {
        for value in [
            "bytes=10-",
            "bytes=4-2",
            "bytes=-0",
            "items=0-1",
            "bytes=x-1",
        ] {
            assert!(parse_range(value, 10).is_err(), "{value}");
        }
    }
}
