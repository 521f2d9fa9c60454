use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::env;

#[derive(Parser)]
#[command(
    name = "drydock",
    version,
    about = "Self-hosted remote container builds on BuildKit"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Server(_))
            || matches!(
                &self.command,
                Command::Docker {
                    command: DockerCommand::Buildx {
                        command: BuildxCommand::Proxy(_)
                    }
                }
            )
    }
}

#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Drydock server URL (for example https://drydock.example.com:8443).
    #[arg(long, global = true, env = env::SERVER)]
    pub server: Option<String>,
    /// PEM file of a private CA that signed the server's TLS certificate.
    #[arg(long, global = true, env = env::CA_CERT)]
    pub ca_cert: Option<PathBuf>,
    /// Folder for client state (workspace token, proxy pid files, sockets).
    /// Defaults to the user's config folder (~/.config/drydock).
    #[arg(long, global = true, env = env::CONFIG_DIR)]
    pub config_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the Drydock server: API, OCI registry and builder tunnel on one port.
    Server(Box<ServerArgs>),
    /// Operator commands; authenticate with the operator token in DRYDOCK_TOKEN.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Get and inspect workspace tokens.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Use Drydock from docker: registry login and remote buildx builders.
    Docker {
        #[command(subcommand)]
        command: DockerCommand,
    },
}

#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on, for example 0.0.0.0:8443 or 127.0.0.1:5000.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Folder for the metadata database, registry blobs, builder state and the operator token.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// URL clients and builders use to reach this server (registry host, token realm).
    /// Defaults to the listen address.
    #[arg(long)]
    pub public_url: Option<url::Url>,
    /// PEM certificate chain for HTTPS; requires --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS; requires --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Lifetime of workspace tokens issued for OIDC tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_secs: u64,
    /// Stop a builder after it has had no connection for this many seconds.
    #[arg(long, default_value_t = 900)]
    pub builder_idle_secs: u64,
    /// Path of the buildkitd binary.
    #[arg(long, default_value = "buildkitd")]
    pub buildkitd: PathBuf,
    /// A plain-HTTP registry (host:port) the builders may also push to; repeatable.
    #[arg(long = "builder-insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Seconds to let in-flight requests and builds finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// Write the public URL to this file once listening (handy with port 0).
    #[arg(long)]
    pub url_file: Option<PathBuf>,
    /// Seconds a registry blob, blob link or manifest must go untouched before garbage
    /// collection may delete it, so that pushes in progress keep what they uploaded.
    #[arg(long, default_value_t = 3600)]
    pub registry_gc_grace_secs: u64,
    /// Shut down when standard input closes (for supervisors and tests that own the server).
    #[arg(long, hide = true)]
    pub stop_on_stdin_close: bool,
    // Last, because its help heading also applies to the flags after it.
    #[command(flatten)]
    pub blob_store: BlobStoreArgs,
}

/// Blob storage settings of `drydock server`. S3 credentials come from the standard
/// environment variables AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
#[derive(Args, Debug)]
#[command(next_help_heading = "Blob storage")]
pub struct BlobStoreArgs {
    /// Storage for registry blobs: `filesystem` (under --data-dir) or `s3`.
    #[arg(long, value_enum, default_value_t = BlobStoreKind::Filesystem)]
    pub blob_store: BlobStoreKind,
    /// S3 bucket for blobs; required with --blob-store s3. It must exist.
    #[arg(long, required_if_eq("blob_store", "s3"))]
    pub s3_bucket: Option<String>,
    /// Base URL of the S3 API, such as https://s3.us-east-1.amazonaws.com or
    /// http://127.0.0.1:9000; required with --blob-store s3. Buckets are addressed path-style.
    #[arg(long, required_if_eq("blob_store", "s3"))]
    pub s3_endpoint: Option<url::Url>,
    /// Region to sign S3 requests for, such as us-east-1; required with --blob-store s3.
    #[arg(long, required_if_eq("blob_store", "s3"))]
    pub s3_region: Option<String>,
    /// Key prefix for blob objects in the bucket, such as drydock/prod.
    #[arg(long)]
    pub s3_prefix: Option<String>,
    /// Allow an http:// S3 endpoint, which sends blobs unencrypted.
    #[arg(long)]
    pub s3_allow_http: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobStoreKind {
    Filesystem,
    S3,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create and list workspaces.
    Workspace {
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// Manage which OIDC issuers, audiences and subjects may act for a workspace.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
    },
    /// Collect registry garbage and show storage usage per workspace.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Delete manifests no tag reaches and the blobs only they used, and report what was freed.
    Gc {
        /// Report what would be freed without deleting anything.
        #[arg(long)]
        dry_run: bool,
        /// Grace period in seconds for this run. It may only be shorter than the server's
        /// --registry-gc-grace-secs; 0 collects everything unreachable, including blobs a
        /// push in progress has just uploaded, so use it only when nothing pushes.
        #[arg(long)]
        grace_secs: Option<u64>,
    },
    /// Show repositories, manifests, tags, distinct blobs and bytes per workspace.
    Usage,
}

#[derive(Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace.
    Create {
        /// Workspace name: lowercase letters and digits, optionally separated by '-', '_' or '.'.
        name: String,
    },
    /// List workspaces.
    List,
}

#[derive(Subcommand)]
pub enum TrustCommand {
    /// Trust OIDC tokens from an issuer, for an audience, whose subject matches a pattern.
    Add {
        /// Workspace the rule admits tokens into.
        #[arg(long)]
        workspace: String,
        /// Issuer URL, exactly as the token's `iss` claim (https://agent.buildkite.com).
        #[arg(long)]
        issuer: String,
        /// Audience the token must carry in `aud`.
        #[arg(long)]
        audience: String,
        /// Glob over the `sub` claim: `*` matches any run of characters, `?` one character
        /// (organization:acme:pipeline:*).
        #[arg(long)]
        subject: String,
    },
    /// List trust rules.
    List {
        /// Only this workspace's rules.
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Remove a trust rule by id (see `trust list`).
    Remove { id: i64 },
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Trade a CI-issued OIDC token for a workspace token and store it.
    ExchangeOidcToken {
        /// The OIDC token (for Buildkite: `buildkite-agent oidc request-token --audience AUD`).
        /// Prefer the environment variable: arguments are visible to other local users.
        #[arg(long, env = crate::env::OIDC_TOKEN, hide_env_values = true)]
        token: Option<String>,
        /// Workspace to act for.
        #[arg(long, alias = "tenant_id", alias = "tenant-id")]
        workspace: String,
    },
    /// Show the stored workspace token's workspace and expiry.
    Status,
}

#[derive(Subcommand)]
pub enum DockerCommand {
    /// Let docker, buildx and BuildKit authenticate to Drydock's registry with the workspace
    /// token, through the docker-credential-drydock credential helper.
    Login,
    /// Remote BuildKit builders for `docker buildx`.
    Buildx {
        #[command(subcommand)]
        command: BuildxCommand,
    },
}

#[derive(Subcommand)]
pub enum BuildxCommand {
    /// Start the local proxy and register a buildx builder with one node per platform.
    Setup(SetupArgs),
    /// Show the proxy, the buildx builder and the server's builders.
    Status(NameArgs),
    /// Stop the proxy and remove the buildx builder.
    Cleanup(NameArgs),
    /// Run the local proxy in the foreground (started by `setup --background`).
    #[command(hide = true)]
    Proxy(ProxyArgs),
}

#[derive(Args)]
pub struct SetupArgs {
    /// Run the proxy in the background and return once its sockets accept connections.
    #[arg(long)]
    pub background: bool,
    /// Make the new builder docker buildx's default.
    #[arg(long = "use")]
    pub use_builder: bool,
    /// Name of the buildx builder.
    #[arg(long, default_value = "drydock-remote")]
    pub name: String,
    /// Platforms to set up, one buildx node each.
    #[arg(long, value_delimiter = ',', default_value = "linux/amd64,linux/arm64")]
    pub platform: Vec<String>,
}

#[derive(Args)]
pub struct NameArgs {
    /// Name of the buildx builder.
    #[arg(long, default_value = "drydock-remote")]
    pub name: String,
}

#[derive(Args)]
pub struct ProxyArgs {
    /// Name of the buildx builder.
    #[arg(long, default_value = "drydock-remote")]
    pub name: String,
    #[arg(long, value_delimiter = ',', default_value = "linux/amd64,linux/arm64")]
    pub platform: Vec<String>,
}
