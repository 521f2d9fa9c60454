use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use drydock_store::{Db, TokenKind};

use crate::ServerError;

/// Creates the operator token on first start and writes it to `path` (mode 0600). An existing
/// file is left alone, so restarts keep the operator's token.
pub async fn ensure_operator_token(db: &Db, path: &Path) -> Result<bool, ServerError> {
    if path.exists() {
        let token = std::fs::read_to_string(path).map_err(|source| ServerError::OperatorToken {
            path: path.display().to_string(),
            source,
        })?;
        if db.restore_operator_token(&token).await? {
            tracing::warn!(
                path = %path.display(),
                "the metadata database did not know the operator token file; restored it"
            );
        }
        return Ok(false);
    }
    let token = db
        .issue_token(TokenKind::Operator, None, "operator", None)
        .await?;
    let error = |source| ServerError::OperatorToken {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(error)?;
    file.write_all(token.as_bytes()).map_err(error)?;
    file.write_all(b"\n").map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)?;
    Ok(true)
}
