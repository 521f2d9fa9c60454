//! Pushes an image with provenance attestations from a real BuildKit daemon, then builds
//! on top of it, pulling it back through the registry. BuildKit resolves registries with
//! containerd's client, which fetches tokens with the OAuth2 POST form.
//!
//! Needs root and `buildkitd` and `buildctl` on PATH (scripts/setup.sh installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use drydock_registry::{Registry, RegistryConfig};
use drydock_store::{Db, TokenKind};

/// Maximum time from starting buildkitd to its first successful `buildctl` request.
const BUILDKITD_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A buildkitd started for one test, stopped (by its pid) on drop.
struct Buildkitd {
    child: Child,
    socket: PathBuf,
}

impl Drop for Buildkitd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts buildkitd with its state in `dir/NAME`. The docker config is in `dir/docker`.
fn start_buildkitd(dir: &Path, name: &str, registry_host: &str) -> Buildkitd {
    let state = dir.join(name);
    std::fs::create_dir_all(&state).unwrap();
    let config = state.join("buildkitd.toml");
    std::fs::write(
        &config,
        format!(
            "[worker.oci]\nenabled = true\n[worker.containerd]\nenabled = false\n\
             [registry.\"{registry_host}\"]\nhttp = true\ninsecure = true\n"
        ),
    )
    .unwrap();
    let socket = state.join("bk.sock");
    let log = std::fs::File::create(state.join("buildkitd.log")).unwrap();
    let child = Command::new("buildkitd")
        .arg("--config")
        .arg(&config)
        .arg("--root")
        .arg(state.join("root"))
        .arg("--addr")
        .arg(format!("unix://{}", socket.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("failed to start buildkitd (run scripts/setup.sh to install it): {error}")
        });
    let daemon = Buildkitd { child, socket };
    let started = Instant::now();
    loop {
        let probe = buildctl(&daemon.socket, dir, &["debug", "workers"]);
        if probe.status.success() {
            return daemon;
        }
        let log = std::fs::read_to_string(state.join("buildkitd.log")).unwrap_or_default();
        assert!(
            started.elapsed() < BUILDKITD_START_TIMEOUT,
            "buildkitd did not start within {BUILDKITD_START_TIMEOUT:?}; its log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs buildctl with the docker config in `dir/docker`, which contains the registry
/// credentials.
fn buildctl(socket: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("buildctl")
        .arg("--addr")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .env("DOCKER_CONFIG", dir.join("docker"))
        .output()
        .expect("buildctl runs (run scripts/setup.sh to install it)")
}

/// Builds `context` and sends the result to the buildctl `--output` value `output`.
fn build(daemon: &Buildkitd, dir: &Path, context: &Path, output: &str) {
    let context_arg = format!("context={}", context.display());
    let dockerfile_arg = format!("dockerfile={}", context.display());
    let result = buildctl(
        &daemon.socket,
        dir,
        &[
            "build",
            "--progress",
            "plain",
            "--frontend",
            "dockerfile.v0",
            "--local",
            &context_arg,
            "--local",
            &dockerfile_arg,
            "--opt",
            "attest:provenance=mode=max",
            "--output",
            output,
        ],
    );
    assert!(
        result.status.success(),
        "buildctl build with output {output} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// GETs `path` from the registry with an API token and returns the status and body.
async fn get(host: &str, path: &str, token: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/vnd.oci.image.index.v1+json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, response[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_pushes_attested_image_and_pulls_it_back() {
    assert!(
        nix_is_root(),
        "buildkitd's runc worker needs root; run this test as root"
    );
    let db = Db::open_in_memory().await.unwrap();
    db.create_workspace("acme").await.unwrap();
    let token = db
        .issue_token(TokenKind::Workspace, Some("acme"), "buildkit", None)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let config = RegistryConfig {
        data_dir: data.path().to_owned(),
        public_url: format!("http://{host}").parse().unwrap(),
    };
    let router = Registry::new(db, config).await.unwrap().router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::Builder::new()
        .prefix("bk")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::create_dir_all(dir.path().join("docker")).unwrap();
    let auth = STANDARD.encode(format!("ci:{token}"));
    let docker_config = serde_json::json!({"auths": {host.clone(): {"auth": auth}}});
    std::fs::write(
        dir.path().join("docker/config.json"),
        docker_config.to_string(),
    )
    .unwrap();

    let base_context = dir.path().join("base");
    std::fs::create_dir_all(&base_context).unwrap();
    std::fs::write(base_context.join("hello.txt"), "hello from drydock\n").unwrap();
    std::fs::write(
        base_context.join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    let derived_context = dir.path().join("derived");
    std::fs::create_dir_all(&derived_context).unwrap();
    std::fs::write(derived_context.join("extra.txt"), "extra\n").unwrap();
    std::fs::write(
        derived_context.join("Dockerfile"),
        format!("FROM {host}/acme/base:v1\nCOPY extra.txt /extra.txt\n"),
    )
    .unwrap();

    let push_base = format!("type=image,name={host}/acme/base:v1,push=true");
    let push_derived = format!("type=image,name={host}/acme/team/derived:v1,push=true");
    let exported = dir.path().join("exported");
    let export = format!("type=local,dest={}", exported.display());
    tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        let host = host.clone();
        move || {
            let pusher = start_buildkitd(&dir, "pusher", &host);
            build(&pusher, &dir, &base_context, &push_base);
            build(&pusher, &dir, &derived_context, &push_derived);
            drop(pusher);
            // The pushing daemon had the base layer in its cache and mounted it across
            // repositories. A daemon with an empty cache must download it to export files.
            let puller = start_buildkitd(&dir, "puller", &host);
            build(&puller, &dir, &derived_context, &export);
        }
    })
    .await
    .unwrap();
    let pulled = std::fs::read_to_string(exported.join("hello.txt")).unwrap();
    assert_eq!(
        pulled, "hello from drydock\n",
        "the base layer came back from the registry"
    );

    let (status, body) = get(&host, "/v2/acme/base/manifests/v1", &token).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2, "image and attestation manifest: {index}");
    let attestation = children
        .iter()
        .find(|child| child["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
        .expect("BuildKit pushed a provenance attestation");
    assert_eq!(attestation["platform"]["os"], "unknown");
    for child in children {
        let path = format!(
            "/v2/acme/base/manifests/{}",
            child["digest"].as_str().unwrap()
        );
        let (status, _) = get(&host, &path, &token).await;
        assert_eq!(status, 200, "{path}");
    }

    let (status, body) = get(&host, "/v2/acme/team/derived/tags/list", &token).await;
    assert_eq!(status, 200);
    let tags: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
}

fn nix_is_root() -> bool {
    // The effective uid is what runc checks; `id -u` avoids a libc dependency.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}
