//! A minimal OCI distribution client: monolithic blob uploads (`POST` then `PUT` with the whole
//! blob), manifest `PUT` and `GET`, and streamed blob `GET`. Both registries get this same client.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use reqwest::{Method, RequestBuilder, StatusCode};
use sha2::{Digest, Sha256};

/// Media type of the image manifests this client pushes and accepts.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Content addressed by its sha256 digest.
#[derive(Clone)]
pub struct Blob {
    pub digest: String,
    pub data: Bytes,
}

impl Blob {
    /// Hashes `data` and wraps it.
    pub fn new(data: Bytes) -> Blob {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        Blob { digest, data }
    }

    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

/// An image: its config blob, layer blobs and the manifest that names them.
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Bytes,
}

impl Image {
    /// Builds the config and manifest for `layers`, which are treated as uncompressed tars, so
    /// each layer's digest is also its diff ID. Registries do not look inside layers.
    pub fn new(layers: Vec<Blob>) -> Image {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "config": {},
        });
        let config = Blob::new(Bytes::from(config.to_string()));
        let descriptors: Vec<serde_json::Value> = layers
            .iter()
            .map(|layer| {
                serde_json::json!({
                    "mediaType": LAYER_MEDIA_TYPE,
                    "digest": layer.digest,
                    "size": layer.size(),
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config.digest,
                "size": config.size(),
            },
            "layers": descriptors,
        });
        Image {
            config,
            layers,
            manifest: Bytes::from(manifest.to_string()),
        }
    }

    /// Sum of the layer sizes in bytes.
    pub fn layer_bytes(&self) -> u64 {
        self.layers.iter().map(Blob::size).sum()
    }
}

/// A registry client bound to one base URL and, for Drydock, one bearer token.
#[derive(Clone)]
pub struct OciClient {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
}

impl OciClient {
    pub fn new(base_url: &str, token: Option<String>) -> Result<OciClient> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .context("failed to build the HTTP client")?;
        Ok(OciClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Uploads `blob` with `POST /v2/REPO/blobs/uploads/` and one `PUT` carrying all its bytes.
    pub async fn push_blob(&self, repository: &str, blob: &Blob) -> Result<()> {
        let url = format!("{}/v2/{repository}/blobs/uploads/", self.base_url);
        let response = self.request(Method::POST, &url).send().await?;
        if response.status() != StatusCode::ACCEPTED {
            bail!(
                "failed to start an upload to {repository}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|value| value.to_str().ok())
            .with_context(|| {
                format!("failed to start an upload to {repository}: no Location header")
            })?;
        let mut url = if location.starts_with("http") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base_url)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&blob.digest);
        let response = self
            .request(Method::PUT, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(blob.data.clone())
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            bail!(
                "failed to complete the upload of {} to {repository}: {} {}",
                blob.digest,
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Pushes every blob of `image` (up to `concurrency` at a time), then its manifest as `tag`.
    pub async fn push_image(
        &self,
        repository: &str,
        tag: &str,
        image: &Image,
        concurrency: usize,
    ) -> Result<()> {
        use futures_util::{StreamExt, TryStreamExt};

        let blobs = std::iter::once(&image.config).chain(&image.layers);
        futures_util::stream::iter(blobs)
            .map(|blob| self.push_blob(repository, blob))
            .buffer_unordered(concurrency)
            .try_collect::<()>()
            .await?;
        self.put_manifest(repository, tag, &image.manifest).await
    }

    pub async fn put_manifest(&self, repository: &str, tag: &str, manifest: &Bytes) -> Result<()> {
        let url = format!("{}/v2/{repository}/manifests/{tag}", self.base_url);
        let response = self
            .request(Method::PUT, &url)
            .header(reqwest::header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
            .body(manifest.clone())
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            bail!(
                "failed to put manifest {repository}:{tag}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Sends `GET /v2/REPO/manifests/TAG` with the OCI manifest `Accept` header, reads the whole
    /// body and returns the status with the body.
    pub async fn get_manifest(&self, repository: &str, tag: &str) -> Result<(StatusCode, Bytes)> {
        let url = format!("{}/v2/{repository}/manifests/{tag}", self.base_url);
        let response = self
            .request(Method::GET, &url)
            .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPE)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok((status, body))
    }

    /// Downloads `GET /v2/REPO/blobs/DIGEST`, discarding the body, and returns its length in bytes.
    pub async fn get_blob(&self, repository: &str, digest: &str) -> Result<u64> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base_url);
        let mut response = self.request(Method::GET, &url).send().await?;
        if response.status() != StatusCode::OK {
            bail!(
                "failed to get blob {digest} from {repository}: {}",
                response.status()
            );
        }
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await? {
            received += chunk.len() as u64;
        }
        Ok(received)
    }

    /// Pulls `repository:tag`: the manifest, then the config and every layer (up to
    /// `concurrency` at a time). Returns the bytes of blobs received.
    pub async fn pull_image(&self, repository: &str, tag: &str, concurrency: usize) -> Result<u64> {
        use futures_util::{StreamExt, TryStreamExt};

        let (status, body) = self.get_manifest(repository, tag).await?;
        if status != StatusCode::OK {
            bail!("failed to get manifest {repository}:{tag}: {status}");
        }
        let manifest: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("manifest of {repository}:{tag} is not JSON"))?;
        let mut digests = vec![manifest["config"]["digest"].clone()];
        if let Some(layers) = manifest["layers"].as_array() {
            digests.extend(layers.iter().map(|layer| layer["digest"].clone()));
        }
        let digests: Vec<String> = digests
            .iter()
            .map(|digest| digest.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .with_context(|| format!("manifest of {repository}:{tag} lacks a digest"))?;
        let sizes: Vec<u64> = futures_util::stream::iter(&digests)
            .map(|digest| self.get_blob(repository, digest))
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        Ok(sizes.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_digest_is_sha256_of_content() {
        let blob = Blob::new(Bytes::from_static(b"abc"));
        assert_eq!(
            blob.digest,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn manifest_names_config_and_layers() {
        let layers = vec![
            Blob::new(Bytes::from_static(b"one")),
            Blob::new(Bytes::from_static(b"two")),
        ];
        let image = Image::new(layers);
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["config"]["digest"], image.config.digest.as_str());
        assert_eq!(
            manifest["layers"][1]["digest"],
            image.layers[1].digest.as_str()
        );
        assert_eq!(manifest["layers"][1]["size"], 3);
        assert_eq!(image.layer_bytes(), 6);
    }
}
