use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use crate::api_client::ApiClient;
use crate::cli::{TrustCommand, WorkspaceCommand};
use crate::state::format_unix;

pub async fn workspace(client: &ApiClient, command: WorkspaceCommand) -> Result<ExitCode> {
    match command {
        WorkspaceCommand::Create { name } => {
            let _: Value = client
                .post("/v1/admin/workspaces", json!({ "name": name }))
                .await?;
            println!("Created workspace {name}.");
        }
        WorkspaceCommand::List => {
            let listed: Value = client.get("/v1/admin/workspaces").await?;
            println!("{:<32} CREATED", "NAME");
            for ws in listed["workspaces"].as_array().into_iter().flatten() {
                let created = ws["created_at"]
                    .as_i64()
                    .map(format_unix)
                    .unwrap_or_default();
                println!("{:<32} {created}", ws["name"].as_str().unwrap_or_default());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn trust(client: &ApiClient, command: TrustCommand) -> Result<ExitCode> {
    match command {
        TrustCommand::Add {
            workspace,
            issuer,
            audience,
            subject,
        } => {
            let body = json!({
                "workspace": workspace, "issuer": issuer, "audience": audience, "subject": subject,
            });
            let rule: Value = client.post("/v1/admin/trust-rules", body).await?;
            println!(
                "Added trust rule {} for workspace {workspace}: issuer {issuer}, audience {audience}, subject {subject}.",
                rule["id"]
            );
        }
        TrustCommand::List { workspace } => {
            let path = match &workspace {
                Some(ws) => format!("/v1/admin/trust-rules?workspace={}", urlencode(ws)),
                None => "/v1/admin/trust-rules".to_owned(),
            };
            let listed: Value = client.get(&path).await?;
            println!(
                "{:<6} {:<16} {:<40} {:<24} SUBJECT",
                "ID", "WORKSPACE", "ISSUER", "AUDIENCE"
            );
            for rule in listed["trust_rules"].as_array().into_iter().flatten() {
                println!(
                    "{:<6} {:<16} {:<40} {:<24} {}",
                    rule["id"].as_i64().unwrap_or_default(),
                    rule["workspace"].as_str().unwrap_or_default(),
                    rule["issuer"].as_str().unwrap_or_default(),
                    rule["audience"].as_str().unwrap_or_default(),
                    rule["subject_pattern"].as_str().unwrap_or_default(),
                );
            }
        }
        TrustCommand::Remove { id } => {
            client
                .delete(&format!("/v1/admin/trust-rules/{id}"))
                .await?;
            println!("Removed trust rule {id}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
