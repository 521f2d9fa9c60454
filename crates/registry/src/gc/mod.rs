//! Garbage collection of manifests and blobs that no tag reaches, and per-workspace storage
//! usage.
//!
//! Scheme, and why a push running at the same time loses nothing:
//! 1. Mark: read every registry table in one read transaction (a consistent SQLite snapshot)
//!    and compute what is unreachable, keeping every row touched within the grace period.
//!    A push refreshes `touched_at` on every blob, link and manifest it stores, including
//!    ones that exist already, so whatever a push in progress has written is still young.
//! 2. Sweep: take the registry's push lock exclusively. Blob commits, blob links and
//!    manifest writes hold it shared from their reference checks to their commit, so none
//!    is halfway done. Inside one write transaction, mark again on the current tables, and
//!    delete only what both marks found. Then delete the blob contents and release the lock.
//!    A blob upload that waits for the lock commits its content after that deletion, so it
//!    stores the content again instead of finding a copy that is about to vanish.
//!
//! Uploads in progress are staged outside the blob store, so collection never deletes them.
//!
//! NOTE: the sweep waits for blob commits in flight, and pushes that start meanwhile wait
//! behind it. With S3, a commit uploads the whole layer, so a large one can stall pushes for
//! as long as that upload takes.
//!
//! NOTE: a client that finds an old, unreferenced blob with `HEAD` and skips its upload can
//! have that blob collected before it pushes the manifest. The manifest push then fails with
//! `MANIFEST_BLOB_UNKNOWN` and the push must be retried, but no stored image breaks.

mod mark;

use std::collections::BTreeMap;
use std::time::Duration;

use drydock_store::now_unix;
use serde::Serialize;
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use crate::error::RegistryError;
use crate::reference::Digest;
use crate::Registry;

pub use mark::WorkspaceFreed;
use mark::{BlobRow, LinkRow, ManifestRow, Plan, RepositoryRow, Snapshot, TagRow};

/// The result of a garbage collection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// When true, nothing was deleted and the numbers are what a real run would free.
    pub dry_run: bool,
    /// Rows touched more recently than this were kept.
    pub grace_secs: u64,
    /// Freed space per workspace name, only for workspaces that free something.
    pub workspaces: BTreeMap<String, WorkspaceFreed>,
    /// Blob contents deleted from the blob store.
    pub blobs_deleted: u64,
    /// Total size of those blob contents.
    pub bytes_deleted: u64,
    /// Blob contents whose rows are gone but whose deletion from the blob store failed.
    /// They take space until removed by hand; the server log names each one.
    pub blobs_not_deleted: u64,
}

/// Storage one workspace uses in the registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkspaceUsage {
    pub workspace: String,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Distinct blobs linked from the workspace's repositories; a blob linked from two of
    /// them counts once.
    pub blobs: u64,
    /// Total size of those distinct blobs. Manifests, kept in the metadata database, are
    /// not included.
    pub bytes: u64,
}

impl Registry {
    /// Deletes manifests that no tag reaches and blobs no kept manifest lists, keeping
    /// everything touched within `grace`. With `dry_run`, only reports what it would free.
    pub async fn collect_garbage(
        &self,
        grace: Duration,
        dry_run: bool,
    ) -> Result<GcReport, RegistryError> {
        let grace_secs = grace.as_secs();
        let cutoff = now_unix().saturating_sub(i64::try_from(grace_secs).unwrap_or(i64::MAX));
        let db = &self.inner.db;

        let first = {
            let mut tx = db.pool().begin().await.map_err(gc_error)?;
            let snapshot = load_snapshot(&mut tx).await.map_err(gc_error)?;
            tx.rollback().await.map_err(gc_error)?;
            (mark::mark(&snapshot, cutoff), snapshot)
        };
        if dry_run {
            let (plan, snapshot) = first;
            let bytes = blob_bytes(&plan, &snapshot);
            tracing::info!(
                manifests = plan.manifests.len(),
                blobs = plan.blobs.len(),
                bytes,
                "garbage collection dry run finished"
            );
            return Ok(GcReport {
                dry_run,
                grace_secs,
                workspaces: plan.freed,
                blobs_deleted: plan.blobs.len() as u64,
                bytes_deleted: bytes,
                blobs_not_deleted: 0,
            });
        }

        let _exclusive = self.inner.push_lock.write().await;
        let mut tx = db.pool().begin().await.map_err(gc_error)?;
        // A write statement first, so that SQLite takes the write lock now rather than
        // upgrading a read lock later, which fails when another writer got there first.
        sqlx::query("DELETE FROM registry_blob_links WHERE 0")
            .execute(&mut *tx)
            .await
            .map_err(gc_error)?;
        let snapshot = load_snapshot(&mut tx).await.map_err(gc_error)?;
        let plan = first.0.intersect(&mark::mark(&snapshot, cutoff), &snapshot);
        delete_rows(&mut tx, &plan).await.map_err(gc_error)?;
        tx.commit().await.map_err(gc_error)?;

        let sizes: BTreeMap<&str, u64> = snapshot
            .blobs
            .iter()
            .map(|b| (b.digest.as_str(), b.size))
            .collect();
        let mut report = GcReport {
            dry_run,
            grace_secs,
            workspaces: plan.freed.clone(),
            ..GcReport::default()
        };
        for digest in &plan.blobs {
            let parsed = Digest::parse(digest);
            let result = match &parsed {
                Ok(parsed) => self.inner.blobs.delete(parsed).await,
                Err(error) => Err(std::io::Error::other(error.message.clone())),
            };
            match result {
                Ok(()) => {
                    report.blobs_deleted += 1;
                    report.bytes_deleted += sizes.get(digest.as_str()).copied().unwrap_or(0);
                }
                Err(error) => {
                    report.blobs_not_deleted += 1;
                    tracing::warn!(
                        digest = %digest,
                        %error,
                        "failed to delete blob content during garbage collection; it takes \
                         space until removed from the blob store by hand"
                    );
                }
            }
        }
        tracing::info!(
            manifests = plan.manifests.len(),
            links = plan.links.len(),
            blobs = report.blobs_deleted,
            bytes = report.bytes_deleted,
            failed = report.blobs_not_deleted,
            "garbage collection finished"
        );
        Ok(report)
    }

    /// Returns the registry storage of every workspace, including ones with no repository.
    pub async fn usage(&self) -> Result<Vec<WorkspaceUsage>, RegistryError> {
        let usage_error = |source| RegistryError::Metadata {
            action: "compute storage usage",
            source,
        };
        let rows = sqlx::query(
            "SELECT w.name,
                (SELECT COUNT(*) FROM registry_repositories r WHERE r.workspace_id = w.id),
                (SELECT COUNT(*) FROM registry_manifests m
                   JOIN registry_repositories r ON r.id = m.repository_id
                   WHERE r.workspace_id = w.id),
                (SELECT COUNT(*) FROM registry_tags t
                   JOIN registry_repositories r ON r.id = t.repository_id
                   WHERE r.workspace_id = w.id),
                (SELECT COUNT(*) FROM registry_blobs b WHERE b.digest IN
                   (SELECT l.digest FROM registry_blob_links l
                      JOIN registry_repositories r ON r.id = l.repository_id
                      WHERE r.workspace_id = w.id)),
                (SELECT COALESCE(SUM(b.size), 0) FROM registry_blobs b WHERE b.digest IN
                   (SELECT l.digest FROM registry_blob_links l
                      JOIN registry_repositories r ON r.id = l.repository_id
                      WHERE r.workspace_id = w.id))
             FROM workspaces w ORDER BY w.name",
        )
        .fetch_all(self.inner.db.pool())
        .await
        .map_err(usage_error)?;
        Ok(rows
            .into_iter()
            .map(|row| WorkspaceUsage {
                workspace: row.get(0),
                repositories: row.get::<i64, _>(1) as u64,
                manifests: row.get::<i64, _>(2) as u64,
                tags: row.get::<i64, _>(3) as u64,
                blobs: row.get::<i64, _>(4) as u64,
                bytes: row.get::<i64, _>(5) as u64,
            })
            .collect())
    }
}

fn gc_error(source: sqlx::Error) -> RegistryError {
    RegistryError::Metadata {
        action: "collect garbage",
        source,
    }
}

fn blob_bytes(plan: &Plan, snapshot: &Snapshot) -> u64 {
    snapshot
        .blobs
        .iter()
        .filter(|b| plan.blobs.contains(&b.digest))
        .map(|b| b.size)
        .sum()
}

/// Reads every registry table that reachability depends on.
async fn load_snapshot(tx: &mut Transaction<'_, Sqlite>) -> Result<Snapshot, sqlx::Error> {
    let conn: &mut SqliteConnection = tx;
    let repositories = sqlx::query(
        "SELECT r.id, w.name FROM registry_repositories r
         JOIN workspaces w ON w.id = r.workspace_id",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| RepositoryRow {
        id: row.get(0),
        workspace: row.get(1),
    })
    .collect();

    let manifests = sqlx::query(
        "SELECT repository_id, digest, media_type, content, subject_digest, touched_at
         FROM registry_manifests",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| ManifestRow {
        repository_id: row.get(0),
        digest: row.get(1),
        media_type: row.get(2),
        content: row.get(3),
        subject: row.get(4),
        touched_at: row.get(5),
    })
    .collect();

    let tags = sqlx::query("SELECT repository_id, digest FROM registry_tags")
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| TagRow {
            repository_id: row.get(0),
            digest: row.get(1),
        })
        .collect();

    let links = sqlx::query("SELECT repository_id, digest, touched_at FROM registry_blob_links")
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| LinkRow {
            repository_id: row.get(0),
            digest: row.get(1),
            touched_at: row.get(2),
        })
        .collect();

    let blobs = sqlx::query("SELECT digest, size, touched_at FROM registry_blobs")
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| BlobRow {
            digest: row.get(0),
            size: row.get::<i64, _>(1) as u64,
            touched_at: row.get(2),
        })
        .collect();
    Ok(Snapshot {
        repositories,
        manifests,
        tags,
        links,
        blobs,
    })
}

/// Deletes the planned manifests, links and blob rows, in that order because links refer to
/// blob rows.
async fn delete_rows(tx: &mut Transaction<'_, Sqlite>, plan: &Plan) -> Result<(), sqlx::Error> {
    let conn: &mut SqliteConnection = tx;
    for (repository_id, digest) in &plan.manifests {
        sqlx::query("DELETE FROM registry_manifests WHERE repository_id = ? AND digest = ?")
            .bind(repository_id)
            .bind(digest)
            .execute(&mut *conn)
            .await?;
    }
    for (repository_id, digest) in &plan.links {
        sqlx::query("DELETE FROM registry_blob_links WHERE repository_id = ? AND digest = ?")
            .bind(repository_id)
            .bind(digest)
            .execute(&mut *conn)
            .await?;
    }
    for digest in &plan.blobs {
        sqlx::query("DELETE FROM registry_blobs WHERE digest = ?")
            .bind(digest)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
