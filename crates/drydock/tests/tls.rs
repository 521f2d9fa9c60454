//! The flow over HTTPS with a private CA: clients trust it through `DRYDOCK_CA_CERT`, and the
//! server hands it to the builders so BuildKit trusts the registry it pushes to.

mod common;

use common::{failure, make_tls_files, success, Harness, ServerOptions};

const PLATFORM: &str = "linux/amd64";

#[test]
fn build_over_tls_with_private_ca() {
    let harness = Harness::start_with(ServerOptions {
        tls: true,
        ..Default::default()
    });
    assert!(
        harness.server_url.starts_with("https://"),
        "{}",
        harness.server_url
    );
    harness.create_workspace("acme");
    let job = harness.ci_job("acme");

    let base = job.build_base("acme", PLATFORM);
    let reference = format!("{}/acme/hello:tls", harness.registry);
    job.build_hello(&base, PLATFORM, &reference, "tls-secret");

    // skopeo reads the pushed image over TLS, trusting the same CA.
    let cert_dir = harness.dir.path().join("skopeo-certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(
        make_tls_files(harness.dir.path()).ca,
        cert_dir.join("ca.crt"),
    )
    .unwrap();
    let inspect = job.skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        &format!("docker://{reference}"),
    ]);
    success(&inspect, "skopeo inspect over TLS");
    let index: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(
        index["manifests"].as_array().is_some_and(|m| !m.is_empty()),
        "{index}"
    );

    // Without the CA, the client refuses the server's certificate.
    let output = std::process::Command::new(common::bin("drydock"))
        .args([
            "auth",
            "exchange-oidc-token",
            "--token",
            "x",
            "--workspace",
            "acme",
        ])
        .env("DRYDOCK_SERVER", &harness.server_url)
        .env("DRYDOCK_CONFIG_DIR", harness.dir.path().join("no-ca"))
        .env_remove("DRYDOCK_CA_CERT")
        .output()
        .unwrap();
    let message = failure(&output, "exchange without the CA");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}
