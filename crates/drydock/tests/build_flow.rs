//! The CI step's whole flow against real BuildKit: OIDC exchange, buildx setup, docker login
//! and a two-platform build pushed to Drydock's registry, then the same build from cache.

mod common;

use common::image::{layer_digests, RegistryReader};
use common::{success, Harness, PLATFORMS};

const SECRET: &str = "s3cret-build-token-value";

#[test]
fn two_platform_build_is_pushed_then_served_from_cache() {
    let harness = Harness::start();
    harness.create_workspace("acme");
    let job = harness.ci_job("acme");

    let status = job.drydock(&["auth", "status"]);
    success(&status, "auth status");
    assert!(String::from_utf8_lossy(&status.stdout).contains("Workspace: acme"));

    let base = job.build_base("acme", PLATFORMS);
    let reference = format!("{}/acme/hello:latest", harness.registry);
    job.build_hello(&base, PLATFORMS, &reference, SECRET);

    let reader = RegistryReader::bearer(&harness.registry, &job.token());
    let images = reader.platform_manifests("acme/hello", "latest");
    let platforms: Vec<&str> = images.keys().map(String::as_str).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);

    // skopeo finds the workspace token through the same docker config and credential helper.
    let inspect = job.skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    success(&inspect, "skopeo inspect with docker's credential helper");

    for (platform, expected_arch) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let files = reader.files("acme/hello", &images[platform]);
        let text = |path: &str| {
            let bytes = files
                .get(path)
                .unwrap_or_else(|| panic!("{platform} image lacks {path}"));
            String::from_utf8_lossy(bytes).trim().to_owned()
        };
        assert_eq!(
            text("app/arch.txt"),
            expected_arch,
            "{platform} RUN ran on the wrong architecture"
        );
        assert_eq!(text("app/platform.txt"), platform);
        assert_eq!(text("app/greeting.txt"), "hello from drydock");
        assert_eq!(text("app/secret-bytes.txt"), SECRET.len().to_string());
        assert!(
            files.contains_key("app/greeting.sh"),
            "COPY --from result missing"
        );
        assert!(
            files.contains_key("bin/busybox"),
            "base image layer missing"
        );
        for (path, bytes) in &files {
            let leaked = bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
            assert!(
                !leaked,
                "the build secret leaked into {path} of the {platform} image"
            );
        }
    }

    // The same build again: every Dockerfile step comes from the builders' cache, and the
    // pushed layers are byte for byte the same.
    let log = job.build_hello(&base, PLATFORMS, &reference, SECRET);
    let steps = dockerfile_steps(&log);
    assert!(
        steps.len() >= 12,
        "expected the Dockerfile steps of two platforms in:\n{log}"
    );
    // BuildKit reports a FROM as resolved rather than CACHED; it is served from cache when
    // none of its layers had to be fetched or unpacked again.
    let uncached: Vec<&Step> = steps
        .iter()
        .filter(|s| !s.cached && (!s.is_from() || fetched_layers(&log, &s.id)))
        .collect();
    assert!(
        uncached.is_empty(),
        "steps not served from cache: {uncached:?}\n{log}"
    );
    let again = reader.platform_manifests("acme/hello", "latest");
    for (platform, manifest) in &images {
        assert_eq!(
            layer_digests(manifest),
            layer_digests(&again[platform]),
            "{platform} layers changed"
        );
    }

    let status = job.drydock(&["docker", "buildx", "status"]);
    success(&status, "buildx status");
    success(
        &job.drydock(&["docker", "buildx", "cleanup"]),
        "buildx cleanup",
    );
    let after = job.drydock(&["docker", "buildx", "status"]);
    assert!(
        !after.status.success(),
        "status should report the proxy gone after cleanup"
    );
}

#[derive(Debug)]
struct Step {
    id: String,
    name: String,
    cached: bool,
}

impl Step {
    fn is_from(&self) -> bool {
        self.name
            .split("] ")
            .nth(1)
            .is_some_and(|instruction| instruction.starts_with("FROM "))
    }
}

/// Checks whether step `id` downloaded or unpacked image layers (`#7 sha256:... 1.2MB / 1.2MB`,
/// `#7 extracting sha256:...`).
fn fetched_layers(log: &str, id: &str) -> bool {
    let prefix = format!("{id} ");
    log.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .any(|rest| rest.starts_with("sha256:") || rest.starts_with("extracting"))
}

/// Finds the Dockerfile instruction steps in buildx's plain progress output
/// (`#12 [linux/arm64 build 3/5] RUN ...`) and whether each was `CACHED`.
fn dockerfile_steps(log: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in log.lines() {
        let Some((id, rest)) = line.split_once(' ') else {
            continue;
        };
        if !id.starts_with('#') {
            continue;
        }
        if rest == "CACHED" {
            if let Some(step) = steps.iter_mut().find(|s| s.id == id) {
                step.cached = true;
            }
            continue;
        }
        let is_instruction = rest.starts_with('[')
            && rest.split(']').next().is_some_and(|label| {
                label
                    .split_whitespace()
                    .last()
                    .is_some_and(|n| n.contains('/') && n.chars().next().unwrap().is_ascii_digit())
            });
        if is_instruction && !steps.iter().any(|s| s.id == id) {
            steps.push(Step {
                id: id.to_owned(),
                name: rest.to_owned(),
                cached: false,
            });
        }
    }
    steps
}

#[test]
fn step_parser_reads_plain_progress() {
    let log = "#5 [internal] load build context\n#5 DONE 0.0s\n\
               #8 [linux/amd64 build 2/5] WORKDIR /src\n#8 CACHED\n\
               #9 [linux/arm64 stage-1 2/3] COPY --from=build /out/ /app/\n#9 DONE 0.1s\n";
    let steps = dockerfile_steps(log);
    assert_eq!(steps.len(), 2);
    assert!(steps[0].cached);
    assert!(!steps[1].cached);
    assert!(!steps[0].is_from());
}

#[test]
fn from_step_counts_as_cached_only_without_layer_fetches() {
    let log = "#7 [linux/arm64 build 1/5] FROM 127.0.0.1:1/acme/busybox:latest@sha256:ab\n\
               #7 resolve 127.0.0.1:1/acme/busybox:latest@sha256:ab 0.0s done\n#7 DONE 0.0s\n\
               #8 [linux/amd64 build 1/5] FROM 127.0.0.1:1/acme/busybox:latest@sha256:ab\n\
               #8 sha256:cd 1.2MB / 1.2MB 0.1s done\n#8 extracting sha256:cd 0.1s done\n";
    let steps = dockerfile_steps(log);
    assert!(steps.iter().all(Step::is_from));
    assert!(!fetched_layers(log, "#7"));
    assert!(fetched_layers(log, "#8"));
}
