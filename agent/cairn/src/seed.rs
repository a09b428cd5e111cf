//! Cluster secrets made on a host before a node first boots, so the user holds a working
//! kubeconfig for a device they have not started yet (Talos' `gen secrets`, for Cairn).
//!
//! `cairnctl gen secrets` makes a directory with the cluster CA (`ca.crt`, `ca.key`), the server
//! join token (`node-token`) and an admin client certificate (`admin.crt`, `admin.key`, which
//! stays on the host). `cairnctl secrets install` copies the first three into an image's seed
//! partition as `cairn/secrets/`; on its first start `cairn server` imports them from
//! `/boot/cairn/secrets` into `DATA/server/` ([`import`]) and from then on ignores the seed.
//!
//! The seed partition therefore holds the CA key in the clear: treat an image with installed
//! secrets like the node's own disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use thiserror::Error;

use crate::pki::{self, files, Pki, PkiError, ServingNames};
use crate::token;

/// The files a seed carries onto a node.
pub const SEED_FILES: [&str; 3] = ["ca.crt", "ca.key", "node-token"];

#[derive(Debug, Error)]
pub enum SeedError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SeedError + '_ {
    move |source| SeedError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes a new set of cluster secrets in `dir` (created 0700); refuses a directory that
/// already holds a CA, so a cluster's secrets are never replaced by accident.
pub fn generate(dir: &Path, now: SystemTime) -> Result<Pki, SeedError> {
    if dir.join("ca.key").exists() {
        return Err(SeedError::Invalid {
            path: dir.join("ca.key"),
            message: "secrets already exist here; remove the directory to make new ones \
                      (nodes seeded from the old ones keep the old CA)"
                .into(),
        });
    }
    let (pki, _) = pki::ensure(dir, &ServingNames::new(None, []), now)?;
    // The serving certificate is each node's own business.
    for f in ["serving.crt", "serving.key"] {
        let path = dir.join(f);
        fs::remove_file(&path).map_err(io_err(&path))?;
    }
    let path = dir.join("node-token");
    token::ensure_server_token(&path, &pki.ca_cert).map_err(io_err(&path))?;
    Ok(pki)
}

/// Loads the secrets in `dir` made by [`generate`]: the CA certificate and the admin pair.
pub fn load(dir: &Path) -> Result<Pki, SeedError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(io_err(&path))
    };
    Ok(Pki {
        ca_cert: read("ca.crt")?,
        serving: pki::PemPair {
            cert: String::new(),
            key: String::new(),
        },
        admin: pki::PemPair {
            cert: read("admin.crt")?,
            key: read("admin.key")?,
        },
    })
}

/// What [`import`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub ca: bool,
    pub token: bool,
}

/// Imports a seed (`/boot/cairn/secrets`) into a server's TLS dir and token path, once: a CA
/// already in `tls_dir` wins (the seed is then ignored), and so does an existing token. A
/// missing seed directory imports nothing.
pub fn import(seed: &Path, tls_dir: &Path, node_token: &Path) -> Result<Imported, SeedError> {
    let mut done = Imported::default();
    if !seed.is_dir() {
        return Ok(done);
    }
    let read = |name: &str| -> Result<Option<String>, SeedError> {
        let path = seed.join(name);
        files::read_optional(&path).map_err(io_err(&path))
    };
    let ca = (read("ca.crt")?, read("ca.key")?);
    if let (Some(cert), Some(key)) = &ca {
        if !tls_dir.join("ca.key").exists() {
            files::create_private_dir(tls_dir).map_err(io_err(tls_dir))?;
            let key_path = tls_dir.join("ca.key");
            pki::write_atomic(&key_path, key.as_bytes(), 0o600).map_err(io_err(&key_path))?;
            let cert_path = tls_dir.join("ca.crt");
            pki::write_atomic(&cert_path, cert.as_bytes(), 0o644).map_err(io_err(&cert_path))?;
            done.ca = true;
        }
    }
    if let Some(text) = read("node-token")? {
        if !node_token.exists() {
            let parsed = token::JoinToken::parse(&text).map_err(|e| SeedError::Invalid {
                path: seed.join("node-token"),
                message: e.to_string(),
            })?;
            if let Some(dir) = node_token.parent() {
                fs::create_dir_all(dir).map_err(io_err(dir))?;
            }
            pki::write_atomic(node_token, format!("{parsed}\n").as_bytes(), 0o600)
                .map_err(io_err(node_token))?;
            done.token = true;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tests::temp_dir;

    #[test]
    fn generate_then_import_once() {
        let host = temp_dir("seed-host").join("secrets");
        let pki = generate(&host, SystemTime::now()).unwrap();
        let mut names: Vec<String> = fs::read_dir(&host)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["admin.crt", "admin.key", "ca.crt", "ca.key", "node-token"]
        );
        assert!(
            generate(&host, SystemTime::now()).is_err(),
            "never overwrites"
        );
        assert_eq!(load(&host).unwrap().ca_cert, pki.ca_cert);

        let node = temp_dir("seed-node");
        let tls = node.join("server/tls");
        let token_path = node.join("server/node-token");
        let done = import(&host, &tls, &token_path).unwrap();
        assert_eq!(
            done,
            Imported {
                ca: true,
                token: true
            }
        );
        // The node's own start then keeps the seeded CA and issues its leaves from it.
        let names = ServingNames::new(Some("edge"), []);
        let (node_pki, report) = pki::ensure(&tls, &names, SystemTime::now()).unwrap();
        assert_eq!(node_pki.ca_cert, pki.ca_cert);
        assert!(
            report.lines.contains(&"ca reused".to_string()),
            "{report:?}"
        );
        let token = fs::read_to_string(&token_path).unwrap();
        assert_eq!(token, fs::read_to_string(host.join("node-token")).unwrap());
        // A second import changes nothing; a missing seed is not an error.
        assert_eq!(
            import(&host, &tls, &token_path).unwrap(),
            Imported::default()
        );
        assert_eq!(
            import(&node.join("absent"), &tls, &token_path).unwrap(),
            Imported::default()
        );
        // A garbage token in a seed is refused with its path.
        let bad = temp_dir("seed-bad");
        fs::write(bad.join("node-token"), "nope").unwrap();
        let err = import(&bad, &tls, &node.join("other-token")).unwrap_err();
        assert!(err.to_string().contains("node-token"), "{err}");
    }
}
