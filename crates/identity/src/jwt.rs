//! Reading a JWT's header and claims before its signature is checked. Nothing read here is
//! trusted: it only selects the trust rules and the key that the verification then uses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::ExchangeError;

/// Maximum accepted length of an OIDC token in bytes. CI tokens are typically 1 to 2 KiB
/// (an estimate), so the limit only stops a caller from making the server decode megabytes.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Signature algorithms accepted for OIDC tokens. `none` and the HMAC family are excluded
/// because an HMAC key is a secret shared with the issuer, which a JWKS never publishes.
const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The JOSE header fields that select the verification key.
#[derive(Debug)]
pub(crate) struct UnverifiedHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// The `aud` claim, which RFC 7519 allows to be one string or an array of strings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }

    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(one) => vec![one.clone()],
            Audience::Many(many) => many.clone(),
        }
    }
}

/// The registered claims that the exchange reads.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub nbf: Option<i64>,
}

impl Claims {
    pub fn audiences(&self) -> Vec<String> {
        self.aud.as_ref().map(Audience::to_vec).unwrap_or_default()
    }

    pub fn has_audience(&self, audience: &str) -> bool {
        self.aud.as_ref().is_some_and(|aud| aud.contains(audience))
    }
}

/// Decodes a compact JWS without checking its signature, and rejects algorithms that
/// OIDC tokens must not use.
pub(crate) fn decode_unverified(token: &str) -> Result<(UnverifiedHeader, Claims), ExchangeError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed(format!(
            "the token is {} bytes long, more than the {MAX_TOKEN_LEN} bytes accepted",
            token.len()
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(malformed(format!(
            "a JWT has 3 dot-separated parts (header.payload.signature), this token has {}",
            parts.len()
        )));
    }

    #[derive(Deserialize)]
    struct RawHeader {
        alg: Option<String>,
        kid: Option<String>,
    }
    let raw: RawHeader = decode_part(parts[0], "header")?;
    let alg_name = raw
        .alg
        .ok_or_else(|| malformed("the header has no \"alg\" field".into()))?;
    let alg = parse_algorithm(&alg_name)?;
    let claims: Claims = decode_part(parts[1], "payload")?;

    Ok((UnverifiedHeader { alg, kid: raw.kid }, claims))
}

fn parse_algorithm(name: &str) -> Result<Algorithm, ExchangeError> {
    let unsupported = || ExchangeError::UnsupportedAlgorithm {
        alg: name.to_owned(),
    };
    let alg: Algorithm = name.parse().map_err(|_| unsupported())?;
    if ACCEPTED_ALGORITHMS.contains(&alg) {
        Ok(alg)
    } else {
        Err(unsupported())
    }
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str, name: &str) -> Result<T, ExchangeError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| malformed(format!("the {name} is not base64url without padding: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        malformed(format!(
            "the {name} is not a JSON object with the expected fields: {e}"
        ))
    })
}

fn malformed(reason: String) -> ExchangeError {
    ExchangeError::MalformedToken { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", encode(header), encode(payload))
    }

    const PAYLOAD: &str =
        r#"{"iss":"https://ci.example","sub":"organization:acme","aud":"drydock"}"#;

    #[test]
    fn header_and_claims_are_read() {
        let (header, claims) =
            decode_unverified(&token(r#"{"alg":"RS256","kid":"k1"}"#, PAYLOAD)).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(claims.iss, "https://ci.example");
        assert_eq!(claims.sub, "organization:acme");
        assert_eq!(claims.audiences(), vec!["drydock".to_owned()]);
    }

    #[test]
    fn audience_array_is_read() {
        let payload = r#"{"iss":"i","sub":"s","aud":["a","drydock"]}"#;
        let (_, claims) = decode_unverified(&token(r#"{"alg":"ES256"}"#, payload)).unwrap();
        assert!(claims.has_audience("drydock"));
        assert!(!claims.has_audience("other"));
        assert_eq!(
            claims.audiences(),
            vec!["a".to_owned(), "drydock".to_owned()]
        );
    }

    #[test]
    fn none_and_hmac_algorithms_are_rejected() {
        for alg in ["none", "HS256", "HS384", "HS512", "EdDSA", "XYZ"] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            let err = decode_unverified(&token(&header, PAYLOAD)).unwrap_err();
            assert!(
                matches!(&err, ExchangeError::UnsupportedAlgorithm { alg: a } if a == alg),
                "{alg}: {err}"
            );
        }
    }

    #[test]
    fn wrong_part_count_is_malformed() {
        let err = decode_unverified("abc.def").unwrap_err();
        assert!(matches!(err, ExchangeError::MalformedToken { .. }), "{err}");
        assert!(err.to_string().contains("3 dot-separated parts"), "{err}");
    }

    #[test]
    fn invalid_base64_is_malformed() {
        let err = decode_unverified("@@@.e30.c2ln").unwrap_err();
        assert!(err.to_string().contains("header is not base64url"), "{err}");
    }

    #[test]
    fn missing_subject_is_malformed() {
        let payload = r#"{"iss":"https://ci.example"}"#;
        let err = decode_unverified(&token(r#"{"alg":"RS256"}"#, payload)).unwrap_err();
        assert!(
            err.to_string().contains("payload is not a JSON object"),
            "{err}"
        );
        assert!(err.to_string().contains("sub"), "{err}");
    }

    #[test]
    fn oversized_token_is_malformed() {
        let err = decode_unverified(&"a".repeat(MAX_TOKEN_LEN + 1)).unwrap_err();
        assert!(err.to_string().contains("bytes accepted"), "{err}");
    }

    #[test]
    fn error_never_contains_the_token() {
        let secret_part = encode(r#"{"alg":"RS256","secret":"hunter2"}"#);
        let bad = format!("{secret_part}.!!!.sig");
        let err = decode_unverified(&bad).unwrap_err().to_string();
        assert!(!err.contains(&secret_part), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
