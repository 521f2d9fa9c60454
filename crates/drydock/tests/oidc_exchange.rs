//! OIDC exchange through the real CLI and server: only tokens that match a workspace's trust
//! rule become workspace tokens, and builds with an expired or missing token print the fix.

mod common;

use common::{failure, run_with_stdin, success, Harness, Issuer, ServerOptions};
use serde_json::json;

#[test]
fn untrusted_or_mismatched_tokens_are_rejected() {
    let harness = Harness::start();
    harness.create_workspace("acme");
    let stranger = Issuer::start(harness.dir.path(), "stranger");
    let job = harness.client("job");
    let exchange = |token: &str| {
        job.drydock(&[
            "auth",
            "exchange-oidc-token",
            "--token",
            token,
            "--workspace",
            "acme",
        ])
    };

    let cases = [
        (
            "untrusted issuer",
            stranger.mint(json!({})),
            vec![
                "no trust rule of workspace \"acme\" matched",
                &stranger.url[..],
                "acme",
            ],
        ),
        (
            "non-matching subject",
            harness.issuer.mint(json!({ "organization": "evil" })),
            vec![
                "no trust rule of workspace \"acme\" matched",
                "organization:evil:pipeline:app",
                "acme",
            ],
        ),
        (
            "wrong audience",
            harness.issuer.mint(json!({ "audience": "someone-else" })),
            vec!["audience", "someone-else"],
        ),
        (
            "expired",
            harness.issuer.mint(json!({ "lifetime_secs": -600 })),
            vec!["expired"],
        ),
    ];
    for (case, token, expected) in &cases {
        let message = failure(&exchange(token), case);
        for phrase in expected {
            assert!(
                message.contains(phrase),
                "{case}: message lacks {phrase:?}:\n{message}"
            );
        }
        assert!(
            !message.contains(token.as_str()),
            "{case}: the error echoes the token"
        );
        assert!(
            !job.config_dir().join("credentials.json").exists(),
            "{case}: a workspace token was stored"
        );
    }

    let unknown = harness.issuer.mint(json!({}));
    let output = job.drydock(&[
        "auth",
        "exchange-oidc-token",
        "--token",
        &unknown,
        "--workspace",
        "nope",
    ]);
    let message = failure(&output, "unknown workspace");
    assert!(message.contains("nope"), "{message}");

    // The trusted token works, through the Namespace-style --tenant_id spelling too.
    let good = harness.issuer.mint(json!({}));
    success(
        &job.drydock(&[
            "auth",
            "exchange-oidc-token",
            "--token",
            &good,
            "--tenant_id",
            "acme",
        ]),
        "exchange with a trusted token",
    );
    let mode = std::fs::metadata(job.config_dir().join("credentials.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    assert!(
        !harness.server_log().contains(&good),
        "the server logged an OIDC token"
    );
}

#[test]
fn build_with_expired_token_says_to_exchange_again() {
    let harness = Harness::start_with(ServerOptions {
        token_lifetime_secs: Some(4),
        ..Default::default()
    });
    harness.create_workspace("acme");
    let job = harness.ci_job("acme");
    std::thread::sleep(std::time::Duration::from_secs(5));

    let build = job.docker(&[
        "buildx",
        "build",
        "--builder",
        common::BUILDER,
        "--platform",
        "linux/amd64",
        common::repo_dir().join("examples/hello").to_str().unwrap(),
    ]);
    let message = failure(&build, "build with an expired token");
    assert!(
        message.contains("expired at"),
        "buildx output lacks the expiry:\n{message}"
    );
    assert!(
        message.contains("exchange-oidc-token"),
        "buildx output lacks the fix:\n{message}"
    );

    // docker's credential helper refuses the expired token instead of sending it.
    let registry = job.registry.clone();
    let mut helper = std::process::Command::new(
        common::bin("drydock").with_file_name("docker-credential-drydock"),
    );
    helper
        .arg("get")
        .env("DRYDOCK_CONFIG_DIR", job.config_dir());
    let output = run_with_stdin(&mut helper, &registry);
    let message = failure(&output, "credential helper with an expired token");
    assert!(message.contains("expired at"), "{message}");

    // With no token at all, the build names the command that gets one.
    std::fs::remove_file(job.config_dir().join("credentials.json")).unwrap();
    let build = job.docker(&[
        "buildx",
        "build",
        "--builder",
        common::BUILDER,
        "--platform",
        "linux/arm64",
        common::repo_dir().join("examples/hello").to_str().unwrap(),
    ]);
    let message = failure(&build, "build without a token");
    assert!(message.contains("no workspace token"), "{message}");
    success(&job.drydock(&["docker", "buildx", "cleanup"]), "cleanup");
}
