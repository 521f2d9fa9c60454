//! End-to-end harness: starts the real `drydock server`, the development OIDC issuer, and
//! runs the real `drydock`, `docker buildx` and `skopeo` commands against them.

#![allow(dead_code)]

pub mod image;
pub mod registry_client;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The audience every test trust rule and token uses.
pub const AUDIENCE: &str = "drydock-test";
pub const BUILDER: &str = "drydock-remote";
pub const PLATFORMS: &str = "linux/amd64,linux/arm64";

/// A child process stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).expect("create log file");
        let child = command
            .stdin(Stdio::piped())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name}: {e}"));
        Process {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` and waits up to `timeout` for the process to exit.
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop after SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Returns the path of a workspace binary, which lives beside this test's `drydock` binary.
pub fn bin(name: &str) -> PathBuf {
    let drydock = PathBuf::from(env!("CARGO_BIN_EXE_drydock"));
    let path = drydock.parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn rootfs_dir() -> PathBuf {
    let cache = std::env::var_os("DRYDOCK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join(".cache"));
    let dir = cache.join("rootfs");
    assert!(
        dir.join("arm64/bin/busybox").exists(),
        "{} is missing: run scripts/setup.sh",
        dir.display()
    );
    dir
}

fn wait_for_file(path: &Path, what: &str, process: &Process) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text.trim().to_owned();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what} did not start within 30s; its log:\n{}",
        process.log()
    );
}

/// A development OIDC issuer on loopback.
pub struct Issuer {
    pub url: String,
    process: Process,
}

impl Issuer {
    pub fn start(dir: &Path, name: &str) -> Issuer {
        let url_file = dir.join(format!("{name}-url"));
        let mut command = Command::new(bin("drydock-dev-oidc-issuer"));
        command
            .args(["--listen", "127.0.0.1:0", "--url-file"])
            .arg(&url_file);
        let process = Process::spawn(name, &mut command, dir.join(format!("{name}.log")));
        let url = wait_for_file(&url_file, name, &process);
        Issuer { url, process }
    }

    /// Mints a Buildkite-shaped token; `overrides` replaces fields of the request.
    pub fn mint(&self, overrides: Value) -> String {
        let mut request = json!({
            "audience": AUDIENCE,
            "organization": "acme",
            "pipeline": "app",
            "branch": "main",
            "commit": "0123456789abcdef",
            "step": "build",
            "lifetime_secs": 600,
        });
        for (key, value) in overrides.as_object().unwrap() {
            request[key] = value.clone();
        }
        let response: Value = ureq::post(&format!("{}/token", self.url))
            .send_json(request)
            .expect("mint a token")
            .into_json()
            .unwrap();
        response["token"].as_str().unwrap().to_owned()
    }
}

/// Options for the server a test starts.
#[derive(Clone, Default)]
pub struct ServerOptions {
    pub token_lifetime_secs: Option<u64>,
    pub builder_idle_secs: Option<u64>,
    /// Serve HTTPS with a certificate from a private CA made for the test.
    pub tls: bool,
    /// Path given as `--buildkitd` instead of the installed one.
    pub buildkitd: Option<String>,
    pub insecure_registries: Vec<String>,
}

/// A Drydock server with its data folder, and an OIDC issuer trusted by its workspaces.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub server_url: String,
    /// `host:port` of the registry.
    pub registry: String,
    pub admin_token: String,
    pub issuer: Issuer,
    server: Process,
    options: ServerOptions,
}

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

fn start_server(dir: &Path, options: &ServerOptions, log: &str) -> (Process, String) {
    let url_file = dir.join("server-url");
    let _ = std::fs::remove_file(&url_file);
    let mut command = Command::new(bin("drydock"));
    command
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--stop-on-stdin-close",
            "--drain-secs",
            "5",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--url-file")
        .arg(&url_file)
        .env("DRYDOCK_LOG", "info,drydock_tunnel=debug");
    if let Some(secs) = options.token_lifetime_secs {
        command.args(["--token-lifetime-secs", &secs.to_string()]);
    }
    if options.tls {
        let tls = make_tls_files(dir);
        command
            .arg("--tls-cert")
            .arg(&tls.cert)
            .arg("--tls-key")
            .arg(&tls.key)
            .env("DRYDOCK_CA_CERT", &tls.ca);
    }
    if let Some(path) = &options.buildkitd {
        command.args(["--buildkitd", path]);
    }
    if let Some(secs) = options.builder_idle_secs {
        command.args(["--builder-idle-secs", &secs.to_string()]);
    }
    for registry in &options.insecure_registries {
        command.args(["--builder-insecure-registry", registry]);
    }
    let server = Process::spawn("drydock server", &mut command, dir.join(log));
    let url = wait_for_file(&url_file, "drydock server", &server);
    (server, url)
}

/// PEM files of a private CA and a server certificate it signed for 127.0.0.1.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Creates (once per test folder) a private CA and a certificate for 127.0.0.1 signed by it.
pub fn make_tls_files(dir: &Path) -> TlsFiles {
    let tls_dir = dir.join("tls");
    let files = TlsFiles {
        ca: tls_dir.join("ca.pem"),
        cert: tls_dir.join("cert.pem"),
        key: tls_dir.join("key.pem"),
    };
    if files.key.exists() {
        return files;
    }
    std::fs::create_dir_all(&tls_dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Drydock test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    files
}

/// Checks whether a process is alive; a zombie awaiting its parent counts as exited.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

impl Harness {
    pub fn start() -> Harness {
        Harness::start_with(ServerOptions::default())
    }

    pub fn start_with(options: ServerOptions) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("dd-e2e-")
            .tempdir_in("/tmp")
            .unwrap();
        let issuer = Issuer::start(dir.path(), "issuer");
        let (server, server_url) = start_server(dir.path(), &options, "server.log");
        let registry = host_of(&server_url);
        let admin_token = std::fs::read_to_string(dir.path().join("data/admin-token"))
            .expect("server writes its operator token")
            .trim()
            .to_owned();
        Harness {
            dir,
            server_url,
            registry,
            admin_token,
            issuer,
            server,
            options,
        }
    }

    /// Stops the server with `signal`; returns whether it exited within `timeout`.
    pub fn stop_server(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) -> bool {
        self.server.signal_and_wait(signal, timeout)
    }

    /// Starts a new server process on the same data folder (it gets a new port).
    pub fn restart_server(&mut self) {
        let (server, server_url) =
            start_server(self.dir.path(), &self.options, "server-restarted.log");
        self.server = server;
        self.registry = host_of(&server_url);
        self.server_url = server_url;
    }

    pub fn server_log(&self) -> String {
        self.server.log()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `drydock ARGS` as the operator.
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(bin("drydock"))
            .args(args)
            .env("DRYDOCK_SERVER", &self.server_url)
            .env("DRYDOCK_TOKEN", &self.admin_token)
            .envs(self.ca_env())
            .env("DRYDOCK_CONFIG_DIR", self.dir.path().join("operator"))
            .output()
            .unwrap()
    }

    /// `DRYDOCK_CA_CERT` for clients when the server serves HTTPS.
    fn ca_env(&self) -> Vec<(&'static str, PathBuf)> {
        if self.options.tls {
            vec![("DRYDOCK_CA_CERT", make_tls_files(self.dir.path()).ca)]
        } else {
            Vec::new()
        }
    }

    /// Creates `workspace` and trusts the issuer for pipelines of organization `workspace`.
    pub fn create_workspace(&self, workspace: &str) {
        success(
            &self.admin(&["admin", "workspace", "create", workspace]),
            "workspace create",
        );
        let subject = format!("organization:{workspace}:pipeline:*");
        success(
            &self.admin(&[
                "admin",
                "trust",
                "add",
                "--workspace",
                workspace,
                "--issuer",
                &self.issuer.url,
                "--audience",
                AUDIENCE,
                "--subject",
                &subject,
            ]),
            "trust add",
        );
    }

    /// Exchanges a token from the test issuer for a workspace token of `workspace`, which
    /// [`Harness::create_workspace`] made, and returns the workspace token.
    pub fn workspace_token(&self, workspace: &str) -> String {
        let client = self.client(&format!("{workspace}-token"));
        let oidc_token = self.issuer.mint(json!({ "organization": workspace }));
        success(
            &client.drydock(&[
                "auth",
                "exchange-oidc-token",
                "--token",
                &oidc_token,
                "--workspace",
                workspace,
            ]),
            "exchange",
        );
        client.token()
    }

    /// Creates a CI job's environment: its own drydock config folder and docker config.
    pub fn client(&self, name: &str) -> Client {
        let home = self.dir.path().join(format!("client-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        Client {
            home,
            server_url: self.server_url.clone(),
            registry: self.registry.clone(),
            ca_env: self.ca_env(),
        }
    }

    /// Runs the CI step's flow for `workspace`: exchange, buildx setup, docker login.
    pub fn ci_job(&self, workspace: &str) -> Client {
        let client = self.client(workspace);
        let token = self.issuer.mint(json!({ "organization": workspace }));
        success(
            &client.drydock(&[
                "auth",
                "exchange-oidc-token",
                "--token",
                &token,
                "--workspace",
                workspace,
            ]),
            "exchange",
        );
        success(
            &client.drydock(&["docker", "buildx", "setup", "--background", "--use"]),
            "buildx setup",
        );
        success(&client.drydock(&["docker", "login"]), "docker login");
        client
    }

    pub fn builders(&self, token: &str) -> Value {
        ureq::get(&format!("{}/v1/builders", self.server_url))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("list builders")
            .into_json()
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Background proxies outlive the test process unless stopped here.
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let home = entry.path();
                let is_client = entry.file_name().to_string_lossy().starts_with("client-");
                if is_client && home.join("drydock/proxies").exists() {
                    let _ = Command::new(bin("drydock"))
                        .args(["docker", "buildx", "cleanup"])
                        .env("DRYDOCK_CONFIG_DIR", home.join("drydock"))
                        .env("DOCKER_CONFIG", home.join("docker"))
                        .env("HOME", &home)
                        .output();
                }
            }
        }
        if std::thread::panicking() {
            // Keep the data folder (builder logs, configs) for a look after the failure.
            self.dir.disable_cleanup(true);
            eprintln!("--- test folder kept at {} ---", self.dir.path().display());
            let log = self.server.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of the server log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// One CI job's environment.
pub struct Client {
    pub home: PathBuf,
    pub server_url: String,
    pub registry: String,
    ca_env: Vec<(&'static str, PathBuf)>,
}

impl Client {
    pub fn config_dir(&self) -> PathBuf {
        self.home.join("drydock")
    }

    pub fn docker_config(&self) -> PathBuf {
        self.home.join("docker")
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        let bin_dir = bin("drydock").parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("DRYDOCK_SERVER", &self.server_url)
            .env("DRYDOCK_CONFIG_DIR", self.config_dir())
            .env("DOCKER_CONFIG", self.docker_config())
            .env_remove("DRYDOCK_TOKEN")
            .envs(self.ca_env.iter().map(|(k, v)| (*k, v)))
            // buildx fetches registry tokens for BuildKit with Go's default roots; a private
            // CA reaches it as SSL_CERT_FILE, as the README documents.
            .envs(self.ca_env.iter().map(|(_, v)| ("SSL_CERT_FILE", v)))
            .stdin(Stdio::null());
        command
    }

    pub fn drydock(&self, args: &[&str]) -> Output {
        self.command(bin("drydock")).args(args).output().unwrap()
    }

    /// Builds a `docker ARGS` command in this job's environment, to spawn and wait for later.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut command = self.command("docker");
        command.args(args);
        command
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command("docker").args(args).output().unwrap()
    }

    pub fn docker_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command("docker");
        for (key, value) in env {
            command.env(key, value);
        }
        command.args(args).output().unwrap()
    }

    pub fn skopeo(&self, args: &[&str]) -> Output {
        self.command("skopeo").args(args).output().unwrap()
    }

    pub fn token(&self) -> String {
        let credentials: Value = serde_json::from_slice(
            &std::fs::read(self.config_dir().join("credentials.json")).unwrap(),
        )
        .unwrap();
        credentials["token"].as_str().unwrap().to_owned()
    }

    /// Builds and pushes the busybox base image to `REGISTRY/WORKSPACE/busybox:latest`.
    pub fn build_base(&self, workspace: &str, platforms: &str) -> String {
        let reference = format!("{}/{workspace}/busybox:latest", self.registry);
        let dockerfile = repo_dir().join("examples/base/Dockerfile");
        let output = self.docker(&[
            "buildx",
            "build",
            "--builder",
            BUILDER,
            "--platform",
            platforms,
            "--progress",
            "plain",
            "-f",
            dockerfile.to_str().unwrap(),
            "-t",
            &reference,
            "--push",
            rootfs_dir().to_str().unwrap(),
        ]);
        success(&output, "base image build");
        reference
    }

    /// Builds examples/hello with the secret, pushing to `reference`; returns the build log.
    pub fn build_hello(
        &self,
        base: &str,
        platforms: &str,
        reference: &str,
        secret: &str,
    ) -> String {
        let context = repo_dir().join("examples/hello");
        let base_arg = format!("BASE_IMAGE={base}");
        let output = self.docker_with_env(
            &[
                "buildx",
                "build",
                "--builder",
                BUILDER,
                "--platform",
                platforms,
                "--progress",
                "plain",
                "--build-arg",
                &base_arg,
                "--secret",
                "id=build_token,env=BUILD_TOKEN",
                "-t",
                reference,
                "--push",
                context.to_str().unwrap(),
            ],
            &[("BUILD_TOKEN", secret)],
        );
        success(&output, "hello build");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

/// Asserts the command succeeded, showing its output when it did not.
pub fn success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts the command failed and returns its stdout and stderr together.
pub fn failure(output: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "{what} should have failed but succeeded:\n{text}"
    );
    text
}

pub fn read_all(mut reader: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

/// Runs `command` with `input` on its standard input and collects its output.
pub fn run_with_stdin(command: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
