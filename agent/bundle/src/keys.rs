//! ed25519 signing keys (PKCS#8 PEM, readable by `openssl pkey`) and the public keys a node
//! trusts: one `*.pub` file each, a single line `cairn-ed25519 <base64> [comment]`.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

const PUB_PREFIX: &str = "cairn-ed25519";

/// A key's id: the first 8 bytes of the sha256 of the public key, in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A private signing key (host side: `cairnctl keys gen`, `cairnctl bundle`).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl SigningKey {
    pub fn generate() -> Result<SigningKey, Error> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| Error::Key("the system random source failed".into()))?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(der: &[u8]) -> Result<SigningKey, Error> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| Error::Key(format!("not an ed25519 PKCS#8 private key ({e})")))?;
        Ok(SigningKey {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    pub fn from_pem(text: &str) -> Result<SigningKey, Error> {
        let block = pem::parse(text).map_err(|e| Error::Key(format!("not PEM: {e}")))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(Error::Key(format!(
                "expected a PRIVATE KEY block, found {}",
                block.tag()
            )));
        }
        SigningKey::from_pkcs8(block.contents())
    }

    pub fn load(path: &Path) -> Result<SigningKey, Error> {
        let text =
            fs::read_to_string(path).map_err(|e| Error::Key(format!("{}: {e}", path.display())))?;
        SigningKey::from_pem(&text).map_err(|e| Error::Key(format!("{}: {e}", path.display())))
    }

    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.clone()))
    }

    pub fn public(&self, comment: &str) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey {
            bytes,
            comment: comment.to_string(),
        }
    }

    pub fn id(&self) -> KeyId {
        self.public("").id()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// A public key a node trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    pub comment: String,
}

impl PublicKey {
    pub fn id(&self) -> KeyId {
        KeyId(crate::hex(&Sha256::digest(self.bytes)[..8]))
    }

    /// `cairn-ed25519 <base64> <comment>`
    pub fn to_line(&self) -> String {
        format!("{PUB_PREFIX} {} {}", B64.encode(self.bytes), self.comment)
            .trim_end()
            .to_string()
    }

    pub fn parse(line: &str) -> Result<PublicKey, Error> {
        let mut words = line.split_whitespace();
        if words.next() != Some(PUB_PREFIX) {
            return Err(Error::Key(format!(
                "a public key line starts with {PUB_PREFIX}"
            )));
        }
        let b64 = words
            .next()
            .ok_or_else(|| Error::Key("public key line has no key".into()))?;
        let raw = B64
            .decode(b64)
            .map_err(|e| Error::Key(format!("public key is not base64: {e}")))?;
        let bytes: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
            Error::Key(format!("public key has {} bytes, not 32", v.len()))
        })?;
        Ok(PublicKey {
            bytes,
            comment: words.collect::<Vec<_>>().join(" "),
        })
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ED25519, &self.bytes)
            .verify(message, sig)
            .is_ok()
    }
}

/// The keys a node accepts bundles from.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys(pub Vec<PublicKey>);

impl TrustedKeys {
    /// Every `*.pub` in `dir` (none if the directory does not exist).
    pub fn load_dir(dir: &Path) -> Result<TrustedKeys, Error> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(TrustedKeys::default()),
            Err(e) => return Err(Error::Key(format!("{}: {e}", dir.display()))),
        };
        let mut paths: Vec<_> = rd
            .filter_map(|d| d.ok().map(|d| d.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        paths.sort();
        let mut keys = Vec::new();
        for p in paths {
            let text =
                fs::read_to_string(&p).map_err(|e| Error::Key(format!("{}: {e}", p.display())))?;
            let key = PublicKey::parse(text.trim())
                .map_err(|e| Error::Key(format!("{}: {e}", p.display())))?;
            keys.push(key);
        }
        Ok(TrustedKeys(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key that verifies `sig` over `message`, if any.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Option<&PublicKey> {
        self.0.iter().find(|k| k.verify(message, sig))
    }

    pub fn ids(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|k| k.id().0)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
