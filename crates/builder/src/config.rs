//! Builder settings and the buildkitd.toml written for each builder.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::BuilderError;
use crate::platform::Platform;

/// Trust settings for a registry that is not a public HTTPS registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTrust {
    /// Registry address as `host:port`, exactly as image references name it.
    pub host: String,
    /// Speak plain HTTP to this registry instead of HTTPS.
    pub http: bool,
    /// PEM file with the CA certificates that sign the registry's TLS certificate.
    pub ca_file: Option<PathBuf>,
}

/// Settings for [`crate::BuilderManager`].
#[derive(Debug, Clone)]
pub struct BuilderConfig {
    /// Folder for builder state, kept under `builders/<workspace>/<os>-<arch>/`.
    pub data_dir: PathBuf,
    /// The buildkitd executable, looked up on `PATH` when it has no folder part.
    pub buildkitd: PathBuf,
    /// Registries that need plain HTTP or a private CA.
    pub registries: Vec<RegistryTrust>,
    /// Time a builder runs without leases before it is stopped.
    pub idle_timeout: Duration,
    /// Maximum time to wait for a started buildkitd to serve on its socket.
    pub start_timeout: Duration,
}

impl BuilderConfig {
    /// Default idle time before a builder stops: its cache stays on disk either way.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
    /// Default wait for a builder's socket. buildkitd serves in about a second on an idle
    /// 2-core machine; the margin covers a loaded one.
    pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

    /// Creates settings with `buildkitd` from `PATH`, no registry entries and default timeouts.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BuilderConfig {
            data_dir: data_dir.into(),
            buildkitd: PathBuf::from("buildkitd"),
            registries: Vec::new(),
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            start_timeout: Self::DEFAULT_START_TIMEOUT,
        }
    }

    /// Checks the values that end up in a generated buildkitd.toml.
    pub(crate) fn validate(&self) -> Result<(), BuilderError> {
        for registry in &self.registries {
            validate_registry_host(&registry.host)?;
        }
        if self.start_timeout.is_zero() {
            return Err(BuilderError::InvalidConfig(
                "start_timeout must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}

fn validate_registry_host(host: &str) -> Result<(), BuilderError> {
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if valid {
        Ok(())
    } else {
        Err(BuilderError::InvalidConfig(format!(
            "invalid registry host {host:?}: expected host:port, such as 127.0.0.1:5000"
        )))
    }
}

/// Renders the buildkitd.toml for one builder: the OCI (runc) worker with the builder's platform
/// and garbage collection on, the containerd worker off, and one `[registry]` table per trusted
/// registry. The listen address and root are passed as flags, not written here.
///
/// NOTE: `platforms` sets the worker's default platform, not a limit. buildkitd v0.32 appends
/// every platform it can run (native variants and binfmt emulators) when it lists workers
/// (`Worker.Platforms` in worker/base/worker.go), so clients must name the platform they build.
pub(crate) fn render_buildkitd_toml(platform: Platform, registries: &[RegistryTrust]) -> String {
    let mut toml = String::new();
    toml.push_str("# Written by Drydock before each start of this builder; edits are lost.\n\n");
    toml.push_str("[worker.oci]\n");
    toml.push_str("enabled = true\n");
    let _ = writeln!(toml, "platforms = [{}]", toml_string(&platform.to_string()));
    toml.push_str("gc = true\n\n");
    toml.push_str("[worker.containerd]\n");
    toml.push_str("enabled = false\n");
    for registry in registries {
        let _ = write!(toml, "\n[registry.{}]\n", toml_string(&registry.host));
        if registry.http {
            toml.push_str("http = true\n");
            toml.push_str("insecure = true\n");
        } else {
            // Explicit, because BuildKit (v0.32) speaks plain HTTP to localhost and 127.0.0.1
            // registries whose `http` is unset, even when they serve TLS.
            toml.push_str("http = false\n");
        }
        if let Some(ca_file) = &registry.ca_file {
            let _ = writeln!(toml, "ca = [{}]", toml_string(&ca_file.to_string_lossy()));
        }
    }
    toml
}

/// Quotes a value as a TOML basic string.
fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", c as u32);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(host: &str, http: bool, ca_file: Option<&str>) -> RegistryTrust {
        RegistryTrust {
            host: host.into(),
            http,
            ca_file: ca_file.map(PathBuf::from),
        }
    }

    #[test]
    fn config_without_registries_enables_only_the_oci_worker() {
        let toml = render_buildkitd_toml(Platform::LINUX_ARM64, &[]);
        let parsed: toml::Table = toml.parse().unwrap();

        let oci = &parsed["worker"]["oci"];
        assert_eq!(oci["enabled"].as_bool(), Some(true));
        assert_eq!(oci["gc"].as_bool(), Some(true));
        let platforms = oci["platforms"].as_array().unwrap();
        assert_eq!(platforms.len(), 1);
        assert_eq!(platforms[0].as_str(), Some("linux/arm64"));

        assert_eq!(
            parsed["worker"]["containerd"]["enabled"].as_bool(),
            Some(false)
        );
        assert!(!parsed.contains_key("registry"));
        assert!(!toml.contains("insecure-entitlements"));
        assert!(!toml.contains("tcp://"));
    }

    #[test]
    fn config_lists_only_the_builder_platform() {
        let toml = render_buildkitd_toml(Platform::LINUX_AMD64, &[]);
        assert!(toml.contains("platforms = [\"linux/amd64\"]"), "{toml}");
        assert!(!toml.contains("arm64"), "{toml}");
    }

    #[test]
    fn plain_http_registry_is_http_and_insecure() {
        let registries = [trust("127.0.0.1:5000", true, None)];
        let toml = render_buildkitd_toml(Platform::LINUX_AMD64, &registries);
        let parsed: toml::Table = toml.parse().unwrap();

        let registry = &parsed["registry"]["127.0.0.1:5000"];
        assert_eq!(registry["http"].as_bool(), Some(true));
        assert_eq!(registry["insecure"].as_bool(), Some(true));
        assert!(registry.get("ca").is_none());
    }

    #[test]
    fn private_ca_registry_lists_the_ca_file() {
        let registries = [
            trust("registry.internal:443", false, Some("/etc/drydock/ca.pem")),
            trust("127.0.0.1:5001", true, None),
        ];
        let toml = render_buildkitd_toml(Platform::LINUX_AMD64, &registries);
        let parsed: toml::Table = toml.parse().unwrap();

        let registry = &parsed["registry"]["registry.internal:443"];
        assert_eq!(registry["http"].as_bool(), Some(false));
        assert!(registry.get("insecure").is_none());
        let ca = registry["ca"].as_array().unwrap();
        assert_eq!(ca.len(), 1);
        assert_eq!(ca[0].as_str(), Some("/etc/drydock/ca.pem"));
        assert_eq!(parsed["registry"].as_table().unwrap().len(), 2);
    }

    #[test]
    fn ca_path_with_quotes_stays_one_string() {
        let registries = [trust("127.0.0.1:5000", false, Some("/tmp/a \"b\"\\c.pem"))];
        let toml = render_buildkitd_toml(Platform::LINUX_AMD64, &registries);
        let parsed: toml::Table = toml.parse().unwrap();
        let ca = parsed["registry"]["127.0.0.1:5000"]["ca"]
            .as_array()
            .unwrap();
        assert_eq!(ca[0].as_str(), Some("/tmp/a \"b\"\\c.pem"));
    }

    #[test]
    fn registry_host_must_be_host_and_port() {
        for host in [
            "127.0.0.1:5000",
            "registry.internal",
            "[::1]:5000",
            "my-reg:443",
        ] {
            assert!(validate_registry_host(host).is_ok(), "{host}");
        }
        for host in ["", "a\"b", "host/path", "host port", "a\nb"] {
            let error = validate_registry_host(host).unwrap_err();
            assert!(
                error.to_string().contains("invalid registry host"),
                "{host}"
            );
        }
    }

    #[test]
    fn zero_start_timeout_is_rejected() {
        let mut config = BuilderConfig::new("/tmp/drydock");
        config.start_timeout = Duration::ZERO;
        assert!(config.validate().is_err());
    }
}
