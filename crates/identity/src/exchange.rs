//! Exchanging a CI-issued OIDC token for a workspace token.

use std::time::Duration;

use drydock_store::{now_unix, Db, TokenKind, TrustRule};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;

use crate::jwt::{decode_unverified, Claims};
use crate::keys::KeyCache;
use crate::{format_unix, subject_matches, ExchangeError};

/// Clock skew tolerated when checking `exp` and `nbf`, in seconds.
const CLOCK_LEEWAY_SECS: u64 = 60;

/// Verifies OIDC tokens against the trust rules of a workspace. Clones share the HTTP
/// client and the cache of issuer keys.
#[derive(Clone)]
pub struct OidcVerifier {
    http: reqwest::Client,
    keys: KeyCache,
}

/// A workspace token issued for a verified OIDC token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangedToken {
    pub token: String,
    pub workspace: String,
    /// The OIDC token's `sub` claim, stored as the workspace token's subject.
    pub subject: String,
    pub issuer: String,
    /// Unix time in seconds at which the workspace token expires.
    pub expires_at: i64,
}

impl OidcVerifier {
    /// Creates a verifier that fetches issuer keys with `http`.
    ///
    /// Every URL is checked before it is fetched: https, or plain http to a loopback host
    /// (`localhost`, 127.0.0.0/8, `::1`). Redirects follow `http`'s own policy, so a client
    /// built with `reqwest::redirect::Policy::none()` keeps every fetch on a checked URL.
    pub fn new(http: reqwest::Client) -> OidcVerifier {
        OidcVerifier {
            http,
            keys: KeyCache::default(),
        }
    }

    /// Creates a verifier whose key cache uses the given TTL and minimum refetch interval.
    #[cfg(test)]
    pub(crate) fn with_key_intervals(
        http: reqwest::Client,
        ttl: Duration,
        min_refetch_interval: Duration,
    ) -> OidcVerifier {
        OidcVerifier {
            http,
            keys: KeyCache::with_intervals(ttl, min_refetch_interval),
        }
    }

    /// Verifies `oidc_token` and issues a token for `workspace` that expires after `lifetime`.
    ///
    /// The token's issuer, audience and subject must match one of the workspace's trust
    /// rules before anything is fetched, so the server never requests a URL that only an
    /// untrusted token names. The signature is then checked with the issuer's published
    /// keys, and `exp` and `nbf` with 60 s of leeway.
    pub async fn exchange(
        &self,
        db: &Db,
        oidc_token: &str,
        workspace: &str,
        lifetime: Duration,
    ) -> Result<ExchangedToken, ExchangeError> {
        let oidc_token = oidc_token.trim();
        let (header, claims) = decode_unverified(oidc_token)?;

        // Fails with a message that explains how to create the workspace when it is missing.
        let rules = db.list_trust_rules(Some(workspace)).await?;
        select_rule(&rules, workspace, &claims)?;

        let key = self
            .keys
            .decoding_key(&self.http, &claims.iss, header.kid.as_deref(), header.alg)
            .await?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.set_issuer(&[&claims.iss]);
        // Every audience of the rules for this issuer is accepted here, because the rule is
        // chosen again below from the verified claims.
        let audiences: Vec<&str> = rules
            .iter()
            .filter(|rule| rule.issuer == claims.iss)
            .map(|rule| rule.audience.as_str())
            .collect();
        validation.set_audience(&audiences);

        let kid = header.kid.clone().unwrap_or_else(|| "(none)".to_owned());
        let verified = jsonwebtoken::decode::<Claims>(oidc_token, &key, &validation)
            .map_err(|e| describe_validation_error(e.kind(), &claims, &kid))?
            .claims;
        let rule = select_rule(&rules, workspace, &verified)?;

        let expires_at =
            now_unix().saturating_add(lifetime.as_secs().try_into().unwrap_or(i64::MAX));
        let token = db
            .issue_token(
                TokenKind::Workspace,
                Some(workspace),
                &verified.sub,
                Some(expires_at),
            )
            .await?;
        tracing::info!(
            workspace,
            issuer = %verified.iss,
            subject = %verified.sub,
            rule = rule.id,
            expires_at = %format_unix(expires_at),
            "exchanged OIDC token for a workspace token"
        );
        Ok(ExchangedToken {
            token,
            workspace: workspace.to_owned(),
            subject: verified.sub,
            issuer: verified.iss,
            expires_at,
        })
    }
}

/// Returns the first rule of `rules` that admits the token's issuer, audience and subject.
///
/// When rules name the issuer but none lists one of the token's audiences, the error names
/// the expected audiences, because a wrong `--audience` is the usual mistake.
fn select_rule<'r>(
    rules: &'r [TrustRule],
    workspace: &str,
    claims: &Claims,
) -> Result<&'r TrustRule, ExchangeError> {
    let for_issuer: Vec<&TrustRule> = rules.iter().filter(|r| r.issuer == claims.iss).collect();
    let for_audience: Vec<&TrustRule> = for_issuer
        .iter()
        .copied()
        .filter(|r| claims.has_audience(&r.audience))
        .collect();

    if !for_issuer.is_empty() && for_audience.is_empty() {
        let mut expected: Vec<String> = for_issuer
            .iter()
            .map(|r| format!("{:?}", r.audience))
            .collect();
        expected.dedup();
        return Err(ExchangeError::WrongAudience {
            workspace: workspace.to_owned(),
            issuer: claims.iss.clone(),
            subject: claims.sub.clone(),
            audiences: claims.audiences(),
            expected: expected.join(" or "),
        });
    }

    for_audience
        .into_iter()
        .find(|r| subject_matches(&r.subject_pattern, &claims.sub))
        .ok_or_else(|| ExchangeError::NoMatchingRule {
            workspace: workspace.to_owned(),
            issuer: claims.iss.clone(),
            subject: claims.sub.clone(),
        })
}

/// Maps a `jsonwebtoken` failure to an error that names the problem with the token.
/// `claims` are the unverified claims, read only to word the message.
fn describe_validation_error(kind: &ErrorKind, claims: &Claims, kid: &str) -> ExchangeError {
    let issuer = claims.iss.clone();
    match kind {
        ErrorKind::ExpiredSignature => ExchangeError::Expired {
            expired_at: claims
                .exp
                .map(format_unix)
                .unwrap_or_else(|| "an unknown time".into()),
        },
        ErrorKind::ImmatureSignature => ExchangeError::NotYetValid {
            not_before: claims
                .nbf
                .map(format_unix)
                .unwrap_or_else(|| "an unknown time".into()),
        },
        // The header and payload were decoded before, so a base64 error is in the signature.
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::Base64(_) => ExchangeError::BadSignature {
            issuer,
            kid: kid.to_owned(),
        },
        ErrorKind::MissingRequiredClaim(claim) => ExchangeError::InvalidClaims {
            reason: format!("the token has no {claim:?} claim"),
        },
        ErrorKind::InvalidAudience => ExchangeError::InvalidClaims {
            reason: format!(
                "the token's audience {:?} is not accepted",
                claims.audiences()
            ),
        },
        other => ExchangeError::InvalidClaims {
            reason: format!("failed to validate the token: {other:?}"),
        },
    }
}
