//! BuildKit builder supervision: one `buildkitd` (runc worker) per workspace and platform, each
//! with its own root folder as cache and isolation boundary, serving only on a private unix
//! socket. Builders start on the first [`BuilderManager::acquire`], stop after
//! [`BuilderConfig::idle_timeout`] without leases, and keep their cache across restarts.
//!
//! State layout under [`BuilderConfig::data_dir`]:
//!
//! ```text
//! builders/<workspace>/<os>-<arch>/
//!     root/             buildkitd --root: cache and metadata
//!     buildkitd.toml    generated before every start
//!     buildkitd.log     buildkitd's output (the previous start's in buildkitd.log.1)
//!     buildkitd.pid     while the process runs
//! run/<hash>.sock       sockets, or /tmp/drydock-<hash>/ when that path would be too long
//! ```

mod builder;
mod config;
mod error;
mod manager;
mod paths;
mod platform;
mod process;

pub use builder::BuilderState;
pub use config::{BuilderConfig, RegistryTrust};
pub use error::BuilderError;
pub use manager::{BuilderLease, BuilderManager, BuilderStatus};
pub use platform::{ParsePlatformError, Platform};
