-- OCI registry metadata. Blob contents live in the blob store; these tables record which
-- repositories may see which blobs, and the manifests and tags of each repository.

-- A repository belongs to the workspace named by the first component of its name.
CREATE TABLE registry_repositories (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL
);

-- Every blob in the blob store, by digest. A row is written only after the blob is stored.
CREATE TABLE registry_blobs (
    digest     TEXT    PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

-- Blobs are stored once but visible only in the repositories they are linked to.
CREATE TABLE registry_blob_links (
    repository_id INTEGER NOT NULL REFERENCES registry_repositories(id) ON DELETE CASCADE,
    digest        TEXT    NOT NULL REFERENCES registry_blobs(digest),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);

CREATE INDEX registry_blob_links_digest ON registry_blob_links (digest);

-- Manifests are kept byte for byte as pushed; `digest` is computed over `content`.
CREATE TABLE registry_manifests (
    repository_id  INTEGER NOT NULL REFERENCES registry_repositories(id) ON DELETE CASCADE,
    digest         TEXT    NOT NULL,
    media_type     TEXT    NOT NULL,
    content        BLOB    NOT NULL,
    subject_digest TEXT,
    artifact_type  TEXT,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);

CREATE INDEX registry_manifests_subject ON registry_manifests (repository_id, subject_digest);

CREATE TABLE registry_tags (
    repository_id INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    digest        TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, digest)
        REFERENCES registry_manifests(repository_id, digest) ON DELETE CASCADE
);

-- Upload sessions in progress; their data is staged in a file named by `id`.
CREATE TABLE registry_uploads (
    id         TEXT    PRIMARY KEY,
    repository TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX registry_uploads_updated_at ON registry_uploads (updated_at);
