use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Errors while building a TLS client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read CA certificate file {path}: {source}")]
    ReadCa {
        path: String,
        source: std::io::Error,
    },
    #[error("CA certificate file {path} holds no PEM certificate; pass a PEM file with --ca-cert")]
    EmptyCa { path: String },
    #[error("invalid CA certificate in {path}: {source}")]
    InvalidCa { path: String, source: rustls::Error },
}

/// Builds a TLS client configuration that trusts the system's roots and, when given, the
/// private CA in `ca_file` (PEM).
pub fn client_tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped: a private CA may be all this install uses.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let display = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| TlsError::ReadCa {
            path: display.clone(),
            source,
        })?;
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|source| TlsError::ReadCa {
                path: display.clone(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::EmptyCa { path: display });
        }
        for cert in certs {
            roots.add(cert).map_err(|source| TlsError::InvalidCa {
                path: display.clone(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
