//! Serves the registry alone on loopback, for trying clients and the OCI conformance suite
//! by hand.
//!
//! `cargo run -p drydock-registry --example serve -- 127.0.0.1:5000 /tmp/registry-data`
//! creates the workspace `acme` in a database under the data folder, issues a workspace
//! token and an operator token, prints both, and serves until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;

use drydock_registry::{Registry, RegistryConfig};
use drydock_store::{Db, TokenKind};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "drydock_registry=debug".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let usage = "usage: serve ADDRESS DATA_DIR (for example 127.0.0.1:5000 /tmp/registry-data)";
    let address: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let data_dir = PathBuf::from(args.next().expect(usage));
    assert!(
        address.ip().is_loopback(),
        "serve only on a loopback address, not {address}"
    );

    std::fs::create_dir_all(&data_dir).expect("failed to create the data folder");
    let db = Db::open(&data_dir.join("registry.db"))
        .await
        .expect("failed to open the database");
    if db
        .workspace_by_name("acme")
        .await
        .expect("failed to query workspaces")
        .is_none()
    {
        db.create_workspace("acme")
            .await
            .expect("failed to create workspace acme");
    }
    let workspace_token = db
        .issue_token(TokenKind::Workspace, Some("acme"), "serve-example", None)
        .await
        .expect("failed to issue a workspace token");
    let operator_token = db
        .issue_token(TokenKind::Operator, None, "serve-example", None)
        .await
        .expect("failed to issue an operator token");
    println!("workspace token (acme): {workspace_token}");
    println!("operator token: {operator_token}");

    let config = RegistryConfig {
        data_dir,
        public_url: format!("http://{address}")
            .parse()
            .expect("address forms a URL"),
    };
    let registry = Registry::new(db, config)
        .await
        .expect("failed to start the registry");
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("failed to bind");
    println!("serving on http://{address}");
    axum::serve(listener, registry.router())
        .await
        .expect("server failed");
}
