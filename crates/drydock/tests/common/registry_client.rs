//! A registry client for tests that push: monolithic and chunked blob uploads, manifests,
//! and reads that return any status for the caller to check.

use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Size of each `PATCH` of a chunked upload.
pub const CHUNK_BYTES: usize = 64 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Formats the sha256 digest of `content`, as `sha256:<hex>`.
pub fn digest_of(content: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(content)))
}

/// Why a registry request did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// No response arrived, as when the server is killed.
    Connection(String),
    /// The registry responded with another status than the one expected.
    Status { status: u16, body: String },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connection(error) => write!(f, "connection failed: {error}"),
            Failure::Status { status, body } => write!(f, "unexpected HTTP {status}: {body}"),
        }
    }
}

/// A response, reduced to what the checks read.
pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub digest: Option<String>,
    pub range: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Returns the code of the first error in an OCI error body.
    pub fn error_code(&self) -> String {
        let body: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        body["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Returns the reply if it has `status`, and otherwise a [`Failure::Status`].
    pub fn require_status(self, status: u16) -> Result<Reply, Failure> {
        if self.status == status {
            Ok(self)
        } else {
            Err(Failure::Status {
                status: self.status,
                body: self.text(),
            })
        }
    }
}

/// A registry client that sends a Drydock API token as its bearer credential.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    authorization: String,
    agent: ureq::Agent,
}

impl RegistryClient {
    pub fn new(registry: &str, token: &str) -> RegistryClient {
        RegistryClient {
            base: format!("http://{registry}"),
            authorization: format!("Bearer {token}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
        }
    }

    /// Sends a request to `path` (such as `/v2/...`, or a `Location` value) and returns the
    /// response whatever its status.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, Failure> {
        let mut request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("authorization", &self.authorization);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let response = match request.send_bytes(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(error)) => {
                return Err(Failure::Connection(error.to_string()))
            }
        };
        let header = |name: &str| response.header(name).map(str::to_owned);
        let (status, location, digest, range) = (
            response.status(),
            header("location"),
            header("docker-content-digest"),
            header("range"),
        );
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut body)
            .map_err(|error| Failure::Connection(error.to_string()))?;
        Ok(Reply {
            status,
            location,
            digest,
            range,
            body,
        })
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, Failure> {
        self.send("GET", path, headers, &[])
    }

    /// Starts an upload session and returns its `Location`.
    pub fn start_upload(&self, repository: &str) -> Result<String, Failure> {
        let reply = self
            .send(
                "POST",
                &format!("/v2/{repository}/blobs/uploads/"),
                &[],
                &[],
            )?
            .require_status(202)?;
        Ok(reply.location.unwrap_or_default())
    }

    /// Sends one chunk of an upload, starting at byte `offset`.
    pub fn patch_chunk(&self, location: &str, offset: usize, chunk: &[u8]) -> Result<(), Failure> {
        let range = format!("{offset}-{}", offset + chunk.len() - 1);
        let headers = [
            ("content-range", range.as_str()),
            ("content-type", "application/octet-stream"),
        ];
        self.send("PATCH", location, &headers, chunk)?
            .require_status(202)?;
        Ok(())
    }

    /// Completes an upload whose data is all sent.
    pub fn finish_upload(&self, location: &str, digest: &str) -> Result<(), Failure> {
        let separator = if location.contains('?') { '&' } else { '?' };
        let path = format!("{location}{separator}digest={digest}");
        self.send("PUT", &path, &[], &[])?.require_status(201)?;
        Ok(())
    }

    /// Pushes a blob in one `POST`, or with `chunked` in `PATCH` requests of
    /// [`CHUNK_BYTES`] and a final `PUT`.
    pub fn push_blob(
        &self,
        repository: &str,
        content: &[u8],
        chunked: bool,
    ) -> Result<(), Failure> {
        let digest = digest_of(content);
        if !chunked {
            let path = format!("/v2/{repository}/blobs/uploads/?digest={digest}");
            let headers = [("content-type", "application/octet-stream")];
            self.send("POST", &path, &headers, content)?
                .require_status(201)?;
            return Ok(());
        }
        let location = self.start_upload(repository)?;
        for (number, chunk) in content.chunks(CHUNK_BYTES).enumerate() {
            self.patch_chunk(&location, number * CHUNK_BYTES, chunk)?;
        }
        self.finish_upload(&location, &digest)
    }

    pub fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        manifest: &[u8],
    ) -> Result<(), Failure> {
        let path = format!("/v2/{repository}/manifests/{tag}");
        let headers = [("content-type", OCI_MANIFEST)];
        self.send("PUT", &path, &headers, manifest)?
            .require_status(201)?;
        Ok(())
    }
}
