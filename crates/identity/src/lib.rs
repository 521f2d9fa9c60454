//! Identity for Drydock: who a request comes from. Verifies API tokens (operator and
//! workspace tokens) and exchanges CI-issued OIDC tokens for workspace tokens under the
//! trust rules an operator set.

mod discovery;
mod error;
mod exchange;
mod glob;
mod jwt;
mod keys;
mod principal;

#[cfg(test)]
mod exchange_tests;
#[cfg(test)]
mod test_issuer;

pub use discovery::check_fetch_url;
pub use error::ExchangeError;
pub use exchange::{ExchangedToken, OidcVerifier};
pub use glob::subject_matches;
pub use principal::{authenticate, format_unix, AuthError, Principal};
