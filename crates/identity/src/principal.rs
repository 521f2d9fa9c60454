use chrono::{TimeZone, Utc};
use drydock_store::{now_unix, Db, StoreError, TokenKind};

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Holds the operator token: manages every workspace.
    Operator,
    /// Holds a workspace token: acts inside that workspace only.
    Workspace {
        id: i64,
        name: String,
        subject: String,
        expires_at: Option<i64>,
    },
}

impl Principal {
    /// Returns the workspace this caller is confined to, or `None` for the operator.
    pub fn workspace(&self) -> Option<&str> {
        match self {
            Principal::Operator => None,
            Principal::Workspace { name, .. } => Some(name),
        }
    }

    /// Checks whether this caller may act inside workspace `name`.
    pub fn can_access_workspace(&self, name: &str) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Workspace { name: own, .. } => own == name,
        }
    }
}

/// Reason a token was rejected. Messages never include the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: run `drydock auth exchange-oidc-token` to get a workspace token")]
    Missing,
    #[error(
        "token not recognised by this server: for builds, run `drydock auth exchange-oidc-token` \
         again; for admin commands, set DRYDOCK_TOKEN to the server's DATA_DIR/admin-token"
    )]
    Unknown,
    #[error(
        "workspace token expired at {expired_at}: run `drydock auth exchange-oidc-token` again"
    )]
    Expired { expired_at: String },
    #[error(
        "this request needs the operator token (DRYDOCK_TOKEN, from the server's admin-token file)"
    )]
    OperatorRequired,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Formats a Unix time as RFC 3339 in UTC, the form used in every message about expiry.
pub fn format_unix(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| secs.to_string())
}

/// Resolves an API token (operator or workspace) to its principal.
pub async fn authenticate(db: &Db, token: &str) -> Result<Principal, AuthError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let stored = db.lookup_token(token).await?.ok_or(AuthError::Unknown)?;
    if let Some(expires_at) = stored.expires_at {
        if expires_at <= now_unix() {
            return Err(AuthError::Expired {
                expired_at: format_unix(expires_at),
            });
        }
    }
    match stored.kind {
        TokenKind::Operator => Ok(Principal::Operator),
        TokenKind::Workspace => Ok(Principal::Workspace {
            id: stored.workspace_id.ok_or(AuthError::Unknown)?,
            name: stored.workspace.ok_or(AuthError::Unknown)?,
            subject: stored.subject,
            expires_at: stored.expires_at,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_token_names_its_expiry() {
        let db = Db::open_in_memory().await.unwrap();
        db.create_workspace("acme").await.unwrap();
        let token = db
            .issue_token(TokenKind::Workspace, Some("acme"), "s", Some(1))
            .await
            .unwrap();
        let err = authenticate(&db, &token).await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains("1970-01-01T00:00:01Z"), "{message}");
        assert!(message.contains("exchange-oidc-token"), "{message}");
    }

    #[tokio::test]
    async fn workspace_token_is_confined_to_its_workspace() {
        let db = Db::open_in_memory().await.unwrap();
        db.create_workspace("acme").await.unwrap();
        let token = db
            .issue_token(TokenKind::Workspace, Some("acme"), "s", None)
            .await
            .unwrap();
        let principal = authenticate(&db, &token).await.unwrap();
        assert!(principal.can_access_workspace("acme"));
        assert!(!principal.can_access_workspace("other"));
    }

    #[tokio::test]
    async fn unknown_and_empty_tokens_are_rejected() {
        let db = Db::open_in_memory().await.unwrap();
        assert!(matches!(
            authenticate(&db, "").await,
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            authenticate(&db, "ddw_nope").await,
            Err(AuthError::Unknown)
        ));
    }
}
