//! Blob storage in an S3 bucket, through the `object_store` crate's S3 client.
//!
//! Uploads are still staged and verified on local disk. [`BlobStore::commit`] then uploads the
//! verified file: with one `PutObject` when it is smaller than a part, otherwise as a multipart
//! upload read from disk part by part. S3 makes an object visible only when its `PutObject` or
//! `CompleteMultipartUpload` succeeds, so readers never see a partial blob.

mod bucket;
mod config;

use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;
use tokio_util::io::StreamReader;

use crate::blob_store::{BlobReader, BlobStore};
use crate::error::RegistryError;
use crate::reference::Digest;

pub use config::{S3Config, S3Credentials};

/// Smallest part of a multipart upload. S3 requires at least 5 MiB for every part but the
/// last; larger parts mean fewer requests. A file below this size is sent in one request.
const MIN_PART_SIZE: u64 = 16 * 1024 * 1024;
/// S3 accepts at most 10,000 parts per upload, so large files get larger parts.
const MAX_PARTS: u64 = 10_000;
/// Parts in flight at once for one upload. Memory use per upload stays below
/// `part size * (MAX_CONCURRENT_PARTS + 1)`.
const MAX_CONCURRENT_PARTS: usize = 4;
/// Bytes read from the staged file at a time.
const READ_CHUNK: usize = 1024 * 1024;
/// Limit for one write request (a `PutObject` or one part). A part of 16 MiB needs 0.5 MiB/s.
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Blobs in an S3 bucket, keyed `PREFIX/blobs/<algorithm>/<first two hex digits>/<hex>`.
///
/// Create it with [`S3BlobStore::connect`], which also checks that the bucket is reachable.
pub struct S3BlobStore {
    /// Client for uploads, with a timeout per request.
    writer: Arc<AmazonS3>,
    /// Client for reads and `HEAD`, without an overall timeout, because a download runs at
    /// the pace of the registry client that streams it.
    reader: Arc<AmazonS3>,
    prefix: String,
    config: S3Config,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.config.bucket)
            .field("endpoint", &self.config.endpoint.as_str())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3BlobStore {
    /// Validates `config`, builds the S3 clients and checks with a `HeadBucket` request that
    /// the bucket exists and the credentials may use it.
    pub async fn connect(config: S3Config) -> Result<S3BlobStore, RegistryError> {
        let store = S3BlobStore::new(config)?;
        store.check_bucket().await?;
        Ok(store)
    }

    /// Validates `config` and builds the S3 clients without sending any request.
    pub fn new(config: S3Config) -> Result<S3BlobStore, RegistryError> {
        let prefix = config.validate()?;
        let writer = build_client(
            &config,
            ClientOptions::new()
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout(WRITE_TIMEOUT),
        )?;
        let reader = build_client(
            &config,
            ClientOptions::new()
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout_disabled(),
        )?;
        Ok(S3BlobStore {
            writer: Arc::new(writer),
            reader: Arc::new(reader),
            prefix,
            config,
        })
    }

    /// Sends `HeadBucket` and turns each failure into an error that names the bucket, the
    /// endpoint and what to fix.
    pub async fn check_bucket(&self) -> Result<(), RegistryError> {
        bucket::check(&self.config).await
    }

    /// Returns the key prefix without surrounding slashes; empty when there is none.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Returns the object key of the blob `digest`.
    pub fn object_key(&self, digest: &Digest) -> String {
        config::object_key(&self.prefix, digest)
    }

    fn location(&self, digest: &Digest) -> ObjectPath {
        // Keys are built from validated prefix segments and hex digits, which `Path`
        // stores unchanged.
        ObjectPath::from(self.object_key(digest))
    }

    /// Wraps an `object_store` error with the blob, bucket and endpoint. A missing object
    /// keeps `ErrorKind::NotFound`, which the registry maps to `BLOB_UNKNOWN`.
    fn error(&self, action: &str, digest: &Digest, error: object_store::Error) -> io::Error {
        let kind = match &error {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(
            kind,
            format!(
                "failed to {action} blob {digest} (key {}) in S3 bucket {} at {}: {error}",
                self.object_key(digest),
                self.config.bucket,
                self.config.endpoint_base()
            ),
        )
    }

    async fn stored_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match self.reader.head(&self.location(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.error("look up", digest, error)),
        }
    }

    async fn upload(&self, digest: &Digest, staged: &Path) -> io::Result<()> {
        let mut file = tokio::fs::File::open(staged).await?;
        let size = file.metadata().await?.len();
        let location = self.location(digest);
        if size < MIN_PART_SIZE {
            let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut content).await?;
            self.writer
                .put(&location, PutPayload::from(content))
                .await
                .map_err(|error| self.error("upload", digest, error))?;
            tracing::debug!(key = %location, size, "uploaded a blob object");
            return Ok(());
        }

        let part_size = part_size(size);
        let upload = self
            .writer
            .put_multipart(&location)
            .await
            .map_err(|error| self.error("start the multipart upload of", digest, error))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        match copy_parts(&mut file, &mut writer).await {
            Ok(()) => {
                writer.finish().await.map_err(|error| {
                    self.error("complete the multipart upload of", digest, error)
                })?;
                tracing::debug!(key = %location, size, part_size, "uploaded a blob object");
                Ok(())
            }
            Err(error) => {
                // Parts of an upload that is neither completed nor aborted are kept (and
                // billed) by S3 until a lifecycle rule removes them.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(
                        key = %location,
                        error = %abort,
                        "failed to abort a multipart upload; its parts stay in the bucket \
                         until a lifecycle rule for incomplete uploads removes them"
                    );
                }
                Err(match error {
                    CopyError::Read(error) => error,
                    CopyError::Upload(error) => self.error("upload a part of", digest, error),
                })
            }
        }
    }
}

impl BlobStore for S3BlobStore {
    fn size<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, io::Result<Option<u64>>> {
        Box::pin(self.stored_size(digest))
    }

    fn read<'a>(
        &'a self,
        digest: &'a Digest,
        range: Range<u64>,
    ) -> BoxFuture<'a, io::Result<BlobReader>> {
        Box::pin(async move {
            // S3 rejects an empty range, and an empty blob has nothing to read.
            if range.start >= range.end {
                return Ok(Box::pin(tokio::io::empty()) as BlobReader);
            }
            let options = GetOptions {
                range: Some(GetRange::Bounded(range)),
                ..GetOptions::default()
            };
            let result = self
                .reader
                .get_opts(&self.location(digest), options)
                .await
                .map_err(|error| self.error("read", digest, error))?;
            let bucket = self.config.bucket.clone();
            let stream = result.into_stream().map_err(move |error| {
                io::Error::other(format!(
                    "failed to stream a blob from S3 bucket {bucket}: {error}"
                ))
            });
            Ok(Box::pin(StreamReader::new(stream)) as BlobReader)
        })
    }

    fn commit<'a>(&'a self, digest: &'a Digest, staged: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let staged_size = tokio::fs::metadata(staged).await?.len();
            match self.stored_size(digest).await? {
                Some(size) if size == staged_size => {}
                stored => {
                    if let Some(size) = stored {
                        tracing::warn!(
                            key = %self.location(digest),
                            stored_size = size,
                            verified_size = staged_size,
                            "replacing a blob object whose size does not match its digest"
                        );
                    }
                    self.upload(digest, staged).await?;
                }
            }
            // The blob is stored, so a staged file left behind only takes space until the
            // purge of stale uploads removes it.
            if let Err(error) = tokio::fs::remove_file(staged).await {
                tracing::warn!(
                    path = %staged.display(),
                    %error,
                    "failed to remove a staged upload after storing it in S3"
                );
            }
            Ok(())
        })
    }

    fn delete<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            // S3's DeleteObject succeeds for a missing key; other stores may report NotFound.
            match self.writer.delete(&self.location(digest)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(error) => Err(self.error("delete", digest, error)),
            }
        })
    }
}

/// Returns the part size for a file of `size` bytes: [`MIN_PART_SIZE`], or more when that
/// would need over [`MAX_PARTS`] parts.
fn part_size(size: u64) -> usize {
    let size = MIN_PART_SIZE.max(size.div_ceil(MAX_PARTS));
    usize::try_from(size).unwrap_or(usize::MAX)
}

enum CopyError {
    Read(io::Error),
    Upload(object_store::Error),
}

/// Reads `file` to its end into `writer`, which sends each full part while the next fills.
async fn copy_parts(
    file: &mut tokio::fs::File,
    writer: &mut WriteMultipart,
) -> Result<(), CopyError> {
    let mut buffer = vec![0; READ_CHUNK];
    loop {
        writer
            .wait_for_capacity(MAX_CONCURRENT_PARTS)
            .await
            .map_err(CopyError::Upload)?;
        let read = file.read(&mut buffer).await.map_err(CopyError::Read)?;
        if read == 0 {
            return Ok(());
        }
        writer.write(&buffer[..read]);
    }
}

fn build_client(config: &S3Config, options: ClientOptions) -> Result<AmazonS3, RegistryError> {
    let credentials = &config.credentials;
    // Static credentials are always set, so the client never falls back to asking an
    // instance metadata service for some.
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_endpoint(config.endpoint_base())
        .with_region(&config.region)
        .with_access_key_id(&credentials.access_key_id)
        .with_secret_access_key(&credentials.secret_access_key)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(config.allow_http)
        .with_client_options(options.with_allow_http(config.allow_http))
        .with_retry(RetryConfig {
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        });
    if let Some(token) = &credentials.session_token {
        builder = builder.with_token(token);
    }
    builder.build().map_err(|error| RegistryError::S3Client {
        bucket: config.bucket.clone(),
        endpoint: config.endpoint_base(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_keeps_uploads_within_the_part_limit() {
        let mib = 1024 * 1024;
        assert_eq!(part_size(0) as u64, MIN_PART_SIZE);
        assert_eq!(part_size(100 * mib) as u64, MIN_PART_SIZE);
        let huge = 500 * 1024 * mib;
        assert!(huge.div_ceil(part_size(huge) as u64) <= MAX_PARTS);
        assert!(part_size(huge) as u64 > MIN_PART_SIZE);
    }

    #[test]
    fn new_sends_nothing_and_rejects_invalid_settings() {
        let config = S3Config {
            bucket: "Bad_Bucket".into(),
            endpoint: "https://s3.example.test".parse().unwrap(),
            region: "us-east-1".into(),
            prefix: String::new(),
            allow_http: false,
            credentials: S3Credentials::new("id", "secret"),
        };
        let error = S3BlobStore::new(config.clone()).unwrap_err();
        assert!(
            error.to_string().contains("invalid S3 bucket name"),
            "{error}"
        );

        let store = S3BlobStore::new(S3Config {
            bucket: "good-bucket".into(),
            prefix: "/team/".into(),
            ..config
        })
        .unwrap();
        let digest = Digest::sha256_of(b"x");
        assert!(store.object_key(&digest).starts_with("team/blobs/sha256/"));
    }
}
