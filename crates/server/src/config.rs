use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use drydock_registry::S3Config;
use url::Url;

/// Certificate chain and private key (PEM files) for serving HTTPS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Storage for the registry's blob contents.
#[derive(Clone, Debug, Default)]
pub enum BlobStoreConfig {
    /// Files under `data_dir/blobs`.
    #[default]
    Filesystem,
    /// Objects in an S3 bucket. Uploads are still staged under `data_dir/uploads`.
    S3(Box<S3Config>),
}

/// Everything `drydock server` is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Metadata database, blobs, builder state and the operator token file live here.
    pub data_dir: PathBuf,
    pub blob_store: BlobStoreConfig,
    /// Address clients and builders use; defaults to the listen address.
    pub public_url: Option<Url>,
    pub tls: Option<TlsFiles>,
    /// PEM CA bundle trusted for OIDC discovery and, when the public URL is https, given to
    /// builders so they trust this server's registry.
    pub ca_file: Option<PathBuf>,
    pub token_lifetime: Duration,
    pub builder_idle_timeout: Duration,
    pub buildkitd: PathBuf,
    /// Further plain-HTTP registries (`host:port`) the builders may push to and pull from.
    pub insecure_registries: Vec<String>,
    /// How long in-flight requests and tunnels may run on after a shutdown signal.
    pub drain_timeout: Duration,
    /// When set, the public URL is written here once the server listens (useful with port 0).
    pub url_file: Option<PathBuf>,
    /// Registry blobs, links and manifests touched more recently than this survive garbage
    /// collection, because a push in progress may still refer to them.
    pub registry_gc_grace: Duration,
}
