use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::client_config_dir;
use super::credential_helper::PROGRAM_NAME;
use crate::cli::GlobalArgs;
use crate::env;
use crate::state::{ensure_private_dir, format_unix, write_atomic, Credentials};

/// The `credHelpers` value docker turns into `docker-credential-drydock`.
const HELPER_SUFFIX: &str = "drydock";

pub async fn run(global: &GlobalArgs) -> Result<ExitCode> {
    let credentials = Credentials::load_valid(&client_config_dir(global)?)?;
    let helper = ensure_helper_on_path()?;

    let docker_dir = docker_config_dir()?;
    ensure_private_dir(&docker_dir)?;
    // A symlinked config (for example into a dotfiles repository) is updated where it points.
    let config_path = std::fs::canonicalize(docker_dir.join("config.json"))
        .unwrap_or_else(|_| docker_dir.join("config.json"));
    let mut config = read_docker_config(&config_path)?;
    set_credential_helper(&mut config, &credentials.registry);
    let json = serde_json::to_vec_pretty(&config).context("failed to encode docker config")?;
    write_atomic(&config_path, &json, 0o600)?;

    if global.ca_cert.is_some() {
        println!(
            "Note: docker buildx fetches registry tokens with the system's trusted CAs, not \
             --ca-cert; add that CA to the system trust store or export SSL_CERT_FILE."
        );
    }
    println!(
        "docker now authenticates to {} as workspace {} (credential helper {}, token expires at {}).",
        credentials.registry,
        credentials.workspace,
        helper.display(),
        format_unix(credentials.expires_at)
    );
    Ok(ExitCode::SUCCESS)
}

/// docker's config folder: `DOCKER_CONFIG`, else `~/.docker`.
pub fn docker_config_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(env::DOCKER_CONFIG).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .with_context(|| {
            format!(
                "cannot find docker's config folder: set {} or HOME",
                env::DOCKER_CONFIG
            )
        })?;
    Ok(PathBuf::from(home).join(".docker"))
}

fn read_docker_config(path: &Path) -> Result<Value> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Value::Object(Map::new())),
        Ok(bytes) => {
            let value: Value = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "invalid JSON in docker config {}; fix or move it, then run again",
                    path.display()
                )
            })?;
            if !value.is_object() {
                bail!(
                    "docker config {} is not a JSON object; fix or move it",
                    path.display()
                );
            }
            if value
                .get("credHelpers")
                .is_some_and(|helpers| !helpers.is_object())
            {
                bail!(
                    "invalid docker config {}: \"credHelpers\" must be a JSON object; fix it, then run again",
                    path.display()
                );
            }
            Ok(value)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Map::new())),
        Err(err) => Err(err).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Points `credHelpers[registry]` at Drydock's helper, keeping every other entry. A stale
/// `auths` entry for the same registry is dropped, since docker would otherwise prefer it.
fn set_credential_helper(config: &mut Value, registry: &str) {
    let object = config.as_object_mut().expect("docker config is an object");
    let helpers = object
        .entry("credHelpers")
        .or_insert_with(|| Value::Object(Map::new()));
    helpers
        .as_object_mut()
        .expect("credHelpers is an object")
        .insert(registry.to_owned(), Value::String(HELPER_SUFFIX.to_owned()));
    if let Some(auths) = object.get_mut("auths").and_then(Value::as_object_mut) {
        auths.remove(registry);
    }
}

/// Makes sure `docker-credential-drydock` is on PATH, creating it as a link to this executable
/// beside it when missing.
fn ensure_helper_on_path() -> Result<PathBuf> {
    if let Some(found) = find_on_path(PROGRAM_NAME) {
        return Ok(found);
    }
    let exe = std::env::current_exe().context("failed to find the drydock executable")?;
    let dir = exe
        .parent()
        .context("the drydock executable has no folder")?;
    let link = dir.join(PROGRAM_NAME);
    if !link.exists() {
        std::os::unix::fs::symlink(&exe, &link).with_context(|| {
            format!(
                "failed to create the credential helper {}; link it to {} yourself, in a folder on PATH",
                link.display(),
                exe.display()
            )
        })?;
    }
    if find_on_path(PROGRAM_NAME).is_none() {
        bail!(
            "created {} but its folder is not on PATH, so docker cannot run it; add {} to PATH",
            link.display(),
            dir.display()
        );
    }
    Ok(link)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_helper_entry_keeps_other_settings() {
        let mut config = json!({
            "auths": { "127.0.0.1:5000": { "auth": "old" }, "other:1": { "auth": "keep" } },
            "credHelpers": { "gcr.io": "gcloud" },
            "psFormat": "table"
        });
        set_credential_helper(&mut config, "127.0.0.1:5000");
        assert_eq!(config["credHelpers"]["127.0.0.1:5000"], "drydock");
        assert_eq!(config["credHelpers"]["gcr.io"], "gcloud");
        assert_eq!(config["auths"]["other:1"]["auth"], "keep");
        assert!(config["auths"].get("127.0.0.1:5000").is_none());
        assert_eq!(config["psFormat"], "table");
    }
}
