use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::json;

use super::{client_config_dir, server_url};
use crate::api_client::ApiClient;
use crate::cli::GlobalArgs;
use crate::state::{format_unix, Credentials};

#[derive(Deserialize)]
struct Exchanged {
    token: String,
    workspace: String,
    subject: String,
    expires_at: i64,
    registry: String,
}

pub async fn exchange(global: &GlobalArgs, oidc_token: &str, workspace: &str) -> Result<ExitCode> {
    if oidc_token.trim().is_empty() {
        anyhow::bail!(
            "missing OIDC token: pass --token or set {} (for Buildkite: \
             `buildkite-agent oidc request-token --audience AUD`)",
            crate::env::OIDC_TOKEN
        );
    }
    let server = server_url(global)?;
    let dir = client_config_dir(global)?;
    let client = ApiClient::new(&server, global.ca_cert.as_deref(), None)?;
    let body = json!({ "token": oidc_token.trim(), "workspace": workspace });
    let exchanged: Exchanged = client
        .post("/v1/auth/exchange-oidc-token", body)
        .await
        .context("OIDC token exchange failed")?;
    let credentials = Credentials {
        server,
        workspace: exchanged.workspace,
        subject: exchanged.subject,
        token: exchanged.token,
        expires_at: exchanged.expires_at,
        registry: exchanged.registry,
    };
    credentials.save(&dir)?;
    println!(
        "Workspace token for {} stored; it expires at {}.",
        credentials.workspace,
        format_unix(credentials.expires_at)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn status(global: &GlobalArgs) -> Result<ExitCode> {
    let dir = client_config_dir(global)?;
    let Some(credentials) = Credentials::load(&dir)? else {
        println!("No workspace token stored in {}.", dir.display());
        println!("Run `drydock auth exchange-oidc-token --token TOKEN --workspace NAME`.");
        return Ok(ExitCode::FAILURE);
    };
    println!("Server:    {}", credentials.server);
    println!("Registry:  {}", credentials.registry);
    println!("Workspace: {}", credentials.workspace);
    println!("Subject:   {}", credentials.subject);
    if let Some(expired_at) = credentials.expired_at() {
        println!("Expired:   {expired_at}; run `drydock auth exchange-oidc-token` again.");
        return Ok(ExitCode::FAILURE);
    }
    let remaining = credentials.expires_at - drydock_store::now_unix();
    println!(
        "Expires:   {} (in {}m {}s)",
        format_unix(credentials.expires_at),
        remaining / 60,
        remaining % 60
    );
    Ok(ExitCode::SUCCESS)
}
