use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{now_unix, Db, StoreError};

/// Permission level of an API token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Manages workspaces and trust rules; reads every repository.
    Operator,
    /// Acts within one workspace: its registry repositories and builders.
    Workspace,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Operator => "operator",
            TokenKind::Workspace => "workspace",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Operator => "ddo_",
            TokenKind::Workspace => "ddw_",
        }
    }
}

/// A token's stored record. The token itself is never stored, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub kind: TokenKind,
    pub workspace: Option<String>,
    pub workspace_id: Option<i64>,
    /// Principal the token was issued to, such as the OIDC `sub` claim it was exchanged for.
    pub subject: String,
    pub expires_at: Option<i64>,
}

/// Returns the hex SHA-256 of a token, the form in which tokens are stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn generate_token(kind: TokenKind) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes))
}

impl Db {
    /// Creates a token and returns it; only its hash is kept.
    pub async fn issue_token(
        &self,
        kind: TokenKind,
        workspace: Option<&str>,
        subject: &str,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        let workspace_id = match workspace {
            Some(name) => Some(self.require_workspace(name).await?.id),
            None => None,
        };
        let token = generate_token(kind);
        sqlx::query(
            "INSERT INTO api_tokens (token_hash, kind, workspace_id, subject, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(hash_token(&token))
        .bind(kind.as_str())
        .bind(workspace_id)
        .bind(subject)
        .bind(now_unix())
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(token)
    }

    /// Stores an operator token that already exists outside the database (the server's
    /// admin-token file), so that a recreated database still accepts it.
    pub async fn restore_operator_token(&self, token: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO api_tokens (token_hash, kind, workspace_id, subject, created_at, expires_at)
             VALUES (?, 'operator', NULL, 'operator', ?, NULL)",
        )
        .bind(hash_token(token.trim()))
        .bind(now_unix())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Looks a token up by its value. Expiry is left to the caller, so that it can report
    /// when the token expired.
    pub async fn lookup_token(&self, token: &str) -> Result<Option<StoredToken>, StoreError> {
        let row = sqlx::query(
            "SELECT t.kind, w.name, t.workspace_id, t.subject, t.expires_at
             FROM api_tokens t LEFT JOIN workspaces w ON w.id = t.workspace_id
             WHERE t.token_hash = ?",
        )
        .bind(hash_token(token))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| {
            let kind: String = r.get(0);
            StoredToken {
                kind: if kind == "operator" {
                    TokenKind::Operator
                } else {
                    TokenKind::Workspace
                },
                workspace: r.get(1),
                workspace_id: r.get(2),
                subject: r.get(3),
                expires_at: r.get(4),
            }
        }))
    }

    /// Deletes tokens that expired more than `grace_secs` ago; returns how many.
    pub async fn purge_expired_tokens(&self, grace_secs: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM api_tokens WHERE expires_at IS NOT NULL AND expires_at < ?")
                .bind(now_unix() - grace_secs)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected())
    }

    /// Returns the server key `name`, creating it with `len` random bytes on first use.
    pub async fn server_key(&self, name: &str, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut fresh = vec![0u8; len];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        sqlx::query("INSERT OR IGNORE INTO server_keys (name, value, created_at) VALUES (?, ?, ?)")
            .bind(name)
            .bind(&fresh)
            .bind(now_unix())
            .execute(self.pool())
            .await?;
        let row = sqlx::query("SELECT value FROM server_keys WHERE name = ?")
            .bind(name)
            .fetch_one(self.pool())
            .await?;
        Ok(row.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issued_token_is_found_by_value_only() {
        let db = Db::open_in_memory().await.unwrap();
        db.create_workspace("acme").await.unwrap();
        let token = db
            .issue_token(TokenKind::Workspace, Some("acme"), "sub", Some(42))
            .await
            .unwrap();
        assert!(token.starts_with("ddw_"));
        let stored = db
            .lookup_token(&token)
            .await
            .unwrap()
            .expect("token is stored");
        assert_eq!(stored.workspace.as_deref(), Some("acme"));
        assert_eq!(stored.expires_at, Some(42));
        assert!(db.lookup_token("ddw_other").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn server_key_is_stable() {
        let db = Db::open_in_memory().await.unwrap();
        let first = db.server_key("registry", 32).await.unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(db.server_key("registry", 32).await.unwrap(), first);
    }
}
