//! Builder life cycle against the real buildkitd (runc worker): start on acquire, sharing,
//! idle stop with a warm restart, leftover processes, arm64 under QEMU and shutdown.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use drydock_builder::{BuilderError, BuilderState, Platform};

#[tokio::test]
async fn amd64_builder_starts_on_acquire_and_serves() {
    require_buildkit();
    let data = tempfile::tempdir().unwrap();
    let manager = manager(config(data.path())).await;
    assert!(manager.status().is_empty());

    let lease = manager
        .acquire("team-a", Platform::LINUX_AMD64)
        .await
        .unwrap();
    assert_eq!(lease.workspace(), "team-a");
    assert_eq!(lease.platform(), Platform::LINUX_AMD64);
    let socket = lease.socket_path().to_owned();
    assert!(socket.starts_with(data.path().join("run")));
    let socket_dir_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(socket_dir_mode & 0o777, 0o700);

    assert_default_platform(&socket, "linux/amd64");

    let status = status_of(&manager, "team-a", Platform::LINUX_AMD64);
    assert_eq!(status.state, BuilderState::Running);
    assert_eq!(status.connections, 1);
    assert_eq!(status.idle_since, None);
    let pid = status.pid.expect("running builder has a pid");
    let state = state_dir(data.path(), "team-a", Platform::LINUX_AMD64);
    assert_eq!(read_pid_file(&state), Some(pid));
    assert!(state.join("root").is_dir());
    assert!(state.join("buildkitd.log").is_file());
    let toml = std::fs::read_to_string(state.join("buildkitd.toml")).unwrap();
    assert!(toml.contains("platforms = [\"linux/amd64\"]"), "{toml}");

    // A RUN step executes in the builder's own platform.
    let output = tempfile::tempdir().unwrap();
    let dockerfile = "FROM scratch\nCOPY . /\nRUN uname -m > /machine\n\
                      FROM scratch\nCOPY --from=0 /machine /machine\n";
    build_dockerfile(&socket, dockerfile, &rootfs("amd64"), Some(output.path()));
    let machine = std::fs::read_to_string(output.path().join("machine")).unwrap();
    assert_eq!(machine.trim(), "x86_64");

    drop(lease);
    let status = status_of(&manager, "team-a", Platform::LINUX_AMD64);
    assert_eq!(status.connections, 0);
    assert!(status.idle_since.is_some());

    manager.shutdown().await;
    assert!(wait_until_dead(pid, Duration::from_secs(15)).await);
    assert_eq!(read_pid_file(&state), None);
    assert!(!socket.exists());
    let status = status_of(&manager, "team-a", Platform::LINUX_AMD64);
    assert_eq!(status.state, BuilderState::Stopped);
    assert_eq!(status.pid, None);
}

#[tokio::test]
async fn concurrent_acquires_share_one_process() {
    require_buildkit();
    let data = tempfile::tempdir().unwrap();
    let manager = manager(config(data.path())).await;

    let (first, second) = tokio::join!(
        manager.acquire("shared", Platform::LINUX_AMD64),
        manager.acquire("shared", Platform::LINUX_AMD64),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.socket_path(), second.socket_path());

    let status = status_of(&manager, "shared", Platform::LINUX_AMD64);
    assert_eq!(status.connections, 2);
    assert_eq!(manager.status().len(), 1);
    let pid = status.pid.unwrap();

    let third = manager
        .acquire("shared", Platform::LINUX_AMD64)
        .await
        .unwrap();
    assert_eq!(
        status_of(&manager, "shared", Platform::LINUX_AMD64).pid,
        Some(pid)
    );
    assert_eq!(
        status_of(&manager, "shared", Platform::LINUX_AMD64).connections,
        3
    );

    // Another workspace gets its own process and socket.
    let other = manager
        .acquire("other", Platform::LINUX_AMD64)
        .await
        .unwrap();
    assert_ne!(other.socket_path(), first.socket_path());
    assert_ne!(
        status_of(&manager, "other", Platform::LINUX_AMD64).pid,
        Some(pid)
    );

    drop((first, second, third, other));
    assert_eq!(
        status_of(&manager, "shared", Platform::LINUX_AMD64).connections,
        0
    );
    manager.shutdown().await;
}

#[tokio::test]
async fn idle_builder_stops_and_restarts_warm() {
    require_buildkit();
    let data = tempfile::tempdir().unwrap();
    let mut config = config(data.path());
    config.idle_timeout = Duration::from_secs(1);
    let manager = manager(config).await;
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("data.txt"), "warm cache\n").unwrap();
    let dockerfile = "FROM scratch\nCOPY data.txt /data.txt\n";

    let lease = manager
        .acquire("warm", Platform::LINUX_AMD64)
        .await
        .unwrap();
    let socket = lease.socket_path().to_owned();
    build_dockerfile(&socket, dockerfile, context.path(), None);
    let records_before = buildctl(&socket, &["du", "--verbose"]);
    assert!(records_before.contains("ID:"), "{records_before}");
    let first_pid = status_of(&manager, "warm", Platform::LINUX_AMD64)
        .pid
        .unwrap();

    // A held lease keeps the builder running past the idle timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status_of(&manager, "warm", Platform::LINUX_AMD64).state,
        BuilderState::Running
    );

    drop(lease);
    wait_for_state(
        &manager,
        "warm",
        Platform::LINUX_AMD64,
        BuilderState::Stopped,
        Duration::from_secs(30),
    )
    .await;
    assert!(wait_until_dead(first_pid, Duration::from_secs(5)).await);

    let lease = manager
        .acquire("warm", Platform::LINUX_AMD64)
        .await
        .unwrap();
    let second_pid = status_of(&manager, "warm", Platform::LINUX_AMD64)
        .pid
        .unwrap();
    assert_ne!(first_pid, second_pid);
    assert_eq!(lease.socket_path(), socket);
    let records_after = buildctl(&socket, &["du", "--verbose"]);
    let first_id = records_before
        .lines()
        .find(|line| line.starts_with("ID:"))
        .unwrap();
    assert!(records_after.contains(first_id), "{records_after}");
    let rebuild = build_dockerfile(&socket, dockerfile, context.path(), None);
    assert!(rebuild.contains("CACHED"), "{rebuild}");

    drop(lease);
    manager.shutdown().await;
}

#[tokio::test]
async fn leftover_builder_from_killed_server_is_stopped() {
    require_buildkit();
    let data = tempfile::tempdir().unwrap();
    let first = manager(config(data.path())).await;
    let lease = first
        .acquire("leftover", Platform::LINUX_AMD64)
        .await
        .unwrap();
    let pid = status_of(&first, "leftover", Platform::LINUX_AMD64)
        .pid
        .unwrap();
    // A server killed with SIGKILL runs no shutdown: its builders keep running.
    drop(lease);
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(is_alive(pid));
    let state = state_dir(data.path(), "leftover", Platform::LINUX_AMD64);
    assert_eq!(read_pid_file(&state), Some(pid));

    let second = manager(config(data.path())).await;
    assert!(wait_until_dead(pid, Duration::from_secs(5)).await);
    assert_eq!(read_pid_file(&state), None);

    // The root folder is free again, so the builder starts with the same state.
    let lease = second
        .acquire("leftover", Platform::LINUX_AMD64)
        .await
        .unwrap();
    assert_default_platform(lease.socket_path(), "linux/amd64");
    drop(lease);
    second.shutdown().await;
}

#[tokio::test]
async fn arm64_builder_runs_arm64_steps() {
    require_buildkit();
    let data = tempfile::tempdir().unwrap();
    let manager = manager(config(data.path())).await;
    let lease = manager
        .acquire("cross", Platform::LINUX_ARM64)
        .await
        .unwrap();

    assert_default_platform(lease.socket_path(), "linux/arm64");

    let output = tempfile::tempdir().unwrap();
    let dockerfile = "FROM scratch\nCOPY . /\nRUN uname -m > /machine\n\
                      FROM scratch\nCOPY --from=0 /machine /machine\n";
    build_dockerfile(
        lease.socket_path(),
        dockerfile,
        &rootfs("arm64"),
        Some(output.path()),
    );
    let machine = std::fs::read_to_string(output.path().join("machine")).unwrap();
    assert_eq!(machine.trim(), "aarch64");

    drop(lease);
    manager.shutdown().await;
}

#[tokio::test]
async fn builder_that_died_restarts_on_next_acquire() {
    require_buildkit();
    let data = tempfile::tempdir().unwrap();
    let manager = manager(config(data.path())).await;
    let lease = manager
        .acquire("crash", Platform::LINUX_AMD64)
        .await
        .unwrap();
    let pid = status_of(&manager, "crash", Platform::LINUX_AMD64)
        .pid
        .unwrap();

    let raw_pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(raw_pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for_state(
        &manager,
        "crash",
        Platform::LINUX_AMD64,
        BuilderState::Exited,
        Duration::from_secs(10),
    )
    .await;
    drop(lease);

    let lease = manager
        .acquire("crash", Platform::LINUX_AMD64)
        .await
        .unwrap();
    let status = status_of(&manager, "crash", Platform::LINUX_AMD64);
    assert_eq!(status.state, BuilderState::Running);
    assert_ne!(status.pid, Some(pid));
    assert_eq!(status.connections, 1);
    assert_default_platform(lease.socket_path(), "linux/amd64");
    drop(lease);
    manager.shutdown().await;
}

#[tokio::test]
async fn long_data_dir_serves_from_a_tmp_socket() {
    require_buildkit();
    let data = tempfile::tempdir().unwrap();
    let long_dir = data.path().join("d".repeat(60)).join("e".repeat(60));
    let manager = manager(config(&long_dir)).await;
    let lease = manager
        .acquire("long", Platform::LINUX_AMD64)
        .await
        .unwrap();

    let socket = lease.socket_path().to_owned();
    let socket_text = socket.to_string_lossy();
    assert!(socket_text.starts_with("/tmp/drydock-"), "{socket_text}");
    assert!(socket.as_os_str().len() < 108);
    assert_default_platform(&socket, "linux/amd64");
    let state = state_dir(&long_dir, "long", Platform::LINUX_AMD64);
    assert!(state.join("root").is_dir());

    drop(lease);
    manager.shutdown().await;
    let _ = std::fs::remove_dir(socket.parent().unwrap());
}

#[tokio::test]
async fn acquire_after_shutdown_is_rejected() {
    require_buildkit();
    let data = tempfile::tempdir().unwrap();
    let manager = manager(config(data.path())).await;
    let lease = manager
        .acquire("done", Platform::LINUX_AMD64)
        .await
        .unwrap();
    let pid = status_of(&manager, "done", Platform::LINUX_AMD64)
        .pid
        .unwrap();

    // Shutdown stops builders even while leases are held.
    manager.shutdown().await;
    assert!(wait_until_dead(pid, Duration::from_secs(15)).await);
    drop(lease);

    let error = manager
        .acquire("done", Platform::LINUX_AMD64)
        .await
        .unwrap_err();
    assert!(matches!(error, BuilderError::ShuttingDown), "{error}");
}

#[tokio::test]
async fn concurrent_builders_use_own_trace_sockets() {
    require_buildkit();
    // Each round starts four builders at the same moment, from two managers on separate data
    // folders, as two servers on one host would: none may fail over a shared host path.
    for round in 0..3 {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let manager_a = manager(config(first.path())).await;
        let manager_b = manager(config(second.path())).await;
        let (a_amd, a_arm, b_amd, b_arm) = tokio::join!(
            manager_a.acquire("team-a", Platform::LINUX_AMD64),
            manager_a.acquire("team-a", Platform::LINUX_ARM64),
            manager_b.acquire("team-b", Platform::LINUX_AMD64),
            manager_b.acquire("team-b", Platform::LINUX_ARM64),
        );
        for (name, result) in [
            ("a amd64", a_amd),
            ("a arm64", a_arm),
            ("b amd64", b_amd),
            ("b arm64", b_arm),
        ] {
            let lease =
                result.unwrap_or_else(|e| panic!("round {round}: builder {name} failed: {e}"));
            // Each builder has its own trace socket beside its gRPC socket, never the host-wide
            // default that concurrent starts race to bind.
            let trace_socket = lease.socket_path().with_extension("otl");
            assert!(
                trace_socket.exists(),
                "round {round}: {name} has no {}",
                trace_socket.display()
            );
        }
        manager_a.shutdown().await;
        manager_b.shutdown().await;
    }
}
