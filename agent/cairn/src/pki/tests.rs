//! `ensure` against a real directory, with the clock moved by hand.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A fresh directory under the system temp dir (removed by the tests that pass).
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cairn-test-{tag}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Certificates made in a fresh directory, for tests of other modules.
pub(crate) fn fresh_pki() -> Pki {
    let dir = temp_dir("fresh");
    let (pki, _) = ensure(&dir, &names("test"), SystemTime::now()).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    pki
}

fn names(host: &str) -> ServingNames {
    ServingNames::new(Some(host), [IpAddr::from([10, 0, 2, 15])])
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap()
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 60 * 60)
}

#[test]
fn serving_names() {
    let n = ServingNames::new(Some("Edge-1"), [IpAddr::from([127, 0, 0, 1])]);
    assert_eq!(
        n.all(),
        [
            "edge-1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1"
        ]
    );
    assert!(!ServingNames::new(Some("bad name"), [])
        .dns
        .iter()
        .any(|d| d.contains(' ')));
}

#[test]
fn creates_then_reuses() {
    let dir = temp_dir("pki");
    let now = SystemTime::now();
    let (pki, report) = ensure(&dir, &names("edge-1"), now).unwrap();
    assert_eq!(
        report.lines,
        ["ca created", "serving created", "admin created"]
    );
    for (file, mode) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("serving.crt", 0o644),
        ("serving.key", 0o600),
        ("admin.crt", 0o644),
        ("admin.key", 0o600),
    ] {
        let meta = fs::metadata(dir.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(pki.ca_cert, read(&dir, "ca.crt"));
    assert_eq!(pki.serving.key, read(&dir, "serving.key"));
    // Lifetimes as written in the certificates: the CA ten years, the leaves one year.
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lifetime_days = |pem: &str| {
        let not_after = cairn_apiserver::metrics::not_after(pem).unwrap();
        (not_after - since_epoch + 43_200) / 86_400
    };
    assert_eq!(lifetime_days(&pki.ca_cert), 3650);
    assert_eq!(lifetime_days(&pki.serving.cert), 365);
    assert_eq!(lifetime_days(&pki.admin.cert), 365);

    let (again, report) = ensure(&dir, &names("edge-1"), now + days(200)).unwrap();
    assert_eq!(
        report.lines,
        ["ca reused", "serving reused", "admin reused"]
    );
    assert_eq!(again.serving.cert, pki.serving.cert);
    assert_eq!(again.admin.cert, pki.admin.cert);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn renews_leaves_close_to_expiry() {
    let dir = temp_dir("pki");
    let now = SystemTime::now();
    let (pki, _) = ensure(&dir, &names("edge-1"), now).unwrap();
    let (renewed, report) = ensure(&dir, &names("edge-1"), now + days(300)).unwrap();
    assert_eq!(report.lines[0], "ca reused");
    assert!(
        report.lines[1].starts_with("serving renewed ("),
        "{:?}",
        report.lines
    );
    assert!(
        report.lines[2].starts_with("admin renewed ("),
        "{:?}",
        report.lines
    );
    assert_eq!(renewed.ca_cert, pki.ca_cert);
    assert_ne!(renewed.serving.cert, pki.serving.cert);
    assert_eq!(renewed.serving.cert, read(&dir, "serving.crt"));
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn renews_serving_for_new_names() {
    let dir = temp_dir("pki");
    let now = SystemTime::now();
    ensure(&dir, &names("edge-1"), now).unwrap();
    let (_, report) = ensure(&dir, &names("edge-2"), now).unwrap();
    assert!(
        report.lines[1].starts_with("serving renewed (edge-2:"),
        "{:?}",
        report.lines
    );
    assert_eq!(report.lines[2], "admin reused");
    let more = ServingNames::new(
        Some("edge-2"),
        [IpAddr::from([10, 0, 2, 15]), IpAddr::from([192, 168, 1, 9])],
    );
    let (_, report) = ensure(&dir, &more, now).unwrap();
    assert!(
        report.lines[1].starts_with("serving renewed (192.168.1.9:"),
        "{:?}",
        report.lines
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn repairs_mismatched_or_missing_files() {
    let dir = temp_dir("pki");
    let now = SystemTime::now();
    let (pki, _) = ensure(&dir, &names("edge-1"), now).unwrap();
    // A crash between writing the new key and the new certificate.
    fs::write(dir.join("serving.key"), &pki.admin.key).unwrap();
    fs::remove_file(dir.join("admin.crt")).unwrap();
    let (_, report) = ensure(&dir, &names("edge-1"), now).unwrap();
    assert!(
        report.lines[1].starts_with("serving renewed ("),
        "{:?}",
        report.lines
    );
    assert_eq!(report.lines[2], "admin created");
    // The CA certificate is rebuilt from its key; certificates it signed stay valid.
    fs::remove_file(dir.join("ca.crt")).unwrap();
    let (_, report) = ensure(&dir, &names("edge-1"), now).unwrap();
    assert_eq!(
        report.lines,
        [
            "ca.crt recreated from ca.key",
            "serving reused",
            "admin reused"
        ]
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn refuses_a_ca_without_key_or_a_foreign_ca() {
    let dir = temp_dir("pki");
    let now = SystemTime::now();
    ensure(&dir, &names("edge-1"), now).unwrap();
    let ca_key = read(&dir, "ca.key");
    fs::remove_file(dir.join("ca.key")).unwrap();
    let err = ensure(&dir, &names("edge-1"), now).err().unwrap();
    assert!(matches!(err, PkiError::CaKeyMissing { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("ca.key: the CA certificate exists but its key is missing"));

    // Another cluster's ca.crt next to this cluster's ca.key.
    let other = temp_dir("pki-other");
    ensure(&other, &names("edge-1"), now).unwrap();
    fs::write(dir.join("ca.key"), ca_key).unwrap();
    fs::copy(other.join("ca.crt"), dir.join("ca.crt")).unwrap();
    let err = ensure(&dir, &names("edge-1"), now).err().unwrap();
    assert!(matches!(err, PkiError::ForeignCa { .. }), "{err}");
    fs::remove_dir_all(dir).unwrap();
    fs::remove_dir_all(other).unwrap();
}

#[test]
fn clock_before_the_floor_is_reported() {
    let early = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
    let w = clock_warning(early).unwrap();
    assert!(
        w.contains("86400s after 1970") && w.contains("real-time clock"),
        "{w}"
    );
    assert!(clock_warning(SystemTime::UNIX_EPOCH + CLOCK_FLOOR).is_none());
    assert!(clock_warning(SystemTime::now()).is_none());
    // A node that boots at "1970" still gets certificates that work once the clock is set to
    // about 2025-01-01 or later (within their year).
    let dir = temp_dir("early-clock");
    let (pki, _) = ensure(&dir, &names("edge"), early).unwrap();
    let set = SystemTime::UNIX_EPOCH + CLOCK_FLOOR + days(30);
    assert!(check::serving_ok(
        &pki.ca_cert,
        &pki.serving,
        &names("edge"),
        set,
        Duration::ZERO
    )
    .is_ok());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rotate_removes_what_the_next_ensure_replaces() {
    let dir = temp_dir("rotate");
    let now = SystemTime::now();
    assert!(matches!(
        rotate(&dir, Rotation::Leaves),
        Err(PkiError::NoCa { .. })
    ));
    let (first, _) = ensure(&dir, &names("edge-1"), now).unwrap();

    let done = rotate(&dir, Rotation::Leaves).unwrap();
    assert_eq!(
        done,
        [
            "serving.crt removed",
            "serving.key removed",
            "admin.crt removed",
            "admin.key removed"
        ]
    );
    let (second, report) = ensure(&dir, &names("edge-1"), now).unwrap();
    assert_eq!(
        report.lines,
        ["ca reused", "serving created", "admin created"]
    );
    assert_eq!(second.ca_cert, first.ca_cert);
    assert_ne!(second.serving.key, first.serving.key);
    assert_ne!(second.admin.cert, first.admin.cert);

    let done = rotate(&dir, Rotation::Ca).unwrap();
    assert!(done[0].starts_with("ca.crt moved to "), "{done:?}");
    assert_eq!(read(&dir, "ca.crt.old"), first.ca_cert);
    let (third, report) = ensure(&dir, &names("edge-1"), now).unwrap();
    assert_eq!(report.lines[0], "ca created");
    assert_ne!(third.ca_cert, first.ca_cert);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn service_account_key_is_made_once_and_kept() {
    let dir = temp_dir("sa-key");
    let (first, made) = ensure_service_account_key(&dir).unwrap();
    assert!(made && first.contains("BEGIN PRIVATE KEY"));
    let mode = fs::metadata(dir.join(SERVICE_ACCOUNT_KEY))
        .unwrap()
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    // Certificate rotation leaves it alone.
    ensure(&dir, &names("test"), SystemTime::now()).unwrap();
    rotate(&dir, Rotation::Ca).unwrap();
    let (again, made) = ensure_service_account_key(&dir).unwrap();
    assert!(!made);
    assert_eq!(again, first);
    cairn_apiserver::serviceaccount::TokenSigner::from_pem(&again).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}
