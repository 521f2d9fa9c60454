-- Workspaces, the trust rules that admit OIDC tokens into them, and API tokens.

CREATE TABLE workspaces (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE trust_rules (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id    INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    issuer          TEXT    NOT NULL,
    audience        TEXT    NOT NULL,
    subject_pattern TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (workspace_id, issuer, audience, subject_pattern)
);

-- Only the SHA-256 of a token is stored; the token itself is shown once, to its holder.
CREATE TABLE api_tokens (
    token_hash   TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('operator', 'workspace')),
    workspace_id INTEGER REFERENCES workspaces(id) ON DELETE CASCADE,
    subject      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER
);

CREATE INDEX api_tokens_expires_at ON api_tokens (expires_at);

-- Server-wide secrets, such as the key that signs registry bearer tokens.
CREATE TABLE server_keys (
    name       TEXT    PRIMARY KEY,
    value      BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);
