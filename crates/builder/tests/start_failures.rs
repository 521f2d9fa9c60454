//! Start failures and pid-file handling, with stand-in scripts in place of buildkitd. These
//! tests need neither root nor BuildKit.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{config, is_alive, manager, read_pid_file, state_dir, status_of};
use drydock_builder::{BuilderError, BuilderManager, BuilderState, Platform};

/// Writes an executable shell script named `buildkitd` into `dir`.
fn fake_buildkitd(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("buildkitd");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn missing_buildkitd_names_the_path_and_the_fix() {
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.buildkitd = PathBuf::from("/nonexistent/buildkitd");
    let manager = manager(config).await;

    let error = manager
        .acquire("ws", Platform::LINUX_AMD64)
        .await
        .unwrap_err();
    assert!(matches!(error, BuilderError::Spawn { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("/nonexistent/buildkitd"), "{message}");
    assert!(message.contains("scripts/setup.sh"), "{message}");
}

#[tokio::test]
async fn buildkitd_that_exits_reports_its_log_tail() {
    let data = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.buildkitd = fake_buildkitd(bin.path(), "echo 'could not lock root' >&2\nexit 3");
    let manager = manager(config).await;

    let error = manager
        .acquire("ws", Platform::LINUX_AMD64)
        .await
        .unwrap_err();
    assert!(
        matches!(error, BuilderError::ExitedDuringStart { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("could not lock root"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("buildkitd.log"), "{message}");
    let status = status_of(&manager, "ws", Platform::LINUX_AMD64);
    assert_eq!(status.state, BuilderState::Exited);
    assert_eq!(status.connections, 0);
    let state = state_dir(data.path(), "ws", Platform::LINUX_AMD64);
    assert_eq!(read_pid_file(&state), None);
}

#[tokio::test]
async fn silent_buildkitd_times_out() {
    let data = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    let pid_file = bin.path().join("pid");
    let script = format!(
        "echo $$ > {}\necho started\nexec sleep 60",
        pid_file.display()
    );
    config.buildkitd = fake_buildkitd(bin.path(), &script);
    config.start_timeout = Duration::from_secs(1);
    let manager = manager(config).await;

    let error = manager
        .acquire("ws", Platform::LINUX_ARM64)
        .await
        .unwrap_err();
    assert!(
        matches!(error, BuilderError::StartTimedOut { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("timed out after 1s"), "{message}");
    assert!(message.contains("started"), "{message}");
    let status = status_of(&manager, "ws", Platform::LINUX_ARM64);
    assert_eq!(status.state, BuilderState::Stopped);
    assert_eq!(status.pid, None);
    let pid: u32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!is_alive(pid), "the timed-out process {pid} still runs");
}

#[tokio::test]
async fn generated_config_is_passed_to_buildkitd() {
    let data = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let args_file = bin.path().join("args");
    let mut config = config(data.path());
    config.buildkitd = fake_buildkitd(
        bin.path(),
        &format!("echo \"$@\" > {}\nexit 1", args_file.display()),
    );
    config.registries = vec![drydock_builder::RegistryTrust {
        host: "127.0.0.1:5000".into(),
        http: true,
        ca_file: None,
    }];
    let manager = manager(config).await;
    manager
        .acquire("ws", Platform::LINUX_ARM64)
        .await
        .unwrap_err();

    let state = state_dir(data.path(), "ws", Platform::LINUX_ARM64);
    let args = std::fs::read_to_string(&args_file).unwrap();
    let config_file = state.join("buildkitd.toml");
    let root = state.join("root");
    assert!(
        args.contains(&format!("--config {}", config_file.display())),
        "{args}"
    );
    assert!(
        args.contains(&format!("--root {}", root.display())),
        "{args}"
    );
    assert!(
        args.contains(&format!("--addr unix://{}/run/", data.path().display())),
        "{args}"
    );
    assert!(
        args.contains(&format!(
            "--otel-socket-path {}/run/",
            data.path().display()
        )),
        "every builder needs its own trace socket: {args}"
    );
    let toml = std::fs::read_to_string(config_file).unwrap();
    assert!(toml.contains("[registry.\"127.0.0.1:5000\"]"), "{toml}");
    assert!(toml.contains("platforms = [\"linux/arm64\"]"), "{toml}");
}

#[tokio::test]
async fn invalid_workspace_is_rejected() {
    let data = tempfile::tempdir().unwrap();
    let manager = manager(config(data.path())).await;
    for workspace in ["", "../escape", "a/b", ".."] {
        let error = manager
            .acquire(workspace, Platform::LINUX_AMD64)
            .await
            .unwrap_err();
        assert!(
            matches!(error, BuilderError::InvalidWorkspace(_)),
            "{error}"
        );
    }
    assert!(manager.status().is_empty());
    assert!(!data.path().join("escape").exists());
}

#[tokio::test]
async fn unrelated_process_in_pid_file_is_left_alone() {
    let data = tempfile::tempdir().unwrap();
    let state = state_dir(data.path(), "reused", Platform::LINUX_AMD64);
    std::fs::create_dir_all(&state).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(state.join("buildkitd.pid"), format!("{}\n", sleeper.id())).unwrap();

    let _manager = manager(config(data.path())).await;
    assert!(
        is_alive(sleeper.id()),
        "a process that is not buildkitd was signalled"
    );
    assert_eq!(read_pid_file(&state), None);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[tokio::test]
async fn leftover_process_with_matching_root_is_stopped() {
    let data = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let state = state_dir(data.path(), "left", Platform::LINUX_AMD64);
    std::fs::create_dir_all(&state).unwrap();
    let root = state.join("root");

    // A bash that waits on a FIFO, with the command line of this builder's buildkitd:
    // argv[0] is "buildkitd" and the arguments include "--root ROOT".
    let fifo = scratch.path().join("fifo");
    let mkfifo = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(mkfifo.success());
    let mut process = std::process::Command::new("bash")
        .arg0("buildkitd")
        .arg("-c")
        .arg("read -t 60 <> \"$0\"")
        .arg(&fifo)
        .arg("--root")
        .arg(&root)
        .spawn()
        .unwrap();
    let pid = process.id();
    std::fs::write(state.join("buildkitd.pid"), format!("{pid}\n")).unwrap();
    while !std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"buildkitd"))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let _manager = manager(config(data.path())).await;
    let status = process.wait().unwrap();
    let sigterm = nix::sys::signal::Signal::SIGTERM as i32;
    assert_eq!(status.signal(), Some(sigterm), "{status}");
    assert_eq!(read_pid_file(&state), None);
}

#[tokio::test]
async fn stale_sockets_are_removed_on_start() {
    let data = tempfile::tempdir().unwrap();
    let run = data.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("0123456789ab.sock"), "").unwrap();
    let manager: std::sync::Arc<BuilderManager> = manager(config(data.path())).await;
    assert_eq!(manager.socket_dir(), run);
    assert!(!run.join("0123456789ab.sock").exists());
}
