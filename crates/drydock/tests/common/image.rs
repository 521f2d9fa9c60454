//! Reads images back from a registry through its HTTP API, to check what a build pushed.

use std::collections::BTreeMap;

use serde_json::Value;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A registry client that sends one credential on every request.
pub struct RegistryReader {
    pub base: String,
    pub authorization: String,
}

impl RegistryReader {
    /// Reads Drydock's registry with an API token as the bearer credential.
    pub fn bearer(registry: &str, token: &str) -> RegistryReader {
        RegistryReader {
            base: format!("http://{registry}"),
            authorization: format!("Bearer {token}"),
        }
    }

    pub fn manifest(&self, repository: &str, reference: &str) -> Result<(Value, String), String> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let response = ureq::get(&url)
            .set("Authorization", &self.authorization)
            .set("Accept", ACCEPT)
            .call()
            .map_err(|e| describe(e, &url))?;
        let digest = response
            .header("Docker-Content-Digest")
            .unwrap_or_default()
            .to_owned();
        let body: Value = response.into_json().map_err(|e| e.to_string())?;
        Ok((body, digest))
    }

    pub fn blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>, String> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let response = ureq::get(&url)
            .set("Authorization", &self.authorization)
            .call()
            .map_err(|e| describe(e, &url))?;
        Ok(super::read_all(response.into_reader()))
    }

    /// Returns the image manifest of each real platform in the index at `reference`
    /// (attestation manifests, platform `unknown/unknown`, are left out).
    pub fn platform_manifests(&self, repository: &str, reference: &str) -> BTreeMap<String, Value> {
        let (index, _) = self.manifest(repository, reference).expect("fetch index");
        let mut out = BTreeMap::new();
        for entry in index["manifests"]
            .as_array()
            .expect("an index with manifests")
        {
            let os = entry["platform"]["os"].as_str().unwrap_or_default();
            let arch = entry["platform"]["architecture"]
                .as_str()
                .unwrap_or_default();
            if os == "unknown" {
                continue;
            }
            let digest = entry["digest"].as_str().unwrap();
            let (manifest, _) = self
                .manifest(repository, digest)
                .expect("fetch image manifest");
            out.insert(format!("{os}/{arch}"), manifest);
        }
        out
    }

    /// Unpacks every layer of `manifest` in order and returns the regular files by path.
    pub fn files(&self, repository: &str, manifest: &Value) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for layer in manifest["layers"].as_array().expect("layers") {
            let digest = layer["digest"].as_str().unwrap();
            let blob = self.blob(repository, digest).expect("fetch layer");
            let media_type = layer["mediaType"].as_str().unwrap_or_default();
            let tar_bytes = if media_type.contains("gzip") {
                super::read_all(flate2::read::GzDecoder::new(blob.as_slice()))
            } else {
                blob
            };
            let mut archive = tar::Archive::new(tar_bytes.as_slice());
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                if entry.header().entry_type().is_file() {
                    let path = entry
                        .path()
                        .unwrap()
                        .to_string_lossy()
                        .trim_start_matches("./")
                        .to_owned();
                    files.insert(path, super::read_all(&mut entry));
                }
            }
        }
        files
    }
}

/// Layer digests of a manifest, in order.
pub fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

fn describe(err: ureq::Error, url: &str) -> String {
    match err {
        ureq::Error::Status(code, response) => {
            format!(
                "{url}: HTTP {code}: {}",
                response.into_string().unwrap_or_default()
            )
        }
        other => format!("{url}: {other}"),
    }
}
