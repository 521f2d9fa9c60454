//! Upload staging: files under `data_dir/uploads` that receive blob data until the upload
//! completes and the verified file moves into the blob store.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use futures_util::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use crate::error::{ApiError, ErrorCode};
use crate::reference::{Algorithm, Digest, DigestHasher};

/// Write buffer for upload files, so a stream of small body chunks becomes few large writes.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// The folder of staged uploads, and the set of uploads a request is writing right now.
pub(crate) struct UploadArea {
    dir: PathBuf,
    busy: Mutex<HashSet<String>>,
}

/// Exclusive use of one upload while a request writes to it; released on drop.
pub(crate) struct UploadLock<'a> {
    area: &'a UploadArea,
    id: String,
}

impl Drop for UploadLock<'_> {
    fn drop(&mut self) {
        self.area
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl UploadArea {
    pub fn new(dir: PathBuf) -> UploadArea {
        UploadArea {
            dir,
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// Returns the staging file of an upload. `id` must be a UUID (see [`parse_upload_id`]), so it
    /// can never name a path outside the folder.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Takes exclusive use of an upload, or fails when another request is using it.
    pub fn lock(&self, id: &str) -> Result<UploadLock<'_>, ApiError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(id.to_owned()) {
            return Err(ApiError::new(
                ErrorCode::BlobUploadInvalid,
                format!("upload {id} is receiving another request; retry after it completes"),
            ));
        }
        Ok(UploadLock {
            area: self,
            id: id.to_owned(),
        })
    }

    /// Creates the empty staging file of a new upload.
    pub async fn create(&self, id: &str) -> Result<(), ApiError> {
        tokio::fs::File::create(self.path(id))
            .await
            .map_err(|error| ApiError::internal("create the upload staging file", error))?;
        Ok(())
    }

    /// Removes an upload's staging file; a file already gone is fine.
    pub async fn remove(&self, id: &str) {
        if let Err(error) = tokio::fs::remove_file(self.path(id)).await {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(upload = id, %error, "failed to remove an upload staging file");
            }
        }
    }

    /// Streams `body` into the upload's file at `offset` and returns the number of bytes
    /// written. Data past `offset` from an earlier failed request is overwritten. When the
    /// body fails midway, the file is cut back to `offset`, so a retry starts clean.
    /// `hasher`, when given, receives every byte written.
    pub async fn append(
        &self,
        id: &str,
        offset: u64,
        body: Body,
        mut hasher: Option<&mut DigestHasher>,
    ) -> Result<u64, ApiError> {
        let io_error =
            |error: io::Error| ApiError::internal("write the upload staging file", error);
        let path = self.path(id);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .map_err(|error| {
                if error.kind() == io::ErrorKind::NotFound {
                    ApiError::new(
                        ErrorCode::BlobUploadUnknown,
                        format!("upload {id} has no staged data; start a new upload"),
                    )
                } else {
                    io_error(error)
                }
            })?;
        file.set_len(offset).await.map_err(io_error)?;
        let mut file = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        file.seek(io::SeekFrom::Start(offset))
            .await
            .map_err(io_error)?;

        let mut written = 0u64;
        let mut stream = body.into_data_stream();
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    failure = Some(ApiError::new(
                        ErrorCode::BlobUploadInvalid,
                        format!("failed to read the upload body: {error}; retry the chunk"),
                    ));
                    break;
                }
            };
            if let Err(error) = file.write_all(&chunk).await {
                failure = Some(io_error(error));
                break;
            }
            if let Some(hasher) = hasher.as_deref_mut() {
                hasher.update(&chunk);
            }
            written += chunk.len() as u64;
        }
        let flushed = file.flush().await;
        let file = file.into_inner();
        if failure.is_none() {
            if let Err(error) = flushed {
                failure = Some(io_error(error));
            }
        }
        if let Some(error) = failure {
            if let Err(truncate_error) = file.set_len(offset).await {
                tracing::warn!(upload = id, %truncate_error, "failed to cut back an upload file");
            }
            return Err(error);
        }
        Ok(written)
    }

    /// Cuts an upload's staged data back to `len` bytes, dropping a rejected chunk.
    pub async fn truncate(&self, id: &str, len: u64) -> Result<(), ApiError> {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.path(id))
            .await
            .map_err(|error| ApiError::internal("open the upload staging file", error))?;
        file.set_len(len)
            .await
            .map_err(|error| ApiError::internal("truncate the upload staging file", error))
    }

    /// Computes the digest of an upload's staged data with `algorithm`.
    pub async fn hash(&self, id: &str, algorithm: Algorithm) -> Result<Digest, ApiError> {
        let path = self.path(id);
        tokio::task::spawn_blocking(move || hash_file(&path, algorithm))
            .await
            .map_err(|error| ApiError::internal("hash the uploaded data", error))?
            .map_err(|error| ApiError::internal("hash the uploaded data", error))
    }

    /// Removes staging files not modified for `max_age`, returning how many. The caller
    /// removes the matching upload rows.
    pub async fn remove_stale(&self, max_age: Duration) -> io::Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(max_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if self
                .busy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&name)
            {
                continue;
            }
            let modified = entry.metadata().await?.modified()?;
            if modified < cutoff {
                tokio::fs::remove_file(entry.path()).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = DigestHasher::new(algorithm);
    let mut buffer = vec![0u8; WRITE_BUFFER_BYTES];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

/// Parses an upload id from a URL. Ids are UUIDs; anything else is an unknown upload.
pub(crate) fn parse_upload_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::try_parse(id)
        .map(|uuid| uuid.hyphenated().to_string())
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BlobUploadUnknown,
                format!("upload {id:?} not found"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failed_body_leaves_the_file_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let area = UploadArea::new(dir.path().to_owned());
        area.create("u").await.unwrap();
        area.append("u", 0, Body::from("hello "), None)
            .await
            .unwrap();

        let chunks: Vec<Result<&'static str, io::Error>> =
            vec![Ok("wor"), Err(io::Error::other("connection reset"))];
        let failing = Body::from_stream(futures_util::stream::iter(chunks));
        let error = area.append("u", 6, failing, None).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::BlobUploadInvalid);
        assert_eq!(std::fs::read(area.path("u")).unwrap(), b"hello ");

        area.append("u", 6, Body::from("world"), None)
            .await
            .unwrap();
        let digest = area.hash("u", Algorithm::Sha256).await.unwrap();
        assert_eq!(digest, Digest::sha256_of(b"hello world"));
    }

    #[test]
    fn upload_lock_is_exclusive_until_dropped() {
        let area = UploadArea::new(PathBuf::from("/nonexistent"));
        let first = area.lock("u").unwrap();
        assert!(area.lock("u").is_err());
        drop(first);
        assert!(area.lock("u").is_ok());
    }

    #[test]
    fn upload_ids_must_be_uuids() {
        assert!(parse_upload_id("../../etc/passwd").is_err());
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(parse_upload_id(&id).unwrap(), id);
    }
}
