//! Join tokens.
//!
//! A join token pins the cluster CA so a joining node can trust the server before it has the
//! CA, in the form K3s uses: `K10<sha256 of ca.crt, hex>::<credential>`. The credential is
//! either the server token `server:<secret>` (kept in `DATA/server/node-token`, never expires)
//! or a bootstrap token `<id>.<secret>` made by `cairn token create` (expires, revocable).

use std::fmt;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::pki;

/// A join token: the CA hash and a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex SHA-256 of the CA certificate file (PEM bytes).
    pub ca_hash: String,
    /// `server:<secret>` or `<id>.<secret>`.
    pub credential: String,
}

/// A token that cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("a join token looks like K10<64 hex digits>::<credential>; this one does not start with K10<hash>::")]
    Form,
    #[error("the CA hash in the token is not 64 hex digits")]
    Hash,
    #[error("the token has no credential after `::`")]
    Empty,
}

impl JoinToken {
    /// The token for the CA in `ca_pem` and `credential`.
    pub fn new(ca_pem: &str, credential: impl Into<String>) -> JoinToken {
        JoinToken {
            ca_hash: ca_hash(ca_pem),
            credential: credential.into(),
        }
    }

    /// Parses `K10<hash>::<credential>`.
    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let rest = text.trim().strip_prefix("K10").ok_or(TokenError::Form)?;
        let (hash, credential) = rest.split_once("::").ok_or(TokenError::Form)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Hash);
        }
        if credential.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(JoinToken {
            ca_hash: hash.to_ascii_lowercase(),
            credential: credential.to_owned(),
        })
    }

    /// Whether `ca_pem` is the CA this token pins.
    pub fn pins(&self, ca_pem: &str) -> bool {
        ca_hash(ca_pem) == self.ca_hash
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "K10{}::{}", self.ca_hash, self.credential)
    }
}

/// Hex SHA-256 of the CA certificate as stored (PEM).
pub fn ca_hash(ca_pem: &str) -> String {
    Sha256::digest(ca_pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `bytes` random bytes as lower-case hex, so `[a-z0-9]` as bootstrap tokens require.
pub fn random_hex(bytes: usize) -> io::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(io::Error::other)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads the server token in `path`, creating it on first start and updating its CA hash if
/// the CA changed (the secret is kept, so configured agents only need the new hash).
/// Returns the token and whether the file was written.
pub fn ensure_server_token(path: &Path, ca_pem: &str) -> io::Result<(JoinToken, bool)> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let parsed = existing.as_deref().map(JoinToken::parse);
    let token = match parsed {
        Some(Ok(token)) if token.pins(ca_pem) && token.credential.starts_with("server:") => {
            return Ok((token, false));
        }
        Some(Ok(token)) if token.credential.starts_with("server:") => {
            JoinToken::new(ca_pem, token.credential)
        }
        Some(Ok(_)) | Some(Err(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a server token (K10<hash>::server:<secret>); fix it or remove it \
                     to make a new one (configured agents then need the new token)",
                    path.display()
                ),
            ))
        }
        None => JoinToken::new(ca_pem, format!("server:{}", random_hex(16)?)),
    };
    pki::write_atomic(path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok((token, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_round_trips() {
        let t = JoinToken::new("CA\n", "server:abc");
        let text = t.to_string();
        assert!(
            text.starts_with("K10") && text.ends_with("::server:abc"),
            "{text}"
        );
        assert_eq!(JoinToken::parse(&text), Ok(t.clone()));
        assert!(t.pins("CA\n") && !t.pins("other"));
        assert_eq!(
            JoinToken::parse("abcdef.0123456789abcdef"),
            Err(TokenError::Form)
        );
        assert_eq!(JoinToken::parse("K10abc::server:x"), Err(TokenError::Hash));
        let no_cred = format!("K10{}::", "a".repeat(64));
        assert_eq!(JoinToken::parse(&no_cred), Err(TokenError::Empty));
    }

    #[test]
    fn server_token_is_kept_and_follows_the_ca() {
        let dir = std::env::temp_dir().join(format!("cairn-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node-token");
        let (first, written) = ensure_server_token(&path, "CA1").unwrap();
        assert!(written && first.credential.starts_with("server:"));
        assert_eq!(first.credential.len(), "server:".len() + 32);
        let (again, written) = ensure_server_token(&path, "CA1").unwrap();
        assert!(!written);
        assert_eq!(again, first);
        let (moved, written) = ensure_server_token(&path, "CA2").unwrap();
        assert!(written && moved.pins("CA2"));
        assert_eq!(moved.credential, first.credential);
        std::fs::write(&path, "garbage").unwrap();
        let err = ensure_server_token(&path, "CA2").unwrap_err();
        assert!(err.to_string().contains("not a server token"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
