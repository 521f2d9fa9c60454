//! A per-issuer cache of JWKS signing keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::discovery::fetch_issuer_keys;
use crate::ExchangeError;

/// How long fetched keys are used before they are fetched again.
const KEY_TTL: Duration = Duration::from_secs(10 * 60);

/// Minimum time between two fetches of one issuer's keys. A token with an unknown `kid`
/// triggers a fetch, because the issuer may have rotated its keys, but a stream of such
/// tokens must not turn the server into a load generator against the issuer.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Signing keys by issuer. Clones share one cache.
#[derive(Clone)]
pub(crate) struct KeyCache {
    issuers: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<IssuerKeys>>>>>,
    ttl: Duration,
    min_refetch_interval: Duration,
}

impl Default for KeyCache {
    fn default() -> KeyCache {
        KeyCache::with_intervals(KEY_TTL, MIN_REFETCH_INTERVAL)
    }
}

#[derive(Default)]
struct IssuerKeys {
    keys: Vec<Jwk>,
    /// When `keys` were fetched.
    fetched_at: Option<Instant>,
    /// When the last fetch started.
    attempted_at: Option<Instant>,
    /// Why the last fetch failed, or `None` after a success.
    last_error: Option<String>,
}

impl IssuerKeys {
    fn attempted_within(&self, interval: Duration) -> bool {
        self.attempted_at.is_some_and(|at| at.elapsed() < interval)
    }

    /// Fetches the keys again. A failed fetch keeps the previous keys but not their age,
    /// so they stay in use only until their TTL ends.
    async fn refresh(&mut self, http: &reqwest::Client, issuer: &str) -> Result<(), String> {
        self.attempted_at = Some(Instant::now());
        match fetch_issuer_keys(http, issuer).await {
            Ok(keys) => {
                self.keys = keys;
                self.fetched_at = self.attempted_at;
                self.last_error = None;
                Ok(())
            }
            Err(reason) => {
                self.last_error = Some(reason.clone());
                Err(reason)
            }
        }
    }
}

/// The outcome of looking a token's key up in a key set.
enum Lookup {
    Found(DecodingKey),
    NotFound,
    /// A key has the token's `kid` but cannot verify the token's `alg`.
    WrongType,
    /// The token has no `kid` and the set has this many keys that fit its `alg`.
    Ambiguous(usize),
}

impl KeyCache {
    pub fn with_intervals(ttl: Duration, min_refetch_interval: Duration) -> KeyCache {
        KeyCache {
            issuers: Arc::default(),
            ttl,
            min_refetch_interval,
        }
    }

    /// Returns the key of `issuer` that verifies a token with header `kid` and `alg`.
    ///
    /// The issuer's keys are fetched when they are missing or older than the TTL. When they
    /// lack `kid`, they are fetched once more unless the last fetch is within the refetch
    /// interval.
    pub async fn decoding_key(
        &self,
        http: &reqwest::Client,
        issuer: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, ExchangeError> {
        let slot = self.issuer_slot(issuer);
        // Holding the issuer's lock across the fetch makes concurrent exchanges for the
        // same issuer wait for one fetch instead of starting their own.
        let mut entry = slot.lock().await;

        let discovery_failed = |reason: String| ExchangeError::Discovery {
            issuer: issuer.to_owned(),
            reason,
        };
        let fresh = entry.fetched_at.is_some_and(|at| at.elapsed() < self.ttl);
        if !fresh {
            // An issuer that just failed is not asked again at once: the stored reason is
            // returned until the refetch interval has passed.
            match (
                &entry.last_error,
                entry.attempted_within(self.min_refetch_interval),
            ) {
                (Some(reason), true) => return Err(discovery_failed(reason.clone())),
                _ => entry
                    .refresh(http, issuer)
                    .await
                    .map_err(discovery_failed)?,
            }
        }
        let mut lookup = find_key(&entry.keys, kid, alg);
        if matches!(lookup, Lookup::NotFound) && !entry.attempted_within(self.min_refetch_interval)
        {
            tracing::info!(
                issuer,
                kid,
                "refetching OIDC issuer keys for an unknown key id"
            );
            entry
                .refresh(http, issuer)
                .await
                .map_err(discovery_failed)?;
            lookup = find_key(&entry.keys, kid, alg);
        }

        let kid_in_message = kid.unwrap_or("(none)").to_owned();
        match lookup {
            Lookup::Found(key) => Ok(key),
            Lookup::NotFound => Err(ExchangeError::UnknownKey {
                issuer: issuer.to_owned(),
                kid: kid_in_message,
            }),
            Lookup::WrongType => Err(ExchangeError::BadSignature {
                issuer: issuer.to_owned(),
                kid: kid_in_message,
            }),
            Lookup::Ambiguous(count) => Err(ExchangeError::MalformedToken {
                reason: format!(
                    "the header has no \"kid\" field, and issuer {issuer:?} publishes {count} \
                     keys for {alg:?}"
                ),
            }),
        }
    }

    fn issuer_slot(&self, issuer: &str) -> Arc<tokio::sync::Mutex<IssuerKeys>> {
        // The map only grows by issuers that a trust rule names, because the exchange
        // checks the rules before it requests keys.
        let mut issuers = self
            .issuers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        issuers.entry(issuer.to_owned()).or_default().clone()
    }
}

/// Finds the key for a token: the one with its `kid`, or when the token has none, the only
/// key that fits its `alg`. Encryption keys are ignored.
fn find_key(keys: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Lookup {
    let signing_keys = keys
        .iter()
        .filter(|key| key.common.public_key_use != Some(PublicKeyUse::Encryption));

    let candidates: Vec<&Jwk> = match kid {
        Some(kid) => {
            let with_kid: Vec<&Jwk> = signing_keys
                .filter(|key| key.common.key_id.as_deref() == Some(kid))
                .collect();
            if with_kid.is_empty() {
                return Lookup::NotFound;
            }
            let fitting: Vec<&Jwk> = with_kid.into_iter().filter(|k| fits(k, alg)).collect();
            if fitting.is_empty() {
                return Lookup::WrongType;
            }
            fitting
        }
        None => {
            let fitting: Vec<&Jwk> = signing_keys.filter(|key| fits(key, alg)).collect();
            if fitting.len() > 1 {
                return Lookup::Ambiguous(fitting.len());
            }
            fitting
        }
    };

    match candidates.first().map(|key| DecodingKey::from_jwk(key)) {
        Some(Ok(key)) => Lookup::Found(key),
        Some(Err(_)) => Lookup::WrongType,
        None => Lookup::NotFound,
    }
}

/// Checks that `key` can verify signatures made with `alg`. Its type and curve must fit
/// `alg`, and its own `alg`, when it has one, must be `alg`.
fn fits(key: &Jwk, alg: Algorithm) -> bool {
    if let Some(key_alg) = key.common.key_algorithm {
        if key_alg.to_string() != format!("{alg:?}") {
            return false;
        }
    }
    match (&key.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(json: serde_json::Value) -> Jwk {
        serde_json::from_value(json).unwrap()
    }

    fn rsa(kid: &str) -> Jwk {
        // A 2048-bit modulus is not needed to select a key, only to verify with it.
        jwk(serde_json::json!({"kty": "RSA", "kid": kid, "n": "sXch", "e": "AQAB"}))
    }

    fn ec(kid: &str, crv: &str) -> Jwk {
        jwk(serde_json::json!({"kty": "EC", "kid": kid, "crv": crv, "x": "AQ", "y": "AQ"}))
    }

    #[test]
    fn key_is_selected_by_kid() {
        let keys = [rsa("a"), rsa("b")];
        assert!(matches!(
            find_key(&keys, Some("b"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            find_key(&keys, Some("c"), Algorithm::RS256),
            Lookup::NotFound
        ));
    }

    #[test]
    fn key_of_other_type_is_wrong_type() {
        let keys = [rsa("a"), ec("e", "P-256")];
        assert!(matches!(
            find_key(&keys, Some("a"), Algorithm::ES256),
            Lookup::WrongType
        ));
        assert!(matches!(
            find_key(&keys, Some("e"), Algorithm::ES256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            find_key(&keys, Some("e"), Algorithm::ES384),
            Lookup::WrongType
        ));
    }

    #[test]
    fn key_alg_must_equal_token_alg() {
        let mut key = rsa("a");
        key.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::RS512);
        let keys = [key];
        assert!(matches!(
            find_key(&keys, Some("a"), Algorithm::RS256),
            Lookup::WrongType
        ));
        assert!(matches!(
            find_key(&keys, Some("a"), Algorithm::RS512),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn encryption_keys_are_ignored() {
        let mut key = rsa("a");
        key.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert!(matches!(
            find_key(&[key], Some("a"), Algorithm::RS256),
            Lookup::NotFound
        ));
    }

    #[test]
    fn token_without_kid_uses_the_only_fitting_key() {
        let keys = [rsa("a"), ec("e", "P-256")];
        assert!(matches!(
            find_key(&keys, None, Algorithm::RS256),
            Lookup::Found(_)
        ));
        let two = [rsa("a"), rsa("b")];
        assert!(matches!(
            find_key(&two, None, Algorithm::RS256),
            Lookup::Ambiguous(2)
        ));
        assert!(matches!(
            find_key(&[], None, Algorithm::RS256),
            Lookup::NotFound
        ));
    }
}
