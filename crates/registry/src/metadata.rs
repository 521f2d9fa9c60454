//! Registry queries against the metadata database: repositories, blob links, manifests, tags
//! and upload sessions.
//!
//! Transactions that write begin with a write statement, so SQLite takes the write lock at
//! once and never has to upgrade a read lock, which could fail under concurrent pushes.

use drydock_store::{now_unix, Db};
use sqlx::{Row, Sqlite, Transaction};

use crate::error::{ApiError, ErrorCode};
use crate::reference::{Digest, RepositoryName};

/// A stored manifest.
pub(crate) struct StoredManifest {
    pub digest: String,
    pub media_type: String,
    pub content: Vec<u8>,
}

/// A manifest to store, with the fields the referrers API needs.
pub(crate) struct NewManifest<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub content: &'a [u8],
    pub subject: Option<&'a str>,
    pub artifact_type: Option<&'a str>,
}

/// A manifest whose `subject` is a given digest.
pub(crate) struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub content: Vec<u8>,
    pub artifact_type: Option<String>,
}

/// Creates the repository row if needed and returns its id. Fails with `NAME_UNKNOWN` when
/// the repository's workspace does not exist.
async fn ensure_repository(
    tx: &mut Transaction<'_, Sqlite>,
    repository: &RepositoryName,
) -> Result<i64, ApiError> {
    sqlx::query(
        "INSERT INTO registry_repositories (name, workspace_id, created_at)
         SELECT ?1, id, ?2 FROM workspaces WHERE name = ?3
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(repository.as_str())
    .bind(now_unix())
    .bind(repository.workspace())
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query("SELECT id FROM registry_repositories WHERE name = ?")
        .bind(repository.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    match row {
        Some(row) => Ok(row.get(0)),
        None => {
            let workspace = repository.workspace();
            Err(ApiError::new(
                ErrorCode::NameUnknown,
                format!(
                    "workspace {workspace:?} of repository \"{repository}\" not found; an \
                     operator creates it with `drydock admin workspace create {workspace}`"
                ),
            ))
        }
    }
}

/// Records a stored blob and links it into `repository`, creating the repository if needed.
/// When `finished_upload` is given, that upload session is deleted in the same transaction.
pub(crate) async fn link_blob(
    db: &Db,
    repository: &RepositoryName,
    digest: &Digest,
    size: u64,
    finished_upload: Option<&str>,
) -> Result<(), ApiError> {
    let now = now_unix();
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO registry_blobs (digest, size, created_at, touched_at)
         VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (digest) DO UPDATE SET touched_at = excluded.touched_at",
    )
    .bind(digest.as_str())
    .bind(size as i64)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let repository_id = ensure_repository(&mut tx, repository).await?;
    sqlx::query(
        "INSERT INTO registry_blob_links (repository_id, digest, created_at, touched_at)
         VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (repository_id, digest) DO UPDATE SET touched_at = excluded.touched_at",
    )
    .bind(repository_id)
    .bind(digest.as_str())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if let Some(upload) = finished_upload {
        sqlx::query("DELETE FROM registry_uploads WHERE id = ?")
            .bind(upload)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Returns the size of a blob if it is linked into `repository`.
pub(crate) async fn linked_blob_size(
    db: &Db,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<Option<u64>, ApiError> {
    let row = sqlx::query(
        "SELECT b.size FROM registry_blob_links l
         JOIN registry_repositories r ON r.id = l.repository_id
         JOIN registry_blobs b ON b.digest = l.digest
         WHERE r.name = ? AND l.digest = ?",
    )
    .bind(repository.as_str())
    .bind(digest.as_str())
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|row| row.get::<i64, _>(0) as u64))
}

/// Returns the digests among `digests` that are not linked into `repository`.
pub(crate) async fn unlinked_blobs(
    db: &Db,
    repository: &RepositoryName,
    digests: &[&str],
) -> Result<Vec<String>, ApiError> {
    let mut missing = Vec::new();
    for digest in digests {
        let row = sqlx::query(
            "SELECT 1 FROM registry_blob_links l
             JOIN registry_repositories r ON r.id = l.repository_id
             WHERE r.name = ? AND l.digest = ?",
        )
        .bind(repository.as_str())
        .bind(digest)
        .fetch_optional(db.pool())
        .await?;
        if row.is_none() {
            missing.push((*digest).to_owned());
        }
    }
    Ok(missing)
}

/// Removes a blob's link from `repository`; returns whether it was linked. The blob's
/// content stays in the blob store, where other repositories may link it, until the garbage
/// collector finds it linked from no repository.
pub(crate) async fn unlink_blob(
    db: &Db,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<bool, ApiError> {
    let done = sqlx::query(
        "DELETE FROM registry_blob_links WHERE digest = ?
         AND repository_id = (SELECT id FROM registry_repositories WHERE name = ?)",
    )
    .bind(digest.as_str())
    .bind(repository.as_str())
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Stores a manifest and, when `tag` is given, points the tag at it. Storing the same bytes
/// again is a no-op, and a tag that exists is moved.
pub(crate) async fn put_manifest(
    db: &Db,
    repository: &RepositoryName,
    manifest: &NewManifest<'_>,
    tag: Option<&str>,
) -> Result<(), ApiError> {
    let now = now_unix();
    let mut tx = db.pool().begin().await?;
    let repository_id = ensure_repository(&mut tx, repository).await?;

    sqlx::query(
        "INSERT INTO registry_manifests
             (repository_id, digest, media_type, content, subject_digest, artifact_type,
              created_at, touched_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (repository_id, digest)
         DO UPDATE SET media_type = excluded.media_type, touched_at = excluded.touched_at",
    )
    .bind(repository_id)
    .bind(manifest.digest.as_str())
    .bind(manifest.media_type)
    .bind(manifest.content)
    .bind(manifest.subject)
    .bind(manifest.artifact_type)
    .bind(now)
    .execute(&mut *tx)
    .await?;

    if let Some(tag) = tag {
        sqlx::query(
            "INSERT INTO registry_tags (repository_id, name, digest, updated_at)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (repository_id, name)
             DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
        )
        .bind(repository_id)
        .bind(tag)
        .bind(manifest.digest.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Looks a manifest up by tag (`is_tag`) or by digest.
pub(crate) async fn get_manifest(
    db: &Db,
    repository: &RepositoryName,
    reference: &str,
    is_tag: bool,
) -> Result<Option<StoredManifest>, ApiError> {
    let query = if is_tag {
        "SELECT m.digest, m.media_type, m.content FROM registry_tags t
         JOIN registry_repositories r ON r.id = t.repository_id
         JOIN registry_manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
         WHERE r.name = ? AND t.name = ?"
    } else {
        "SELECT m.digest, m.media_type, m.content FROM registry_manifests m
         JOIN registry_repositories r ON r.id = m.repository_id
         WHERE r.name = ? AND m.digest = ?"
    };
    let row = sqlx::query(query)
        .bind(repository.as_str())
        .bind(reference)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|row| StoredManifest {
        digest: row.get(0),
        media_type: row.get(1),
        content: row.get(2),
    }))
}

/// Returns the digests among `digests` that are not manifests in `repository`.
pub(crate) async fn missing_manifests(
    db: &Db,
    repository: &RepositoryName,
    digests: &[&str],
) -> Result<Vec<String>, ApiError> {
    let mut missing = Vec::new();
    for digest in digests {
        if get_manifest(db, repository, digest, false).await?.is_none() {
            missing.push((*digest).to_owned());
        }
    }
    Ok(missing)
}

/// Deletes a manifest by digest together with the tags that point at it; returns whether
/// it existed.
pub(crate) async fn delete_manifest(
    db: &Db,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<bool, ApiError> {
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "DELETE FROM registry_tags WHERE digest = ?
         AND repository_id = (SELECT id FROM registry_repositories WHERE name = ?)",
    )
    .bind(digest.as_str())
    .bind(repository.as_str())
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query(
        "DELETE FROM registry_manifests WHERE digest = ?
         AND repository_id = (SELECT id FROM registry_repositories WHERE name = ?)",
    )
    .bind(digest.as_str())
    .bind(repository.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes a tag, leaving its manifest; returns whether the tag existed.
pub(crate) async fn delete_tag(
    db: &Db,
    repository: &RepositoryName,
    tag: &str,
) -> Result<bool, ApiError> {
    let done = sqlx::query(
        "DELETE FROM registry_tags WHERE name = ?
         AND repository_id = (SELECT id FROM registry_repositories WHERE name = ?)",
    )
    .bind(tag)
    .bind(repository.as_str())
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Lists up to `limit` tags after `last` in lexical (byte) order, or `None` when the
/// repository does not exist.
pub(crate) async fn list_tags(
    db: &Db,
    repository: &RepositoryName,
    last: Option<&str>,
    limit: u32,
) -> Result<Option<Vec<String>>, ApiError> {
    let repository_id = sqlx::query("SELECT id FROM registry_repositories WHERE name = ?")
        .bind(repository.as_str())
        .fetch_optional(db.pool())
        .await?
        .map(|row| row.get::<i64, _>(0));
    let Some(repository_id) = repository_id else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT name FROM registry_tags WHERE repository_id = ?1 AND (?2 IS NULL OR name > ?2)
         ORDER BY name LIMIT ?3",
    )
    .bind(repository_id)
    .bind(last)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    Ok(Some(rows.into_iter().map(|row| row.get(0)).collect()))
}

/// Lists the manifests in `repository` whose subject is `subject`, in push order.
pub(crate) async fn referrers(
    db: &Db,
    repository: &RepositoryName,
    subject: &Digest,
) -> Result<Vec<Referrer>, ApiError> {
    let rows = sqlx::query(
        "SELECT m.digest, m.media_type, m.content, m.artifact_type FROM registry_manifests m
         JOIN registry_repositories r ON r.id = m.repository_id
         WHERE r.name = ? AND m.subject_digest = ?
         ORDER BY m.created_at, m.rowid",
    )
    .bind(repository.as_str())
    .bind(subject.as_str())
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Referrer {
            digest: row.get(0),
            media_type: row.get(1),
            content: row.get(2),
            artifact_type: row.get(3),
        })
        .collect())
}

/// Records a new upload session for `repository`.
pub(crate) async fn create_upload(
    db: &Db,
    id: &str,
    repository: &RepositoryName,
) -> Result<(), ApiError> {
    let now = now_unix();
    sqlx::query(
        "INSERT INTO registry_uploads (id, repository, size, created_at, updated_at)
         VALUES (?, ?, 0, ?, ?)",
    )
    .bind(id)
    .bind(repository.as_str())
    .bind(now)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Returns the number of bytes received so far by an upload session of `repository`, or
/// `None` when there is no such session.
pub(crate) async fn upload_size(
    db: &Db,
    id: &str,
    repository: &RepositoryName,
) -> Result<Option<u64>, ApiError> {
    let row = sqlx::query("SELECT size FROM registry_uploads WHERE id = ? AND repository = ?")
        .bind(id)
        .bind(repository.as_str())
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|row| row.get::<i64, _>(0) as u64))
}

pub(crate) async fn set_upload_size(db: &Db, id: &str, size: u64) -> Result<(), ApiError> {
    sqlx::query("UPDATE registry_uploads SET size = ?, updated_at = ? WHERE id = ?")
        .bind(size as i64)
        .bind(now_unix())
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

pub(crate) async fn delete_upload(db: &Db, id: &str) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM registry_uploads WHERE id = ?")
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Deletes upload sessions not written to since `before` (Unix seconds); returns their ids.
pub(crate) async fn delete_stale_uploads(db: &Db, before: i64) -> Result<Vec<String>, ApiError> {
    let rows = sqlx::query("DELETE FROM registry_uploads WHERE updated_at < ? RETURNING id")
        .bind(before)
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}
