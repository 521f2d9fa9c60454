//! A small client for the server's `/v1` API.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub struct ApiClient {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(server: &str, ca_cert: Option<&Path>, token: Option<String>) -> Result<ApiClient> {
        let base = match url::Url::parse(server) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
            _ => {
                let hint = if server.is_empty() || server.contains("://") {
                    String::new()
                } else {
                    format!(" (for this server, perhaps http://{server})")
                };
                bail!("invalid server URL {server:?}: pass a URL such as https://drydock.example.com{hint}")
            }
        };
        if base.path() != "/" {
            bail!(
                "invalid server URL {server:?}: it must not have a path; pass {}",
                &base[..url::Position::BeforePath]
            );
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("drydock/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("failed to read CA certificate {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("invalid PEM CA certificate {}", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().context("failed to build the HTTP client")?;
        Ok(ApiClient { http, base, token })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T> {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        let _: Value = self.send(Method::DELETE, path, None).await?;
        Ok(())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let url = self
            .base
            .join(path)
            .context("failed to form the request URL")?;
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("failed to reach the Drydock server at {}", self.base))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .context("failed to read the server's response")?;
        if !status.is_success() {
            bail!("{}", error_message(status, &bytes, &url));
        }
        if bytes.is_empty() || status == StatusCode::NO_CONTENT {
            return serde_json::from_value(Value::Null)
                .context("the server sent an empty response");
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("invalid response from {method} {}", url.path()))
    }
}

/// Returns the server's JSON error message, or the status and any plain-text body for other responses
/// (a request rejected before Drydock's handlers, or a URL that is not a Drydock server).
fn error_message(status: StatusCode, body: &[u8], url: &url::Url) -> String {
    let json_message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| {
            value
                .pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
    if let Some(message) = json_message {
        return message;
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(300).collect();
    if text.is_empty() {
        format!("{url} returned {status}; is this a Drydock server?")
    } else {
        format!("{url} returned {status}: {text}")
    }
}
