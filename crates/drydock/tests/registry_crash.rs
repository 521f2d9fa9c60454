//! Crash safety of the registry: a `drydock server` killed with SIGKILL in the middle of
//! concurrent pushes keeps every push it acknowledged, shows no partial blob after a restart,
//! and accepts the interrupted pushes again. Concurrent pushes of one blob and one tag all
//! succeed and agree.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::registry_client::{digest_of, Failure, RegistryClient, CHUNK_BYTES, OCI_MANIFEST};
use common::Harness;
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Kill-and-restart cycles, each a new chance for the kill to land inside a request.
const CRASH_ROUNDS: usize = 3;
/// Threads pushing images while the server is killed.
const PUSHERS: usize = 4;
/// Images the pushers must have completed together before the kill.
const IMAGES_BEFORE_KILL: usize = 12;

#[test]
fn killed_server_keeps_acknowledged_pushes() {
    let mut harness = Harness::start();
    harness.create_workspace("acme");
    let token = harness.workspace_token("acme");
    let mut acknowledged: Vec<Image> = Vec::new();

    for round in 0..CRASH_ROUNDS {
        let registry = RegistryClient::new(&harness.registry, &token);
        let parked = ParkedUpload::start(&registry, round);
        let logs = push_until_killed(&mut harness, &registry, round);
        harness.restart_server();
        let registry = RegistryClient::new(&harness.registry, &token);

        // Everything acknowledged before this kill or an earlier one is intact.
        acknowledged.extend(logs.iter().flat_map(|log| log.images.iter().cloned()));
        for image in &acknowledged {
            check_image(&registry, image);
        }

        // An interrupted push is either absent or complete, never partial, and a retry
        // succeeds.
        for log in &logs {
            let Some((image, stage)) = &log.interrupted else {
                continue;
            };
            let present = match stage {
                Stage::Config => {
                    check_blob_absent_or_whole(&registry, &image.repository, &image.config)
                }
                Stage::Layer => {
                    check_blob_absent_or_whole(&registry, &image.repository, &image.layer)
                }
                Stage::Manifest => check_manifest_absent_or_whole(&registry, image),
            };
            eprintln!(
                "round {round}, pusher {}: push of {}:{} interrupted at its {stage:?}, which \
                 is {}",
                log.index,
                image.repository,
                image.tag,
                if present { "complete" } else { "absent" }
            );
            push_image(&registry, image).unwrap_or_else(|failure| {
                panic!("retry of {}:{}: {failure}", image.repository, image.tag)
            });
            check_image(&registry, image);
            acknowledged.push(image.clone());
        }

        parked.resume(&registry);
        check_blob_store(&harness.data_dir().join("blobs"));
    }
}

/// Runs [`PUSHERS`] threads of pushes, kills the server with SIGKILL once they completed
/// [`IMAGES_BEFORE_KILL`] images, and returns what each thread did.
fn push_until_killed(
    harness: &mut Harness,
    registry: &RegistryClient,
    round: usize,
) -> Vec<PushLog> {
    let killing = Arc::new(AtomicBool::new(false));
    let images_done = Arc::new(AtomicUsize::new(0));
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|index| {
            let registry = registry.clone();
            let killing = Arc::clone(&killing);
            let images_done = Arc::clone(&images_done);
            thread::spawn(move || {
                push_until_failure(round, index, &registry, &killing, &images_done)
            })
        })
        .collect();

    // A pusher that stops early failed, and its log records why.
    let deadline = Instant::now() + Duration::from_secs(180);
    while images_done.load(Ordering::SeqCst) < IMAGES_BEFORE_KILL
        && Instant::now() < deadline
        && !pushers.iter().any(|pusher| pusher.is_finished())
    {
        thread::sleep(Duration::from_millis(10));
    }
    killing.store(true, Ordering::SeqCst);
    assert!(
        harness.stop_server(Signal::SIGKILL, Duration::from_secs(10)),
        "the server did not exit after SIGKILL"
    );

    let logs: Vec<PushLog> = pushers
        .into_iter()
        .map(|pusher| pusher.join().expect("pusher thread panicked"))
        .collect();
    for log in &logs {
        if let Some(problem) = &log.unexpected {
            panic!("round {round}, pusher {}: {problem}", log.index);
        }
    }
    let images: usize = logs.iter().map(|log| log.images.len()).sum();
    assert!(
        images >= IMAGES_BEFORE_KILL,
        "round {round}: only {images} images were pushed before the deadline"
    );
    logs
}

/// An upload left open with one acknowledged chunk, so its blob is certainly incomplete
/// when the server is killed.
struct ParkedUpload {
    content: Vec<u8>,
    location: String,
}

impl ParkedUpload {
    const REPOSITORY: &str = "acme/parked";

    fn start(registry: &RegistryClient, round: usize) -> ParkedUpload {
        let mut rng = StdRng::seed_from_u64(1000 + round as u64);
        let content = random_bytes(&mut rng, 3 * CHUNK_BYTES);
        let location = registry
            .start_upload(Self::REPOSITORY)
            .expect("start the parked upload");
        registry
            .patch_chunk(&location, 0, &content[..CHUNK_BYTES])
            .expect("send the first chunk of the parked upload");
        ParkedUpload { content, location }
    }

    /// Checks that the blob is not visible after the restart, then completes the upload from
    /// the offset the server recorded.
    fn resume(&self, registry: &RegistryClient) {
        let digest = digest_of(&self.content);
        let blob = registry
            .get(&format!("/v2/{}/blobs/{digest}", Self::REPOSITORY), &[])
            .expect("read the parked blob");
        assert_eq!(blob.status, 404, "the parked upload's blob is visible");
        assert_eq!(blob.error_code(), "BLOB_UNKNOWN");

        let status = registry
            .get(&self.location, &[])
            .expect("read the parked upload's status");
        assert_eq!(status.status, 204, "{}", status.text());
        let expected_range = format!("0-{}", CHUNK_BYTES - 1);
        assert_eq!(status.range.as_deref(), Some(expected_range.as_str()));
        registry
            .patch_chunk(&self.location, CHUNK_BYTES, &self.content[CHUNK_BYTES..])
            .expect("resume the parked upload");
        registry
            .finish_upload(&self.location, &digest)
            .expect("complete the parked upload");
        check_blob(registry, Self::REPOSITORY, &self.content);
    }
}

#[test]
fn concurrent_pushes_of_one_blob_and_tag_agree() {
    const THREADS: usize = 6;
    let harness = Harness::start();
    harness.create_workspace("acme");
    let token = harness.workspace_token("acme");
    let registry = RegistryClient::new(&harness.registry, &token);
    let repository = "acme/contended";
    let mut rng = StdRng::seed_from_u64(7);
    let shared_blob = Arc::new(random_bytes(&mut rng, 5 * CHUNK_BYTES + 123));

    // Every thread uploads the same blob at once, half of them in chunks.
    let barrier = Arc::new(Barrier::new(THREADS));
    let blob_pushes: Vec<_> = (0..THREADS)
        .map(|index| {
            let (registry, barrier, blob) =
                (registry.clone(), barrier.clone(), shared_blob.clone());
            thread::spawn(move || {
                barrier.wait();
                registry.push_blob(repository, &blob, index % 2 == 1)
            })
        })
        .collect();
    for (index, push) in blob_pushes.into_iter().enumerate() {
        if let Err(failure) = push.join().expect("blob pusher panicked") {
            panic!("blob push {index}: {failure}");
        }
    }
    check_blob(&registry, repository, &shared_blob);
    let uploads_dir = harness.data_dir().join("uploads");
    assert_eq!(
        files_under(&uploads_dir),
        Vec::<PathBuf>::new(),
        "finished uploads left staged data"
    );

    // Every thread tags its own manifest `shared` at once: first all with the same bytes,
    // then each with different bytes.
    for round in 0..3 {
        let images: Vec<Image> = (0..THREADS)
            .map(|index| {
                let variant = if round == 0 { 0 } else { index };
                let config = format!(r#"{{"round":{round},"variant":{variant}}}"#).into_bytes();
                Image::new(repository, "shared", config, shared_blob.to_vec())
            })
            .collect();
        for image in &images {
            registry
                .push_blob(repository, &image.config, false)
                .expect("push a config blob");
        }
        let barrier = Arc::new(Barrier::new(THREADS));
        let manifest_pushes: Vec<_> = images
            .iter()
            .map(|image| {
                let (registry, barrier) = (registry.clone(), barrier.clone());
                let (manifest, tag) = (image.manifest.clone(), image.tag.clone());
                thread::spawn(move || {
                    barrier.wait();
                    registry.put_manifest(repository, &tag, &manifest)
                })
            })
            .collect();
        for (index, push) in manifest_pushes.into_iter().enumerate() {
            if let Err(failure) = push.join().expect("manifest pusher panicked") {
                panic!("round {round}, manifest push {index}: {failure}");
            }
        }

        let tagged = registry
            .get(
                &format!("/v2/{repository}/manifests/shared"),
                &[("accept", OCI_MANIFEST)],
            )
            .expect("read the shared tag");
        assert_eq!(tagged.status, 200, "{}", tagged.text());
        assert!(
            images.iter().any(|image| image.manifest == tagged.body),
            "round {round}: the tag points at none of the pushed manifests"
        );
        assert_eq!(tagged.digest, Some(digest_of(&tagged.body)));
        for image in &images {
            let by_digest = registry
                .get(
                    &format!("/v2/{repository}/manifests/{}", digest_of(&image.manifest)),
                    &[("accept", OCI_MANIFEST)],
                )
                .expect("read a manifest by digest");
            assert_eq!(by_digest.status, 200, "round {round}: {}", by_digest.text());
            assert_eq!(by_digest.body, image.manifest, "round {round}");
        }
        let tags = registry
            .get(&format!("/v2/{repository}/tags/list"), &[])
            .expect("list tags");
        let listing: serde_json::Value = serde_json::from_slice(&tags.body).unwrap();
        assert_eq!(
            listing["tags"],
            serde_json::json!(["shared"]),
            "round {round}"
        );
    }
    check_blob_store(&harness.data_dir().join("blobs"));
}

/// The step of an image push that a failure interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Config,
    Layer,
    Manifest,
}

/// What one pusher thread did before the server died.
struct PushLog {
    index: usize,
    /// Images whose blobs and manifest were all acknowledged with 201.
    images: Vec<Image>,
    /// The image being pushed when the connection failed, and the step that failed.
    interrupted: Option<(Image, Stage)>,
    /// A failure other than a lost connection after the kill began.
    unexpected: Option<String>,
}

/// Pushes random images (config, layer, manifest) until a request fails, which is expected
/// once `killing` is set.
fn push_until_failure(
    round: usize,
    index: usize,
    registry: &RegistryClient,
    killing: &AtomicBool,
    images_done: &AtomicUsize,
) -> PushLog {
    let mut rng = StdRng::seed_from_u64((round * PUSHERS + index) as u64);
    let mut log = PushLog {
        index,
        images: Vec::new(),
        interrupted: None,
        unexpected: None,
    };
    let repository = format!("acme/crash-{}", index % 2);
    for number in 0usize.. {
        let tag = format!("r{round}-p{index}-{number}");
        let config =
            format!(r#"{{"round":{round},"pusher":{index},"image":{number}}}"#).into_bytes();
        let layer_size = rng.gen_range(CHUNK_BYTES / 2..12 * CHUNK_BYTES);
        let layer = random_bytes(&mut rng, layer_size);
        let image = Image::new(&repository, &tag, config, layer);
        // Odd images send their layer in chunks, even ones in a single request.
        let chunked = number % 2 == 1;

        match push_stages(registry, &image, chunked) {
            Ok(()) => {
                log.images.push(image);
                images_done.fetch_add(1, Ordering::SeqCst);
            }
            Err((stage, Failure::Connection(_))) if killing.load(Ordering::SeqCst) => {
                log.interrupted = Some((image, stage));
                break;
            }
            Err((stage, failure)) => {
                log.unexpected = Some(format!("{repository}:{tag} at its {stage:?}: {failure}"));
                break;
            }
        }
    }
    log
}

/// Pushes an image's config, layer and manifest, and names the step that failed.
fn push_stages(
    registry: &RegistryClient,
    image: &Image,
    chunked: bool,
) -> Result<(), (Stage, Failure)> {
    let repository = &image.repository;
    registry
        .push_blob(repository, &image.config, false)
        .map_err(|failure| (Stage::Config, failure))?;
    registry
        .push_blob(repository, &image.layer, chunked)
        .map_err(|failure| (Stage::Layer, failure))?;
    registry
        .put_manifest(repository, &image.tag, &image.manifest)
        .map_err(|failure| (Stage::Manifest, failure))
}

/// A pushed image: its config and layer blobs and the manifest that refers to them.
#[derive(Clone, Debug)]
struct Image {
    repository: String,
    tag: String,
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

impl Image {
    fn new(repository: &str, tag: &str, config: Vec<u8>, layer: Vec<u8>) -> Image {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest_of(&layer),
                "size": layer.len(),
            }],
        });
        Image {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            config,
            layer,
            manifest: serde_json::to_vec(&manifest).unwrap(),
        }
    }
}

/// Checks that an image reads back exactly: the manifest by tag and by digest, and its blobs.
fn check_image(registry: &RegistryClient, image: &Image) {
    let digest = digest_of(&image.manifest);
    for reference in [image.tag.as_str(), digest.as_str()] {
        let path = format!("/v2/{}/manifests/{reference}", image.repository);
        let reply = registry
            .get(&path, &[("accept", OCI_MANIFEST)])
            .expect("read a manifest");
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.body, image.manifest, "{path}: manifest bytes");
        assert_eq!(reply.digest.as_deref(), Some(digest.as_str()), "{path}");
    }
    check_blob(registry, &image.repository, &image.config);
    check_blob(registry, &image.repository, &image.layer);
}

/// Checks that a blob reads back whole and matches its digest.
fn check_blob(registry: &RegistryClient, repository: &str, content: &[u8]) {
    let digest = digest_of(content);
    let path = format!("/v2/{repository}/blobs/{digest}");
    let reply = registry.get(&path, &[]).expect("read a blob");
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert_eq!(reply.body.len(), content.len(), "{path}: blob length");
    assert_eq!(digest_of(&reply.body), digest, "{path}: blob content");
}

/// Returns whether an interrupted blob is present, failing unless it is either absent
/// (404 BLOB_UNKNOWN) or whole.
fn check_blob_absent_or_whole(registry: &RegistryClient, repository: &str, content: &[u8]) -> bool {
    let path = format!("/v2/{repository}/blobs/{}", digest_of(content));
    let reply = registry.get(&path, &[]).expect("read an interrupted blob");
    if reply.status == 404 {
        assert_eq!(reply.error_code(), "BLOB_UNKNOWN", "{path}");
        return false;
    }
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert_eq!(
        reply.body, content,
        "{path}: an interrupted blob is partial"
    );
    true
}

/// Returns whether an interrupted manifest is present, failing unless it is either absent
/// (404 MANIFEST_UNKNOWN) or exactly the pushed bytes.
fn check_manifest_absent_or_whole(registry: &RegistryClient, image: &Image) -> bool {
    let path = format!("/v2/{}/manifests/{}", image.repository, image.tag);
    let reply = registry
        .get(&path, &[("accept", OCI_MANIFEST)])
        .expect("read an interrupted manifest");
    if reply.status == 404 {
        assert_eq!(reply.error_code(), "MANIFEST_UNKNOWN", "{path}");
        return false;
    }
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert_eq!(reply.body, image.manifest, "{path}: manifest bytes");
    true
}

/// Checks that every file in the blob store is named by the SHA-256 of its content, so no
/// partial or mismatched blob was left there.
fn check_blob_store(root: &Path) {
    let files = files_under(root);
    assert!(!files.is_empty(), "no blobs under {}", root.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let content = std::fs::read(&file).unwrap();
        assert_eq!(
            format!("sha256:{name}"),
            digest_of(&content),
            "{} does not hold the blob it is named after",
            file.display()
        );
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    bytes
}

/// Pushes an image again from the start: config, layer in chunks, manifest.
fn push_image(registry: &RegistryClient, image: &Image) -> Result<(), Failure> {
    registry.push_blob(&image.repository, &image.config, false)?;
    registry.push_blob(&image.repository, &image.layer, true)?;
    registry.put_manifest(&image.repository, &image.tag, &image.manifest)
}
