use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::tls::{client_tls_config, TlsError};
use crate::{TUNNEL_PATH, UPGRADE_PROTOCOL};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum wait for the server's response, which includes starting a cold builder.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Errors while opening a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("invalid server URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("failed to connect to the Drydock server at {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The server returned an error status, explained by `message`.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("tunnel protocol error with {address}: {reason}")]
    Protocol { address: String, reason: String },
}

/// Target of tunnels: the server's URL and, for `https`, its TLS settings.
#[derive(Clone)]
pub struct Endpoint {
    url: Url,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
}

impl Endpoint {
    /// Parses `url` (`http://` or `https://`); `ca_file` adds a private CA for TLS.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Endpoint, DialError> {
        let invalid = |reason: &str| DialError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.into(),
        };
        let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| invalid("it has no host"))?
            .to_owned();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| invalid("it has no port"))?;
        let tls = match parsed.scheme() {
            "http" => None,
            "https" => Some(TlsConnector::from(client_tls_config(ca_file)?)),
            other => return Err(invalid(&format!("scheme {other:?} is not http or https"))),
        };
        Ok(Endpoint {
            url: parsed,
            host,
            port,
            tls,
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// An open tunnel: a byte stream to the builder.
pub struct Tunnel {
    io: TokioIo<Upgraded>,
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens a tunnel to the builder of the token's workspace for `platform` (`linux/arm64`).
pub async fn dial(endpoint: &Endpoint, token: &str, platform: &str) -> Result<Tunnel, DialError> {
    let address = endpoint.address();
    let connect_error = |reason: String| DialError::Connect {
        address: address.clone(),
        reason,
    };
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
    )
    .await
    .map_err(|_| connect_error(format!("timed out after {}s", CONNECT_TIMEOUT.as_secs())))?
    .map_err(|e| connect_error(e.to_string()))?;
    // gRPC sends many small frames; Nagle's algorithm would delay them.
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match &endpoint.tls {
        None => Box::new(tcp),
        Some(connector) => {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| connect_error(format!("invalid TLS server name: {e}")))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| connect_error(format!("TLS handshake failed: {e}")))?;
            Box::new(tls)
        }
    };

    let protocol_error = |reason: String| DialError::Protocol {
        address: address.clone(),
        reason,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol_error(e.to_string()))?;
    tokio::spawn(async move {
        // The connection task ends when the upgraded stream is handed over or the peer closes.
        let _ = connection.with_upgrades().await;
    });

    let mut target = endpoint.url.clone();
    target.set_path(TUNNEL_PATH);
    target
        .query_pairs_mut()
        .clear()
        .append_pair("platform", platform);
    let path_and_query = match target.query() {
        Some(query) => format!("{}?{query}", target.path()),
        None => target.path().to_owned(),
    };
    let request = Request::get(path_and_query)
        .header(header::HOST, address.as_str())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .header(
            header::USER_AGENT,
            concat!("drydock-proxy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| protocol_error(e.to_string()))?;
    let response = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| protocol_error(format!("no answer within {}s", RESPONSE_TIMEOUT.as_secs())))?
        .map_err(|e| protocol_error(e.to_string()))?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| protocol_error(e.to_string()))?;
        return Ok(Tunnel {
            io: TokioIo::new(upgraded),
        });
    }

    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Err(DialError::Rejected {
        status,
        message: error_message(status, &body),
    })
}

/// Extracts the human message from a server error body: `{"error": {"message": ..}}`,
/// `{"message": ..}`, or plain text.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let message = value
            .pointer("/error/message")
            .or_else(|| value.get("message"));
        if let Some(text) = message.and_then(|m| m.as_str()) {
            return text.to_owned();
        }
    } else if let Ok(text) = std::str::from_utf8(body) {
        if !text.trim().is_empty() {
            return text.trim().to_owned();
        }
    }
    format!("the Drydock server answered {status}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_reads_server_json() {
        let body =
            br#"{"error":{"code":"unauthorized","message":"token expired at X: run \"again\""}}"#;
        assert_eq!(
            error_message(StatusCode::UNAUTHORIZED, body),
            "token expired at X: run \"again\""
        );
    }

    #[test]
    fn error_message_falls_back_to_status() {
        let message = error_message(StatusCode::BAD_GATEWAY, b"");
        assert!(message.contains("502"), "{message}");
    }

    #[test]
    fn endpoint_rejects_unknown_scheme() {
        let err = Endpoint::new("ftp://example.invalid", None)
            .err()
            .expect("ftp is rejected");
        assert!(err.to_string().contains("ftp"), "{err}");
    }
}
