//! Environment variables `drydock` reads.

/// Drydock server URL, for example `https://drydock.example.com`.
pub const SERVER: &str = "DRYDOCK_SERVER";
/// Folder for client state: the workspace token, proxy pid files and sockets.
pub const CONFIG_DIR: &str = "DRYDOCK_CONFIG_DIR";
/// The CI's OIDC token, for `drydock auth exchange-oidc-token` (instead of `--token`).
pub const OIDC_TOKEN: &str = "DRYDOCK_OIDC_TOKEN";
/// The operator token, for `drydock admin` commands.
pub const TOKEN: &str = "DRYDOCK_TOKEN";
/// PEM file of a private CA that signed the server's TLS certificate.
pub const CA_CERT: &str = "DRYDOCK_CA_CERT";
/// Log filter, in `tracing_subscriber::EnvFilter` syntax (`info`, `drydock_server=debug`).
pub const LOG: &str = "DRYDOCK_LOG";
/// docker's configuration folder; `~/.docker` when unset.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
/// Access key ID for the S3 blob store (`drydock server --blob-store s3`).
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// Secret access key for the S3 blob store.
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Session token for the S3 blob store, set only with temporary credentials.
pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
