//! The Drydock server: one process serving the API (`/v1`), the OCI registry (`/v2`) and the
//! builder tunnel on one port, over plain HTTP or TLS.

mod api;
mod config;
mod error;
mod listener;
mod operator_token;
mod registry_admin;
mod state;
mod tunnel;

pub use config::{BlobStoreConfig, ServerConfig, TlsFiles};
pub use drydock_registry::{S3Config, S3Credentials};
pub use error::ServerError;
pub use listener::run;
