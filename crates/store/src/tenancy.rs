use serde::Serialize;
use sqlx::Row;

use crate::{now_unix, Db, StoreError};

/// A tenant: the unit of isolation for registry repositories, builders and cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workspace {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

/// An operator's statement that OIDC tokens from `issuer`, for `audience`, whose `sub` claim
/// matches `subject_pattern`, may act for a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustRule {
    pub id: i64,
    pub workspace: String,
    pub issuer: String,
    pub audience: String,
    pub subject_pattern: String,
    pub created_at: i64,
}

/// Checks that a workspace name can be the first component of a registry repository name:
/// lowercase letters and digits, separated by single `-`, `_` or `.`, at most 63 characters.
pub fn validate_workspace_name(name: &str) -> Result<(), StoreError> {
    let bytes = name.as_bytes();
    let valid_chars = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let no_double_separator = !bytes
        .windows(2)
        .any(|w| !w[0].is_ascii_alphanumeric() && !w[1].is_ascii_alphanumeric());
    if name.is_empty()
        || name.len() > 63
        || !valid_chars
        || !alnum(bytes.first())
        || !alnum(bytes.last())
        || !no_double_separator
    {
        return Err(StoreError::Conflict(format!(
            "invalid workspace name {name:?}: use 1 to 63 lowercase letters and digits, \
             optionally separated by single '-', '_' or '.' (for example \"acme\" or \"team-a\")"
        )));
    }
    Ok(())
}

impl Db {
    pub async fn create_workspace(&self, name: &str) -> Result<Workspace, StoreError> {
        validate_workspace_name(name)?;
        let created_at = now_unix();
        let result = sqlx::query("INSERT INTO workspaces (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(created_at)
            .execute(self.pool())
            .await;
        match result {
            Ok(done) => Ok(Workspace {
                id: done.last_insert_rowid(),
                name: name.to_owned(),
                created_at,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("workspace {name:?} already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        let rows = sqlx::query("SELECT id, name, created_at FROM workspaces ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Workspace {
                id: r.get(0),
                name: r.get(1),
                created_at: r.get(2),
            })
            .collect())
    }

    pub async fn workspace_by_name(&self, name: &str) -> Result<Option<Workspace>, StoreError> {
        let row = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| Workspace {
            id: r.get(0),
            name: r.get(1),
            created_at: r.get(2),
        }))
    }

    /// Looks up a workspace that must exist, with an error naming the command that creates it.
    pub async fn require_workspace(&self, name: &str) -> Result<Workspace, StoreError> {
        self.workspace_by_name(name).await?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "workspace {name:?} not found; an operator creates it with \
                 `drydock admin workspace create {name}`"
            ))
        })
    }

    pub async fn add_trust_rule(
        &self,
        workspace: &str,
        issuer: &str,
        audience: &str,
        subject_pattern: &str,
    ) -> Result<TrustRule, StoreError> {
        let ws = self.require_workspace(workspace).await?;
        let created_at = now_unix();
        let result = sqlx::query(
            "INSERT INTO trust_rules (workspace_id, issuer, audience, subject_pattern, created_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(ws.id)
        .bind(issuer)
        .bind(audience)
        .bind(subject_pattern)
        .bind(created_at)
        .execute(self.pool())
        .await;
        match result {
            Ok(done) => Ok(TrustRule {
                id: done.last_insert_rowid(),
                workspace: ws.name,
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                subject_pattern: subject_pattern.to_owned(),
                created_at,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!(
                    "workspace {workspace:?} already trusts issuer {issuer:?} for audience \
                     {audience:?} and subject {subject_pattern:?}"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Lists trust rules, of one workspace or of all.
    pub async fn list_trust_rules(
        &self,
        workspace: Option<&str>,
    ) -> Result<Vec<TrustRule>, StoreError> {
        if let Some(name) = workspace {
            self.require_workspace(name).await?;
        }
        let rows = sqlx::query(
            "SELECT t.id, w.name, t.issuer, t.audience, t.subject_pattern, t.created_at
             FROM trust_rules t JOIN workspaces w ON w.id = t.workspace_id
             WHERE ?1 IS NULL OR w.name = ?1
             ORDER BY w.name, t.id",
        )
        .bind(workspace)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| TrustRule {
                id: r.get(0),
                workspace: r.get(1),
                issuer: r.get(2),
                audience: r.get(3),
                subject_pattern: r.get(4),
                created_at: r.get(5),
            })
            .collect())
    }

    pub async fn remove_trust_rule(&self, id: i64) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM trust_rules WHERE id = ?")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "trust rule {id} not found; `drydock admin trust list` shows the rule ids"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_names_follow_repository_rules() {
        for good in ["acme", "team-a", "a", "a.b_c-9"] {
            assert!(
                validate_workspace_name(good).is_ok(),
                "{good} should be valid"
            );
        }
        for bad in [
            "",
            "Acme",
            "-a",
            "a-",
            "a--b",
            "a/b",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(
                validate_workspace_name(bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
    }

    #[tokio::test]
    async fn duplicate_workspace_is_a_conflict() {
        let db = Db::open_in_memory().await.unwrap();
        db.create_workspace("acme").await.unwrap();
        let err = db.create_workspace("acme").await.unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[tokio::test]
    async fn trust_rules_are_listed_per_workspace() {
        let db = Db::open_in_memory().await.unwrap();
        db.create_workspace("acme").await.unwrap();
        db.create_workspace("other").await.unwrap();
        db.add_trust_rule("acme", "https://issuer", "aud", "org:acme:*")
            .await
            .unwrap();
        db.add_trust_rule("other", "https://issuer", "aud", "org:other:*")
            .await
            .unwrap();
        let acme = db.list_trust_rules(Some("acme")).await.unwrap();
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0].subject_pattern, "org:acme:*");
        assert_eq!(db.list_trust_rules(None).await.unwrap().len(), 2);
        db.remove_trust_rule(acme[0].id).await.unwrap();
        assert!(db.remove_trust_rule(acme[0].id).await.is_err());
    }
}
