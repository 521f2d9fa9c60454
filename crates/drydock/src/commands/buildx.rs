//! `drydock docker buildx setup|status|cleanup`: the local proxy and the buildx builder that
//! points at it, one `remote` driver node per platform.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::proxy::{socket_accepts, wait_for_sockets};
use super::{client_config_dir, server_url};
use crate::api_client::ApiClient;
use crate::cli::{GlobalArgs, ProxyArgs, SetupArgs};
use crate::state::{
    ensure_private_dir, format_unix, proxy_run_dir, socket_name, Credentials, ProxyRecord,
    ProxySocket,
};

/// How long `setup --background` waits for the proxy's sockets.
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `cleanup` waits for the proxy to exit after SIGTERM before sending SIGKILL.
const PROXY_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that a platform has the `os/arch` form buildx and the server expect.
pub fn validate_platform(platform: &str) -> Result<()> {
    let valid = platform.split('/').count() == 2
        && platform.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !valid {
        bail!("invalid platform {platform:?}: use os/arch, for example linux/amd64 or linux/arm64");
    }
    Ok(())
}

pub async fn setup(global: &GlobalArgs, args: SetupArgs) -> Result<ExitCode> {
    let config_dir = client_config_dir(global)?;
    let credentials = Credentials::load_valid(&config_dir)?;
    let mut args = args;
    dedupe(&mut args.platform);
    for platform in &args.platform {
        validate_platform(platform)?;
    }
    check_node_name(&args.name)?;
    check_server_platforms(global, &credentials, &args.platform).await?;
    docker(&["buildx", "version"])
        .context("docker buildx is not available: install the docker CLI and its buildx plugin")?;

    stop_recorded_proxy(&config_dir, &args.name).await;
    let run_dir = proxy_run_dir(&config_dir, &args.name);
    ensure_private_dir(&run_dir)?;
    let sockets: Vec<ProxySocket> = args
        .platform
        .iter()
        .map(|platform| ProxySocket {
            platform: platform.clone(),
            path: run_dir.join(socket_name(platform)),
        })
        .collect();

    if !args.background {
        register_builder(&args.name, &sockets, args.use_builder)?;
        println!(
            "Builder {} registered; the proxy runs until interrupted.",
            args.name
        );
        let proxy_args = ProxyArgs {
            name: args.name,
            platform: args.platform,
        };
        return super::proxy::run(global, proxy_args).await;
    }

    let log_file = run_dir.join("proxy.log");
    let pid = spawn_background_proxy(global, &config_dir, &credentials.server, &args, &log_file)?;
    let record = ProxyRecord {
        name: args.name.clone(),
        pid,
        server: credentials.server.clone(),
        sockets: sockets.clone(),
        log_file: log_file.clone(),
    };
    record.save(&config_dir)?;
    let paths: Vec<PathBuf> = sockets.iter().map(|s| s.path.clone()).collect();
    if !wait_for_sockets(&paths, PROXY_START_TIMEOUT).await {
        let _ = stop_proxy(&record).await;
        ProxyRecord::remove(&config_dir, &args.name);
        bail!(
            "the proxy did not accept connections within {}s; its log {} says:\n{}",
            PROXY_START_TIMEOUT.as_secs(),
            log_file.display(),
            log_tail(&log_file)
        );
    }
    register_builder(&args.name, &sockets, args.use_builder)?;
    println!(
        "Builder {} is ready ({}), proxying to {} for workspace {} (pid {pid}).",
        args.name,
        args.platform.join(", "),
        credentials.server,
        credentials.workspace
    );
    Ok(ExitCode::SUCCESS)
}

fn spawn_background_proxy(
    global: &GlobalArgs,
    config_dir: &Path,
    server: &str,
    args: &SetupArgs,
    log_file: &Path,
) -> Result<u32> {
    let exe = std::env::current_exe().context("failed to find the drydock executable")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("failed to open proxy log {}", log_file.display()))?;
    let mut command = std::process::Command::new(exe);
    command
        .args([
            "docker",
            "buildx",
            "proxy",
            "--name",
            &args.name,
            "--platform",
        ])
        .arg(args.platform.join(","))
        .arg("--config-dir")
        .arg(config_dir)
        .arg("--server")
        .arg(server);
    if let Some(ca) = &global.ca_cert {
        command.arg("--ca-cert").arg(ca);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("failed to share the proxy log")?)
        .stderr(log)
        // Its own process group: the proxy outlives the shell step and ignores its Ctrl-C.
        .process_group(0)
        .spawn()
        .context("failed to start the background proxy")?;
    Ok(child.id())
}

/// Creates the buildx builder: one `remote` node per platform, each pinned to its platform so
/// buildx sends that platform's work to it.
fn register_builder(name: &str, sockets: &[ProxySocket], use_builder: bool) -> Result<()> {
    if builder_registered(name) {
        docker(&["buildx", "rm", name])
            .with_context(|| format!("failed to replace buildx builder {name}"))?;
    }
    for (index, socket) in sockets.iter().enumerate() {
        let node = format!("{name}-{}", socket.platform.replace('/', "-"));
        let endpoint = format!("unix://{}", socket.path.display());
        let mut args = vec!["buildx", "create", "--name", name, "--driver", "remote"];
        if index > 0 {
            args.push("--append");
        }
        args.extend(["--node", &node, "--platform", &socket.platform, &endpoint]);
        docker(&args)
            .with_context(|| format!("failed to add node {node} to buildx builder {name}"))?;
    }
    if use_builder {
        docker(&["buildx", "use", name])?;
    }
    Ok(())
}

/// Runs `docker ARGS`, returning its standard output, or an error with its standard error.
fn docker(args: &[&str]) -> Result<String> {
    let output = std::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("failed to run docker: is the docker CLI installed and on PATH?")?;
    if !output.status.success() {
        bail!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Checks whether docker buildx has a builder `name`. It reads buildx's instance record rather than
/// running `docker buildx inspect`, which would dial every node and so wake the builders.
fn builder_registered(name: &str) -> bool {
    super::docker_login::docker_config_dir()
        .map(|dir| dir.join("buildx").join("instances").join(name).is_file())
        .unwrap_or(false)
}

fn dedupe(platforms: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    platforms.retain(|p| seen.insert(p.clone()));
}

/// Checks the requested platforms against those the server builds, so that a mistake shows
/// at setup rather than at the first build.
async fn check_server_platforms(
    global: &GlobalArgs,
    credentials: &Credentials,
    platforms: &[String],
) -> Result<()> {
    let server = server_url(global).unwrap_or_else(|_| credentials.server.clone());
    let client = ApiClient::new(&server, global.ca_cert.as_deref(), None)?;
    let info: serde_json::Value = client.get("/v1/info").await?;
    let supported: Vec<&str> = info["platforms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    for platform in platforms {
        if !supported.contains(&platform.as_str()) {
            bail!(
                "unsupported platform {platform:?}: the server at {server} builds {}",
                supported.join(", ")
            );
        }
    }
    Ok(())
}

/// Stops the proxy named in record `name`, if any, and returns the record. A corrupt record
/// is removed with a warning, since it names no process to stop.
async fn stop_recorded_proxy(config_dir: &Path, name: &str) -> Option<(ProxyRecord, bool)> {
    match ProxyRecord::load(config_dir, name) {
        Ok(Some(record)) => {
            let was_running = stop_proxy(&record).await;
            ProxyRecord::remove(config_dir, name);
            Some((record, was_running))
        }
        Ok(None) => None,
        Err(err) => {
            eprintln!("warning: {err:#}; removing it");
            ProxyRecord::remove(config_dir, name);
            None
        }
    }
}

fn check_node_name(name: &str) -> Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!("invalid builder name {name:?}: use letters, digits, '-' and '_', starting with a letter");
    }
    Ok(())
}

/// Checks that `pid` is a running Drydock proxy, not an unrelated process that reused the pid.
fn is_our_proxy(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == b"proxy") && args.iter().any(|a| *a == b"buildx")
        })
        .unwrap_or(false)
}

/// Stops the recorded proxy if it still runs and removes its sockets; returns whether it ran.
async fn stop_proxy(record: &ProxyRecord) -> bool {
    let running = is_our_proxy(record.pid);
    if running {
        let pid = Pid::from_raw(record.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + PROXY_STOP_TIMEOUT;
        while is_our_proxy(record.pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if is_our_proxy(record.pid) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    for socket in &record.sockets {
        let _ = std::fs::remove_file(&socket.path);
    }
    running
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub async fn status(global: &GlobalArgs, name: &str) -> Result<ExitCode> {
    check_node_name(name)?;
    let config_dir = client_config_dir(global)?;
    let mut healthy = true;

    match Credentials::load(&config_dir)? {
        Some(credentials) => match credentials.expired_at() {
            Some(at) => {
                healthy = false;
                println!("Token:   workspace {} expired at {at}; run `drydock auth exchange-oidc-token` again", credentials.workspace);
            }
            None => println!(
                "Token:   workspace {}, expires at {}",
                credentials.workspace,
                format_unix(credentials.expires_at)
            ),
        },
        None => {
            healthy = false;
            println!("Token:   none; run `drydock auth exchange-oidc-token`");
        }
    }

    match ProxyRecord::load(&config_dir, name)? {
        Some(record) if is_our_proxy(record.pid) => {
            println!(
                "Proxy:   running (pid {}) to {}, log {}",
                record.pid,
                record.server,
                record.log_file.display()
            );
            for socket in &record.sockets {
                let state = if socket_accepts(&socket.path).await {
                    "accepting"
                } else {
                    "not accepting"
                };
                if state != "accepting" {
                    healthy = false;
                }
                println!(
                    "  {:<14} unix://{} ({state})",
                    socket.platform,
                    socket.path.display()
                );
            }
        }
        Some(record) => {
            healthy = false;
            println!("Proxy:   not running (pid {} has exited); run `drydock docker buildx setup --background`", record.pid);
        }
        None => {
            healthy = false;
            println!("Proxy:   not set up; run `drydock docker buildx setup --background`");
        }
    }

    if builder_registered(name) {
        println!("Builder: {name} registered with docker buildx");
    } else {
        healthy = false;
        println!("Builder: {name} is not registered with docker buildx");
    }

    if let Ok(Some(credentials)) = Credentials::load(&config_dir) {
        if credentials.expired_at().is_none() {
            print_server_builders(global, &credentials).await;
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn print_server_builders(global: &GlobalArgs, credentials: &Credentials) {
    let server = server_url(global).unwrap_or_else(|_| credentials.server.clone());
    let listed: Result<serde_json::Value> = async {
        let client = ApiClient::new(
            &server,
            global.ca_cert.as_deref(),
            Some(credentials.token.clone()),
        )?;
        client.get("/v1/builders").await
    }
    .await;
    match listed {
        Ok(listed) => {
            let builders = listed["builders"].as_array().cloned().unwrap_or_default();
            if builders.is_empty() {
                println!("Server:  no builder running for this workspace (they start on the first build)");
            }
            for builder in builders {
                println!(
                    "Server:  {} builder {}, {} connection(s)",
                    builder["platform"].as_str().unwrap_or("?"),
                    builder["state"].as_str().unwrap_or("?"),
                    builder["connections"]
                );
            }
        }
        Err(err) => println!("Server:  failed to list builders: {err:#}"),
    }
}

pub async fn cleanup(global: &GlobalArgs, name: &str) -> Result<ExitCode> {
    check_node_name(name)?;
    let config_dir = client_config_dir(global)?;
    let mut cleaned = false;
    if let Some((record, was_running)) = stop_recorded_proxy(&config_dir, name).await {
        cleaned = true;
        if was_running {
            println!("Stopped the proxy (pid {}).", record.pid);
        } else {
            println!(
                "Removed the record of proxy pid {}, which had already exited.",
                record.pid
            );
        }
    }
    if builder_registered(name) {
        docker(&["buildx", "rm", name])?;
        println!("Removed buildx builder {name}.");
        cleaned = true;
    }
    if !cleaned {
        println!("Nothing to clean up: no proxy or buildx builder named {name}.");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_must_be_os_slash_arch() {
        assert!(validate_platform("linux/amd64").is_ok());
        assert!(validate_platform("linux/arm64").is_ok());
        for bad in [
            "linux",
            "linux/",
            "linux/arm64/v8",
            "Linux/AMD64",
            "linux amd64",
        ] {
            assert!(validate_platform(bad).is_err(), "{bad} should be rejected");
        }
    }
}
