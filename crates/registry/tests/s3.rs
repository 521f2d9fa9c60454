//! Runs the registry with its blobs in a real MinIO server: pushes and pulls with skopeo,
//! reads ranges, and checks which objects the bucket contains after each step.
//!
//! Needs `minio` (scripts/setup.sh builds it), `skopeo`, `tar` and `gzip` on PATH.

#[path = "support/minio.rs"]
mod minio;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use drydock_registry::{
    BlobStore, Digest, Registry, RegistryConfig, S3BlobStore, S3Config, S3Credentials,
};
use drydock_store::{Db, TokenKind};
use futures_util::TryStreamExt;
use minio::Minio;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

const BUCKET: &str = "drydock-blobs";
const PREFIX: &str = "ci/registry";
/// Larger than the S3 blob store's 16 MiB part size, so the layer goes up as a multipart
/// upload of two parts.
const LAYER_FILE_SIZE: usize = 20 * 1024 * 1024;

/// A registry on 127.0.0.1 whose blobs go to a bucket of its own MinIO.
struct Served {
    host: String,
    token: String,
    store: Arc<S3BlobStore>,
    /// A separate client for looking into the bucket directly.
    bucket: AmazonS3,
    data: tempfile::TempDir,
    minio: Minio,
}

fn s3_config(minio: &Minio, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        endpoint: minio.endpoint.parse().unwrap(),
        region: minio.region.into(),
        prefix: PREFIX.into(),
        allow_http: true,
        credentials: S3Credentials::new(minio.access_key_id, minio.secret_access_key),
    }
}

async fn serve() -> Served {
    let minio = Minio::start().await;
    minio.create_bucket(BUCKET).await;
    let store = Arc::new(
        S3BlobStore::connect(s3_config(&minio, BUCKET))
            .await
            .unwrap(),
    );
    let bucket = AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(&minio.endpoint)
        .with_region(minio.region)
        .with_access_key_id(minio.access_key_id)
        .with_secret_access_key(minio.secret_access_key)
        .with_allow_http(true)
        .build()
        .unwrap();

    let db = Db::open_in_memory().await.unwrap();
    db.create_workspace("acme").await.unwrap();
    let token = db
        .issue_token(TokenKind::Workspace, Some("acme"), "s3-test", None)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let config = RegistryConfig {
        data_dir: data.path().to_owned(),
        public_url: format!("http://{host}").parse().unwrap(),
    };
    let registry = Registry::with_blob_store(db, config, store.clone() as Arc<dyn BlobStore>)
        .await
        .unwrap();
    let router = registry.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Served {
        host,
        token,
        store,
        bucket,
        data,
        minio,
    }
}

impl Served {
    /// Returns the key and size of every object in the bucket, sorted by key.
    async fn objects(&self) -> Vec<(String, u64)> {
        let mut objects: Vec<_> = self
            .bucket
            .list(None)
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_collect()
            .await
            .unwrap();
        objects.sort();
        objects
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    /// Starts an upload session in `acme/app` and returns its `Location` path.
    async fn start_upload(&self, client: &reqwest::Client) -> String {
        let response = client
            .post(self.url("/v2/acme/app/blobs/uploads/"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    fn staged_files(&self) -> usize {
        std::fs::read_dir(self.data.path().join("uploads"))
            .unwrap()
            .count()
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn expected_key(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap();
    format!("{PREFIX}/blobs/sha256/{}/{hex}", &hex[..2])
}

/// Returns `len` bytes that gzip cannot shrink, from a fixed xorshift seed.
fn incompressible_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Writes `content` into the layout's blob folder and returns its digest and size.
fn write_blob(layout: &Path, content: &[u8]) -> (String, usize) {
    let digest = digest_of(content);
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::write(layout.join("blobs/sha256").join(hex), content).unwrap();
    (digest, content.len())
}

/// Builds an OCI image layout with one image tagged `v1` whose single layer is a gzipped tar
/// of an incompressible file. Returns the layer's digest.
fn build_layout(work: &Path, layout: &Path) -> String {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(
        rootfs.join("data.bin"),
        incompressible_bytes(LAYER_FILE_SIZE),
    )
    .unwrap();
    let tar_path = work.join("layer.tar");
    run(std::process::Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&rootfs)
        .arg("."));
    let tar = std::fs::read(&tar_path).unwrap();
    let gzip = run(std::process::Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .arg(&tar_path));

    let (layer_digest, layer_size) = write_blob(layout, &gzip.stdout);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&tar)]},
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
                       "annotations": {"org.opencontainers.image.ref.name": "v1"}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    layer_digest
}

fn run(command: &mut std::process::Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("failed to run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs skopeo with its own policy, home and auth file, so the machine's settings and
/// cached credentials play no part.
async fn skopeo(work: &Path, args: &[&str]) {
    let policy = work.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let home = work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let output = tokio::process::Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(args)
        .env("HOME", &home)
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .env("XDG_RUNTIME_DIR", &home)
        .output()
        .await
        .unwrap_or_else(|error| {
            panic!("failed to run skopeo (install it with `apt-get install skopeo`): {error}")
        });
    assert!(
        output.status.success(),
        "skopeo {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
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
async fn skopeo_round_trip_through_s3_is_byte_exact() {
    let served = serve().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source");
    let layer_digest = build_layout(work.path(), &source);
    let image = format!("docker://{}/acme/app:v1", served.host);
    let creds = format!("user:{}", served.token);
    let source_ref = format!("oci:{}:v1", source.display());
    skopeo(
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

    // Blobs (the layer and the config) are objects; manifests stay in the metadata database.
    let layer = std::fs::read(
        source
            .join("blobs/sha256")
            .join(layer_digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let objects = served.objects().await;
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(
        objects.contains(&(expected_key(&layer_digest), layer.len() as u64)),
        "{objects:?}"
    );
    assert_eq!(
        served.staged_files(),
        0,
        "committed uploads leave no staged file"
    );
    // S3 gives an object made by a multipart upload of N parts an ETag ending in "-N".
    let layer_object = served
        .bucket
        .head(&ObjectPath::from(expected_key(&layer_digest)))
        .await
        .unwrap();
    let etag = layer_object.e_tag.unwrap_or_default();
    assert!(etag.trim_matches('"').ends_with("-2"), "ETag {etag}");

    let pulled = work.path().join("pulled");
    let pulled_ref = format!("oci:{}:v1", pulled.display());
    skopeo(
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
    assert_eq!(blob_files(&pulled), blob_files(&source));

    // A range that crosses the 16 MiB boundary between the two uploaded parts.
    let start = 16 * 1024 * 1024 - 10;
    let end = start + 100;
    let response = reqwest::Client::new()
        .get(served.url(&format!("/v2/acme/app/blobs/{layer_digest}")))
        .bearer_auth(&served.token)
        .header("range", format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(&response.bytes().await.unwrap()[..], &layer[start..end]);

    // The store reads the last bytes of the blob directly, too.
    let digest = Digest::sha256_of(&layer);
    let tail = layer.len() as u64 - 7..layer.len() as u64;
    let mut bytes = Vec::new();
    served
        .store
        .read(&digest, tail)
        .await
        .unwrap()
        .read_to_end(&mut bytes)
        .await
        .unwrap();
    assert_eq!(bytes, &layer[layer.len() - 7..]);
    assert_eq!(
        served.store.size(&digest).await.unwrap(),
        Some(layer.len() as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_leaves_no_object() {
    let served = serve().await;
    let client = reqwest::Client::new();
    let location = served.start_upload(&client).await;
    let body = b"these bytes do not match the digest".to_vec();
    let claimed = digest_of(b"something else");
    let response = client
        .put(served.url(&format!("{location}?digest={claimed}")))
        .bearer_auth(&served.token)
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.contains("DIGEST_INVALID"), "{text}");
    assert_eq!(served.objects().await, vec![]);
    assert_eq!(served.staged_files(), 0, "the rejected upload is discarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_object_appears_only_after_commit() {
    let served = serve().await;
    let client = reqwest::Client::new();
    let location = served.start_upload(&client).await;
    let content = incompressible_bytes(64 * 1024);
    let digest = digest_of(&content);

    let response = client
        .patch(served.url(&location))
        .bearer_auth(&served.token)
        .header("content-type", "application/octet-stream")
        .body(content.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        served.objects().await,
        vec![],
        "uploaded data stays staged locally"
    );
    assert_eq!(served.staged_files(), 1);

    let separator = if location.contains('?') { '&' } else { '?' };
    let response = client
        .put(served.url(&format!("{location}{separator}digest={digest}")))
        .bearer_auth(&served.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert_eq!(
        served.objects().await,
        vec![(expected_key(&digest), content.len() as u64)]
    );
    let stored = served
        .bucket
        .get(&ObjectPath::from(expected_key(&digest)))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&stored[..], &content[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_digest_is_not_uploaded_again() {
    let served = serve().await;
    let content = b"blob content".to_vec();
    let digest = Digest::sha256_of(&content);
    // An object already under the key, with other bytes of the same length: a second upload
    // would replace them.
    let planted = b"other bytes!".to_vec();
    assert_eq!(planted.len(), content.len());
    let key = ObjectPath::from(served.store.object_key(&digest));
    served
        .bucket
        .put(&key, PutPayload::from(planted.clone()))
        .await
        .unwrap();

    let staged = served.data.path().join("staged");
    std::fs::write(&staged, &content).unwrap();
    served.store.commit(&digest, &staged).await.unwrap();
    assert!(!staged.exists(), "the staged file is consumed");
    let stored = served
        .bucket
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&stored[..], &planted[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_check_names_bucket_endpoint_and_fix() {
    let served = serve().await;
    let minio = &served.minio;

    let missing = S3BlobStore::connect(s3_config(minio, "no-such-bucket"))
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no-such-bucket"), "{missing}");
    assert!(missing.contains(&minio.endpoint), "{missing}");
    assert!(missing.contains("does not exist"), "{missing}");
    assert!(missing.contains("create the bucket"), "{missing}");

    let mut config = s3_config(minio, BUCKET);
    config.credentials = S3Credentials::new(minio.access_key_id, "wrong-secret-value");
    let denied = S3BlobStore::connect(config).await.unwrap_err().to_string();
    assert!(denied.contains("access was denied"), "{denied}");
    assert!(denied.contains("AWS_SECRET_ACCESS_KEY"), "{denied}");
    assert!(!denied.contains("wrong-secret-value"), "{denied}");

    // A port that nothing listens on: bound once to find it free, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = s3_config(minio, BUCKET);
    config.endpoint = format!("http://127.0.0.1:{port}").parse().unwrap();
    let unreachable = S3BlobStore::connect(config).await.unwrap_err().to_string();
    assert!(
        unreachable.contains(&format!("127.0.0.1:{port}")),
        "{unreachable}"
    );
    assert!(unreachable.contains("did not respond"), "{unreachable}");
    assert!(unreachable.contains("--s3-endpoint"), "{unreachable}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_blob_object_is_gone_and_others_stay() {
    let served = serve().await;
    let mut digests = Vec::new();
    for content in [b"first blob".as_slice(), b"second blob".as_slice()] {
        let digest = Digest::sha256_of(content);
        let staged = served.data.path().join("staged");
        std::fs::write(&staged, content).unwrap();
        served.store.commit(&digest, &staged).await.unwrap();
        digests.push(digest);
    }

    served.store.delete(&digests[0]).await.unwrap();

    let remaining = served.objects().await;
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(remaining[0].0, expected_key(digests[1].as_str()));
    assert_eq!(served.store.size(&digests[0]).await.unwrap(), None);
    served
        .store
        .delete(&digests[0])
        .await
        .expect("deleting a missing blob succeeds");
}
