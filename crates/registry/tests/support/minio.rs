//! Starts a real MinIO server on 127.0.0.1 for one test, and creates buckets in it.
//!
//! Needs `minio` on PATH (scripts/setup.sh builds it from tools/go/minio). Another test crate
//! can use this file with `#[path = ".../registry/tests/support/minio.rs"] mod minio;` when it
//! has `object_store` (feature `aws`), `reqwest`, `http`, `tempfile` and `tokio` as
//! dependencies.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::HttpRequestBody;

/// Maximum time from starting MinIO until its health endpoint returns 200.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Start attempts, each on a new free port, in case another process takes the port between
/// choosing it and MinIO binding it.
const START_ATTEMPTS: usize = 3;

/// A MinIO server with its data in a temporary folder, stopped by its pid on drop.
pub struct Minio {
    child: Child,
    /// Base URL of the S3 API, such as `http://127.0.0.1:41234`.
    pub endpoint: String,
    pub access_key_id: &'static str,
    pub secret_access_key: &'static str,
    pub region: &'static str,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Minio {
    /// Starts MinIO on a free port of 127.0.0.1 and waits until it serves requests.
    pub async fn start() -> Minio {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let log = dir.path().join("minio.log");
            let child = Command::new("minio")
                .args(["server", "--quiet", "--address"])
                .arg(format!("127.0.0.1:{port}"))
                .arg(dir.path().join("data"))
                .env("MINIO_ROOT_USER", "drydock-test")
                .env("MINIO_ROOT_PASSWORD", "drydock-test-secret")
                // No update check and no web console: the server makes no request of its own.
                .env("MINIO_UPDATE", "off")
                .env("MINIO_BROWSER", "off")
                .env("MINIO_SITE_REGION", "us-east-1")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(dir.path().join("minio.err")).unwrap())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("failed to start minio (run scripts/setup.sh to install it): {error}")
                });
            let mut minio = Minio {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
                access_key_id: "drydock-test",
                secret_access_key: "drydock-test-secret",
                region: "us-east-1",
                log,
                _dir: dir,
            };
            if minio.wait_until_ready().await {
                return minio;
            }
            last_log = minio.logs();
        }
        panic!("minio did not start after {START_ATTEMPTS} attempts; its last output:\n{last_log}");
    }

    /// Returns MinIO's output so far, for assertion messages.
    pub fn logs(&self) -> String {
        let stdout = std::fs::read_to_string(&self.log).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        format!("{stdout}{stderr}")
    }

    /// Returns false when MinIO exits or does not become healthy within [`START_TIMEOUT`].
    async fn wait_until_ready(&mut self) -> bool {
        let client = reqwest::Client::new();
        let health = format!("{}/minio/health/live", self.endpoint);
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(response) = client.get(&health).send().await {
                if response.status().is_success() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Creates `bucket` with a signed `CreateBucket` request, which the `object_store`
    /// client has no call for.
    pub async fn create_bucket(&self, bucket: &str) {
        let url = format!("{}/{bucket}", self.endpoint);
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(&url)
            .body(HttpRequestBody::empty())
            .unwrap();
        let credential = AwsCredential {
            key_id: self.access_key_id.to_owned(),
            secret_key: self.secret_access_key.to_owned(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", self.region).authorize(&mut request, None);
        let response = reqwest::Client::new()
            .put(&url)
            .headers(request.headers().clone())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "creating bucket {bucket} failed with {status}: {body}"
        );
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
