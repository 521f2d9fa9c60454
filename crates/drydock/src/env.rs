//! Environment variables `drydock` reads.

/// Drydock server URL, for example `https://drydock.example.com`.
pub const SERVER: &str = "DRYDOCK_SERVER";
/// Folder for client state: the workspace token, proxy pid files and sockets.
pub const CONFIG_DIR: &str = "DRYDOCK_CONFIG_DIR";
/// The operator token, for `drydock admin` commands.
pub const TOKEN: &str = "DRYDOCK_TOKEN";
/// PEM file of a private CA that signed the server's TLS certificate.
pub const CA_CERT: &str = "DRYDOCK_CA_CERT";
/// Log filter, in `tracing_subscriber::EnvFilter` syntax (`info`, `drydock_server=debug`).
pub const LOG: &str = "DRYDOCK_LOG";
/// docker's configuration folder; `~/.docker` when unset.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
