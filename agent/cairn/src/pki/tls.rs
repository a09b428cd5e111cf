//! The API server's TLS configuration.

use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
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
    server_config_with(pki).map(|(config, _)| config)
}

/// [`server_config`], and the handle that replaces its serving certificate while it is in
/// use (renewal, `cairn certificate rotate`). The CA is fixed for the life of the config.
pub fn server_config_with(pki: &Pki) -> Result<(Arc<ServerConfig>, Arc<ServingCert>), TlsError> {
    let serving = Arc::new(ServingCert {
        current: RwLock::new(certified_key(pki)?),
    });
    let roots = pki::roots(&pki.ca_cert).map_err(TlsError::Roots)?;
    let provider = pki::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), serving))
}

/// The serving certificate new handshakes get; [`ServingCert::replace`] swaps it.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServingCert {
    /// Serve `pki`'s serving certificate from the next handshake on.
    pub fn replace(&self, pki: &Pki) -> Result<(), TlsError> {
        let key = certified_key(pki)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn certified_key(pki: &Pki) -> Result<Arc<CertifiedKey>, TlsError> {
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
    Ok(Arc::new(CertifiedKey::from_der(
        vec![cert],
        key,
        &pki::provider(),
    )?))
}
