//! The API server's TLS configuration.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use thiserror::Error;

use crate::pki::{self, Pki};

/// The certificates could not be turned into a TLS configuration.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("reading {what}: {source}")]
    Pem {
        what: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("cluster CA: {0}")]
    Roots(String),
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// TLS 1.2/1.3 with ring, ALPN `h2` and `http/1.1`, the serving certificate, and client
/// certificates that are verified against the cluster CA when presented but not required.
pub fn server_config(pki: &Pki) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = CertificateDer::from_pem_slice(pki.serving.cert.as_bytes()).map_err(|source| {
        TlsError::Pem {
            what: "serving.crt",
            source,
        }
    })?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving.key.as_bytes()).map_err(|source| {
        TlsError::Pem {
            what: "serving.key",
            source,
        }
    })?;
    let roots = pki::roots(&pki.ca_cert).map_err(TlsError::Roots)?;
    let provider = pki::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
