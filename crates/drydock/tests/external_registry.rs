//! A build pushed to an ordinary registry (CNCF Distribution with basic auth): the client's own
//! `docker login` credentials reach the builder through BuildKit's session.

mod common;

use std::process::Command;

use common::{failure, run_with_stdin, success, Harness, Process, ServerOptions, PLATFORMS};

#[test]
fn build_pushes_to_second_registry_with_client_login() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let harness = Harness::start_with(ServerOptions {
        insecure_registries: vec![address.clone()],
        ..Default::default()
    });
    let _registry = start_distribution(harness.dir.path(), &address);
    harness.create_workspace("acme");
    let job = harness.ci_job("acme");

    let mut login = Command::new("docker");
    login
        .args(["login", &address, "--username", "ci", "--password-stdin"])
        .env("DOCKER_CONFIG", job.docker_config())
        .env("HOME", &job.home);
    let output = run_with_stdin(&mut login, "ci-password\n");
    success(&output, "docker login to the second registry");

    let base = job.build_base("acme", PLATFORMS);
    let reference = format!("{address}/team/hello:latest");
    job.build_hello(&base, PLATFORMS, &reference, "external-secret");

    let inspect = job.skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    success(&inspect, "skopeo inspect on the second registry");
    let index: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .filter(|p| !p.starts_with("unknown"))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);

    // Without the login, the same registry refuses the client.
    let anonymous = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--no-creds",
            &format!("docker://{reference}"),
        ])
        .output()
        .unwrap();
    failure(&anonymous, "anonymous read of the second registry");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts CNCF Distribution on `address` with one htpasswd user, `ci`.
fn start_distribution(dir: &std::path::Path, address: &str) -> Process {
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", "ci", "ci-password"])
        .output()
        .unwrap();
    success(&htpasswd, "htpasswd");
    let auth_file = dir.join("htpasswd");
    std::fs::write(&auth_file, &htpasswd.stdout).unwrap();
    let config = dir.join("distribution.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            dir.join("distribution-data").display(),
            auth_file.display()
        ),
    )
    .unwrap();
    let mut command = Command::new("registry");
    command.arg("serve").arg(&config);
    let process = Process::spawn("registry", &mut command, dir.join("distribution.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "registry did not start:\n{}",
            process.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    process
}
