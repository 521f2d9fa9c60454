//! The measured workloads and the test data they send.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use rand::RngCore;
use reqwest::StatusCode;

use crate::oci::{Blob, Image, OciClient};

/// Repository of the large image and of the small images, under the Drydock workspace.
pub const BIG_REPOSITORY: &str = "bench/big";
pub const SMALL_REPOSITORY: &str = "bench/small";
const BIG_TAG: &str = "v1";

/// Loads `count` random layers of `layer_bytes` each from `cache_dir`, generating and saving
/// the missing ones. Random bytes do not compress, so no layer of the transfer path can shrink
/// them.
pub fn load_big_layers(cache_dir: &Path, count: usize, layer_bytes: usize) -> Result<Vec<Blob>> {
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("failed to create cache folder {}", cache_dir.display()))?;
    let mut layers = Vec::with_capacity(count);
    for index in 0..count {
        let path = cache_dir.join(format!("layer-{layer_bytes}-{index}.bin"));
        let data = match std::fs::read(&path) {
            Ok(data) if data.len() == layer_bytes => data,
            _ => {
                let mut data = vec![0u8; layer_bytes];
                rand::thread_rng().fill_bytes(&mut data);
                let partial = path.with_extension("partial");
                std::fs::write(&partial, &data)
                    .with_context(|| format!("failed to write {}", partial.display()))?;
                std::fs::rename(&partial, &path)?;
                data
            }
        };
        layers.push(Blob::new(Bytes::from(data)));
    }
    Ok(layers)
}

/// Makes `count` images of one random layer of `layer_bytes` each, distinct by content.
pub fn small_images(count: usize, layer_bytes: usize) -> Vec<Image> {
    (0..count)
        .map(|_| {
            let mut data = vec![0u8; layer_bytes];
            rand::thread_rng().fill_bytes(&mut data);
            Image::new(vec![Blob::new(Bytes::from(data))])
        })
        .collect()
}

pub fn small_tag(index: usize) -> String {
    format!("img-{index}")
}

/// Pushes the large image with up to `concurrency` blob uploads in flight.
pub async fn push_big(client: &OciClient, image: &Image, concurrency: usize) -> Result<Duration> {
    let start = Instant::now();
    client
        .push_image(BIG_REPOSITORY, BIG_TAG, image, concurrency)
        .await?;
    Ok(start.elapsed())
}

/// Pulls the large image with up to `concurrency` blob downloads in flight, checking that every
/// byte arrived.
pub async fn pull_big(client: &OciClient, image: &Image, concurrency: usize) -> Result<Duration> {
    let start = Instant::now();
    let received = client
        .pull_image(BIG_REPOSITORY, BIG_TAG, concurrency)
        .await?;
    let elapsed = start.elapsed();
    let expected = image.layer_bytes() + image.config.size();
    if received != expected {
        bail!("pulled {received} bytes of {BIG_REPOSITORY}:{BIG_TAG}, expected {expected}");
    }
    Ok(elapsed)
}

/// Pushes every small image, up to `concurrency` images at a time (blobs of one image go one
/// after another).
pub async fn push_small(
    client: &OciClient,
    images: &[Image],
    concurrency: usize,
) -> Result<Duration> {
    let start = Instant::now();
    futures_util::stream::iter(images.iter().enumerate())
        .map(|(index, image)| async move {
            client
                .push_image(SMALL_REPOSITORY, &small_tag(index), image, 1)
                .await
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(start.elapsed())
}

/// Pulls every small image, up to `concurrency` images at a time.
pub async fn pull_small(
    client: &OciClient,
    images: &[Image],
    concurrency: usize,
) -> Result<Duration> {
    let start = Instant::now();
    futures_util::stream::iter(images.iter().enumerate())
        .map(|(index, image)| async move {
            let received = client
                .pull_image(SMALL_REPOSITORY, &small_tag(index), 1)
                .await?;
            let expected = image.layer_bytes() + image.config.size();
            if received != expected {
                bail!("pulled {received} bytes of image {index}, expected {expected}");
            }
            Ok(())
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(start.elapsed())
}

/// Outcome of the manifest load test.
pub struct ManifestRate {
    pub ok: u64,
    pub other: u64,
    pub elapsed: Duration,
}

impl ManifestRate {
    /// Successful (200) responses per second.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` loops that each `GET` a small image's manifest by tag, one request after
/// another, for `duration`. Every client walks the tags from its own starting point.
pub async fn manifest_rate(
    client: &OciClient,
    tags: usize,
    clients: usize,
    duration: Duration,
) -> Result<ManifestRate> {
    let ok = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..clients {
        let client = client.clone();
        let ok = ok.clone();
        let other = other.clone();
        tasks.spawn(async move {
            let mut index = worker * tags / clients.max(1);
            while Instant::now() < deadline {
                let tag = small_tag(index % tags);
                match client.get_manifest(SMALL_REPOSITORY, &tag).await {
                    Ok((StatusCode::OK, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
                index += 1;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("manifest client task panicked")?;
    }
    Ok(ManifestRate {
        ok: ok.load(Ordering::Relaxed),
        other: other.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_layers_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_big_layers(dir.path(), 2, 64).unwrap();
        let second = load_big_layers(dir.path(), 2, 64).unwrap();
        assert_eq!(first[0].digest, second[0].digest);
        assert_eq!(first[1].digest, second[1].digest);
        assert_ne!(first[0].digest, first[1].digest);
    }

    #[test]
    fn small_images_differ_in_content() {
        let images = small_images(3, 32);
        assert_ne!(images[0].layers[0].digest, images[1].layers[0].digest);
        assert_ne!(images[1].config.digest, images[2].config.digest);
    }
}
