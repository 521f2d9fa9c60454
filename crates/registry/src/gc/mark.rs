//! The mark phase of garbage collection: from a snapshot of the registry tables, decides
//! which manifests, blob links and blob contents are unreachable and old enough to delete.
//! This is pure computation, so the sweep can run it twice: once on a read snapshot and
//! once more inside the delete transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::manifest_doc::{self, ManifestKind};

/// A repository and the name of its workspace.
pub(crate) struct RepositoryRow {
    pub id: i64,
    pub workspace: String,
}

pub(crate) struct ManifestRow {
    pub repository_id: i64,
    pub digest: String,
    pub media_type: String,
    pub content: Vec<u8>,
    pub subject: Option<String>,
    pub touched_at: i64,
}

pub(crate) struct TagRow {
    pub repository_id: i64,
    pub digest: String,
}

pub(crate) struct LinkRow {
    pub repository_id: i64,
    pub digest: String,
    pub touched_at: i64,
}

pub(crate) struct BlobRow {
    pub digest: String,
    pub size: u64,
    pub touched_at: i64,
}

/// The registry tables as the mark phase reads them.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub repositories: Vec<RepositoryRow>,
    pub manifests: Vec<ManifestRow>,
    pub tags: Vec<TagRow>,
    pub links: Vec<LinkRow>,
    pub blobs: Vec<BlobRow>,
}

/// A manifest or blob link, by repository id and digest.
pub(crate) type RepositoryDigest = (i64, String);

/// Space one workspace frees in a collection.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkspaceFreed {
    /// Manifests deleted from the workspace's repositories.
    pub manifests: u64,
    /// Distinct blobs the workspace no longer links from any repository.
    pub blobs: u64,
    /// Total size of those blobs, which is how far the workspace's storage usage drops.
    pub bytes: u64,
}

/// The rows and contents to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub manifests: BTreeSet<RepositoryDigest>,
    pub links: BTreeSet<RepositoryDigest>,
    /// Blobs linked from no repository once `links` are gone; their rows and contents go.
    pub blobs: BTreeSet<String>,
    /// Freed space per workspace name.
    pub freed: BTreeMap<String, WorkspaceFreed>,
}

impl Plan {
    /// Keeps only what both plans delete, so that a sweep removes only what was unreachable
    /// at mark time and still is at delete time. `snapshot` is the later of the two. A blob
    /// that keeps a link there keeps its row and content, and per-workspace totals are
    /// recomputed.
    pub fn intersect(&self, other: &Plan, snapshot: &Snapshot) -> Plan {
        let mut plan = Plan {
            manifests: self
                .manifests
                .intersection(&other.manifests)
                .cloned()
                .collect(),
            links: self.links.intersection(&other.links).cloned().collect(),
            blobs: self.blobs.intersection(&other.blobs).cloned().collect(),
            freed: BTreeMap::new(),
        };
        let still_linked = linked_after(snapshot, &plan.links);
        plan.blobs
            .retain(|digest| !still_linked.contains(digest.as_str()));
        plan.freed = freed_per_workspace(snapshot, &plan.manifests, &plan.links);
        plan
    }
}

/// The references one stored manifest makes.
struct References {
    blobs: Vec<String>,
    children: Vec<String>,
}

/// Computes what to delete. Rows touched after `cutoff` (Unix seconds) are kept, and so is
/// everything they reach, because a push may still be using them.
///
/// A manifest is kept when it is tagged, touched after `cutoff`, listed by a kept
/// index in the same repository, or has a kept manifest as its `subject` (a referrer). A
/// blob link is kept when a kept manifest in its repository lists the blob, or when it was
/// touched after `cutoff`. Blob content is deleted when no link remains and the blob row
/// was not touched after `cutoff` either.
pub(crate) fn mark(snapshot: &Snapshot, cutoff: i64) -> Plan {
    let mut references: HashMap<RepositoryDigest, References> = HashMap::new();
    // Repositories with a manifest that no longer parses: their blobs cannot be traced, so
    // none of their links is deleted.
    let mut untraceable: HashSet<i64> = HashSet::new();
    let mut referrers: HashMap<RepositoryDigest, Vec<String>> = HashMap::new();
    let mut kept: HashSet<RepositoryDigest> = HashSet::new();
    let mut pending: Vec<RepositoryDigest> = Vec::new();

    for manifest in &snapshot.manifests {
        let key = (manifest.repository_id, manifest.digest.clone());
        match manifest_doc::parse(&manifest.content, Some(&manifest.media_type)) {
            Ok(parsed) => {
                let children = match parsed.kind {
                    ManifestKind::Index => parsed.children,
                    ManifestKind::Image => Vec::new(),
                };
                references.insert(
                    key.clone(),
                    References {
                        blobs: parsed.blobs,
                        children,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(
                    repository_id = manifest.repository_id,
                    digest = %manifest.digest,
                    error = %error.message,
                    "failed to parse a stored manifest; keeping it and every blob of its \
                     repository"
                );
                untraceable.insert(manifest.repository_id);
                pending.push(key.clone());
            }
        }
        if let Some(subject) = &manifest.subject {
            referrers
                .entry((manifest.repository_id, subject.clone()))
                .or_default()
                .push(manifest.digest.clone());
        }
        if manifest.touched_at > cutoff {
            pending.push(key);
        }
    }
    let stored: HashSet<RepositoryDigest> = snapshot
        .manifests
        .iter()
        .map(|m| (m.repository_id, m.digest.clone()))
        .collect();
    for tag in &snapshot.tags {
        pending.push((tag.repository_id, tag.digest.clone()));
    }

    // Walk from the roots through index children and referrers.
    while let Some(key) = pending.pop() {
        if !stored.contains(&key) || !kept.insert(key.clone()) {
            continue;
        }
        let repository_id = key.0;
        if let Some(refs) = references.get(&key) {
            for child in &refs.children {
                pending.push((repository_id, child.clone()));
            }
        }
        for referrer in referrers.get(&key).into_iter().flatten() {
            pending.push((repository_id, referrer.clone()));
        }
    }

    let manifests: BTreeSet<RepositoryDigest> = stored.difference(&kept).cloned().collect();

    let mut used_links: HashSet<RepositoryDigest> = HashSet::new();
    for key in &kept {
        if let Some(refs) = references.get(key) {
            for blob in &refs.blobs {
                used_links.insert((key.0, blob.clone()));
            }
        }
    }
    let links: BTreeSet<RepositoryDigest> = snapshot
        .links
        .iter()
        .filter(|link| link.touched_at <= cutoff && !untraceable.contains(&link.repository_id))
        .map(|link| (link.repository_id, link.digest.clone()))
        .filter(|key| !used_links.contains(key))
        .collect();

    let still_linked = linked_after(snapshot, &links);
    let blobs: BTreeSet<String> = snapshot
        .blobs
        .iter()
        .filter(|blob| blob.touched_at <= cutoff && !still_linked.contains(blob.digest.as_str()))
        .map(|blob| blob.digest.clone())
        .collect();

    let freed = freed_per_workspace(snapshot, &manifests, &links);
    Plan {
        manifests,
        links,
        blobs,
        freed,
    }
}

/// Returns the digests that keep at least one link once `deleted` links are gone.
fn linked_after<'a>(
    snapshot: &'a Snapshot,
    deleted: &BTreeSet<RepositoryDigest>,
) -> HashSet<&'a str> {
    snapshot
        .links
        .iter()
        .filter(|link| !deleted.contains(&(link.repository_id, link.digest.clone())))
        .map(|link| link.digest.as_str())
        .collect()
}

/// Counts, per workspace, the deleted manifests and the distinct blobs that the workspace
/// links before the deletion but not after it.
fn freed_per_workspace(
    snapshot: &Snapshot,
    manifests: &BTreeSet<RepositoryDigest>,
    links: &BTreeSet<RepositoryDigest>,
) -> BTreeMap<String, WorkspaceFreed> {
    let workspace_of: HashMap<i64, &str> = snapshot
        .repositories
        .iter()
        .map(|r| (r.id, r.workspace.as_str()))
        .collect();
    let sizes: HashMap<&str, u64> = snapshot
        .blobs
        .iter()
        .map(|b| (b.digest.as_str(), b.size))
        .collect();

    let mut freed: BTreeMap<String, WorkspaceFreed> = BTreeMap::new();
    for (repository_id, _) in manifests {
        if let Some(workspace) = workspace_of.get(repository_id) {
            freed.entry((*workspace).to_owned()).or_default().manifests += 1;
        }
    }

    let mut before: HashSet<(&str, &str)> = HashSet::new();
    let mut after: HashSet<(&str, &str)> = HashSet::new();
    for link in &snapshot.links {
        let Some(workspace) = workspace_of.get(&link.repository_id) else {
            continue;
        };
        before.insert((workspace, link.digest.as_str()));
        if !links.contains(&(link.repository_id, link.digest.clone())) {
            after.insert((workspace, link.digest.as_str()));
        }
    }
    for (workspace, digest) in before.difference(&after) {
        let entry = freed.entry((*workspace).to_owned()).or_default();
        entry.blobs += 1;
        entry.bytes += sizes.get(digest).copied().unwrap_or(0);
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest_doc::{OCI_INDEX, OCI_MANIFEST};
    use crate::reference::Digest;

    const OLD: i64 = 100;
    const CUTOFF: i64 = 1_000;
    const NEW: i64 = 2_000;

    fn blob(name: &str) -> String {
        Digest::sha256_of(name.as_bytes()).as_str().to_owned()
    }

    /// Builds snapshots: repository 1 and 2 in workspace "acme", 3 in "other".
    struct Builder {
        snapshot: Snapshot,
    }

    impl Builder {
        fn new() -> Builder {
            let repositories = [(1, "acme"), (2, "acme"), (3, "other")]
                .into_iter()
                .map(|(id, workspace)| RepositoryRow {
                    id,
                    workspace: workspace.to_owned(),
                })
                .collect();
            Builder {
                snapshot: Snapshot {
                    repositories,
                    ..Snapshot::default()
                },
            }
        }

        /// Adds an image manifest listing `blobs`, linking each blob, and returns its digest.
        fn image(&mut self, repository_id: i64, blobs: &[&str], subject: Option<&str>) -> String {
            let layers: Vec<_> = blobs
                .iter()
                .map(|name| {
                    serde_json::json!({
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": blob(name),
                        "size": name.len(),
                    })
                })
                .collect();
            let mut document = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": blob("config"),
                    "size": 6,
                },
                "layers": layers,
            });
            if let Some(subject) = subject {
                document["subject"] = serde_json::json!({
                    "mediaType": OCI_MANIFEST, "digest": subject, "size": 1,
                });
            }
            for name in blobs.iter().chain(&["config"]) {
                self.link(repository_id, name);
            }
            self.manifest(repository_id, OCI_MANIFEST, document, subject)
        }

        fn index(&mut self, repository_id: i64, children: &[&str]) -> String {
            let manifests: Vec<_> = children
                .iter()
                .map(|digest| {
                    serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": 1 })
                })
                .collect();
            let document = serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
            });
            self.manifest(repository_id, OCI_INDEX, document, None)
        }

        fn manifest(
            &mut self,
            repository_id: i64,
            media_type: &str,
            document: serde_json::Value,
            subject: Option<&str>,
        ) -> String {
            let content = serde_json::to_vec(&document).unwrap();
            let digest = Digest::sha256_of(&content).as_str().to_owned();
            self.snapshot.manifests.push(ManifestRow {
                repository_id,
                digest: digest.clone(),
                media_type: media_type.to_owned(),
                content,
                subject: subject.map(str::to_owned),
                touched_at: OLD,
            });
            digest
        }

        fn link(&mut self, repository_id: i64, name: &str) {
            let digest = blob(name);
            if !self
                .snapshot
                .links
                .iter()
                .any(|l| l.repository_id == repository_id && l.digest == digest)
            {
                self.snapshot.links.push(LinkRow {
                    repository_id,
                    digest: digest.clone(),
                    touched_at: OLD,
                });
            }
            if !self.snapshot.blobs.iter().any(|b| b.digest == digest) {
                self.snapshot.blobs.push(BlobRow {
                    digest,
                    size: name.len() as u64,
                    touched_at: OLD,
                });
            }
        }

        fn tag(&mut self, repository_id: i64, digest: &str) {
            self.snapshot.tags.push(TagRow {
                repository_id,
                digest: digest.to_owned(),
            });
        }
    }

    fn set(items: &[(i64, &str)]) -> BTreeSet<RepositoryDigest> {
        items.iter().map(|(r, d)| (*r, (*d).to_owned())).collect()
    }

    #[test]
    fn untagged_image_is_collected() {
        let mut b = Builder::new();
        let tagged = b.image(1, &["shared", "kept-only"], None);
        b.tag(1, &tagged);
        let untagged = b.image(1, &["shared", "dropped-only"], None);

        let plan = mark(&b.snapshot, CUTOFF);

        assert_eq!(plan.manifests, set(&[(1, &untagged)]));
        assert_eq!(plan.links, set(&[(1, &blob("dropped-only"))]));
        assert_eq!(plan.blobs, [blob("dropped-only")].into_iter().collect());
        let acme = &plan.freed["acme"];
        assert_eq!(acme.manifests, 1);
        assert_eq!(acme.blobs, 1);
        assert_eq!(acme.bytes, "dropped-only".len() as u64);
    }

    #[test]
    fn index_keeps_its_children() {
        let mut b = Builder::new();
        let amd64 = b.image(1, &["amd64-layer"], None);
        let arm64 = b.image(1, &["arm64-layer"], None);
        let index = b.index(1, &[&amd64, &arm64]);
        b.tag(1, &index);

        let plan = mark(&b.snapshot, CUTOFF);

        assert!(plan.manifests.is_empty(), "{:?}", plan.manifests);
        assert!(plan.links.is_empty(), "{:?}", plan.links);
        assert!(plan.blobs.is_empty(), "{:?}", plan.blobs);
    }

    #[test]
    fn referrer_of_kept_manifest_is_kept() {
        let mut b = Builder::new();
        let image = b.image(1, &["layer"], None);
        b.tag(1, &image);
        let signature = b.image(1, &["signature"], Some(&image));
        let orphan_subject = blob("never pushed");
        let orphan = b.image(1, &["orphan-signature"], Some(&orphan_subject));

        let plan = mark(&b.snapshot, CUTOFF);

        assert!(!plan.manifests.contains(&(1, signature)));
        assert_eq!(plan.manifests, set(&[(1, &orphan)]));
        assert!(!plan.blobs.contains(&blob("signature")));
        assert!(plan.blobs.contains(&blob("orphan-signature")));
    }

    #[test]
    fn blob_shared_across_repositories_keeps_its_content() {
        let mut b = Builder::new();
        let kept = b.image(1, &["base"], None);
        b.tag(1, &kept);
        // The same base layer in another repository of the workspace and in another
        // workspace, both in untagged images.
        b.image(2, &["base"], None);
        b.image(3, &["base"], None);

        let plan = mark(&b.snapshot, CUTOFF);

        assert!(plan.links.contains(&(2, blob("base"))));
        assert!(plan.links.contains(&(3, blob("base"))));
        assert!(!plan.links.contains(&(1, blob("base"))));
        assert!(
            !plan.blobs.contains(&blob("base")),
            "repository 1 still uses it"
        );
        // acme still links the base layer from repository 1, so only "other" frees it.
        assert_eq!(plan.freed["acme"].blobs, 0);
        assert_eq!(plan.freed["acme"].manifests, 1);
        assert_eq!(plan.freed["other"].blobs, 2, "base and config");
        assert_eq!(plan.freed["other"].manifests, 1);
    }

    #[test]
    fn recent_rows_survive_the_grace_period() {
        let mut b = Builder::new();
        let fresh = b.image(1, &["fresh-layer"], None);
        b.snapshot
            .manifests
            .iter_mut()
            .for_each(|m| m.touched_at = NEW);
        // A blob uploaded for a manifest not pushed yet.
        b.link(2, "uploading");
        b.snapshot.links.last_mut().unwrap().touched_at = NEW;
        b.snapshot.blobs.last_mut().unwrap().touched_at = NEW;

        let plan = mark(&b.snapshot, CUTOFF);

        assert!(!plan.manifests.contains(&(1, fresh)));
        assert!(plan.links.is_empty(), "{:?}", plan.links);
        assert!(plan.blobs.is_empty(), "{:?}", plan.blobs);
    }

    #[test]
    fn unparsable_manifest_keeps_its_repository_blobs() {
        let mut b = Builder::new();
        b.image(1, &["layer"], None);
        b.snapshot.manifests[0].content = b"not json".to_vec();

        let plan = mark(&b.snapshot, CUTOFF);

        assert!(plan.manifests.is_empty());
        assert!(plan.links.is_empty());
        assert!(plan.blobs.is_empty());
    }

    #[test]
    fn intersection_keeps_blob_linked_again() {
        let mut b = Builder::new();
        // A blob row with no link, as after `DELETE /v2/<name>/blobs/<digest>`.
        b.link(1, "relinked");
        b.snapshot.links.clear();
        let plan_before = mark(&b.snapshot, CUTOFF);
        assert!(plan_before.blobs.contains(&blob("relinked")));
        // A mount links it again, within the same second as the cutoff.
        b.snapshot.links.push(LinkRow {
            repository_id: 2,
            digest: blob("relinked"),
            touched_at: CUTOFF,
        });
        let plan_after = mark(&b.snapshot, CUTOFF);

        let plan = plan_before.intersect(&plan_after, &b.snapshot);

        assert!(plan.links.is_empty(), "{:?}", plan.links);
        assert!(plan.blobs.is_empty(), "{:?}", plan.blobs);
    }

    #[test]
    fn intersection_deletes_only_what_both_marks_found() {
        let mut b = Builder::new();
        let first = b.image(1, &["a"], None);
        let plan_before = mark(&b.snapshot, CUTOFF);
        // A tag arrives between the two marks.
        b.tag(1, &first);
        let plan_after = mark(&b.snapshot, CUTOFF);

        let plan = plan_before.intersect(&plan_after, &b.snapshot);

        assert!(plan.manifests.is_empty());
        assert!(plan.blobs.is_empty());
        assert!(plan.freed.is_empty(), "{:?}", plan.freed);
    }
}
