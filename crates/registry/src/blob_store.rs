//! Content-addressed blob storage. The registry stages uploads on local disk and hands each
//! verified file to a [`BlobStore`]; [`FsBlobStore`] keeps blobs in a folder tree.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use crate::reference::Digest;

/// A byte stream of (part of) a stored blob.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Storage for blob contents, keyed by digest. Which repositories may see a blob is kept in
/// the metadata database, not here.
pub trait BlobStore: Send + Sync + 'static {
    /// Returns the size in bytes of the blob, or `None` when it is not stored.
    fn size<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, io::Result<Option<u64>>>;

    /// Opens the bytes `range` (end exclusive) of a stored blob for reading.
    fn read<'a>(
        &'a self,
        digest: &'a Digest,
        range: Range<u64>,
    ) -> BoxFuture<'a, io::Result<BlobReader>>;

    /// Stores the local file `staged`, whose content the caller verified to hash to `digest`.
    /// The file is consumed. Storing a digest that is already present
    /// succeeds and keeps the stored copy.
    fn commit<'a>(&'a self, digest: &'a Digest, staged: &'a Path) -> BoxFuture<'a, io::Result<()>>;

    /// Deletes a stored blob. Deleting a digest that is not stored succeeds. The garbage
    /// collector calls this only for digests it has just removed from the metadata database.
    fn delete<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, io::Result<()>>;
}

/// Blobs in a local folder, at `ROOT/<algorithm>/<first two hex digits>/<hex>`.
///
/// A blob appears by an atomic rename of an fsynced file, and the folder holding it is
/// fsynced afterwards, so a reader never sees a partial blob, even after a crash.
#[derive(Clone, Debug)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Uses `root` as the blob folder. Staged files must be on the same file system, so that
    /// committing them is a rename.
    pub fn new(root: impl Into<PathBuf>) -> FsBlobStore {
        FsBlobStore { root: root.into() }
    }

    fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }
}

impl BlobStore for FsBlobStore {
    fn size<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, io::Result<Option<u64>>> {
        Box::pin(async move {
            match tokio::fs::metadata(self.path_of(digest)).await {
                Ok(metadata) => Ok(Some(metadata.len())),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(error),
            }
        })
    }

    fn read<'a>(
        &'a self,
        digest: &'a Digest,
        range: Range<u64>,
    ) -> BoxFuture<'a, io::Result<BlobReader>> {
        Box::pin(async move {
            let mut file = tokio::fs::File::open(self.path_of(digest)).await?;
            if range.start > 0 {
                file.seek(io::SeekFrom::Start(range.start)).await?;
            }
            let reader = file.take(range.end.saturating_sub(range.start));
            Ok(Box::pin(reader) as BlobReader)
        })
    }

    fn commit<'a>(&'a self, digest: &'a Digest, staged: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        let target = self.path_of(digest);
        let staged = staged.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || commit_file(&staged, &target))
                .await
                .map_err(io::Error::other)?
        })
    }

    fn delete<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path_of(digest)).await {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error),
            }
        })
    }
}

/// Renames `staged` to `target` and makes both the file and the new directory entries
/// durable. When `target` exists, its content is the same (same digest), so `staged` is
/// dropped instead.
fn commit_file(staged: &Path, target: &Path) -> io::Result<()> {
    let parent = target
        .parent()
        .ok_or_else(|| io::Error::other("blob path has no parent"))?;
    if target.exists() {
        // A concurrent commit may have renamed the file without syncing its folder yet, and
        // the caller records the blob as stored once this returns.
        std::fs::remove_file(staged)?;
        return sync_dir(parent);
    }
    // Folders this commit creates, deepest first. Each one's entry lives in its own parent,
    // which must be synced too.
    let mut created = Vec::new();
    let mut missing = Some(parent);
    while let Some(dir) = missing.filter(|dir| !dir.exists()) {
        created.push(dir);
        missing = dir.parent();
    }
    std::fs::create_dir_all(parent)?;
    std::fs::File::open(staged)?.sync_all()?;
    // Concurrent commits of the same digest both rename files with identical content, and
    // rename replaces atomically, so readers see one complete copy either way.
    std::fs::rename(staged, target)?;
    sync_dir(parent)?;
    for dir in created {
        if let Some(dir_parent) = dir.parent() {
            sync_dir(dir_parent)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn committed_blob_is_read_back_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path().join("blobs"));
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"hello world").unwrap();
        let digest = Digest::sha256_of(b"hello world");

        assert_eq!(store.size(&digest).await.unwrap(), None);
        store.commit(&digest, &staged).await.unwrap();
        assert!(!staged.exists(), "the staged file is consumed");
        assert_eq!(store.size(&digest).await.unwrap(), Some(11));

        let hex = digest.hex();
        let expected_path = dir.path().join("blobs/sha256").join(&hex[..2]).join(hex);
        assert!(expected_path.is_file(), "{}", expected_path.display());

        let mut part = String::new();
        store
            .read(&digest, 6..11)
            .await
            .unwrap()
            .read_to_string(&mut part)
            .await
            .unwrap();
        assert_eq!(part, "world");
    }

    #[tokio::test]
    async fn committing_a_stored_digest_keeps_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path().join("blobs"));
        let digest = Digest::sha256_of(b"same");
        for name in ["first", "second"] {
            let staged = dir.path().join(name);
            std::fs::write(&staged, b"same").unwrap();
            store.commit(&digest, &staged).await.unwrap();
            assert!(!staged.exists(), "{name} is consumed");
        }
        assert_eq!(store.size(&digest).await.unwrap(), Some(4));
    }

    #[tokio::test]
    async fn deleted_blob_is_gone_and_deleting_again_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path().join("blobs"));
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"gone").unwrap();
        let digest = Digest::sha256_of(b"gone");
        store.commit(&digest, &staged).await.unwrap();

        store.delete(&digest).await.unwrap();
        assert_eq!(store.size(&digest).await.unwrap(), None);
        store.delete(&digest).await.unwrap();
    }
}
