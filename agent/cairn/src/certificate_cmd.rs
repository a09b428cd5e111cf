//! `cairn certificate check|rotate|rotate-ca`: the server's certificates in DATA/server/tls.
//! The files change here; a running server loads them within a minute (`run.rs`).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::cli::{CertificateArgs, CertificateCommand};
use crate::run::ServerPaths;
use cairn::pki::{self, Rotation};

pub fn run(args: CertificateArgs) -> Result<()> {
    let paths = ServerPaths::new(&args.data_dir);
    let dir = &paths.tls;
    match args.command {
        CertificateCommand::Check => check(dir),
        CertificateCommand::Rotate => {
            for line in pki::rotate(dir, Rotation::Leaves)? {
                println!("{line}");
            }
            println!(
                "new serving and admin certificates are issued by the running server within a \
                 minute (or when it next starts); it rewrites {}",
                paths.admin_kubeconfig.display()
            );
            Ok(())
        }
        CertificateCommand::RotateCa { yes } => {
            if !yes {
                bail!(
                    "rotate-ca replaces the cluster CA: every kubeconfig and join token made with \
                     the old one stops working, and agents and clients need the new ones. Run \
                     again with --yes to go ahead"
                );
            }
            for line in pki::rotate(dir, Rotation::Ca)? {
                println!("{line}");
            }
            println!(
                "the running server restarts itself with a new CA within a minute (or makes \
                 one when it next starts); then copy {} to clients and {} to agents",
                paths.admin_kubeconfig.display(),
                paths.node_token.display()
            );
            Ok(())
        }
    }
}

/// One line per certificate: when it expires and how far away that is.
fn check(dir: &Path) -> Result<()> {
    if !dir.join("ca.crt").exists() {
        bail!(
            "{}: no certificates; is this the server's data dir (--data-dir)?",
            dir.display()
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for (name, file) in [
        ("ca", "ca.crt"),
        ("serving", "serving.crt"),
        ("admin", "admin.crt"),
    ] {
        let path = dir.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!(
                    "{name:<8} missing: issued by the server within a minute or at its next start"
                );
                continue;
            }
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        let at = cairn_apiserver::metrics::not_after(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| path.display().to_string())?;
        let when = i64::try_from(at)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .map_or_else(
                || at.to_string(),
                |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            );
        let days = (at as i64 - now as i64) / 86_400;
        let state = if at <= now {
            "EXPIRED".to_owned()
        } else if name != "ca" && at - now <= pki::RENEW_BEFORE.as_secs() {
            format!("{days} days left, renewed within a minute by the running server")
        } else {
            format!("{days} days left")
        };
        println!("{name:<8} expires {when} ({state})");
    }
    Ok(())
}
