//! Reads a pushed manifest far enough to validate it and find what it refers to: its blobs,
//! its child manifests and its subject. The stored bytes are always the pushed bytes.

use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};
use crate::reference::Digest;

pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Media types of Docker schema 1 manifests, which the registry does not accept.
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The kind of a manifest: an image (or artifact) manifest with blobs, or an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ManifestKind {
    Image,
    Index,
}

/// A content descriptor, with the fields the registry reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: i64,
    /// Download locations of a foreign (non-distributable) layer. Clients never push such
    /// layers, so they need not be in the repository.
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
}

/// The facts of a pushed manifest that the registry checks and indexes.
#[derive(Debug)]
pub(crate) struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// Digests of the config and layers that must be blobs in the repository.
    pub blobs: Vec<String>,
    /// Digests of the manifests an index lists, which must exist in the repository.
    pub children: Vec<String>,
    pub subject: Option<String>,
    /// The artifact type the referrers API reports: `artifactType`, or else the config's
    /// media type for an image manifest.
    pub artifact_type: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ManifestInvalid, message)
}

/// Parses and checks a manifest pushed with the `Content-Type` header `content_type`.
pub(crate) fn parse(
    content: &[u8],
    content_type: Option<&str>,
) -> Result<ParsedManifest, ApiError> {
    let raw: RawManifest = serde_json::from_slice(content).map_err(|error| {
        invalid(format!(
            "manifest is not a valid manifest JSON document: {error}"
        ))
    })?;
    let declared = content_type
        .map(|value| value.split(';').next().unwrap_or_default().trim())
        .filter(|value| !value.is_empty() && *value != "application/json");
    if let Some(schema1) = [declared, raw.media_type.as_deref()]
        .into_iter()
        .flatten()
        .find(|media_type| DOCKER_SCHEMA1.contains(media_type))
    {
        return Err(ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("{schema1} (Docker schema 1) is not supported: push schema 2 or OCI manifests"),
        ));
    }
    if let (Some(declared), Some(in_body)) = (declared, raw.media_type.as_deref()) {
        if declared != in_body {
            return Err(invalid(format!(
                "Content-Type {declared:?} differs from the manifest's mediaType {in_body:?}"
            )));
        }
    }
    let media_type = match declared.or(raw.media_type.as_deref()) {
        Some(media_type) => media_type.to_owned(),
        // OCI allows a manifest without mediaType; tell the kinds apart by their fields.
        None if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        None if raw.config.is_some() => OCI_MANIFEST.to_owned(),
        None => {
            return Err(invalid(
                "manifest has no mediaType and no config or manifests",
            ))
        }
    };
    let kind = match media_type.as_str() {
        DOCKER_MANIFEST | OCI_MANIFEST => ManifestKind::Image,
        DOCKER_MANIFEST_LIST | OCI_INDEX => ManifestKind::Index,
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type {other:?}: use {OCI_MANIFEST}, {OCI_INDEX}, \
                 {DOCKER_MANIFEST} or {DOCKER_MANIFEST_LIST}"
            )))
        }
    };
    if raw.schema_version != Some(2) {
        return Err(invalid("manifest schemaVersion must be 2"));
    }

    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut artifact_type = raw.artifact_type.clone();
    match kind {
        ManifestKind::Image => {
            let config = raw
                .config
                .as_ref()
                .ok_or_else(|| invalid("image manifest has no config"))?;
            let layers = raw
                .layers
                .as_deref()
                .ok_or_else(|| invalid("image manifest has no layers array"))?;
            if artifact_type.is_none() {
                artifact_type = config.media_type.clone();
            }
            for descriptor in std::iter::once(config).chain(layers) {
                check_descriptor(descriptor)?;
                let foreign = descriptor
                    .urls
                    .as_ref()
                    .is_some_and(|urls| !urls.is_empty());
                if !foreign {
                    blobs.push(descriptor.digest.clone());
                }
            }
        }
        ManifestKind::Index => {
            let manifests = raw
                .manifests
                .as_deref()
                .ok_or_else(|| invalid("index has no manifests array"))?;
            for descriptor in manifests {
                check_descriptor(descriptor)?;
                children.push(descriptor.digest.clone());
            }
        }
    }
    let subject = match &raw.subject {
        Some(subject) => {
            check_descriptor(subject)?;
            Some(subject.digest.clone())
        }
        None => None,
    };
    Ok(ParsedManifest {
        media_type,
        kind,
        blobs,
        children,
        subject,
        artifact_type,
    })
}

fn check_descriptor(descriptor: &Descriptor) -> Result<(), ApiError> {
    if let Err(error) = Digest::parse(&descriptor.digest) {
        return Err(invalid(format!(
            "manifest refers to an invalid digest: {}",
            error.message
        )));
    }
    if descriptor.size < 0 {
        return Err(invalid(format!(
            "descriptor of {} has a negative size",
            descriptor.digest
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_lists_config_and_layers() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest('a'), "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                 "digest": digest('b'), "size": 3},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                 "digest": digest('c'), "size": 3, "urls": ["https://example.invalid/l"]}
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": digest('d'), "size": 9}
        });
        let parsed = parse(body.to_string().as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(parsed.kind, ManifestKind::Image);
        assert_eq!(parsed.blobs, vec![digest('a'), digest('b')]);
        assert_eq!(parsed.subject, Some(digest('d')));
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn index_lists_children_and_type_comes_from_fields() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest('e'), "size": 5}]
        });
        let parsed = parse(body.to_string().as_bytes(), None).unwrap();
        assert_eq!(parsed.media_type, OCI_INDEX);
        assert_eq!(parsed.children, vec![digest('e')]);
    }

    #[test]
    fn mismatched_and_unsupported_types_are_rejected() {
        let body = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        let text = body.to_string();
        assert!(parse(text.as_bytes(), Some(OCI_MANIFEST)).is_err());
        assert!(parse(
            text.as_bytes(),
            Some(&format!("{OCI_INDEX}; charset=utf-8"))
        )
        .is_ok());
        assert!(parse(text.as_bytes(), Some("application/json")).is_ok());
        assert!(parse(text.as_bytes(), Some("text/plain")).is_err());
        let schema1 = serde_json::json!({"schemaVersion": 1, "name": "a/b"}).to_string();
        let error = parse(schema1.as_bytes(), Some(DOCKER_SCHEMA1[1])).unwrap_err();
        assert!(error.message.contains("schema 1"), "{}", error.message);
    }

    #[test]
    fn malformed_manifests_are_rejected() {
        let bad_digest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"digest": "sha256:short", "size": 1}, "layers": []
        });
        let no_config =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []});
        for body in [
            bad_digest.to_string(),
            no_config.to_string(),
            "not json".to_owned(),
        ] {
            let error = parse(body.as_bytes(), None).unwrap_err();
            assert_eq!(error.code, ErrorCode::ManifestInvalid, "{body}");
        }
    }
}
