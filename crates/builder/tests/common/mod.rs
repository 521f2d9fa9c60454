//! Helpers for tests that run the real buildkitd and buildctl installed by scripts/setup.sh.
//! They need root, because buildkitd's runc worker does.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use drydock_builder::{BuilderConfig, BuilderManager, BuilderState, BuilderStatus, Platform};

/// Fails the test with the fix when the machine lacks what these tests need.
pub fn require_buildkit() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "these tests run buildkitd with the runc worker and need root (uid is {uid})"
    );
    for tool in ["buildkitd", "buildctl"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(
            found,
            "{tool} not found on PATH: run scripts/setup.sh to install it"
        );
    }
}

pub fn config(data_dir: &Path) -> BuilderConfig {
    let mut config = BuilderConfig::new(data_dir);
    config.start_timeout = Duration::from_secs(60);
    config
}

pub async fn manager(config: BuilderConfig) -> Arc<BuilderManager> {
    BuilderManager::new(config).await.expect("manager starts")
}

/// Runs buildctl against `socket` and returns its standard output and error together,
/// failing the test when it exits with an error.
pub fn buildctl(socket: &Path, args: &[&str]) -> String {
    let address = format!("unix://{}", socket.display());
    let output = Command::new("buildctl")
        .arg("--addr")
        .arg(&address)
        .args(args)
        .output()
        .expect("buildctl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "buildctl {args:?} failed:\n{text}");
    text
}

/// Returns the platforms that `buildctl debug workers` lists for the builder at `socket`.
pub fn worker_platforms(socket: &Path) -> Vec<String> {
    let output = buildctl(socket, &["debug", "workers"]);
    let mut platforms = Vec::new();
    for line in output.lines().skip(1) {
        // Columns: ID, then a comma-separated platform list.
        if let Some(list) = line.split_whitespace().nth(1) {
            platforms.extend(list.split(',').map(str::to_owned));
        }
    }
    platforms
}

/// Checks that the builder at `socket` lists `platform` first, which makes it the default for
/// builds that name no platform. buildkitd appends every other platform it can run, binfmt
/// emulators included, so the list is not limited to the configured one.
pub fn assert_default_platform(socket: &Path, platform: &str) {
    let platforms = worker_platforms(socket);
    assert_eq!(
        platforms.first().map(String::as_str),
        Some(platform),
        "{platforms:?}"
    );
}

/// Returns the busybox root filesystem that scripts/setup.sh prepares for `arch`.
pub fn rootfs(arch: &str) -> PathBuf {
    let cache = std::env::var_os("DRYDOCK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache"));
    let rootfs = cache.join("rootfs").join(arch);
    assert!(
        rootfs.join("bin/busybox").exists(),
        "{} is missing: run scripts/setup.sh to prepare it",
        rootfs.display()
    );
    rootfs
}

/// Builds a Dockerfile with the builder at `socket`, using `context` as build context, and
/// returns buildctl's output. With `output_dir` the result is exported there.
pub fn build_dockerfile(
    socket: &Path,
    dockerfile: &str,
    context: &Path,
    output_dir: Option<&Path>,
) -> String {
    let dockerfile_dir = tempfile::tempdir().unwrap();
    std::fs::write(dockerfile_dir.path().join("Dockerfile"), dockerfile).unwrap();
    let context_arg = format!("context={}", context.display());
    let dockerfile_arg = format!("dockerfile={}", dockerfile_dir.path().display());
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &context_arg,
        "--local",
        &dockerfile_arg,
    ];
    let output_arg;
    if let Some(dir) = output_dir {
        output_arg = format!("type=local,dest={}", dir.display());
        args.extend(["--output", &output_arg]);
    }
    buildctl(socket, &args)
}

/// Returns the status of one builder.
pub fn status_of(manager: &BuilderManager, workspace: &str, platform: Platform) -> BuilderStatus {
    manager
        .status()
        .into_iter()
        .find(|status| status.workspace == workspace && status.platform == platform)
        .unwrap_or_else(|| panic!("no status for {workspace} {platform}"))
}

/// Waits until the builder reaches `state`, failing the test after `timeout`.
pub async fn wait_for_state(
    manager: &BuilderManager,
    workspace: &str,
    platform: Platform,
    state: BuilderState,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = status_of(manager, workspace, platform).state;
        if current == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{workspace} {platform} is {current:?} after {timeout:?}, expected {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tells whether `pid` is a live process (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| !cmdline.is_empty())
}

/// Waits up to `timeout` for `pid` to go away.
pub async fn wait_until_dead(pid: u32, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while is_alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

pub fn read_pid_file(state_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(state_dir.join("buildkitd.pid")).ok()?;
    text.trim().parse().ok()
}

pub fn state_dir(data_dir: &Path, workspace: &str, platform: Platform) -> PathBuf {
    data_dir
        .join("builders")
        .join(workspace)
        .join(platform.dir_name())
}
