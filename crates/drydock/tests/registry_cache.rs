//! BuildKit's registry cache round-trips through Drydock's registry: a build exports its cache
//! with `--cache-to type=registry,mode=max`, and a builder with an empty local cache imports it
//! with `--cache-from` and runs no step again.

mod common;

use std::time::Duration;

use common::{success, Harness};
use nix::sys::signal::Signal;

const PLATFORM: &str = "linux/amd64";

#[test]
fn registry_cache_round_trips_to_empty_builder() {
    let mut harness = Harness::start();
    harness.create_workspace("acme");
    let job = harness.ci_job("acme");
    let base = job.build_base("acme", PLATFORM);
    let cache = format!("{}/acme/hello:buildcache", harness.registry);
    let build = |job: &common::Client, base: &str, cache: &str, extra: &[&str]| {
        let context = common::repo_dir().join("examples/hello");
        let base_arg = format!("BASE_IMAGE={base}");
        let mut args = vec![
            "buildx",
            "build",
            "--builder",
            common::BUILDER,
            "--platform",
            PLATFORM,
            "--progress",
            "plain",
            "--build-arg",
            &base_arg,
            "--secret",
            "id=build_token,env=BUILD_TOKEN",
        ];
        let cache_from = format!("type=registry,ref={cache}");
        args.extend(["--cache-from", &cache_from]);
        args.extend(extra);
        args.push(context.to_str().unwrap());
        let output = job.docker_with_env(&args, &[("BUILD_TOKEN", "cache-secret")]);
        success(&output, "build with registry cache");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let cache_to = format!("type=registry,ref={cache},mode=max");
    let first = build(&job, &base, &cache, &["--cache-to", &cache_to]);
    assert!(
        first.contains("writing cache"),
        "the cache was not exported:\n{first}"
    );

    // Empty the builder's local cache: stop the server (and its builders), delete the state.
    assert!(
        harness.stop_server(Signal::SIGTERM, Duration::from_secs(60)),
        "server did not stop"
    );
    std::fs::remove_dir_all(harness.data_dir().join("builders/acme")).unwrap();
    harness.restart_server();
    let job = harness.ci_job("acme");
    let base = base.replacen(&base[..base.find('/').unwrap()], &harness.registry, 1);
    let cache = format!("{}/acme/hello:buildcache", harness.registry);

    let second = build(&job, &base, &cache, &[]);
    let runs: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("] RUN "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!runs.is_empty(), "no RUN steps in:\n{second}");
    for id in &runs {
        assert!(
            second.lines().any(|l| l == format!("{id} CACHED")),
            "RUN step {id} ran again instead of coming from the registry cache:\n{second}"
        );
    }
}
