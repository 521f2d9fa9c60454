//! The issuer's RSA signing key and its JWK.

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// RSA modulus size. 2048 bits is the smallest size that ring, which verifies the tokens
/// on the server side, accepts.
const KEY_BITS: usize = 2048;

/// An RS256 signing key generated at start and never written to disk.
pub struct Signer {
    /// Key id: the RFC 7638 JWK thumbprint of the public key.
    pub kid: String,
    encoding_key: EncodingKey,
    /// The public key as a JWK, as served in the JWKS.
    pub jwk: Value,
}

impl Signer {
    /// Generates a fresh RSA key.
    pub fn generate() -> anyhow::Result<Signer> {
        let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, KEY_BITS)
            .context("failed to generate an RSA signing key")?;
        let der = private
            .to_pkcs1_der()
            .context("failed to encode the RSA signing key")?;
        let n = URL_SAFE_NO_PAD.encode(private.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(private.e().to_bytes_be());
        let kid = jwk_thumbprint(&n, &e);
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": n,
            "e": e,
        });
        let encoding_key = EncodingKey::from_rsa_der(der.as_bytes());
        Ok(Signer {
            kid,
            encoding_key,
            jwk,
        })
    }

    /// Signs `claims` as an RS256 JWT whose header names this key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key).context("failed to sign a token")
    }
}

/// Computes the RFC 7638 thumbprint of an RSA public key: the base64url SHA-256 of its
/// required members in lexicographic order, without whitespace.
fn jwk_thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // The example key of RFC 7638, section 3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let e = "AQAB";
        assert_eq!(
            jwk_thumbprint(n, e),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generated_key_is_named_by_its_thumbprint() {
        let signer = Signer::generate().unwrap();
        let n = signer.jwk["n"].as_str().unwrap();
        let e = signer.jwk["e"].as_str().unwrap();
        assert_eq!(signer.kid, jwk_thumbprint(n, e));
        assert_eq!(signer.jwk["kid"], signer.kid.as_str());
        assert_eq!(e, "AQAB");
        // 2048 bits are 256 bytes, 342 base64url characters without padding.
        assert_eq!(n.len(), 342);
    }
}
