use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drydock_builder::Platform;
use drydock_identity::Principal;
use drydock_tunnel::{splice, UPGRADE_PROTOCOL};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;
use tracing::Instrument;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct TunnelQuery {
    platform: String,
}

/// Opens a tunnel from a client's proxy to its workspace's builder for one platform. The
/// builder is started (or its lease taken) before the `101` response, so a failure to start
/// reaches the client as an HTTP error with a message rather than a closed stream.
pub async fn open_tunnel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<TunnelQuery>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let workspace = match state.principal(&headers).await? {
        Principal::Workspace { name, .. } => name,
        Principal::Operator => {
            return Err(ApiError::forbidden(
                "builders belong to workspaces: use a workspace token from \
                 `drydock auth exchange-oidc-token`, not the operator token",
            ))
        }
    };
    let wants_tunnel = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !wants_tunnel {
        return Err(ApiError::bad_request(format!(
            "this endpoint needs `Upgrade: {UPGRADE_PROTOCOL}`; it is used by `drydock docker buildx setup`"
        )));
    }
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the Drydock server is shutting down; run the build again once it is back",
        ));
    }
    let platform: Platform = query
        .platform
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))?;

    let lease = state
        .builders
        .acquire(&workspace, platform)
        .await
        .map_err(|err| {
            tracing::error!(%workspace, %platform, error = %err, "failed to start builder");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "builder_unavailable",
                format!("failed to start the {platform} builder for workspace {workspace}: {err}"),
            )
        })?;

    let on_upgrade = hyper::upgrade::on(&mut request);
    let span = tracing::info_span!("tunnel", %workspace, %platform);
    state.tunnels.spawn(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::warn!(error = %err, "tunnel upgrade failed");
                    return;
                }
            };
            let builder = match UnixStream::connect(lease.socket_path()).await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::error!(socket = %lease.socket_path().display(), error = %err, "failed to connect to builder socket");
                    return;
                }
            };
            tracing::debug!("tunnel open");
            match splice(TokioIo::new(upgraded), builder).await {
                Ok(stats) => tracing::debug!(
                    to_builder = stats.to_builder,
                    from_builder = stats.from_builder,
                    "tunnel closed"
                ),
                Err(err) => tracing::debug!(error = %err, "tunnel ended with an error"),
            }
            drop(lease);
        }
        .instrument(span),
    );

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    Ok(response)
}
