//! docker's credential helper protocol for Drydock's registry: docker, buildx and skopeo run
//! `docker-credential-drydock get` with the registry host on standard input and read
//! `{"ServerURL", "Username", "Secret"}` from standard output. Errors go to standard output too,
//! as the protocol expects; "credentials not found in native keychain" makes docker fall back to
//! anonymous access.

use std::io::{Read, Write};
use std::process::ExitCode;

use serde_json::json;

use crate::state::{config_dir, Credentials};

pub const PROGRAM_NAME: &str = "docker-credential-drydock";

/// The user name sent with the workspace token; the registry ignores it.
const USERNAME: &str = "drydock";
const NOT_FOUND: &str = "credentials not found in native keychain";

pub fn run(action: &str) -> ExitCode {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let result = match action {
        "get" => get(input.trim()),
        "list" => list(),
        // Drydock's registry credentials come from `drydock auth exchange-oidc-token`; there is
        // nothing for docker to store or erase here.
        "store" | "erase" => Ok(String::new()),
        other => Err(format!(
            "unknown action {other:?}: {PROGRAM_NAME} takes get, store, erase or list"
        )),
    };
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            print!("{message}");
            let _ = std::io::stdout().flush();
            ExitCode::FAILURE
        }
    }
}

fn load() -> Result<Option<Credentials>, String> {
    let dir = config_dir(
        std::env::var_os(crate::env::CONFIG_DIR)
            .map(std::path::PathBuf::from)
            .as_deref(),
    )
    .map_err(|e| format!("{e:#}"))?;
    Credentials::load(&dir).map_err(|e| format!("{e:#}"))
}

fn get(server_url: &str) -> Result<String, String> {
    let Some(credentials) = load()? else {
        return Err(NOT_FOUND.to_owned());
    };
    if normalize_host(server_url) != normalize_host(&credentials.registry) {
        return Err(NOT_FOUND.to_owned());
    }
    if let Some(expired_at) = credentials.expired_at() {
        return Err(format!(
            "Drydock workspace token for {} expired at {expired_at}; run `drydock auth exchange-oidc-token` again",
            credentials.workspace
        ));
    }
    Ok(
        json!({ "ServerURL": server_url, "Username": USERNAME, "Secret": credentials.token })
            .to_string(),
    )
}

fn list() -> Result<String, String> {
    let registries = match load()? {
        Some(credentials) => json!({ credentials.registry: USERNAME }),
        None => json!({}),
    };
    Ok(registries.to_string())
}

/// Reduces `https://host:port/v2/` and `host:port` alike to `host:port`.
fn normalize_host(value: &str) -> &str {
    let value = value.trim();
    let value = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .unwrap_or(value);
    value.split('/').next().unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_normalize_to_host_port() {
        assert_eq!(normalize_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            normalize_host("https://reg.example:8443/v2/"),
            "reg.example:8443"
        );
        assert_eq!(normalize_host("http://127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
