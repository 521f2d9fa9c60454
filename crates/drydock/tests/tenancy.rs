//! Workspaces are isolated: a second workspace's token cannot read or write the first one's
//! repositories, and its builds run on its own builder with its own cache.

mod common;

use common::image::RegistryReader;
use common::{failure, success, Harness};

const PLATFORM: &str = "linux/amd64";

#[test]
fn second_workspace_cannot_reach_first_workspace() {
    let harness = Harness::start();
    harness.create_workspace("acme");
    harness.create_workspace("beta");
    let acme = harness.ci_job("acme");
    let beta = harness.ci_job("beta");

    let acme_base = acme.build_base("acme", PLATFORM);
    let acme_image = format!("{}/acme/hello:latest", harness.registry);
    acme.build_hello(&acme_base, PLATFORM, &acme_image, "acme-secret");

    // Pull: beta's credentials (through its credential helper) are refused for acme's image.
    let pull = beta.skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{acme_image}"),
    ]);
    let message = failure(&pull, "beta pulling acme's image");
    assert!(
        message.contains("denied") || message.contains("unauthorized"),
        "{message}"
    );

    // The registry API with beta's token: the manifest and a layer blob by digest are refused.
    let acme_reader = RegistryReader::bearer(&harness.registry, &acme.token());
    let beta_reader = RegistryReader::bearer(&harness.registry, &beta.token());
    let acme_manifest = &acme_reader.platform_manifests("acme/hello", "latest")[PLATFORM];
    let layer = acme_manifest["layers"][0]["digest"].as_str().unwrap();
    let manifest_err = beta_reader
        .manifest("acme/hello", "latest")
        .expect_err("beta reads acme manifest");
    assert!(manifest_err.contains("403"), "{manifest_err}");
    assert!(
        beta_reader.blob("acme/hello", layer).is_err(),
        "beta read acme's layer from acme's repository"
    );
    assert!(
        beta_reader.blob("beta/hello", layer).is_err(),
        "beta read acme's layer through its own repository"
    );

    // Push: beta cannot write into acme's repositories, by copy or by build.
    let copy = beta.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/acme/busybox:latest", harness.registry),
        &format!("docker://{}/acme/stolen:latest", harness.registry),
    ]);
    failure(&copy, "beta copying into acme");
    let beta_base = beta.build_base("beta", PLATFORM);

    // beta's identical build runs on beta's builder: nothing comes from acme's cache.
    let beta_image = format!("{}/beta/hello:latest", harness.registry);
    let log = beta.build_hello(&beta_base, PLATFORM, &beta_image, "beta-secret");
    let runs = log.lines().filter(|l| l.contains("] RUN ")).count();
    let cached_runs = cached_run_steps(&log);
    assert!(runs > 0, "no RUN steps in:\n{log}");
    assert_eq!(
        cached_runs, 0,
        "beta's RUN steps came from a cache it should not share:\n{log}"
    );

    let push_into_acme = beta.docker(&[
        "buildx",
        "build",
        "--builder",
        common::BUILDER,
        "--platform",
        PLATFORM,
        "--build-arg",
        &format!("BASE_IMAGE={beta_base}"),
        "--secret",
        "id=build_token,env=HOME",
        "-t",
        &format!("{}/acme/hello:pwned", harness.registry),
        "--push",
        common::repo_dir().join("examples/hello").to_str().unwrap(),
    ]);
    failure(&push_into_acme, "beta pushing into acme");
    assert!(
        acme_reader.manifest("acme/hello", "pwned").is_err(),
        "beta's push landed in acme"
    );

    let beta_builders = harness.builders(&beta.token());
    let listed = beta_builders["builders"].as_array().unwrap();
    assert!(!listed.is_empty(), "beta sees no builder of its own");
    assert!(
        listed.iter().all(|b| b["workspace"] == "beta"),
        "beta sees other builders: {listed:?}"
    );
    let all = harness.builders(&harness.admin_token);
    let workspaces: Vec<&str> = all["builders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["workspace"].as_str())
        .collect();
    assert!(
        workspaces.contains(&"acme") && workspaces.contains(&"beta"),
        "{all}"
    );
}

/// Counts RUN steps reported CACHED in buildx's plain progress output.
fn cached_run_steps(log: &str) -> usize {
    let run_ids: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("] RUN "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    log.lines()
        .filter(|l| l.ends_with(" CACHED"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| run_ids.contains(id))
        .count()
}

#[test]
fn operator_commands_need_the_operator_token() {
    let harness = Harness::start();
    harness.create_workspace("acme");
    let job = harness.client("job");
    let token = harness.issuer.mint(serde_json::json!({}));
    success(
        &job.drydock(&[
            "auth",
            "exchange-oidc-token",
            "--token",
            &token,
            "--workspace",
            "acme",
        ]),
        "exchange",
    );
    let workspace_token = job.token();
    let output = std::process::Command::new(common::bin("drydock"))
        .args(["admin", "workspace", "create", "mine"])
        .env("DRYDOCK_SERVER", &harness.server_url)
        .env("DRYDOCK_TOKEN", &workspace_token)
        .output()
        .unwrap();
    let message = failure(&output, "workspace token creating a workspace");
    assert!(message.contains("operator token"), "{message}");
    let listed = harness.admin(&["admin", "workspace", "list"]);
    success(&listed, "workspace list");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("mine"));
}
