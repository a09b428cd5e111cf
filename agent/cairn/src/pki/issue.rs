//! Generating keys and certificates (rcgen, ECDSA P-256).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use super::ServingNames;

const DAY: u64 = 24 * 60 * 60;
/// Cluster CA lifetime.
pub const CA_DAYS: u64 = 3650;
/// Serving and client certificate lifetime.
pub const LEAF_DAYS: u64 = 365;
/// Certificates start an hour early to tolerate clocks that are a little behind.
const BACKDATE: Duration = Duration::from_secs(60 * 60);
/// Edge devices often boot without a real-time clock; lifetimes are counted from no earlier
/// than this (2025-01-01) so a certificate made at "1970" still works once the clock is set.
pub const CLOCK_FLOOR: Duration = Duration::from_secs(1_735_689_600);

/// A key and certificate in PEM.
#[derive(Clone)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

/// The cluster CA, ready to sign.
pub struct Ca {
    pub cert_pem: String,
    key: KeyPair,
    /// The CA certificate as rcgen needs it for signing, rebuilt from the key.
    issuer: rcgen::Certificate,
}

fn validity(params: &mut CertificateParams, now: SystemTime, days: u64) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let start = since_epoch.saturating_sub(BACKDATE);
    let end = since_epoch.max(CLOCK_FLOOR) + Duration::from_secs(days * DAY);
    params.not_before = to_datetime(start);
    params.not_after = to_datetime(end);
}

fn to_datetime(d: Duration) -> OffsetDateTime {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn new_key() -> Result<KeyPair, rcgen::Error> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
}

/// The CA's parameters are a function of its key (the subject names the key's fingerprint),
/// so the issuer can be rebuilt from `ca.key` alone and `ca.crt` can be recreated if lost.
fn ca_params(key: &KeyPair, now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("cairn-ca@{:016x}", fnv1a(key.public_key_raw())),
    );
    dn.push(DnType::OrganizationName, "cairn");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now, CA_DAYS);
    params
}

/// FNV-1a, enough to tell CA names apart (not a security property).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Ca {
    /// A new CA with a new key.
    pub fn generate(now: SystemTime) -> Result<(Ca, String), rcgen::Error> {
        let key = new_key()?;
        let key_pem = key.serialize_pem();
        let issuer = ca_params(&key, now).self_signed(&key)?;
        Ok((
            Ca {
                cert_pem: issuer.pem(),
                key,
                issuer,
            },
            key_pem,
        ))
    }

    /// The CA from its stored key. `cert_pem` is the stored certificate, or `None` to make a
    /// new one for the same key (issued certificates stay valid: same subject, same key).
    pub fn load(
        key_pem: &str,
        cert_pem: Option<String>,
        now: SystemTime,
    ) -> Result<Ca, rcgen::Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = ca_params(&key, now).self_signed(&key)?;
        let cert_pem = cert_pem.unwrap_or_else(|| issuer.pem());
        Ok(Ca {
            cert_pem,
            key,
            issuer,
        })
    }

    /// A serving certificate for the API server, valid for `names`.
    pub fn issue_serving(
        &self,
        names: &ServingNames,
        now: SystemTime,
    ) -> Result<PemPair, rcgen::Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "cairn-apiserver");
        params.distinguished_name = dn;
        for name in &names.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into()?));
        }
        params
            .subject_alt_names
            .extend(names.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, now)
    }

    /// A client certificate: `cn` is the Kubernetes user, `org` its group.
    pub fn issue_client(
        &self,
        cn: &str,
        org: &str,
        now: SystemTime,
    ) -> Result<PemPair, rcgen::Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(DnType::OrganizationName, org);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, now)
    }

    /// A client certificate for a verified signing request: its subject (common name and
    /// organizations) and public key, valid for `lifetime` (from `now`, backdated an hour).
    pub fn issue_for_request(
        &self,
        request: &cairn_apiserver::csr::Request,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<String, rcgen::Error> {
        use cairn_apiserver::csr::KeyType;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &request.common_name {
            dn.push(DnType::CommonName, cn.as_str());
        }
        for org in &request.organizations {
            dn.push(DnType::OrganizationName, org.as_str());
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        params.not_before = to_datetime(since_epoch.saturating_sub(BACKDATE));
        params.not_after = to_datetime(since_epoch.max(CLOCK_FLOOR) + lifetime);
        let key = RequestKey {
            bits: request.public_key.clone(),
            alg: match request.key_type {
                KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
                KeyType::Ed25519 => &rcgen::PKCS_ED25519,
                KeyType::Rsa => &rcgen::PKCS_RSA_SHA256,
            },
        };
        Ok(params.signed_by(&key, &self.issuer, &self.key)?.pem())
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        now: SystemTime,
    ) -> Result<PemPair, rcgen::Error> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, LEAF_DAYS);
        let key = new_key()?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(PemPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// A requester's public key as rcgen signs for it.
struct RequestKey {
    bits: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for RequestKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }
    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// The CSR signer of a server: the cluster CA, loaded from its directory when it signs (so a
/// rotated CA is used at once).
pub struct CaSigner {
    pub dir: std::path::PathBuf,
}

impl CaSigner {
    /// The API server's client certificate for kubelets (`kube-apiserver-kubelet-client`,
    /// group `system:masters`), issued fresh at each start and kept in memory.
    pub fn kubelet_client(&self) -> Result<PemPair, String> {
        let now = SystemTime::now();
        self.load(now)?
            .issue_client("kube-apiserver-kubelet-client", "system:masters", now)
            .map_err(|e| format!("issuing the kubelet-client certificate: {e}"))
    }

    /// The cluster CA as its directory holds it now.
    fn load(&self, now: SystemTime) -> Result<Ca, String> {
        let read = |name: &str| {
            std::fs::read_to_string(self.dir.join(name))
                .map_err(|e| format!("{}: {e}", self.dir.join(name).display()))
        };
        Ca::load(&read("ca.key")?, Some(read("ca.crt")?), now)
            .map_err(|e| format!("the cluster CA: {e}"))
    }
}

impl cairn_controllers::csr::Signer for CaSigner {
    fn sign_client(
        &self,
        request: &cairn_apiserver::csr::Request,
        lifetime: Duration,
    ) -> Result<String, String> {
        let now = SystemTime::now();
        self.load(now)?
            .issue_for_request(request, lifetime, now)
            .map_err(|e| format!("signing: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_tolerates_clocks_without_rtc() {
        let mut p = CertificateParams::default();
        validity(&mut p, UNIX_EPOCH + Duration::from_secs(30), 365);
        assert_eq!(p.not_before.unix_timestamp(), 0);
        assert_eq!(p.not_after.unix_timestamp(), 1_735_689_600 + 365 * 86_400);
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        validity(&mut p, now, 10);
        assert_eq!(p.not_before.unix_timestamp(), 1_800_000_000 - 3600);
        assert_eq!(p.not_after.unix_timestamp(), 1_800_000_000 + 10 * 86_400);
    }

    #[test]
    fn ca_subject_depends_on_key_only() {
        let (ca, key_pem) = Ca::generate(SystemTime::now()).unwrap();
        let again = Ca::load(&key_pem, None, SystemTime::now()).unwrap();
        assert_eq!(
            ca.issuer.params().distinguished_name,
            again.issuer.params().distinguished_name
        );
        let other = Ca::generate(SystemTime::now()).unwrap().0;
        assert_ne!(
            ca.issuer.params().distinguished_name,
            other.issuer.params().distinguished_name
        );
    }
}
