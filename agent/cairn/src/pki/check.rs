//! Deciding whether a stored certificate can be kept: it must match its key, chain to the CA,
//! cover every name, and stay valid for the renewal window. Verified with rustls' own
//! verifiers, so "kept" means "a TLS peer trusting the CA accepts it".

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::issue::PemPair;
use super::ServingNames;

/// Why a stored certificate is replaced; shown in the start-up log.
pub type Reason = String;

/// The crypto provider cairn uses everywhere (ring; no aws-lc).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Roots holding every certificate of `ca_pem`: the cluster CA, or a CA bundle (the
/// system's, for bundle URLs). A single certificate must be valid; in a bundle, certificates
/// webpki cannot use are skipped, as long as one remains.
pub fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, Reason> {
    let certs = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca: {e}"))?;
    let mut roots = RootCertStore::empty();
    match certs.len() {
        0 => return Err("ca: no certificate in the PEM".into()),
        1 => {
            let ca = certs.into_iter().next().expect("one");
            roots.add(ca).map_err(|e| format!("ca: {e}"))?;
        }
        _ => {
            roots.add_parsable_certificates(certs);
            if roots.is_empty() {
                return Err("ca: none of the certificates is usable".into());
            }
        }
    }
    Ok(Arc::new(roots))
}

/// The certificate if it matches its key.
fn matching_cert(pair: &PemPair) -> Result<CertificateDer<'static>, Reason> {
    let cert = CertificateDer::from_pem_slice(pair.cert.as_bytes()).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).map_err(|e| e.to_string())?;
    CertifiedKey::from_der(vec![cert.clone()], key, &provider()).map_err(|e| e.to_string())?;
    Ok(cert)
}

fn at(now: SystemTime, ahead: Duration) -> UnixTime {
    UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default() + ahead)
}

/// Ok if the serving certificate is usable for every name until `now + ahead`.
pub fn serving_ok(
    ca_pem: &str,
    pair: &PemPair,
    names: &ServingNames,
    now: SystemTime,
    ahead: Duration,
) -> Result<(), Reason> {
    let cert = matching_cert(pair)?;
    let parsed = ParsedCertificate::try_from(&cert).map_err(|e| e.to_string())?;
    // The chain once (a signature check, the costly part on a slow CPU), then each name
    // against the certificate: what a TLS client does for the one name it asked for.
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &*roots(ca_pem)?,
        &[],
        at(now, ahead),
        provider().signature_verification_algorithms.all,
    )
    .map_err(|e| e.to_string())?;
    for name in names.all() {
        let server_name = ServerName::try_from(name.as_str()).map_err(|e| e.to_string())?;
        verify_server_name(&parsed, &server_name).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// Ok if the client certificate is accepted by a verifier trusting the CA until `now + ahead`.
pub fn client_ok(
    ca_pem: &str,
    pair: &PemPair,
    now: SystemTime,
    ahead: Duration,
) -> Result<(), Reason> {
    let cert = matching_cert(pair)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(&cert, &[], at(now, ahead))
        .map_err(|e| e.to_string())?;
    Ok(())
}
