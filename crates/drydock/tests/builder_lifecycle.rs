//! Builder life cycle through the real server: idle builders stop and come back warm, SIGTERM
//! stops every builder, and a builder left behind by a killed server is stopped on restart.

mod common;

use std::time::{Duration, Instant};

use common::{process_alive, Harness, ServerOptions};
use nix::sys::signal::Signal;

const PLATFORM: &str = "linux/amd64";

fn builder_pid(harness: &Harness, token: &str) -> u32 {
    let listed = harness.builders(token);
    let builder = listed["builders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["platform"] == PLATFORM && b["pid"].is_u64())
        .unwrap_or_else(|| panic!("no running {PLATFORM} builder in {listed}"))
        .clone();
    builder["pid"].as_u64().unwrap() as u32
}

fn wait_until_exited(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn builders_stop_when_idle_on_sigterm_and_after_a_crash() {
    let mut harness = Harness::start_with(ServerOptions {
        builder_idle_secs: Some(3),
        ..Default::default()
    });
    harness.create_workspace("acme");
    let job = harness.ci_job("acme");

    // Idle stop, then a warm start: the same build is served from the builder's kept cache.
    job.build_base("acme", PLATFORM);
    let first = builder_pid(&harness, &job.token());
    assert!(
        wait_until_exited(first, Duration::from_secs(30)),
        "idle builder {first} still runs"
    );
    let dockerfile = common::repo_dir().join("examples/base/Dockerfile");
    let rebuild = job.docker(&[
        "buildx",
        "build",
        "--builder",
        common::BUILDER,
        "--platform",
        PLATFORM,
        "--progress",
        "plain",
        "-f",
        dockerfile.to_str().unwrap(),
        common::rootfs_dir().to_str().unwrap(),
    ]);
    common::success(&rebuild, "rebuild after idle stop");
    let log = String::from_utf8_lossy(&rebuild.stderr);
    assert!(
        log.contains("CACHED"),
        "the restarted builder lost its cache:\n{log}"
    );

    // A server killed with SIGKILL leaves its builder running; the next server stops it.
    let orphan = builder_pid(&harness, &job.token());
    assert!(
        harness.stop_server(Signal::SIGKILL, Duration::from_secs(10)),
        "server ignored SIGKILL"
    );
    assert!(
        process_alive(orphan),
        "builder {orphan} died with the server; nothing to recover"
    );
    harness.restart_server();
    assert!(
        wait_until_exited(orphan, Duration::from_secs(15)),
        "leftover builder {orphan} still runs"
    );

    // SIGTERM drains and stops the builders before the server exits.
    let job = harness.ci_job("acme");
    job.build_base("acme", PLATFORM);
    let running = builder_pid(&harness, &job.token());
    assert!(
        harness.stop_server(Signal::SIGTERM, Duration::from_secs(60)),
        "server did not stop on SIGTERM"
    );
    assert!(
        !process_alive(running),
        "builder {running} outlived the server's SIGTERM"
    );
}

#[test]
fn sigterm_lets_running_build_finish_and_push() {
    let mut harness = Harness::start();
    harness.create_workspace("acme");
    let job = harness.ci_job("acme");
    let base = job.build_base("acme", PLATFORM);

    let context = harness.dir.path().join("slow");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {base}\nRUN sleep 6 && echo done > /slow.txt\n"),
    )
    .unwrap();
    let reference = format!("{}/acme/slow:latest", harness.registry);
    let mut build = job.docker_command(&[
        "buildx",
        "build",
        "--builder",
        common::BUILDER,
        "--platform",
        PLATFORM,
        "--progress",
        "plain",
        "-t",
        &reference,
        "--push",
        context.to_str().unwrap(),
    ]);
    let child = build
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Stop the server while the RUN step sleeps; it must serve the push before exiting.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        harness.stop_server(Signal::SIGTERM, Duration::from_secs(60)),
        "server did not stop on SIGTERM"
    );
    let output = child.wait_with_output().unwrap();
    common::success(&output, "build running during shutdown");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("pushing manifest"),
        "the build did not push:\n{log}"
    );
}

#[test]
fn builder_start_failure_shows_in_buildx_output() {
    let harness = Harness::start_with(ServerOptions {
        buildkitd: Some("/nonexistent/buildkitd".into()),
        ..Default::default()
    });
    harness.create_workspace("acme");
    let job = harness.ci_job("acme");
    let started = Instant::now();
    let build = job.docker(&[
        "buildx",
        "build",
        "--builder",
        common::BUILDER,
        "--platform",
        PLATFORM,
        common::repo_dir().join("examples/hello").to_str().unwrap(),
    ]);
    let message = common::failure(&build, "build without a working buildkitd");
    assert!(
        message.contains("/nonexistent/buildkitd"),
        "buildx output lacks the cause:\n{message}"
    );
    assert!(
        message.contains("--buildkitd"),
        "buildx output lacks the fix:\n{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the failure took {:?} to show",
        started.elapsed()
    );
}
