//! Pushes and pulls a real image with skopeo (a client built on containers/image) against
//! the registry served over HTTP on loopback.
//!
//! Needs `skopeo` (Debian package `skopeo`; 1.9 was used) and `tar` and `gzip` on PATH.

use std::path::{Path, PathBuf};
use std::process::Output;

use drydock_registry::{Registry, RegistryConfig};
use drydock_store::{Db, TokenKind};
use sha2::{Digest as _, Sha256};

const SKOPEO: &str = "skopeo";

/// A registry served on 127.0.0.1 for the duration of a test.
struct Served {
    host: String,
    acme_token: String,
    other_token: String,
    _data: tempfile::TempDir,
}

async fn serve() -> Served {
    let db = Db::open_in_memory().await.unwrap();
    db.create_workspace("acme").await.unwrap();
    db.create_workspace("other").await.unwrap();
    let acme_token = db
        .issue_token(TokenKind::Workspace, Some("acme"), "skopeo-test", None)
        .await
        .unwrap();
    let other_token = db
        .issue_token(TokenKind::Workspace, Some("other"), "skopeo-test", None)
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let config = RegistryConfig {
        data_dir: data.path().to_owned(),
        public_url: format!("http://{host}").parse().unwrap(),
    };
    let registry = Registry::new(db, config).await.unwrap();
    let router = registry.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Served {
        host,
        acme_token,
        other_token,
        _data: data,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `content` as a blob of an OCI layout and returns its descriptor fields.
fn write_blob(layout: &Path, content: &[u8]) -> (String, usize) {
    let hex = sha256_hex(content);
    std::fs::write(layout.join("blobs/sha256").join(&hex), content).unwrap();
    (format!("sha256:{hex}"), content.len())
}

/// Builds an OCI image layout holding one image tagged `tag`: a gzipped tar layer with one
/// file, its config and manifest. Returns the manifest bytes.
fn build_layout(work: &Path, layout: &Path, tag: &str) -> Vec<u8> {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();

    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("hello.txt"), "hello from drydock\n").unwrap();
    let tar_path = work.join("layer.tar");
    run_tool(
        "tar",
        &["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"],
        &tar_path,
        &rootfs,
    );
    let tar = std::fs::read(&tar_path).unwrap();
    let gzip = std::process::Command::new("gzip")
        .args(["-n", "-c"])
        .arg(&tar_path)
        .output()
        .unwrap();
    assert!(
        gzip.status.success(),
        "gzip failed: {}",
        String::from_utf8_lossy(&gzip.stderr)
    );

    let (layer_digest, layer_size) = write_blob(layout, &gzip.stdout);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))]},
    });
    let (config_digest, config_size) = write_blob(layout, config.to_string().as_bytes());
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    }))
    .unwrap();
    let (manifest_digest, manifest_size) = write_blob(layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    manifest
}

fn run_tool(tool: &str, args: &[&str], output: &Path, dir: &Path) {
    let result = std::process::Command::new(tool)
        .args(args)
        .arg(output)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .output()
        .unwrap_or_else(|error| panic!("failed to run {tool}: {error}"));
    assert!(
        result.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Runs skopeo with its own policy, home and auth file, so the machine's settings and
/// cached credentials play no part.
async fn skopeo(work: &Path, args: &[&str]) -> Output {
    let policy = work.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let home = work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    tokio::process::Command::new(SKOPEO)
        .arg("--policy")
        .arg(&policy)
        .args(args)
        .env("HOME", &home)
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .env("XDG_RUNTIME_DIR", &home)
        .output()
        .await
        .unwrap_or_else(|error| {
            panic!("failed to run {SKOPEO} (install it with `apt-get install skopeo`): {error}")
        })
}

fn assert_success(command: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{command} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sends a HEAD request over a plain TCP connection and returns the response head.
async fn raw_head(host: &str, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "HEAD {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

fn blob_files(layout: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let content = std::fs::read(&path).unwrap();
            (PathBuf::from(path.file_name().unwrap()), content)
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_inspects_and_pulls_an_image() {
    let served = serve().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let manifest = build_layout(work.path(), &source, "v1");
    let source_ref = format!("oci:{}:v1", source.display());
    let image = format!("docker://{}/acme/app:v1", served.host);
    let creds = format!("user:{}", served.acme_token);

    let push = skopeo(
        work.path(),
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &source_ref,
            &image,
        ],
    )
    .await;
    assert_success("skopeo copy (push)", &push);

    let inspect = skopeo(
        work.path(),
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &creds,
            &image,
        ],
    )
    .await;
    assert_success("skopeo inspect", &inspect);
    assert_eq!(
        inspect.stdout, manifest,
        "the manifest comes back byte for byte"
    );

    let pulled = work.path().join("pulled");
    let pulled_ref = format!("oci:{}:v1", pulled.display());
    let pull = skopeo(
        work.path(),
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &image,
            &pulled_ref,
        ],
    )
    .await;
    assert_success("skopeo copy (pull)", &pull);
    assert_eq!(
        blob_files(&pulled),
        blob_files(&source),
        "pulled blobs equal the pushed ones"
    );

    // Over real HTTP, HEAD keeps the Content-Length that GET sends.
    let head = raw_head(
        &served.host,
        "/v2/acme/app/manifests/v1",
        &served.acme_token,
    )
    .await;
    let expected_length = format!("content-length: {}", manifest.len());
    assert!(
        head.to_ascii_lowercase().contains(&expected_length),
        "{head}"
    );

    // A second push to another repository of the workspace finds the blobs already there.
    let copy_image = format!("docker://{}/acme/team/copy:v1", served.host);
    let second = skopeo(
        work.path(),
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &source_ref,
            &copy_image,
        ],
    )
    .await;
    assert_success("skopeo copy (second push)", &second);

    // A raw API token works as a bearer token.
    let registry_token = skopeo(
        work.path(),
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--registry-token",
            &served.acme_token,
            &copy_image,
        ],
    )
    .await;
    assert_success("skopeo inspect --registry-token", &registry_token);
    assert_eq!(registry_token.stdout, manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_cannot_reach_another_workspace() {
    let served = serve().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    build_layout(work.path(), &source, "v1");
    let source_ref = format!("oci:{}:v1", source.display());
    let acme_creds = format!("user:{}", served.acme_token);
    let image = format!("docker://{}/acme/app:v1", served.host);
    let push = skopeo(
        work.path(),
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &acme_creds,
            &source_ref,
            &image,
        ],
    )
    .await;
    assert_success("skopeo copy (push)", &push);

    let other_creds = format!("user:{}", served.other_token);
    let inspect = skopeo(
        work.path(),
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &other_creds,
            &image,
        ],
    )
    .await;
    assert!(
        !inspect.status.success(),
        "another workspace must not read acme/app"
    );
    assert!(inspect.stdout.is_empty());

    let foreign_push = skopeo(
        work.path(),
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &other_creds,
            &source_ref,
            &image,
        ],
    )
    .await;
    assert!(
        !foreign_push.status.success(),
        "another workspace must not push to acme/app"
    );
}
