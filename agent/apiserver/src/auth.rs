//! Authentication: who is making a request.
//!
//! Two authenticators, tried in Kubernetes' order (the first that succeeds wins):
//! 1. **Client certificates** signed by the cluster CA. The TLS layer has already verified the
//!    chain; [`user_from_certificate`] reads the identity from the subject like
//!    kube-apiserver: `CN` is the user name, each `O` a group.
//! 2. **Bearer tokens** of the bootstrap-token form `<id>.<secret>` (6 and 16 characters of
//!    `[a-z0-9]`), stored as Secrets `kube-system/bootstrap-token-<id>` of type
//!    `bootstrap.kubernetes.io/token`, exactly as kubeadm stores them, so `kubectl get secrets
//!    -n kube-system` shows them and deleting one revokes it. The user is
//!    `system:bootstrap:<id>` in `system:bootstrappers` and the token's `auth-extra-groups`.
//!
//! 3. **Service-account tokens** (JWTs, [`crate::serviceaccount`]) signed with the server's
//!    key for the API's audience, whose service account (and bound object) still exists with
//!    the uid in the token. The user is `system:serviceaccount:<ns>:<name>` in
//!    `system:serviceaccounts` and `system:serviceaccounts:<ns>`.
//!
//! Every authenticated user also gets `system:authenticated`. A request with neither is
//! anonymous and may only read health and version endpoints.
//!
//! What a user may do is [`crate::authz`]'s decision. Limitations: legacy token Secrets (`kubernetes.io/service-account-token`) are not filled in
//! or accepted.

use std::time::SystemTime;

use base64::Engine as _;
use cairn_store::Store;
use serde_json::Value;

use crate::serviceaccount::TokenSigner;

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// Group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group of users authenticated with a bootstrap token.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The extra group of join tokens (`cairn token create`, and the server token).
pub const AGENT_GROUP: &str = "system:bootstrappers:cairn:agents";
/// Who the server join token (`server:<secret>`) authenticates as.
pub const SERVER_TOKEN_USER: &str = "system:bootstrap:server";
/// Secret type of bootstrap tokens.
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Bootstrap-token Secrets live here, named `bootstrap-token-<id>`.
pub const BOOTSTRAP_TOKEN_NAMESPACE: &str = "kube-system";

impl User {
    /// A user in `groups` and `system:authenticated`.
    pub fn new(name: String, mut groups: Vec<String>) -> User {
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_owned());
        }
        User { name, groups }
    }
}

/// Why credentials were refused; logged by the server (never sent to the client, never
/// containing the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("client certificate: {0}")]
    Certificate(String),
    #[error("bearer token is not of the form <6-char id>.<16-char secret>")]
    MalformedToken,
    #[error("the server token's secret is wrong")]
    ServerToken,
    #[error("bootstrap token {0}: no such token")]
    UnknownToken(String),
    #[error("bootstrap token {0}: wrong secret")]
    WrongSecret(String),
    #[error("bootstrap token {id}: expired at {at}")]
    Expired { id: String, at: String },
    #[error("bootstrap token {0}: not usable for authentication")]
    NotForAuthentication(String),
    #[error("bootstrap token {0}: {1}")]
    Invalid(String, String),
    #[error("looking up the token: {0}")]
    Store(String),
    #[error("{0}")]
    ServiceAccount(#[from] crate::serviceaccount::TokenError),
    #[error("service-account token of {user}: {reason}")]
    Revoked { user: String, reason: String },
}

/// The identity in a client certificate (DER) already verified against the cluster CA.
pub fn user_from_certificate(der: &[u8]) -> Result<User, AuthError> {
    use x509_cert::der::Decode;

    let cert =
        x509_cert::Certificate::from_der(der).map_err(|e| AuthError::Certificate(e.to_string()))?;
    match subject_names(&cert.tbs_certificate.subject) {
        (Some(name), groups) if !name.is_empty() => Ok(User::new(name, groups)),
        _ => Err(AuthError::Certificate(
            "the subject has no common name".into(),
        )),
    }
}

/// The common name and organizations of an X.509 subject (UTF-8 or printable strings).
pub(crate) fn subject_names(subject: &x509_cert::name::Name) -> (Option<String>, Vec<String>) {
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};

    let text = |value: &x509_cert::der::Any| -> Option<String> {
        if let Ok(s) = value.decode_as::<Utf8StringRef<'_>>() {
            return Some(s.as_str().to_owned());
        }
        value
            .decode_as::<PrintableStringRef<'_>>()
            .ok()
            .map(|s| s.as_str().to_owned())
    };
    let mut name = None;
    let mut groups = Vec::new();
    for rdn in subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid == const_oid::db::rfc4519::CN {
                name = text(&atv.value);
            } else if atv.oid == const_oid::db::rfc4519::O {
                groups.extend(text(&atv.value));
            }
        }
    }
    (name, groups)
}

/// A parsed bootstrap token `<id>.<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl BootstrapToken {
    /// Parses `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`), alone or in the join form
    /// `K10<ca-sha256>::<id>.<secret>` (the CA hash is for the client to check, not us).
    pub fn parse(token: &str) -> Result<BootstrapToken, AuthError> {
        let token = match token.split_once("::") {
            Some((prefix, rest)) if prefix.starts_with("K10") => rest,
            _ => token,
        };
        let (id, secret) = token.split_once('.').ok_or(AuthError::MalformedToken)?;
        let ok = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !ok(id, 6) || !ok(secret, 16) {
            return Err(AuthError::MalformedToken);
        }
        Ok(BootstrapToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The name of the Secret holding this token.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

/// Authenticates bearer tokens against the store (and, for service-account tokens, the
/// signing key).
#[derive(Clone)]
pub struct TokenAuthenticator {
    store: std::sync::Arc<dyn Store>,
    signer: Option<std::sync::Arc<TokenSigner>>,
    server_token: Option<std::sync::Arc<str>>,
}

impl TokenAuthenticator {
    pub fn new(
        store: std::sync::Arc<dyn Store>,
        signer: Option<std::sync::Arc<TokenSigner>>,
    ) -> TokenAuthenticator {
        TokenAuthenticator {
            store,
            signer,
            server_token: None,
        }
    }

    /// Also accepts the server join token's credential `server:<secret>`, as the bootstrapper
    /// [`SERVER_TOKEN_USER`].
    pub fn with_server_token(mut self, credential: Option<std::sync::Arc<str>>) -> Self {
        self.server_token = credential;
        self
    }

    /// The user a bearer token stands for at time `now`.
    pub fn authenticate(&self, token: &str, now: SystemTime) -> Result<User, AuthError> {
        if crate::serviceaccount::is_jwt(token) {
            return self.service_account(token, now);
        }
        if token.starts_with("server:") {
            return match &self.server_token {
                Some(want) if constant_time_eq(want.as_bytes(), token.as_bytes()) => Ok(User::new(
                    SERVER_TOKEN_USER.to_owned(),
                    vec![BOOTSTRAPPERS.to_owned(), AGENT_GROUP.to_owned()],
                )),
                _ => Err(AuthError::ServerToken),
            };
        }
        let token = BootstrapToken::parse(token)?;
        let secrets = crate::resources::find("", "v1", "secrets").expect("secrets are served");
        let key = secrets.key(Some(BOOTSTRAP_TOKEN_NAMESPACE), &token.secret_name());
        let kv = self
            .store
            .get(&key)
            .map_err(|e| AuthError::Store(e.to_string()))?
            .ok_or_else(|| AuthError::UnknownToken(token.id.clone()))?;
        let secret: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| AuthError::Invalid(token.id.clone(), e.to_string()))?;
        check_bootstrap_secret(&token, &secret, now)
    }
}

impl TokenAuthenticator {
    /// A service-account token: signature, issuer, audience and lifetime, then the service
    /// account and the bound object must still exist with the uids the token names.
    fn service_account(&self, token: &str, now: SystemTime) -> Result<User, AuthError> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            AuthError::ServiceAccount(crate::serviceaccount::TokenError::Invalid(
                "this server has no service-account key".into(),
            ))
        })?;
        let claims = signer.verify(token, &[crate::serviceaccount::ISSUER], now)?;
        let user = claims.user_name();
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        let mut bound = vec![("serviceaccounts", Some(ns), &k.serviceaccount)];
        bound.extend(k.pod.as_ref().map(|r| ("pods", Some(ns), r)));
        bound.extend(k.secret.as_ref().map(|r| ("secrets", Some(ns), r)));
        bound.extend(k.node.as_ref().map(|r| ("nodes", None, r)));
        for (plural, namespace, reference) in bound {
            let resource = crate::resources::find("", "v1", plural).expect("core resource");
            let stored = self
                .store
                .get(&resource.key(namespace, &reference.name))
                .map_err(|e| AuthError::Store(e.to_string()))?;
            let uid = stored
                .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned));
            if uid.as_deref() != Some(reference.uid.as_str()) {
                return Err(AuthError::Revoked {
                    user,
                    reason: format!(
                        "{plural} {:?} (uid {}) no longer exists",
                        reference.name, reference.uid
                    ),
                });
            }
        }
        let groups = vec![
            crate::serviceaccount::GROUP.to_owned(),
            format!("{}:{ns}", crate::serviceaccount::GROUP),
        ];
        Ok(User::new(user, groups))
    }
}

/// Checks a stored bootstrap-token Secret against the presented token.
fn check_bootstrap_secret(
    token: &BootstrapToken,
    secret: &Value,
    now: SystemTime,
) -> Result<User, AuthError> {
    let id = || token.id.clone();
    if secret["type"] != BOOTSTRAP_TOKEN_TYPE {
        return Err(AuthError::Invalid(
            id(),
            format!("the Secret is not of type {BOOTSTRAP_TOKEN_TYPE}"),
        ));
    }
    let field = |name: &str| -> Result<Option<String>, AuthError> {
        let Some(encoded) = secret["data"][name].as_str() else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| AuthError::Invalid(id(), format!("data.{name}: {e}")))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| AuthError::Invalid(id(), format!("data.{name} is not UTF-8")))
    };
    if field("token-id")?.as_deref() != Some(token.id.as_str()) {
        return Err(AuthError::Invalid(
            id(),
            "data.token-id does not match the name".into(),
        ));
    }
    let stored = field("token-secret")?.unwrap_or_default();
    if !constant_time_eq(stored.as_bytes(), token.secret.as_bytes()) {
        return Err(AuthError::WrongSecret(id()));
    }
    if field("usage-bootstrap-authentication")?.as_deref() != Some("true") {
        return Err(AuthError::NotForAuthentication(id()));
    }
    if let Some(at) = field("expiration")? {
        let when: jiff::Timestamp = at
            .parse()
            .map_err(|e| AuthError::Invalid(id(), format!("data.expiration: {e}")))?;
        let now = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::MAX);
        if when <= now {
            return Err(AuthError::Expired { id: id(), at });
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_owned()];
    if let Some(extra) = field("auth-extra-groups")? {
        groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(User::new(format!("system:bootstrap:{}", token.id), groups))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(id: &str, secret: &str, expiration: Option<&str>) -> Value {
        let mut data = json!({
            "token-id": b64(id),
            "token-secret": b64(secret),
            "usage-bootstrap-authentication": b64("true"),
            "auth-extra-groups": b64("system:bootstrappers:cairn:agents"),
        });
        if let Some(at) = expiration {
            data["expiration"] = Value::String(b64(at));
        }
        json!({"type": BOOTSTRAP_TOKEN_TYPE, "data": data})
    }

    fn at(rfc3339: &str) -> SystemTime {
        let t: jiff::Timestamp = rfc3339.parse().unwrap();
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_second() as u64)
    }

    #[test]
    fn token_form() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        assert_eq!(
            BootstrapToken::parse("K10ab12::abcdef.0123456789abcdef"),
            Ok(t.clone())
        );
        assert_eq!(t.to_string(), "abcdef.0123456789abcdef");
        for bad in [
            "",
            "abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdef0",
            "K10abc::server:xyz",
        ] {
            assert_eq!(
                BootstrapToken::parse(bad),
                Err(AuthError::MalformedToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn bootstrap_secret_checks() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let now = at("2026-01-01T00:00:00Z");
        let user = check_bootstrap_secret(
            &token,
            &secret("abcdef", "0123456789abcdef", Some("2026-01-02T00:00:00Z")),
            now,
        )
        .unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:cairn:agents",
                "system:authenticated"
            ]
        );
        assert!(matches!(
            check_bootstrap_secret(
                &token,
                &secret("abcdef", "0123456789abcdef", Some("2025-12-31T23:59:59Z")),
                now
            ),
            Err(AuthError::Expired { .. })
        ));
        assert_eq!(
            check_bootstrap_secret(&token, &secret("abcdef", "ffffffffffffffff", None), now),
            Err(AuthError::WrongSecret("abcdef".into()))
        );
        let mut not_auth = secret("abcdef", "0123456789abcdef", None);
        not_auth["data"]
            .as_object_mut()
            .unwrap()
            .remove("usage-bootstrap-authentication");
        assert_eq!(
            check_bootstrap_secret(&token, &not_auth, now),
            Err(AuthError::NotForAuthentication("abcdef".into()))
        );
        let mut opaque = secret("abcdef", "0123456789abcdef", None);
        opaque["type"] = json!("Opaque");
        assert!(matches!(
            check_bootstrap_secret(&token, &opaque, now),
            Err(AuthError::Invalid(..))
        ));
    }

    #[test]
    fn token_lookup_in_store() {
        let store = std::sync::Arc::new(cairn_store::MemoryStore::new());
        let key = "/registry/core/secrets/kube-system/bootstrap-token-abcdef";
        let value = secret("abcdef", "0123456789abcdef", None);
        store
            .create(key, &serde_json::to_vec(&value).unwrap())
            .unwrap();
        let authn = TokenAuthenticator::new(store, None);
        let now = SystemTime::now();
        assert!(authn.authenticate("abcdef.0123456789abcdef", now).is_ok());
        assert_eq!(
            authn.authenticate("bbbbbb.0123456789abcdef", now),
            Err(AuthError::UnknownToken("bbbbbb".into()))
        );
    }

    #[test]
    fn certificate_subject() {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "admin");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        let cert = params.self_signed(&key).unwrap();
        let user = user_from_certificate(cert.der()).unwrap();
        assert_eq!(user.name, "admin");
        assert_eq!(user.groups, ["system:masters", "system:authenticated"]);

        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "x");
        let nameless = params.self_signed(&key).unwrap();
        assert!(user_from_certificate(nameless.der()).is_err());
        assert!(user_from_certificate(b"not DER").is_err());
    }
}
