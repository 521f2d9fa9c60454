use drydock_store::StoreError;

/// The next step that an expired-token message gives the caller.
const REQUEST_NEW_TOKEN: &str = "request a new OIDC token from the CI (on Buildkite: \
     `buildkite-agent oidc request-token --audience AUDIENCE`) and exchange it right away";

/// A reason an OIDC token was not exchanged. Messages never include the token itself.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("invalid OIDC token: {reason}; pass the JWT exactly as the CI printed it")]
    MalformedToken { reason: String },

    #[error(
        "invalid OIDC token: signing algorithm {alg:?} is not accepted; use a token signed \
         with RS256, RS384, RS512, PS256, PS384, PS512, ES256 or ES384"
    )]
    UnsupportedAlgorithm { alg: String },

    #[error(
        "no trust rule of workspace {workspace:?} matched the OIDC token from issuer \
         {issuer:?} with subject {subject:?}; an operator lists the rules with \
         `drydock admin trust list` and adds one for this issuer and subject"
    )]
    NoMatchingRule {
        workspace: String,
        issuer: String,
        subject: String,
    },

    #[error(
        "no trust rule of workspace {workspace:?} matched the OIDC token from issuer \
         {issuer:?} with subject {subject:?}: the token's audience is {audiences:?}, but \
         the rules for this issuer expect {expected}; request the token with that audience \
         (on Buildkite: `buildkite-agent oidc request-token --audience AUDIENCE`)"
    )]
    WrongAudience {
        workspace: String,
        issuer: String,
        subject: String,
        audiences: Vec<String>,
        /// The audiences of the workspace's rules for this issuer, quoted and joined by "or".
        expected: String,
    },

    #[error("OIDC token expired at {expired_at}; {REQUEST_NEW_TOKEN}")]
    Expired { expired_at: String },

    #[error(
        "OIDC token is not valid before {not_before}; check that the clocks of the CI \
         runner and this server agree"
    )]
    NotYetValid { not_before: String },

    #[error(
        "failed to verify the OIDC token's signature with key {kid:?} of issuer {issuer:?}; \
         the token was altered or not signed by this issuer"
    )]
    BadSignature { issuer: String, kid: String },

    #[error(
        "failed to find signing key {kid:?} in the JWKS of issuer {issuer:?}; the token was \
         not signed by this issuer, or the issuer rotated its keys moments ago and a retry \
         in a minute succeeds"
    )]
    UnknownKey { issuer: String, kid: String },

    #[error("invalid OIDC token claims: {reason}")]
    InvalidClaims { reason: String },

    #[error(
        "failed to fetch the signing keys of OIDC issuer {issuer:?}: {reason}; check that \
         the issuer is reachable from the Drydock server and serves valid OpenID discovery"
    )]
    Discovery { issuer: String, reason: String },

    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExchangeError {
    /// Returns the HTTP status that a server responds with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ExchangeError::MalformedToken { .. } | ExchangeError::UnsupportedAlgorithm { .. } => {
                400
            }
            ExchangeError::Expired { .. }
            | ExchangeError::NotYetValid { .. }
            | ExchangeError::BadSignature { .. }
            | ExchangeError::UnknownKey { .. }
            | ExchangeError::InvalidClaims { .. } => 401,
            ExchangeError::NoMatchingRule { .. } | ExchangeError::WrongAudience { .. } => 403,
            ExchangeError::Discovery { .. } => 502,
            ExchangeError::Store(StoreError::NotFound(_)) => 404,
            ExchangeError::Store(StoreError::Conflict(_)) => 409,
            ExchangeError::Store(_) => 500,
        }
    }
}
