//! `drydock admin registry gc|usage`.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use crate::api_client::ApiClient;
use crate::cli::RegistryCommand;

pub async fn run(client: &ApiClient, command: RegistryCommand) -> Result<ExitCode> {
    match command {
        RegistryCommand::Gc {
            dry_run,
            grace_secs,
        } => {
            let body = json!({ "dry_run": dry_run, "grace_secs": grace_secs });
            let report: Value = client.post("/v1/admin/registry/gc", body).await?;
            print_gc_report(&report);
            if count(&report["blobs_not_deleted"]) > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        RegistryCommand::Usage => {
            let usage: Value = client.get("/v1/admin/registry/usage").await?;
            println!(
                "{:<24} {:>12} {:>10} {:>8} {:>8} {:>14}",
                "WORKSPACE", "REPOSITORIES", "MANIFESTS", "TAGS", "BLOBS", "BYTES"
            );
            for entry in usage["workspaces"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:>12} {:>10} {:>8} {:>8} {:>14}",
                    entry["workspace"].as_str().unwrap_or_default(),
                    count(&entry["repositories"]),
                    count(&entry["manifests"]),
                    count(&entry["tags"]),
                    count(&entry["blobs"]),
                    count(&entry["bytes"]),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or_default()
}

fn print_gc_report(report: &Value) {
    let dry_run = report["dry_run"].as_bool().unwrap_or_default();
    let grace = count(&report["grace_secs"]);
    if dry_run {
        println!("Dry run with a grace period of {grace} s; nothing was deleted.");
    } else {
        println!("Collected garbage with a grace period of {grace} s.");
    }
    println!(
        "{:<24} {:>10} {:>8} {:>14}",
        "WORKSPACE", "MANIFESTS", "BLOBS", "BYTES"
    );
    if let Some(workspaces) = report["workspaces"].as_object() {
        for (name, freed) in workspaces {
            println!(
                "{:<24} {:>10} {:>8} {:>14}",
                name,
                count(&freed["manifests"]),
                count(&freed["blobs"]),
                count(&freed["bytes"]),
            );
        }
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!(
        "Blob store: {verb} {} blobs, {} bytes.",
        count(&report["blobs_deleted"]),
        count(&report["bytes_deleted"])
    );
    let failed = count(&report["blobs_not_deleted"]);
    if failed > 0 {
        println!(
            "Failed to delete {failed} blobs from the blob store; the server log names each one."
        );
    }
}
