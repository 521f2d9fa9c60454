//! `drydock`: the client, operator and server commands of Drydock, a self-hosted remote
//! container build service. Invoked as `docker-credential-drydock`, it is docker's credential
//! helper for Drydock's registry.

mod api_client;
mod cli;
mod commands;
mod env;
mod state;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let program = std::env::args_os()
        .next()
        .and_then(|arg| {
            std::path::Path::new(&arg)
                .file_name()
                .map(|n| n.to_os_string())
        })
        .unwrap_or_default();
    if program
        .to_string_lossy()
        .starts_with(commands::credential_helper::PROGRAM_NAME)
    {
        let action = std::env::args().nth(1).unwrap_or_default();
        return commands::credential_helper::run(&action);
    }

    let cli = cli::Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::dispatch(cli));
    // Dropping the runtime would wait for blocking reads such as the server's stdin watcher.
    // Once the command has returned, nothing left is worth waiting for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes with ": ", leaving out a cause whose text the message
/// already contains (many library errors repeat their source in their own message).
fn error_chain(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn init_logging(cli: &cli::Cli) {
    let default = if cli.is_server() { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
