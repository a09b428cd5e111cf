//! The node's certificates: a cluster CA, the API server's serving certificate and the admin
//! client certificate, kept as PEM files in one directory (`DATA/server/tls/`):
//!
//! | file | content | mode |
//! |---|---|---|
//! | `ca.crt`, `ca.key` | cluster CA, ECDSA P-256, 10 years | 0644, 0600 |
//! | `serving.crt`, `serving.key` | API server certificate, 365 days | 0644, 0600 |
//! | `admin.crt`, `admin.key` | client `CN=admin, O=system:masters`, 365 days | 0644, 0600 |
//! | `service-account.key` | signs service-account tokens, ECDSA P-256, kept | 0600 |
//!
//! [`ensure`] runs at every start: it keeps what is usable and replaces the rest. A leaf is
//! replaced when it is missing, does not match its key or the CA, lacks one of the current names
//! (hostname, addresses), or expires within [`RENEW_BEFORE`]. Files are written atomically
//! (key first, then certificate; a crash in between leaves a mismatch that the next start fixes).
//!
//! A running node calls [`ensure`] again every minute (`run.rs`), so renewals happen without a
//! restart, and so do the replacements `cairn certificate rotate` asks for ([`rotate`]: it
//! removes the leaves; `rotate-ca` also moves the CA aside, and a server restarts itself to
//! load a new CA).
//!
//! Limitations: the CA is not renewed by itself (10 years; `cairn certificate rotate-ca`
//! replaces it); a `ca.crt` that cairn did not generate is refused.

mod check;
pub(crate) mod files;
mod issue;
pub mod tls;

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use thiserror::Error;

pub use check::{client_ok, provider, roots};
pub use files::write_atomic;
pub use issue::{CaSigner, PemPair, CLOCK_FLOOR};

use issue::Ca;

/// Leaf certificates are renewed when they expire within this window.
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// Names every serving certificate carries besides the node's own.
const STANDARD_DNS: [&str; 5] = [
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The names the serving certificate must be valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    /// The standard names, `hostname` (skipped if not a valid DNS name), 127.0.0.1 and `ips`.
    pub fn new(hostname: Option<&str>, ips: impl IntoIterator<Item = IpAddr>) -> ServingNames {
        let mut dns: Vec<String> = STANDARD_DNS.iter().map(|s| s.to_string()).collect();
        let valid = |h: &&str| rustls::pki_types::DnsName::try_from(*h).is_ok() && !h.contains(':');
        dns.extend(hostname.filter(valid).map(|h| h.to_ascii_lowercase()));
        let mut ips: Vec<IpAddr> = ips.into_iter().collect();
        ips.push(IpAddr::from([127, 0, 0, 1]));
        dns.sort();
        dns.dedup();
        ips.sort();
        ips.dedup();
        ServingNames { dns, ips }
    }

    /// Every name, DNS names then addresses.
    pub fn all(&self) -> Vec<String> {
        self.dns
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect()
    }
}

/// The certificates in force, in PEM.
#[derive(Clone)]
pub struct Pki {
    pub ca_cert: String,
    pub serving: PemPair,
    pub admin: PemPair,
}

/// What [`ensure`] did, one line per file pair, for the start-up log.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
}

/// Why the certificates could not be made ready.
#[derive(Debug, Error)]
pub enum PkiError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A stored key rcgen cannot read, or a generation failure.
    #[error("{}", path.display())]
    Key { path: PathBuf, source: rcgen::Error },
    #[error("{}: the CA certificate exists but its key is missing; restore it, or remove \
             the directory to start a new cluster CA", path.display())]
    CaKeyMissing { path: PathBuf },
    #[error("{}: certificates signed with ca.key do not verify against it ({reason}); \
             was ca.crt replaced?", path.display())]
    ForeignCa { path: PathBuf, reason: String },
    #[error("{}: no cluster CA here; is this the server's data dir (--data-dir)?", path.display())]
    NoCa { path: PathBuf },
}

/// What [`rotate`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The serving and admin certificates and their keys.
    Leaves,
    /// The cluster CA too: every certificate it signed, every kubeconfig and join token made
    /// with it stop working.
    Ca,
}

/// Removes the certificates `rotation` names from `dir` so that the next [`ensure`] (the
/// running node's next check, within a minute, or its next start) issues new ones; the CA
/// is moved to `ca.crt.old`/`ca.key.old`, not deleted. Returns what it did, one line each.
/// A crash half-way leaves a state [`ensure`] completes.
pub fn rotate(dir: &Path, rotation: Rotation) -> Result<Vec<String>, PkiError> {
    let files = Files { dir };
    if files.read("ca.key")?.is_none() {
        return Err(PkiError::NoCa { path: dir.into() });
    }
    let io = |path: PathBuf| move |source| PkiError::Io { path, source };
    let mut done = Vec::new();
    if rotation == Rotation::Ca {
        for name in ["ca.crt", "ca.key"] {
            let (from, to) = (files.path(name), files.path(&format!("{name}.old")));
            std::fs::rename(&from, &to).map_err(io(from.clone()))?;
            done.push(format!("{name} moved to {}", to.display()));
        }
    }
    for name in ["serving.crt", "serving.key", "admin.crt", "admin.key"] {
        let path = files.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => done.push(format!("{name} removed")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(path)(e)),
        }
    }
    files::sync_dir(dir).map_err(io(dir.into()))?;
    Ok(done)
}

struct Files<'a> {
    dir: &'a Path,
}

impl Files<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Result<Option<String>, PkiError> {
        let path = self.path(name);
        files::read_optional(&path).map_err(|source| PkiError::Io { path, source })
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> Result<(), PkiError> {
        let path = self.path(name);
        write_atomic(&path, text.as_bytes(), mode).map_err(|source| PkiError::Io { path, source })
    }

    fn read_pair(&self, stem: &str) -> Result<Option<PemPair>, PkiError> {
        let cert = self.read(&format!("{stem}.crt"))?;
        let key = self.read(&format!("{stem}.key"))?;
        Ok(cert.zip(key).map(|(cert, key)| PemPair { cert, key }))
    }

    fn write_pair(&self, stem: &str, pair: &PemPair) -> Result<(), PkiError> {
        self.write(&format!("{stem}.key"), &pair.key, 0o600)?;
        self.write(&format!("{stem}.crt"), &pair.cert, 0o644)
    }
}

/// A warning for the start-up log when the clock is before [`CLOCK_FLOOR`] (a device without
/// a real-time clock that has not set its time yet): the node still comes up, but TLS clients
/// with a correct clock may refuse certificates made now if their `notBefore` is in the future
/// for them, and the operator should know why.
pub fn clock_warning(now: SystemTime) -> Option<String> {
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    if since >= CLOCK_FLOOR {
        return None;
    }
    Some(format!(
        "the clock reads {}s after 1970-01-01, before 2025-01-01: no real-time clock, or the \
         time is not set yet; certificates made now stay valid once it is, but set the time \
         (NTP or the node config) so clients and token expiry agree with this node",
        since.as_secs()
    ))
}

/// Loads, renews or creates the certificates in `dir` (created with mode 0700).
pub fn ensure(
    dir: &Path,
    names: &ServingNames,
    now: SystemTime,
) -> Result<(Pki, Report), PkiError> {
    files::create_private_dir(dir).map_err(|source| PkiError::Io {
        path: dir.into(),
        source,
    })?;
    let files = Files { dir };
    let mut report = Report::default();
    let key_err = |name: &str| {
        let path = files.path(name);
        move |source| PkiError::Key { path, source }
    };

    let ca = match (files.read("ca.key")?, files.read("ca.crt")?) {
        (Some(key), cert) => {
            let recreate = cert.is_none();
            let ca = Ca::load(&key, cert, now).map_err(key_err("ca.key"))?;
            if recreate {
                files.write("ca.crt", &ca.cert_pem, 0o644)?;
                report.lines.push("ca.crt recreated from ca.key".into());
            } else {
                report.lines.push("ca reused".into());
            }
            ca
        }
        (None, Some(_)) => {
            return Err(PkiError::CaKeyMissing {
                path: files.path("ca.key"),
            })
        }
        (None, None) => {
            let (ca, key) = Ca::generate(now).map_err(key_err("ca.key"))?;
            files.write("ca.key", &key, 0o600)?;
            files.write("ca.crt", &ca.cert_pem, 0o644)?;
            report.lines.push("ca created".into());
            ca
        }
    };

    let serving = keep_or_issue(
        &files,
        "serving",
        &mut report,
        |pair| check::serving_ok(&ca.cert_pem, pair, names, now, RENEW_BEFORE),
        || ca.issue_serving(names, now),
    )?;
    let admin = keep_or_issue(
        &files,
        "admin",
        &mut report,
        |pair| check::client_ok(&ca.cert_pem, pair, now, RENEW_BEFORE),
        || ca.issue_client("admin", "system:masters", now),
    )?;
    Ok((
        Pki {
            ca_cert: ca.cert_pem,
            serving,
            admin,
        },
        report,
    ))
}

/// The key service-account tokens are signed with (`service-account.key` in `dir`: ECDSA
/// P-256, PKCS#8 PEM, mode 0600), made on first use and then kept: certificate renewals and
/// rotations leave it alone, so issued tokens stay valid. Returns the PEM and whether it was
/// made now.
pub fn ensure_service_account_key(dir: &Path) -> Result<(String, bool), PkiError> {
    let files = Files { dir };
    if let Some(pem) = files.read(SERVICE_ACCOUNT_KEY)? {
        return Ok((pem, false));
    }
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| PkiError::Key {
            path: files.path(SERVICE_ACCOUNT_KEY),
            source,
        })?
        .serialize_pem();
    files.write(SERVICE_ACCOUNT_KEY, &pem, 0o600)?;
    Ok((pem, true))
}

/// File name of the service-account signing key.
pub const SERVICE_ACCOUNT_KEY: &str = "service-account.key";

/// Keeps the stored pair `stem` if `ok` accepts it; otherwise issues, checks and writes a new one.
fn keep_or_issue(
    files: &Files<'_>,
    stem: &str,
    report: &mut Report,
    ok: impl Fn(&PemPair) -> Result<(), String>,
    issue: impl FnOnce() -> Result<PemPair, rcgen::Error>,
) -> Result<PemPair, PkiError> {
    let why = match files.read_pair(stem)? {
        Some(pair) => match ok(&pair) {
            Ok(()) => {
                report.lines.push(format!("{stem} reused"));
                return Ok(pair);
            }
            Err(reason) => format!("renewed ({reason})"),
        },
        None => "created".to_owned(),
    };
    let path = files.path(&format!("{stem}.key"));
    let pair = issue().map_err(|source| PkiError::Key { path, source })?;
    ok(&pair).map_err(|reason| PkiError::ForeignCa {
        path: files.path("ca.crt"),
        reason,
    })?;
    files.write_pair(stem, &pair)?;
    report.lines.push(format!("{stem} {why}"));
    Ok(pair)
}

#[cfg(test)]
pub(crate) mod tests;
