//! OpenID Connect discovery: finding and downloading an issuer's JSON Web Key Set.

use std::net::IpAddr;
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::{Host, Url};

/// Time limit for each discovery or JWKS request, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Maximum size of a discovery document or JWKS in bytes, far above the few KiB that
/// providers typically serve (an estimate).
const MAX_DOCUMENT_LEN: usize = 512 * 1024;

/// Downloads the signing keys of `issuer` by OpenID discovery.
///
/// Reads `{issuer}/.well-known/openid-configuration`, checks that its `issuer` is exactly
/// `issuer`, and downloads its `jwks_uri`. Keys that fail to parse are skipped, so one key
/// of an unknown type does not hide the others. The error is the reason for the failure.
pub(crate) async fn fetch_issuer_keys(
    http: &reqwest::Client,
    issuer: &str,
) -> Result<Vec<Jwk>, String> {
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let discovery_url = check_fetch_url(&discovery_url)?;

    #[derive(Deserialize)]
    struct ProviderMetadata {
        issuer: String,
        jwks_uri: String,
    }
    let metadata: ProviderMetadata = get_json(http, discovery_url).await?;
    if metadata.issuer != issuer {
        return Err(format!(
            "the discovery document names issuer {:?}, not {issuer:?}; the trust rule's \
             issuer must be exactly the token's \"iss\" claim",
            metadata.issuer
        ));
    }

    #[derive(Deserialize)]
    struct KeySet {
        keys: Vec<serde_json::Value>,
    }
    let jwks_url = check_fetch_url(&metadata.jwks_uri)?;
    let set: KeySet = get_json(http, jwks_url).await?;

    let keys: Vec<Jwk> = set
        .keys
        .into_iter()
        .filter_map(|key| serde_json::from_value(key).ok())
        .collect();
    tracing::debug!(issuer, keys = keys.len(), "fetched OIDC issuer keys");
    Ok(keys)
}

/// Parses a URL that the server may fetch (an issuer, its discovery document or its keys) and
/// rejects any that is not https, except plain http to a loopback host (`localhost`,
/// 127.0.0.0/8, `::1`) for development. Link-local hosts, such as cloud metadata services,
/// are rejected whatever the scheme.
pub fn check_fetch_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "URL {raw:?} contains credentials, which are not accepted"
        ));
    }
    if is_link_local(url.host()) {
        return Err(format!(
            "URL {raw:?} names a link-local address (such as a cloud metadata service), \
             which is not accepted"
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(url.host()) => Ok(url),
        "http" => Err(format!(
            "URL {raw:?} uses plain http; use https (plain http is accepted only for \
             localhost, 127.0.0.0/8 and ::1)"
        )),
        other => Err(format!("URL {raw:?} has scheme {other:?}; use https")),
    }
}

fn is_link_local(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Ipv4(ip)) => ip.is_link_local(),
        Some(Host::Ipv6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        _ => false,
    }
}

fn is_loopback(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// GETs `url` and parses its body as JSON, within [`FETCH_TIMEOUT`] and [`MAX_DOCUMENT_LEN`].
async fn get_json<T: DeserializeOwned>(http: &reqwest::Client, url: Url) -> Result<T, String> {
    let url_text = url.to_string();
    let mut response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| describe_request_error(&url_text, &e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {url_text} returned HTTP {status}"));
    }

    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| describe_request_error(&url_text, &e))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_LEN {
            return Err(format!(
                "GET {url_text} returned more than {MAX_DOCUMENT_LEN} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url_text} returned invalid JSON: {e}"))
}

fn describe_request_error(url: &str, error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("GET {url} timed out after {} s", FETCH_TIMEOUT.as_secs())
    } else {
        // reqwest's own message only repeats the URL. Its sources contain the cause, such
        // as "Connection refused".
        let mut message = format!("GET {url} failed");
        let mut source = std::error::Error::source(error);
        if source.is_none() {
            message.push_str(&format!(": {error}"));
        }
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::check_fetch_url;

    #[test]
    fn https_urls_are_accepted() {
        assert!(check_fetch_url("https://agent.buildkite.com/.well-known/x").is_ok());
        assert!(check_fetch_url("https://10.0.0.1/jwks").is_ok());
    }

    #[test]
    fn plain_http_is_accepted_only_for_loopback() {
        for ok in [
            "http://127.0.0.1:8080/x",
            "http://127.3.4.5/x",
            "http://[::1]:1/x",
            "http://localhost/x",
            "http://LOCALHOST:9/x",
        ] {
            assert!(check_fetch_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/x",
            "http://10.0.0.1/x",
            "http://localhost.example.com/x",
            "http://[::2]/x",
            "http://0.0.0.0/x",
        ] {
            let err = check_fetch_url(bad).unwrap_err();
            assert!(err.contains("use https"), "{bad}: {err}");
        }
    }

    #[test]
    fn other_schemes_and_credentials_are_rejected() {
        assert!(check_fetch_url("file:///etc/passwd")
            .unwrap_err()
            .contains("scheme \"file\""));
        assert!(check_fetch_url("https://user:pw@issuer.test/")
            .unwrap_err()
            .contains("credentials"));
        assert!(check_fetch_url("not a url")
            .unwrap_err()
            .contains("invalid URL"));
    }

    #[test]
    fn link_local_hosts_are_rejected() {
        for bad in [
            "https://169.254.169.254/",
            "http://169.254.169.254/",
            "https://[fe80::1]/",
        ] {
            let err = check_fetch_url(bad).unwrap_err();
            assert!(err.contains("link-local"), "{bad}: {err}");
        }
    }
}
