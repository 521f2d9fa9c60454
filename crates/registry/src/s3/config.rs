//! Settings of the S3 blob store, their validation, and the object key layout.

use std::fmt;

use url::Url;

use crate::error::RegistryError;
use crate::reference::Digest;

/// Access key for signing S3 requests. `Debug` output hides the secret key and the session
/// token.
#[derive(Clone)]
pub struct S3Credentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl S3Credentials {
    /// Creates long-term credentials: an access key ID and its secret access key.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> S3Credentials {
        S3Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// Adds the session token that temporary credentials come with.
    pub fn with_session_token(mut self, token: impl Into<String>) -> S3Credentials {
        self.session_token = Some(token.into());
        self
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Location and credentials of the S3 blob store: a bucket on an S3-compatible endpoint,
/// addressed path-style (`ENDPOINT/BUCKET/KEY`).
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Base URL of the S3 API, such as `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:9000`. It must not contain credentials.
    pub endpoint: Url,
    /// Region that requests are signed for, such as `us-east-1`.
    pub region: String,
    /// Folder-like prefix for every key, such as `drydock/prod`; empty for none. Leading and
    /// trailing slashes are ignored.
    pub prefix: String,
    /// Allows an `http://` endpoint. Without it only `https://` is accepted, because the
    /// blobs would otherwise cross the network unencrypted.
    pub allow_http: bool,
    pub credentials: S3Credentials,
}

impl S3Config {
    /// Checks every setting and returns the key prefix without surrounding slashes.
    pub(crate) fn validate(&self) -> Result<String, RegistryError> {
        validate_bucket(&self.bucket)?;
        self.validate_endpoint()?;
        validate_region(&self.region)?;
        if self.credentials.access_key_id.is_empty() {
            return Err(invalid("the S3 access key ID is empty"));
        }
        if self.credentials.secret_access_key.is_empty() {
            return Err(invalid("the S3 secret access key is empty"));
        }
        normalize_prefix(&self.prefix)
    }

    fn validate_endpoint(&self) -> Result<(), RegistryError> {
        let endpoint = &self.endpoint;
        // Checked before anything else names the URL in a message, so that a secret typed
        // into it never reaches an error or a log.
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(invalid(
                "the S3 endpoint URL contains credentials; remove them from the URL and set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead",
            ));
        }
        match endpoint.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(invalid(format!(
                    "the S3 endpoint {endpoint} uses plain HTTP, which sends blobs \
                     unencrypted; use https, or allow HTTP with --s3-allow-http"
                )))
            }
            scheme => {
                return Err(invalid(format!(
                    "the S3 endpoint {endpoint} has the scheme {scheme:?}; use an http or \
                     https URL, such as https://s3.us-east-1.amazonaws.com"
                )))
            }
        }
        if endpoint.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("the S3 endpoint {endpoint} has no host")));
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(invalid(format!(
                "the S3 endpoint {endpoint} has a query or fragment; give only the base URL"
            )));
        }
        Ok(())
    }

    /// Returns `endpoint` without a trailing slash, the form that names the endpoint in
    /// messages and that request URLs are built on.
    pub(crate) fn endpoint_base(&self) -> String {
        self.endpoint.as_str().trim_end_matches('/').to_owned()
    }
}

/// Returns the object key of a blob: `PREFIX/blobs/<algorithm>/<first two hex digits>/<hex>`,
/// or the same without `PREFIX/` when the prefix is empty. The layout matches the folders of
/// the filesystem blob store, so a bucket can be filled by copying those folders.
pub(crate) fn object_key(prefix: &str, digest: &Digest) -> String {
    let hex = digest.hex();
    let algorithm = digest.algorithm().as_str();
    if prefix.is_empty() {
        format!("blobs/{algorithm}/{}/{hex}", &hex[..2])
    } else {
        format!("{prefix}/blobs/{algorithm}/{}/{hex}", &hex[..2])
    }
}

fn invalid(reason: impl Into<String>) -> RegistryError {
    RegistryError::S3Config {
        reason: reason.into(),
    }
}

/// Applies the S3 naming rules for general purpose buckets: 3 to 63 characters of lowercase
/// letters, digits, dots and hyphens, starting and ending with a letter or digit. See
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html>.
fn validate_bucket(bucket: &str) -> Result<(), RegistryError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !bucket.chars().all(allowed)
        || !edge(bucket.chars().next())
        || !edge(bucket.chars().last())
    {
        return Err(invalid(format!(
            "invalid S3 bucket name {bucket:?}: use 3 to 63 lowercase letters, digits, dots \
             and hyphens, starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

fn validate_region(region: &str) -> Result<(), RegistryError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if region.is_empty() || !region.chars().all(allowed) {
        return Err(invalid(format!(
            "invalid S3 region {region:?}: use the region name the endpoint expects, such as \
             us-east-1"
        )));
    }
    Ok(())
}

/// Strips surrounding slashes and checks each segment. Segments are restricted to letters,
/// digits, `-`, `_` and `.`, which need no escaping in S3 keys or URLs.
fn normalize_prefix(prefix: &str) -> Result<String, RegistryError> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    for segment in trimmed.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." || !segment.chars().all(allowed)
        {
            return Err(invalid(format!(
                "invalid S3 key prefix {prefix:?}: use segments of letters, digits, '-', '_' \
                 and '.' separated by single slashes, such as drydock/prod"
            )));
        }
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_config() -> S3Config {
        S3Config {
            bucket: "drydock-blobs".into(),
            endpoint: "https://s3.example.test".parse().unwrap(),
            region: "us-east-1".into(),
            prefix: String::new(),
            allow_http: false,
            credentials: S3Credentials::new("AKIDEXAMPLE", "secret-example"),
        }
    }

    fn reason(config: &S3Config) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn key_layout_nests_by_the_first_two_hex_digits() {
        let digest = Digest::sha256_of(b"hello");
        let hex = digest.hex().to_owned();
        assert_eq!(
            object_key("", &digest),
            format!("blobs/sha256/{}/{hex}", &hex[..2])
        );
        assert_eq!(
            object_key("team/prod", &digest),
            format!("team/prod/blobs/sha256/{}/{hex}", &hex[..2])
        );
    }

    #[test]
    fn prefix_slashes_are_trimmed() {
        for (input, expected) in [
            ("", ""),
            ("/", ""),
            ("drydock", "drydock"),
            ("/drydock/prod/", "drydock/prod"),
            ("v1.2_x-y", "v1.2_x-y"),
        ] {
            let config = S3Config {
                prefix: input.into(),
                ..sample_config()
            };
            assert_eq!(config.validate().unwrap(), expected, "{input:?}");
        }
    }

    #[test]
    fn unsafe_prefixes_are_rejected() {
        for prefix in ["a//b", "a/../b", "./a", "a b", "a?b", "ä"] {
            let config = S3Config {
                prefix: prefix.into(),
                ..sample_config()
            };
            assert!(
                reason(&config).contains("invalid S3 key prefix"),
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn invalid_bucket_names_are_rejected() {
        for bucket in [
            "ab",
            "Upper",
            "-edge",
            "edge-",
            "under_score",
            &"a".repeat(64),
        ] {
            let config = S3Config {
                bucket: bucket.into(),
                ..sample_config()
            };
            assert!(
                reason(&config).contains("invalid S3 bucket name"),
                "{bucket:?}"
            );
        }
        let config = S3Config {
            bucket: "my.bucket-1".into(),
            ..sample_config()
        };
        assert!(config.validate().is_ok());
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let mut config = S3Config {
            endpoint: "http://127.0.0.1:9000".parse().unwrap(),
            ..sample_config()
        };
        assert!(reason(&config).contains("--s3-allow-http"));
        config.allow_http = true;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn endpoint_with_credentials_is_rejected_without_echoing_them() {
        let config = S3Config {
            endpoint: "https://user:hunter2@s3.example.test".parse().unwrap(),
            ..sample_config()
        };
        let message = reason(&config);
        assert!(message.contains("AWS_ACCESS_KEY_ID"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn other_endpoint_schemes_are_rejected() {
        for endpoint in ["ftp://s3.example.test", "https://s3.example.test/?x=1"] {
            let config = S3Config {
                endpoint: endpoint.parse().unwrap(),
                ..sample_config()
            };
            assert!(reason(&config).contains("S3 endpoint"), "{endpoint}");
        }
    }

    #[test]
    fn empty_region_and_keys_are_rejected() {
        let config = S3Config {
            region: String::new(),
            ..sample_config()
        };
        assert!(reason(&config).contains("invalid S3 region"));
        let config = S3Config {
            credentials: S3Credentials::new("", "secret"),
            ..sample_config()
        };
        assert!(reason(&config).contains("access key ID is empty"));
        let config = S3Config {
            credentials: S3Credentials::new("id", ""),
            ..sample_config()
        };
        assert!(reason(&config).contains("secret access key is empty"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let credentials =
            S3Credentials::new("AKIDEXAMPLE", "very-secret").with_session_token("session-secret");
        let text = format!(
            "{:?}",
            S3Config {
                credentials,
                ..sample_config()
            }
        );
        assert!(text.contains("AKIDEXAMPLE"), "{text}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(!text.contains("session-secret"), "{text}");
    }
}
