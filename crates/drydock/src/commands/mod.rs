mod admin;
mod auth;
mod buildx;
pub mod credential_helper;
mod docker_login;
mod proxy;
mod registry_admin;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::api_client::ApiClient;
use crate::cli::{
    AdminCommand, AuthCommand, BuildxCommand, Cli, Command, DockerCommand, GlobalArgs,
};
use crate::env;
use crate::state::{config_dir, Credentials};

pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Server(args) => server::run(*args).await,
        Command::Admin { command } => {
            let client = operator_client(&global)?;
            match command {
                AdminCommand::Workspace { command } => admin::workspace(&client, command).await,
                AdminCommand::Trust { command } => admin::trust(&client, command).await,
                AdminCommand::Registry { command } => registry_admin::run(&client, command).await,
            }
        }
        Command::Auth { command } => match command {
            AuthCommand::ExchangeOidcToken { token, workspace } => {
                auth::exchange(&global, token.as_deref().unwrap_or_default(), &workspace).await
            }
            AuthCommand::Status => auth::status(&global).await,
        },
        Command::Docker { command } => match command {
            DockerCommand::Login => docker_login::run(&global).await,
            DockerCommand::Buildx { command } => match command {
                BuildxCommand::Setup(args) => buildx::setup(&global, args).await,
                BuildxCommand::Status(args) => buildx::status(&global, &args.name).await,
                BuildxCommand::Cleanup(args) => buildx::cleanup(&global, &args.name).await,
                BuildxCommand::Proxy(args) => proxy::run(&global, args).await,
            },
        },
    }
}

/// Returns the server URL: `--server`/`DRYDOCK_SERVER`, else the one the stored token came from.
fn server_url(global: &GlobalArgs) -> Result<String> {
    if let Some(server) = &global.server {
        return Ok(server.trim_end_matches('/').to_owned());
    }
    let dir = client_config_dir(global)?;
    if let Some(credentials) = Credentials::load(&dir)? {
        return Ok(credentials.server);
    }
    anyhow::bail!(
        "missing server address: pass --server URL or set {}",
        env::SERVER
    )
}

fn client_config_dir(global: &GlobalArgs) -> Result<PathBuf> {
    config_dir(global.config_dir.as_deref())
}

fn operator_client(global: &GlobalArgs) -> Result<ApiClient> {
    let token = std::env::var(env::TOKEN)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .with_context(|| {
            format!(
            "missing operator token: set {} to the contents of the server's DATA_DIR/admin-token",
            env::TOKEN
        )
        })?;
    ApiClient::new(
        &server_url(global)?,
        global.ca_cert.as_deref(),
        Some(token.trim().to_owned()),
    )
}
