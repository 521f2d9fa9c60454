//! `GET /v2/<name>/tags/list` and `GET /v2/<name>/referrers/<digest>`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{CONTENT_TYPE, LINK};
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::manifest_doc::OCI_INDEX;
use crate::metadata;
use crate::reference::{Digest, RepositoryName};
use crate::uploads::insert;
use crate::Registry;

/// Page size of a tag list when the client gives no `n`, and the largest `n` honoured.
pub(crate) const MAX_TAGS_PER_PAGE: u32 = 1000;

#[derive(Serialize)]
struct TagList {
    name: String,
    tags: Vec<String>,
}

/// Lists tags in lexical order, `n` at a time after `last`, with a `Link` header to the next
/// page when there may be more.
pub(crate) async fn tags(
    registry: &Registry,
    repository: &RepositoryName,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let mut limit = MAX_TAGS_PER_PAGE;
    let mut last = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "n" => {
                let n: u32 = value.parse().map_err(|_| {
                    ApiError::new(
                        ErrorCode::Unsupported,
                        format!("invalid page size n={value:?}: use a whole number"),
                    )
                    .with_status(http::StatusCode::BAD_REQUEST)
                })?;
                limit = n.min(MAX_TAGS_PER_PAGE);
            }
            "last" => last = Some(value.into_owned()),
            _ => {}
        }
    }
    // Fetching one tag more than requested shows whether a next page exists.
    let mut tags = metadata::list_tags(&registry.inner.db, repository, last.as_deref(), limit + 1)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NameUnknown,
                format!("repository \"{repository}\" not found; push an image to create it"),
            )
        })?;
    let has_more = tags.len() > limit as usize;
    tags.truncate(limit as usize);

    let next_link = match (has_more, tags.last()) {
        (true, Some(last_tag)) => Some(format!(
            "</v2/{repository}/tags/list?n={limit}&last={}>; rel=\"next\"",
            url::form_urlencoded::byte_serialize(last_tag.as_bytes()).collect::<String>()
        )),
        _ => None,
    };
    let mut response = Json(TagList {
        name: repository.to_string(),
        tags,
    })
    .into_response();
    if let Some(link) = next_link {
        insert(response.headers_mut(), LINK.as_str(), &link);
    }
    Ok(response)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<ReferrerDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerDescriptor {
    media_type: String,
    digest: String,
    size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<serde_json::Value>,
}

/// Returns an OCI index of the manifests whose subject is `digest`, optionally only those of
/// one `artifactType`.
pub(crate) async fn referrers(
    registry: &Registry,
    repository: &RepositoryName,
    digest: &str,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let subject = Digest::parse(digest)?;
    tracing::Span::current().record("digest", subject.as_str());
    let filter = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "artifactType")
        .map(|(_, value)| value.into_owned());

    let referrers = metadata::referrers(&registry.inner.db, repository, &subject).await?;
    let manifests = referrers
        .into_iter()
        .filter(|referrer| {
            filter.is_none() || referrer.artifact_type.as_deref() == filter.as_deref()
        })
        .map(|referrer| {
            let annotations = serde_json::from_slice::<serde_json::Value>(&referrer.content)
                .ok()
                .and_then(|document| document.get("annotations").cloned());
            ReferrerDescriptor {
                media_type: referrer.media_type,
                digest: referrer.digest,
                size: referrer.content.len(),
                artifact_type: referrer.artifact_type,
                annotations,
            }
        })
        .collect();
    let index = ReferrersIndex {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
    };
    let mut response = Json(index).into_response();
    insert(response.headers_mut(), CONTENT_TYPE.as_str(), OCI_INDEX);
    if filter.is_some() {
        insert(
            response.headers_mut(),
            "oci-filters-applied",
            "artifactType",
        );
    }
    Ok(response)
}
