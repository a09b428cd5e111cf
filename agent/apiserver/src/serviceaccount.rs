//! Service-account tokens: signed JWTs like kube-apiserver's, issued through the
//! `serviceaccounts/<name>/token` subresource (`kubectl create token`, later the kubelet's
//! projected volumes) and accepted as bearer tokens.
//!
//! Tokens are ES256 JWTs (ECDSA P-256, the key kube-apiserver also accepts) signed with the
//! server's `service-account.key`, carrying kube-apiserver's claims: `iss`, `sub`
//! (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`, `iat`, `nbf`, `jti` and the
//! `kubernetes.io` claim naming the namespace, the service account and the object the token
//! is bound to (a Pod, Secret or Node, by name and uid). A token authenticates while its
//! signature, issuer, audience and lifetime check out **and** its service account (and bound
//! object) still exists with the same uid: deleting either revokes it, as in Kubernetes.
//!
//! JWTs are made and checked with `jsonwebtoken` 9 (its `ring` backend, which TLS already
//! brings), limited to ES256: a token naming another algorithm is refused before any key is
//! used.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The issuer (and default audience) of tokens, as kube-apiserver's default
/// `--service-account-issuer` in K3s.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Shortest lifetime a TokenRequest may ask for (Kubernetes' rule).
pub const MIN_EXPIRATION: Duration = Duration::from_secs(600);
/// Lifetime when the request names none.
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(3600);

/// Group of every service account.
pub const GROUP: &str = "system:serviceaccounts";

/// An object reference inside the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: Ref,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Ref>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

impl Claims {
    /// The user name the token authenticates as.
    pub fn user_name(&self) -> String {
        user_name(
            &self.kubernetes.namespace,
            &self.kubernetes.serviceaccount.name,
        )
    }
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Why a token was refused (logged, never sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("service-account token: {0}")]
    Invalid(String),
    #[error("service-account token: expired at {0} (unix seconds)")]
    Expired(u64),
    #[error("service-account token: not valid before {0} (unix seconds)")]
    NotYetValid(u64),
}

/// Signs and checks tokens with one key.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// `kid` header: the key's SHA-256, so verifiers can tell keys apart after a rotation.
    key_id: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer for a PKCS#8 PEM ECDSA P-256 private key (`service-account.key`).
    pub fn from_pem(pem: &str) -> Result<TokenSigner, String> {
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("not a PEM \"PRIVATE KEY\" (PKCS#8) block: {e}"))?;
        let der = der.secret_pkcs8_der();
        let rng = ring::rand::SystemRandom::new();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &rng,
        )
        .map_err(|e| format!("not an ECDSA P-256 key: {e}"))?;
        use ring::signature::KeyPair as _;
        let public = pair.public_key().as_ref().to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        let key_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
        Ok(TokenSigner {
            encoding: EncodingKey::from_ec_der(der),
            // ring verifies against the uncompressed point, which is what this takes.
            decoding: DecodingKey::from_ec_der(&public),
            key_id,
        })
    }

    /// A signed token with `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// The claims of a token this key signed for `audiences`, if it is valid at `now`.
    /// Whether its service account still exists is the caller's question.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[&str],
        now: SystemTime,
    ) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(format!("header: {e}")))?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not ES256",
                header.alg
            )));
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(audiences);
        // Lifetimes are checked below against `now` (the caller's clock).
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let now = unix_seconds(now);
        // Kubernetes allows a minute of clock skew.
        const LEEWAY: u64 = 60;
        if now > claims.exp.saturating_add(LEEWAY) {
            return Err(TokenError::Expired(claims.exp));
        }
        if now.saturating_add(LEEWAY) < claims.nbf {
            return Err(TokenError::NotYetValid(claims.nbf));
        }
        if claims.sub != claims.user_name() {
            return Err(TokenError::Invalid(
                "the subject does not name the service account".into(),
            ));
        }
        Ok(claims)
    }
}

/// Seconds since the epoch (0 before it).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether a bearer token looks like a JWT (three base64url parts) rather than a bootstrap
/// token.
pub fn is_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh P-256 key as PKCS#8 PEM.
    pub(crate) fn key_pem() -> String {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
    }

    fn claims(now: u64, ttl: u64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: user_name("demo", "bot"),
            aud: vec![ISSUER.into()],
            exp: now + ttl,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: KubernetesClaim {
                namespace: "demo".into(),
                serviceaccount: Ref {
                    name: "bot".into(),
                    uid: "u".into(),
                },
                pod: None,
                secret: None,
                node: None,
            },
        }
    }

    #[test]
    fn signed_tokens_verify_and_anything_else_does_not() {
        let signer = TokenSigner::from_pem(&key_pem()).unwrap();
        let now = SystemTime::now();
        let t = unix_seconds(now);
        let token = signer.sign(&claims(t, 600)).unwrap();
        assert!(is_jwt(&token));
        let got = signer.verify(&token, &[ISSUER], now).unwrap();
        assert_eq!(got.user_name(), "system:serviceaccount:demo:bot");

        // Another audience, another key, a changed payload, an expired or future token.
        assert!(signer.verify(&token, &["vault"], now).is_err());
        let other = TokenSigner::from_pem(&key_pem()).unwrap();
        assert!(matches!(
            other.verify(&token, &[ISSUER], now),
            Err(TokenError::Invalid(_))
        ));
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(t, 600);
        forged.kubernetes.serviceaccount.name = "admin".into();
        forged.sub = user_name("demo", "admin");
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&forged).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert!(signer.verify(&tampered, &[ISSUER], now).is_err());
        let later = now + Duration::from_secs(600 + 61);
        assert_eq!(
            signer.verify(&token, &[ISSUER], later),
            Err(TokenError::Expired(t + 600))
        );
        let early = signer
            .sign(&Claims {
                nbf: t + 3600,
                ..claims(t, 7200)
            })
            .unwrap();
        assert!(matches!(
            signer.verify(&early, &[ISSUER], now),
            Err(TokenError::NotYetValid(_))
        ));
        // "alg": "none" and HMAC tokens are refused before any key is tried.
        let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert!(signer.verify(&unsigned, &[ISSUER], now).is_err());
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(t, 600),
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        assert!(matches!(
            signer.verify(&hmac, &[ISSUER], now),
            Err(TokenError::Invalid(m)) if m.contains("not ES256")
        ));
        // A subject that is not the claim's service account.
        let mismatched = signer
            .sign(&Claims {
                sub: "admin".into(),
                ..claims(t, 600)
            })
            .unwrap();
        assert!(signer.verify(&mismatched, &[ISSUER], now).is_err());
    }

    #[test]
    fn keys_must_be_p256_pkcs8() {
        assert!(TokenSigner::from_pem("garbage").is_err());
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .unwrap()
            .serialize_pem();
        let e = TokenSigner::from_pem(&ed).unwrap_err();
        assert!(e.contains("not an ECDSA P-256 key"), "{e}");
    }
}
