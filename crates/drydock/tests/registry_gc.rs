//! Registry garbage collection and storage usage through a real server and the operator
//! CLI: `drydock admin registry gc` and `drydock admin registry usage`.

mod common;

use std::thread;
use std::time::Duration;

use common::registry_client::{digest_of, RegistryClient, OCI_MANIFEST};
use common::{failure, success, Harness};
use serde_json::json;

/// An image of one config and one layer, as pushed.
#[derive(Clone)]
struct Image {
    tag: String,
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

impl Image {
    /// Builds an image whose layer is unique to `tag`; the config is shared by all images.
    fn new(tag: &str, layer_bytes: usize) -> Image {
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let mut layer = format!("layer of {tag}\n").into_bytes();
        layer.resize(layer_bytes, b'x');
        let manifest = serde_json::to_vec_pretty(&json!({
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
        }))
        .unwrap();
        Image {
            tag: tag.to_owned(),
            config,
            layer,
            manifest,
        }
    }

    fn push(&self, registry: &RegistryClient, repository: &str) {
        registry.push_blob(repository, &self.config, false).unwrap();
        registry.push_blob(repository, &self.layer, true).unwrap();
        registry
            .put_manifest(repository, &self.tag, &self.manifest)
            .unwrap();
    }

    /// Asserts that the tag, the manifest and both blobs pull back byte for byte.
    fn check_pulls(&self, registry: &RegistryClient, repository: &str) {
        let tag = &self.tag;
        let manifest = registry
            .get(&format!("/v2/{repository}/manifests/{tag}"), &[])
            .unwrap();
        assert_eq!(manifest.status, 200, "{tag}: {}", manifest.text());
        assert!(
            manifest.body == self.manifest,
            "{tag}: manifest bytes differ"
        );
        for blob in [&self.config, &self.layer] {
            let digest = digest_of(blob);
            let reply = registry
                .get(&format!("/v2/{repository}/blobs/{digest}"), &[])
                .unwrap();
            assert_eq!(reply.status, 200, "{tag}: blob {digest}: {}", reply.text());
            assert!(&reply.body == blob, "{tag}: blob {digest} bytes differ");
        }
    }
}

/// Returns the numbers of `workspace`'s row in a table printed by the CLI.
fn row_numbers(stdout: &str, workspace: &str) -> Vec<u64> {
    let line = stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(workspace))
        .unwrap_or_else(|| panic!("no row for {workspace} in:\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap())
        .collect()
}

fn run(harness: &Harness, args: &[&str]) -> String {
    let output = harness.admin(args);
    success(&output, &args.join(" "));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn gc_frees_deleted_tag_and_keeps_tagged_image() {
    let harness = Harness::start();
    harness.create_workspace("acme");
    let token = harness.workspace_token("acme");
    let registry = RegistryClient::new(&harness.registry, &token);
    let old = Image::new("old", 200_000);
    let kept = Image::new("kept", 150_000);
    old.push(&registry, "acme/app");
    kept.push(&registry, "acme/app");
    let deleted = registry
        .send("DELETE", "/v2/acme/app/manifests/old", &[], &[])
        .unwrap();
    assert_eq!(deleted.status, 202, "{}", deleted.text());
    let old_manifest_path = format!("/v2/acme/app/manifests/{}", digest_of(&old.manifest));

    let usage = run(&harness, &["admin", "registry", "usage"]);
    // REPOSITORIES MANIFESTS TAGS BLOBS BYTES
    let before = row_numbers(&usage, "acme");
    let total = (old.config.len() + old.layer.len() + kept.layer.len()) as u64;
    assert_eq!(before, vec![1, 2, 1, 3, total], "{usage}");

    let dry_run = run(
        &harness,
        &["admin", "registry", "gc", "--dry-run", "--grace-secs", "0"],
    );
    // MANIFESTS BLOBS BYTES
    let freed = vec![1, 1, old.layer.len() as u64];
    assert_eq!(row_numbers(&dry_run, "acme"), freed, "{dry_run}");
    assert!(dry_run.contains("nothing was deleted"), "{dry_run}");
    let usage = run(&harness, &["admin", "registry", "usage"]);
    assert_eq!(row_numbers(&usage, "acme"), before, "dry run changed usage");
    assert_eq!(registry.get(&old_manifest_path, &[]).unwrap().status, 200);

    let collected = run(&harness, &["admin", "registry", "gc", "--grace-secs", "0"]);
    assert_eq!(row_numbers(&collected, "acme"), freed, "{collected}");
    assert_eq!(registry.get(&old_manifest_path, &[]).unwrap().status, 404);
    let old_layer_path = format!("/v2/acme/app/blobs/{}", digest_of(&old.layer));
    assert_eq!(registry.get(&old_layer_path, &[]).unwrap().status, 404);
    kept.check_pulls(&registry, "acme/app");

    let usage = run(&harness, &["admin", "registry", "usage"]);
    let after = vec![1, 1, 1, 2, total - old.layer.len() as u64];
    assert_eq!(row_numbers(&usage, "acme"), after, "{usage}");

    let again = run(&harness, &["admin", "registry", "gc", "--grace-secs", "0"]);
    assert!(
        again.lines().all(|line| !line.starts_with("acme")),
        "a second run frees nothing:\n{again}"
    );
}

#[test]
fn gc_rejects_grace_longer_than_the_server_default() {
    let harness = Harness::start();
    let output = harness.admin(&["admin", "registry", "gc", "--grace-secs", "7200"]);
    let text = failure(&output, "gc with a longer grace period");
    assert!(text.contains("7200"), "{text}");
    assert!(text.contains("--registry-gc-grace-secs"), "{text}");
}

/// Grace period of the racing collections. Each image push below takes milliseconds, far
/// less than this, so a collection may never delete what a push has uploaded.
const RACE_GRACE_SECS: u64 = 5;

#[test]
fn pushes_racing_gc_lose_nothing() {
    let harness = Harness::start();
    harness.create_workspace("acme");
    let token = harness.workspace_token("acme");
    let registry = RegistryClient::new(&harness.registry, &token);
    // Garbage older than the grace period: untagged images whose blobs the racing pushes
    // upload again.
    let tags: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    for tag in &tags {
        Image::new(tag, 70_000).push(&registry, "acme/app");
        let deleted = registry
            .send("DELETE", &format!("/v2/acme/app/manifests/{tag}"), &[], &[])
            .unwrap();
        assert_eq!(deleted.status, 202);
    }
    thread::sleep(Duration::from_secs(RACE_GRACE_SECS + 1));

    let grace = RACE_GRACE_SECS.to_string();
    let pushers: Vec<_> = tags
        .iter()
        .map(|tag| {
            let image = Image::new(tag, 70_000);
            let registry = RegistryClient::new(&harness.registry, &token);
            thread::spawn(move || {
                for _ in 0..3 {
                    image.push(&registry, "acme/app");
                }
                image
            })
        })
        .collect();
    let mut collections = 0;
    while !pushers.iter().all(|pusher| pusher.is_finished()) || collections == 0 {
        run(
            &harness,
            &["admin", "registry", "gc", "--grace-secs", &grace],
        );
        collections += 1;
    }
    let images: Vec<Image> = pushers
        .into_iter()
        .map(|pusher| pusher.join().unwrap())
        .collect();

    for image in &images {
        image.check_pulls(&registry, "acme/app");
    }
    let usage = run(&harness, &["admin", "registry", "usage"]);
    // REPOSITORIES MANIFESTS TAGS BLOBS BYTES
    let numbers = row_numbers(&usage, "acme");
    assert_eq!(numbers[1], tags.len() as u64, "manifests: {usage}");
    assert_eq!(numbers[2], tags.len() as u64, "tags: {usage}");
    assert_eq!(numbers[3], tags.len() as u64 + 1, "blobs: {usage}");
}

#[test]
fn registry_admin_endpoints_require_the_operator_token() {
    let harness = Harness::start();
    harness.create_workspace("acme");
    let token = harness.workspace_token("acme");
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let authorization = format!("Bearer {token}");
    let gc = agent
        .post(&format!("{}/v1/admin/registry/gc", harness.server_url))
        .set("authorization", &authorization)
        .send_json(json!({ "dry_run": true }));
    let usage = agent
        .get(&format!("{}/v1/admin/registry/usage", harness.server_url))
        .set("authorization", &authorization)
        .call();
    for (name, result) in [("gc", gc), ("usage", usage)] {
        match result {
            Err(ureq::Error::Status(status, _)) => assert_eq!(status, 403, "{name}"),
            Err(error) => panic!("{name}: {error}"),
            Ok(response) => panic!("{name}: a workspace token got HTTP {}", response.status()),
        }
    }
}
