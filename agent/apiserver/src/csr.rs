//! Certificate signing requests (PKCS #10) as `CertificateSigningRequest` objects carry them in
//! `spec.request`: parsed with RustCrypto's DER types, the signature checked with ring (proof
//! that the requester holds the private key), and reduced to what a signer needs.
//!
//! Only the subject (common name and organizations) and the public key are taken: Kubernetes'
//! client signers issue exactly those, and a certificate Cairn signs carries nothing else the
//! request asked for (no subject alternative names).

use base64::Engine as _;
use const_oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};

/// The public key types a request may carry (those ring verifies and rcgen signs for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

/// A verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub key_type: KeyType,
    /// The subject public key's bits (an uncompressed EC point, an Ed25519 key, or an
    /// `RSAPublicKey`).
    pub public_key: Vec<u8>,
}

impl Request {
    /// Lower-case hex SHA-256 of the public key: the requester's identity.
    pub fn key_id(&self) -> String {
        hex_sha256(&self.public_key)
    }
}

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// Parses and verifies a PEM `CERTIFICATE REQUEST` (what `spec.request` holds, base64-decoded).
pub fn parse_pem(pem: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "the request is not PEM text".to_owned())?;
    let begin = "-----BEGIN CERTIFICATE REQUEST-----";
    let end = "-----END CERTIFICATE REQUEST-----";
    let body = text
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(body, _)| body)
        .ok_or_else(|| format!("the request has no {begin} block"))?;
    let b64: String = body.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the request's PEM block is not base64: {e}"))?;
    parse_der(&der)
}

/// Parses and verifies a DER certification request.
pub fn parse_der(der: &[u8]) -> Result<Request, String> {
    let req = x509_cert::request::CertReq::from_der(der)
        .map_err(|e| format!("not a PKCS #10 certificate request: {e}"))?;
    let spki = &req.info.public_key;
    let public_key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the public key is not a whole number of bytes")?
        .to_vec();
    let key_type = match spki.algorithm.oid {
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(P256) => KeyType::EcdsaP256,
                Some(P384) => KeyType::EcdsaP384,
                _ => return Err("only P-256 and P-384 elliptic-curve keys are signed".into()),
            }
        }
        ED25519 => KeyType::Ed25519,
        RSA => KeyType::Rsa,
        other => return Err(format!("public key algorithm {other} is not supported")),
    };
    let algorithm: &'static dyn ring::signature::VerificationAlgorithm =
        match (key_type, req.algorithm.oid) {
            (KeyType::EcdsaP256, ECDSA_SHA256) => &ring::signature::ECDSA_P256_SHA256_ASN1,
            (KeyType::EcdsaP256, ECDSA_SHA384) => &ring::signature::ECDSA_P256_SHA384_ASN1,
            (KeyType::EcdsaP384, ECDSA_SHA384) => &ring::signature::ECDSA_P384_SHA384_ASN1,
            (KeyType::EcdsaP384, ECDSA_SHA256) => &ring::signature::ECDSA_P384_SHA256_ASN1,
            (KeyType::Ed25519, ED25519) => &ring::signature::ED25519,
            (KeyType::Rsa, RSA_SHA256) => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            (_, other) => return Err(format!("signature algorithm {other} is not supported")),
        };
    let signed = req
        .info
        .to_der()
        .map_err(|e| format!("re-encoding the request: {e}"))?;
    let signature = req
        .signature
        .as_bytes()
        .ok_or("the signature is not a whole number of bytes")?;
    ring::signature::UnparsedPublicKey::new(algorithm, &public_key)
        .verify(&signed, signature)
        .map_err(|_| "the request's signature does not match its public key".to_owned())?;
    let (common_name, organizations) = crate::auth::subject_names(&req.info.subject);
    Ok(Request {
        common_name,
        organizations,
        key_type,
        public_key,
    })
}

/// Hex SHA-256 (ring's digest, which TLS already brings).
fn hex_sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, org: &str, alg: &'static rcgen::SignatureAlgorithm) -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, cn);
        dn.push(rcgen::DnType::OrganizationName, org);
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key).unwrap();
        (csr.pem().unwrap(), key.public_key_raw().to_vec())
    }

    #[test]
    fn subject_and_key_of_verified_requests() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (pem, key) = request("system:node:edge-1", "system:nodes", alg);
            let r = parse_pem(pem.as_bytes()).unwrap();
            assert_eq!(r.common_name.as_deref(), Some("system:node:edge-1"));
            assert_eq!(r.organizations, ["system:nodes"]);
            assert_eq!(r.public_key, key);
            assert_eq!(r.key_id().len(), 64);
        }
    }

    #[test]
    fn tampered_and_malformed_requests_are_refused() {
        let (pem, _) = request(
            "system:node:a",
            "system:nodes",
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        // The common name's last letter, inside the signed part: "a" -> "b".
        let cn = b"system:node:a";
        let at = der.windows(cn.len()).position(|w| w == cn).unwrap() + cn.len() - 1;
        der[at] = b'b';
        let e = parse_der(&der).unwrap_err();
        assert!(e.contains("signature does not match"), "{e}");
        let e = parse_pem(b"hello").unwrap_err();
        assert!(
            e.contains("no -----BEGIN CERTIFICATE REQUEST----- block"),
            "{e}"
        );
        let e = parse_der(&der[..der.len() / 2]).unwrap_err();
        assert!(e.contains("not a PKCS #10"), "{e}");
    }
}
