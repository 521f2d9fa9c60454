//! Starts the two registries (and Drydock's development OIDC issuer) as child processes on
//! loopback, gets a Drydock workspace token, and reads each process's memory and CPU use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Workspace that owns every Drydock repository the benchmark writes.
pub const WORKSPACE: &str = "bench";
const AUDIENCE: &str = "drydock-bench";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, command: &mut Command, log: &Path) -> Result<Process> {
        let file = std::fs::File::create(log)
            .with_context(|| format!("failed to create log file {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("failed to start {name} ({command:?})"))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the process's log when it has exited, because the log is in a temporary
    /// folder that is removed when the benchmark stops.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited with {status} before it was ready; its log:\n{}",
                self.name,
                self.log_text()
            );
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident set size in KiB (`VmHWM` in /proc/PID/status).
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM in /proc/{}/status", self.pid()))
    }

    /// User plus system CPU time used so far, in seconds (/proc/PID/stat fields 14 and 15).
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // The command name in field 2 may contain spaces, so count fields after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = fields
            .get(11..13)
            .with_context(|| format!("failed to parse /proc/{}/stat: too few fields", self.pid()))?
            .iter()
            .map(|field| field.parse::<u64>())
            .sum::<Result<u64, _>>()?;
        let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
            .context("CLK_TCK is undefined")?;
        Ok(ticks as f64 / ticks_per_second as f64)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registry under test: its process, base URL and the bearer token clients send.
pub struct Registry {
    pub name: &'static str,
    pub process: Process,
    pub base_url: String,
    pub token: Option<String>,
    /// Other processes the registry needs while it runs (Drydock's OIDC issuer).
    _helpers: Vec<Process>,
}

/// Reads a file that a child writes once it listens, waiting until it ends with a newline.
fn wait_for_url_file(path: &Path, process: &mut Process) -> Result<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        process.check_running()?;
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return Ok(text.trim().to_owned());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "timed out after {START_TIMEOUT:?} waiting for {} to write {}; its log:\n{}",
        process.name,
        path.display(),
        process.log_text()
    )
}

async fn post_json(url: &str, bearer: Option<&str>, body: Value) -> Result<Value> {
    let mut request = reqwest::Client::new().post(url).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("failed to POST {url}: {status} {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{url} returned invalid JSON: {text}"))
}

/// Starts `drydock server` with the filesystem blob store in `dir`, creates the workspace,
/// trusts a development OIDC issuer for it and exchanges an issuer token for a workspace token.
pub async fn start_drydock(drydock: &Path, issuer_bin: &Path, dir: &Path) -> Result<Registry> {
    let issuer_url_file = dir.join("issuer-url");
    let mut issuer = Process::spawn(
        "drydock-dev-oidc-issuer",
        Command::new(issuer_bin)
            .args(["--listen", "127.0.0.1:0", "--url-file"])
            .arg(&issuer_url_file),
        &dir.join("issuer.log"),
    )?;
    let issuer_url = wait_for_url_file(&issuer_url_file, &mut issuer)?;

    let server_url_file = dir.join("drydock-url");
    let data_dir = dir.join("drydock-data");
    let mut server = Process::spawn(
        "drydock server",
        Command::new(drydock)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--url-file")
            .arg(&server_url_file)
            .env("DRYDOCK_LOG", "warn"),
        &dir.join("drydock.log"),
    )?;
    let base_url = wait_for_url_file(&server_url_file, &mut server)?;
    let admin_token = std::fs::read_to_string(data_dir.join("admin-token"))
        .context("failed to read the operator token the server writes")?;
    let admin_token = admin_token.trim();

    post_json(
        &format!("{base_url}/v1/admin/workspaces"),
        Some(admin_token),
        json!({ "name": WORKSPACE }),
    )
    .await?;
    post_json(
        &format!("{base_url}/v1/admin/trust-rules"),
        Some(admin_token),
        json!({
            "workspace": WORKSPACE,
            "issuer": issuer_url,
            "audience": AUDIENCE,
            "subject": format!("organization:{WORKSPACE}:pipeline:*"),
        }),
    )
    .await?;
    let oidc = post_json(
        &format!("{issuer_url}/token"),
        None,
        json!({ "audience": AUDIENCE, "organization": WORKSPACE, "pipeline": "bench" }),
    )
    .await?;
    let exchanged = post_json(
        &format!("{base_url}/v1/auth/exchange-oidc-token"),
        None,
        json!({ "token": oidc["token"], "workspace": WORKSPACE }),
    )
    .await?;
    let token = exchanged["token"]
        .as_str()
        .context("failed to exchange the OIDC token: the response has no token")?
        .to_owned();

    Ok(Registry {
        name: "Drydock",
        process: server,
        base_url,
        token: Some(token),
        _helpers: vec![issuer],
    })
}

/// Starts CNCF Distribution (`registry serve`) with filesystem storage under `dir`, the
/// in-memory blob descriptor cache of its default configuration, no auth and no access log.
pub async fn start_distribution(registry_bin: &Path, dir: &Path) -> Result<Registry> {
    // The port is free when probed; another process could take it before the registry binds.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("distribution.yml");
    let root = dir.join("distribution-data");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  cache:\n    blobdescriptor: inmemory\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        ),
    )?;
    let mut process = Process::spawn(
        "registry serve",
        Command::new(registry_bin).arg("serve").arg(&config),
        &dir.join("distribution.log"),
    )?;
    let base_url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        process.check_running()?;
        if let Ok(response) = reqwest::get(format!("{base_url}/v2/")).await {
            if response.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {START_TIMEOUT:?} waiting for Distribution to respond on \
                 {base_url}/v2/; its log:\n{}",
                process.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Registry {
        name: "Distribution",
        process,
        base_url,
        token: None,
        _helpers: Vec::new(),
    })
}

/// Returns `name` beside the running executable, where `cargo build` puts workspace binaries.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no parent folder")?;
    Ok(dir.join(name))
}
