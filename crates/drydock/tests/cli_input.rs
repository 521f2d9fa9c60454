//! Bad input to the client commands, without a server: each error names the value and the fix,
//! and nothing outside the client's own folders is touched.

mod common;

use std::process::{Command, Output};

use common::{bin, failure, success};

fn drydock(home: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin("drydock"));
    command
        .args(args)
        .env("HOME", home)
        .env("DRYDOCK_CONFIG_DIR", home.join("drydock"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .env_remove("DRYDOCK_SERVER")
        .env_remove("DRYDOCK_OIDC_TOKEN")
        .env_remove("DRYDOCK_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

#[test]
fn builder_names_cannot_escape_config_folder() {
    let home = tempfile::tempdir().unwrap();
    let victim = home.path().join("victim.json");
    std::fs::write(&victim, "{}").unwrap();
    for command in ["cleanup", "status"] {
        let output = drydock(
            home.path(),
            &["docker", "buildx", command, "--name", "../../victim"],
            &[],
        );
        let message = failure(&output, command);
        assert!(
            message.contains("invalid builder name"),
            "{command}: {message}"
        );
    }
    assert!(
        victim.exists(),
        "a path-like builder name deleted a file outside the config folder"
    );
}

#[test]
fn corrupt_proxy_record_does_not_block_cleanup() {
    let home = tempfile::tempdir().unwrap();
    let proxies = home.path().join("drydock/proxies");
    std::fs::create_dir_all(&proxies).unwrap();
    std::fs::write(proxies.join("drydock-remote.json"), "{corrupt").unwrap();
    let output = drydock(home.path(), &["docker", "buildx", "cleanup"], &[]);
    success(&output, "cleanup with a corrupt record");
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid proxy record"));
    assert!(
        !proxies.join("drydock-remote.json").exists(),
        "the corrupt record is still there"
    );

    let again = drydock(home.path(), &["docker", "buildx", "cleanup"], &[]);
    success(&again, "second cleanup");
    assert!(String::from_utf8_lossy(&again.stdout).contains("Nothing to clean up"));
}

#[test]
fn status_without_setup_says_what_to_run() {
    let home = tempfile::tempdir().unwrap();
    let output = drydock(home.path(), &["docker", "buildx", "status"], &[]);
    let message = failure(&output, "status with nothing set up");
    assert!(
        message.contains("drydock auth exchange-oidc-token"),
        "{message}"
    );
    assert!(
        message.contains("drydock docker buildx setup --background"),
        "{message}"
    );
}

#[test]
fn exchange_input_errors_name_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let server = [("DRYDOCK_SERVER", "http://127.0.0.1:9")];

    let output = drydock(
        home.path(),
        &["auth", "exchange-oidc-token", "--workspace", "acme"],
        &server,
    );
    let message = failure(&output, "exchange without a token");
    assert!(
        message.contains("--token") && message.contains("DRYDOCK_OIDC_TOKEN"),
        "{message}"
    );

    let output = drydock(
        home.path(),
        &[
            "auth",
            "exchange-oidc-token",
            "--token",
            "x",
            "--workspace",
            "acme",
        ],
        &[],
    );
    let message = failure(&output, "exchange without a server");
    assert!(
        message.contains("--server") && message.contains("DRYDOCK_SERVER"),
        "{message}"
    );

    let output = drydock(
        home.path(),
        &[
            "auth",
            "exchange-oidc-token",
            "--token",
            "x",
            "--workspace",
            "acme",
            "--server",
            "localhost:9",
        ],
        &[],
    );
    let message = failure(&output, "exchange with a server address lacking a scheme");
    assert!(message.contains("http://localhost:9"), "{message}");

    let output = drydock(home.path(), &["docker", "login"], &[]);
    let message = failure(&output, "docker login without a token");
    assert!(message.contains("exchange-oidc-token"), "{message}");
}
