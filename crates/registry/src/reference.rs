//! Repository names, tags and digests, validated by the grammar of the OCI distribution
//! specification v1.1 ("Pulling manifests" and the image-spec "Digests" section).

use std::fmt;

use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{ApiError, ErrorCode};

/// Maximum length of a repository name. The specification sets none, but clients limit
/// `host:port/name` to 255 characters, so a longer name could never be pulled.
const MAX_NAME_LEN: usize = 255;

/// Maximum length of a tag, from the tag grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
const MAX_TAG_LEN: usize = 128;

/// A validated repository name, `WORKSPACE/NAME[/MORE]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RepositoryName(String);

impl RepositoryName {
    /// Parses a name that matches
    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
    /// and has at least two components, the first being the workspace.
    pub fn parse(name: &str) -> Result<RepositoryName, ApiError> {
        let invalid = |reason: &str| {
            ApiError::new(
                ErrorCode::NameInvalid,
                format!(
                    "invalid repository name {name:?}: {reason}; use WORKSPACE/NAME with \
                     lowercase letters, digits and single separators, such as acme/app"
                ),
            )
        };
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(&format!("longer than {MAX_NAME_LEN} characters")));
        }
        let components: Vec<&str> = name.split('/').collect();
        if components.len() < 2 {
            return Err(invalid("the name needs a workspace and an image name"));
        }
        if let Some(bad) = components.iter().find(|c| !is_valid_component(c)) {
            return Err(invalid(&format!(
                "component {bad:?} does not match the name grammar"
            )));
        }
        Ok(RepositoryName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the workspace the repository belongs to, which is its first component.
    pub fn workspace(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks one path component against `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_valid_component(component: &str) -> bool {
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let starts_and_ends_alnum = component.starts_with(is_alnum) && component.ends_with(is_alnum);
    if !starts_and_ends_alnum {
        return false;
    }
    // Everything between runs of letters and digits is a separator run, which must be
    // ".", "_", "__" or one or more "-".
    component
        .split(is_alnum)
        .filter(|run| !run.is_empty())
        .all(|run| run == "." || run == "_" || run == "__" || run.chars().all(|c| c == '-'))
}

/// Checks a tag against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub(crate) fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.len() <= MAX_TAG_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A digest algorithm the registry can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A content digest `algorithm:hex` with a supported algorithm and lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    text: String,
}

impl Digest {
    /// Parses a digest. A well-formed digest with an algorithm other than sha256 or sha512
    /// gets `UNSUPPORTED`; anything else malformed gets `DIGEST_INVALID`.
    pub(crate) fn parse(text: &str) -> Result<Digest, ApiError> {
        let invalid = |reason: &str| {
            ApiError::new(
                ErrorCode::DigestInvalid,
                format!("invalid digest {text:?}: {reason}"),
            )
        };
        let Some((algorithm, encoded)) = text.split_once(':') else {
            return Err(invalid(
                "expected ALGORITHM:HEX, such as sha256:<64 hex digits>",
            ));
        };
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other if is_digest_algorithm_grammar(other) => {
                return Err(ApiError::new(
                    ErrorCode::Unsupported,
                    format!("unsupported digest algorithm {other:?}: use sha256 or sha512"),
                )
                .with_status(http::StatusCode::BAD_REQUEST));
            }
            _ => return Err(invalid("the algorithm is not a valid identifier")),
        };
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(invalid(&format!(
                "{} needs {} lowercase hex digits",
                algorithm.as_str(),
                algorithm.hex_len()
            )));
        }
        Ok(Digest {
            algorithm,
            text: text.to_owned(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns the hex part after `algorithm:`.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    /// Computes the sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut hasher = DigestHasher::new(Algorithm::Sha256);
        hasher.update(bytes);
        hasher.finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks `[a-z0-9]+([+._-][a-z0-9]+)*`, the image-spec grammar for an algorithm.
fn is_digest_algorithm_grammar(algorithm: &str) -> bool {
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    algorithm
        .split(['+', '.', '_', '-'])
        .all(|part| !part.is_empty() && part.chars().all(is_alnum))
}

/// An incremental hash in one of the supported algorithms.
pub(crate) enum DigestHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> DigestHasher {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(hasher) => hasher.update(bytes),
            DigestHasher::Sha512(hasher) => hasher.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestHasher::Sha256(hasher) => (Algorithm::Sha256, hex::encode(hasher.finalize())),
            DigestHasher::Sha512(hasher) => (Algorithm::Sha512, hex::encode(hasher.finalize())),
        };
        Digest {
            algorithm,
            text: format!("{}:{hex}", algorithm.as_str()),
        }
    }
}

/// The `<reference>` of a manifest path: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ApiError> {
        if text.contains(':') {
            return Digest::parse(text).map(Reference::Digest);
        }
        if !is_valid_tag(text) {
            return Err(ApiError::new(
                ErrorCode::ManifestInvalid,
                format!(
                    "invalid tag {text:?}: use up to 128 letters, digits, '_', '.' and '-', \
                     not starting with '.' or '-'"
                ),
            )
            .with_status(http::StatusCode::BAD_REQUEST));
        }
        Ok(Reference::Tag(text.to_owned()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => f.write_str(tag),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec_grammar() {
        for good in [
            "acme/app",
            "acme/team/app",
            "a/b",
            "a.b/c__d",
            "a-b/c---d",
            "x/y.z_w",
        ] {
            assert!(
                RepositoryName::parse(good).is_ok(),
                "{good} should be valid"
            );
        }
        let too_long = format!("acme/{}", "a".repeat(260));
        for bad in [
            "app",
            "Acme/app",
            "acme//app",
            "acme/app/",
            "/acme/app",
            "acme/-app",
            "acme/app-",
            "acme/a..b",
            "acme/a___b",
            "acme/a._b",
            "acme/a b",
            too_long.as_str(),
        ] {
            let error = RepositoryName::parse(bad).expect_err(bad);
            assert_eq!(error.code, ErrorCode::NameInvalid, "{bad}");
        }
    }

    #[test]
    fn workspace_is_the_first_component() {
        let name = RepositoryName::parse("acme/team/app").unwrap();
        assert_eq!(name.workspace(), "acme");
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for good in ["latest", "v1.2.3", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(is_valid_tag(good), "{good} should be valid");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn digests_are_checked_per_algorithm() {
        let sha256 = format!("sha256:{}", "a".repeat(64));
        let sha512 = format!("sha512:{}", "b".repeat(128));
        assert_eq!(Digest::parse(&sha256).unwrap().hex(), "a".repeat(64));
        assert_eq!(
            Digest::parse(&sha512).unwrap().algorithm(),
            Algorithm::Sha512
        );

        let upper = format!("sha256:{}", "A".repeat(64));
        for bad in ["sha256:abc", upper.as_str(), "nocolon", ":abc", "Sha256:00"] {
            let error = Digest::parse(bad).expect_err(bad);
            assert_eq!(error.code, ErrorCode::DigestInvalid, "{bad}");
        }
        let error = Digest::parse("blake3:abcd").unwrap_err();
        assert_eq!(error.code, ErrorCode::Unsupported);
    }

    #[test]
    fn hasher_matches_known_sha256() {
        let digest = Digest::sha256_of(b"");
        assert_eq!(
            digest.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn reference_is_a_tag_or_a_digest() {
        assert_eq!(
            Reference::parse("v1").unwrap(),
            Reference::Tag("v1".to_owned())
        );
        let digest = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            Reference::parse(&digest).unwrap(),
            Reference::Digest(_)
        ));
        assert!(Reference::parse("bad/tag").is_err());
    }
}
