//! Identity for Drydock: who a request comes from. Verifies API tokens (operator and
//! workspace tokens) and exchanges CI-issued OIDC tokens for workspace tokens under the
//! trust rules an operator set.

mod principal;

pub use principal::{authenticate, format_unix, AuthError, Principal};
