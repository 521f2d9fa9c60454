//! Drydock's metadata store: workspaces, trust rules, API tokens and server keys, kept in
//! SQLite with numbered migrations. Registry metadata and blob storage live beside it.

mod db;
mod tenancy;
mod tokens;

pub use db::{now_unix, Db, StoreError};
pub use tenancy::{TrustRule, Workspace};
pub use tokens::{hash_token, StoredToken, TokenKind};
