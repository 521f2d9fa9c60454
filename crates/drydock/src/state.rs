//! Client state under the config folder: the workspace token and the proxies' records.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::env;

/// Unix socket paths must fit in `sockaddr_un.sun_path` (108 bytes with the terminator).
const MAX_SOCKET_PATH: usize = 100;

/// Returns the client's config folder: `--config-dir`/`DRYDOCK_CONFIG_DIR`, else
/// `~/.config/drydock`.
pub fn config_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("drydock"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .with_context(|| {
            format!(
                "cannot find a config folder: HOME is unset; set {}",
                env::CONFIG_DIR
            )
        })?;
    Ok(PathBuf::from(home).join(".config").join("drydock"))
}

/// Creates `dir` (and parents) and makes it private to the user.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create folder {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("failed to make folder {} private", dir.display()))?;
    Ok(())
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename) with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("file path has no parent folder")?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("failed to write {}", path.display()))
}

/// Stored workspace token with the details the server returned for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub workspace: String,
    pub subject: String,
    pub token: String,
    pub expires_at: i64,
    /// The registry's `host:port` as image references name it.
    pub registry: String,
}

impl Credentials {
    pub fn path(config_dir: &Path) -> PathBuf {
        config_dir.join("credentials.json")
    }

    /// Loads the stored credentials, or `None` when there are none.
    pub fn load(config_dir: &Path) -> Result<Option<Credentials>> {
        let path = Credentials::path(config_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("failed to read {}", path.display()))
            }
        };
        let credentials = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "invalid credentials file {}; delete it and run `drydock auth exchange-oidc-token` again",
                path.display()
            )
        })?;
        Ok(Some(credentials))
    }

    /// Loads the credentials and fails with the fix when they are missing or expired.
    pub fn load_valid(config_dir: &Path) -> Result<Credentials> {
        let Some(credentials) = Credentials::load(config_dir)? else {
            bail!(
                "no workspace token in {}: run `drydock auth exchange-oidc-token` first",
                config_dir.display()
            );
        };
        if let Some(expired_at) = credentials.expired_at() {
            bail!("workspace token expired at {expired_at}; run `drydock auth exchange-oidc-token` again");
        }
        Ok(credentials)
    }

    pub fn save(&self, config_dir: &Path) -> Result<()> {
        ensure_private_dir(config_dir)?;
        let json = serde_json::to_vec_pretty(self).context("failed to encode credentials")?;
        write_atomic(&Credentials::path(config_dir), &json, 0o600)
    }

    /// When the token has expired, its expiry as RFC 3339.
    pub fn expired_at(&self) -> Option<String> {
        (self.expires_at <= drydock_store::now_unix()).then(|| format_unix(self.expires_at))
    }
}

pub use drydock_identity::format_unix;

/// Record that `setup --background` writes about a running proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxyRecord {
    pub name: String,
    pub pid: u32,
    pub server: String,
    pub sockets: Vec<ProxySocket>,
    pub log_file: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProxySocket {
    pub platform: String,
    pub path: PathBuf,
}

impl ProxyRecord {
    pub fn path(config_dir: &Path, name: &str) -> PathBuf {
        config_dir.join("proxies").join(format!("{name}.json"))
    }

    pub fn load(config_dir: &Path, name: &str) -> Result<Option<ProxyRecord>> {
        let path = ProxyRecord::path(config_dir, name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "invalid proxy record {}; run `drydock docker buildx cleanup`",
                    path.display()
                )
            })?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    pub fn save(&self, config_dir: &Path) -> Result<()> {
        let path = ProxyRecord::path(config_dir, &self.name);
        ensure_private_dir(path.parent().expect("record path has a parent"))?;
        write_atomic(&path, &serde_json::to_vec_pretty(self)?, 0o600)
    }

    pub fn remove(config_dir: &Path, name: &str) {
        let _ = std::fs::remove_file(ProxyRecord::path(config_dir, name));
    }
}

/// The private folder for a proxy's sockets and log. It sits in the config folder unless the
/// socket paths would be too long, in which case a short folder under the temp dir is used.
pub fn proxy_run_dir(config_dir: &Path, name: &str) -> PathBuf {
    let preferred = config_dir.join("run").join(name);
    if preferred.join("linux-amd64.sock").as_os_str().len() <= MAX_SOCKET_PATH {
        return preferred;
    }
    let digest = Sha256::digest(preferred.as_os_str().as_encoded_bytes());
    let uid = nix::unistd::getuid();
    std::env::temp_dir()
        .join(format!("drydock-{uid}"))
        .join(&hex::encode(digest)[..16])
}

/// Returns the socket file name for a platform: `linux/arm64` -> `linux-arm64.sock`.
pub fn socket_name(platform: &str) -> String {
    format!("{}.sock", platform.replace('/', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_config_dir_gets_short_socket_folder() {
        let long = PathBuf::from("/tmp").join("x".repeat(120));
        let dir = proxy_run_dir(&long, "drydock-remote");
        assert!(dir.join(socket_name("linux/amd64")).as_os_str().len() <= MAX_SOCKET_PATH);
        let short = proxy_run_dir(Path::new("/tmp/cfg"), "drydock-remote");
        assert_eq!(short, PathBuf::from("/tmp/cfg/run/drydock-remote"));
    }

    #[test]
    fn credentials_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = Credentials {
            server: "http://127.0.0.1:1".into(),
            workspace: "acme".into(),
            subject: "s".into(),
            token: "ddw_secret".into(),
            expires_at: 1,
            registry: "127.0.0.1:1".into(),
        };
        credentials.save(dir.path()).unwrap();
        let mode = std::fs::metadata(Credentials::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Credentials::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.expired_at().as_deref(), Some("1970-01-01T00:00:01Z"));
        let err = Credentials::load_valid(dir.path()).unwrap_err().to_string();
        assert!(err.contains("expired at 1970-01-01T00:00:01Z"), "{err}");
    }
}
