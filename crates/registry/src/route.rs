//! Splits the path after `/v2/` into a repository name and an endpoint.
//!
//! Repository names contain slashes, so the endpoint is recognised from the right end of the
//! path and everything before it is the name.

/// An endpoint of the distribution API below `/v2/<name>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint<'a> {
    /// `blobs/uploads/`: start an upload or mount a blob.
    UploadStart,
    /// `blobs/uploads/<id>`: an upload session.
    Upload(&'a str),
    /// `blobs/<digest>`.
    Blob(&'a str),
    /// `manifests/<reference>`.
    Manifest(&'a str),
    /// `tags/list`.
    TagList,
    /// `referrers/<digest>`.
    Referrers(&'a str),
}

/// Splits `path` (the part after `/v2/`) into the repository name and the endpoint, or
/// returns `None` when no endpoint matches.
pub(crate) fn parse(path: &str) -> Option<(&str, Endpoint<'_>)> {
    let segments: Vec<&str> = path.split('/').collect();
    let n = segments.len();
    let at = |from_end: usize| {
        if from_end <= n {
            Some(segments[n - from_end])
        } else {
            None
        }
    };
    // The name is every segment before the last `endpoint_len` ones, joined back with '/'.
    let name_before = |endpoint_len: usize| -> Option<&str> {
        let name_segments = n.checked_sub(endpoint_len).filter(|&len| len > 0)?;
        let name_len: usize = segments[..name_segments]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
            + name_segments
            - 1;
        Some(&path[..name_len])
    };

    let last = at(1)?;
    let endpoint = match (at(3), at(2), last) {
        (Some("blobs"), Some("uploads"), "") => {
            return Some((name_before(3)?, Endpoint::UploadStart))
        }
        (Some("blobs"), Some("uploads"), id) => {
            return Some((name_before(3)?, Endpoint::Upload(id)))
        }
        (_, Some("blobs"), "uploads") => Endpoint::UploadStart,
        (_, Some("blobs"), digest) if !digest.is_empty() => Endpoint::Blob(digest),
        (_, Some("manifests"), reference) if !reference.is_empty() => Endpoint::Manifest(reference),
        (_, Some("tags"), "list") => Endpoint::TagList,
        (_, Some("referrers"), digest) if !digest.is_empty() => Endpoint::Referrers(digest),
        _ => return None,
    };
    Some((name_before(2)?, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_found_from_the_right() {
        let cases = [
            ("acme/app/blobs/uploads/", "acme/app", Endpoint::UploadStart),
            ("acme/app/blobs/uploads", "acme/app", Endpoint::UploadStart),
            (
                "acme/team/app/blobs/uploads/abc",
                "acme/team/app",
                Endpoint::Upload("abc"),
            ),
            (
                "acme/app/blobs/sha256:00",
                "acme/app",
                Endpoint::Blob("sha256:00"),
            ),
            (
                "acme/a/b/c/manifests/latest",
                "acme/a/b/c",
                Endpoint::Manifest("latest"),
            ),
            ("acme/app/tags/list", "acme/app", Endpoint::TagList),
            (
                "acme/app/referrers/sha256:00",
                "acme/app",
                Endpoint::Referrers("sha256:00"),
            ),
            // Components named like endpoints stay part of the name.
            (
                "acme/blobs/blobs/uploads/id",
                "acme/blobs",
                Endpoint::Upload("id"),
            ),
            (
                "acme/manifests/manifests/v1",
                "acme/manifests",
                Endpoint::Manifest("v1"),
            ),
            (
                "acme/blobs/uploads/blobs/sha256:1",
                "acme/blobs/uploads",
                Endpoint::Blob("sha256:1"),
            ),
        ];
        for (path, name, endpoint) in cases {
            assert_eq!(parse(path), Some((name, endpoint)), "{path}");
        }
    }

    #[test]
    fn paths_without_an_endpoint_are_rejected() {
        for path in [
            "",
            "acme/app",
            "acme/app/manifests/",
            "blobs/sha256:00",
            "acme/app/tags",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }
}
