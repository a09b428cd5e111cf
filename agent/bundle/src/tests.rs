use std::fs;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::*;

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cairn-bundle-{tag}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic bytes that compress somewhat, like a file system image.
fn content(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 3 == 0 {
                0
            } else {
                x as u8
            }
        })
        .collect()
}

fn base_manifest(version: &str) -> Manifest {
    Manifest {
        format: 0,
        board: "qemu-x86_64".into(),
        arch: "x86_64".into(),
        version: version.into(),
        min_version: None,
        created: 1_700_000_000,
        key: KeyId(String::new()),
        cmdline: "console=ttyS0".into(),
        payloads: vec![],
    }
}

fn expect(running: &str) -> Expect {
    Expect {
        board: "qemu-x86_64".into(),
        arch: "x86_64".into(),
        running: running.into(),
        allow_downgrade: false,
    }
}

struct Fixture {
    dir: PathBuf,
    bundle: PathBuf,
    key: SigningKey,
    files: Vec<(&'static str, Vec<u8>)>,
}

fn fixture(tag: &str, m: Manifest) -> Fixture {
    let dir = temp_dir(tag);
    let key = SigningKey::generate().unwrap();
    let files = vec![
        ("rootfs", content(1, 300_000)),
        ("kernel", content(2, 70_000)),
        ("initrd", content(3, 1)),
    ];
    for (name, bytes) in &files {
        fs::write(dir.join(name), bytes).unwrap();
    }
    let paths: Vec<PathBuf> = files.iter().map(|(n, _)| dir.join(n)).collect();
    let sources: Vec<PayloadSource> = files
        .iter()
        .zip(&paths)
        .map(|((name, _), path)| PayloadSource { name, path })
        .collect();
    let bundle = dir.join("update.cairnb");
    write_bundle(&bundle, m, &sources, &key, 3).unwrap();
    Fixture {
        dir,
        bundle,
        key,
        files,
    }
}

fn trusted(f: &Fixture) -> TrustedKeys {
    TrustedKeys(vec![f.key.public("test")])
}

/// Reads every payload of `bytes` into memory.
fn unpack(bytes: &[u8], keys: &TrustedKeys, e: &Expect) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut r = Reader::open(Cursor::new(bytes), keys, e)?;
    let mut out = Vec::new();
    loop {
        let mut buf = Vec::new();
        match r.next_payload(&mut buf)? {
            Some(p) => out.push((p.name, buf)),
            None => break,
        }
    }
    r.finish()?;
    Ok(out)
}

#[test]
fn round_trip() {
    let f = fixture("roundtrip", base_manifest("0.2.0"));
    let bytes = fs::read(&f.bundle).unwrap();
    let got = unpack(&bytes, &trusted(&f), &expect("0.1.0")).unwrap();
    assert_eq!(got.len(), 3);
    for ((name, want), (got_name, got)) in f.files.iter().zip(&got) {
        assert_eq!(name, got_name);
        assert!(want == got, "{name} differs");
    }
    let m = verify_file(&f.bundle, &trusted(&f), &expect("0.1.0")).unwrap();
    assert_eq!(m.key, f.key.id());
    assert_eq!(m.payload("rootfs").unwrap().size, 300_000);
    assert!(m.payload("rootfs").unwrap().stored_size < 300_000);
    // No stray temporary files next to the bundle.
    let names: Vec<_> = fs::read_dir(&f.dir)
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn any_flipped_byte_is_refused() {
    let f = fixture("tamper", base_manifest("0.2.0"));
    let good = fs::read(&f.bundle).unwrap();
    let keys = trusted(&f);
    let len = u32::from_le_bytes(good[8..12].try_into().unwrap()) as usize;
    let header = Manifest::header_len(len) as usize;
    // In the manifest, the signature and each region of the payloads.
    let spots = [
        9usize,
        20,
        12 + len / 2,
        12 + len + 5,
        header,
        header + 1000,
        good.len() - 1,
    ];
    for at in spots {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        let err = unpack(&bad, &keys, &expect("0.1.0")).unwrap_err();
        let path = f.dir.join("bad.cairnb");
        fs::write(&path, &bad).unwrap();
        let file_err = verify_file(&path, &keys, &expect("0.1.0")).unwrap_err();
        for e in [&err, &file_err] {
            assert!(
                matches!(
                    e,
                    Error::Signature(_) | Error::Payload { .. } | Error::Manifest(_)
                ),
                "byte {at}: {e}"
            );
        }
        if at >= header {
            // Payload bytes: the manifest verified, the payload hash did not.
            assert!(
                matches!(file_err, Error::Payload { .. }),
                "byte {at}: {file_err}"
            );
            assert!(file_err.to_string().contains("tampered"), "{file_err}");
        } else if at >= 12 {
            assert!(
                matches!(file_err, Error::Signature(_)),
                "byte {at}: {file_err}"
            );
        }
    }
}

#[test]
fn truncation_anywhere_is_refused() {
    let f = fixture("trunc", base_manifest("0.2.0"));
    let good = fs::read(&f.bundle).unwrap();
    let keys = trusted(&f);
    let path = f.dir.join("short.cairnb");
    for cut in [0, 5, 11, 40, 300, good.len() / 2, good.len() - 1] {
        let short = &good[..cut];
        let err = unpack(short, &keys, &expect("0.1.0")).unwrap_err();
        assert!(
            matches!(err, Error::Truncated(_) | Error::Signature(_)),
            "cut at {cut}: {err}"
        );
        fs::write(&path, short).unwrap();
        let err = verify_file(&path, &keys, &expect("0.1.0")).unwrap_err();
        assert!(
            matches!(err, Error::Truncated(_) | Error::Signature(_)),
            "cut at {cut}: {err}"
        );
        assert!(
            err.to_string().contains("truncated") || cut > 12,
            "cut at {cut}: {err}"
        );
    }
    // Extra bytes are refused too.
    let mut long = good.clone();
    long.push(0);
    assert!(unpack(&long, &keys, &expect("0.1.0")).is_err());
}

#[test]
fn the_wrong_node_or_version_is_refused_before_any_payload() {
    let f = fixture("expect", base_manifest("0.2.0"));
    let bytes = fs::read(&f.bundle).unwrap();
    let keys = trusted(&f);
    let refuse = |e: Expect| Reader::open(Cursor::new(&bytes), &keys, &e).err().unwrap();

    let mut e = expect("0.1.0");
    e.board = "rpi4".into();
    assert!(matches!(refuse(e), Error::Board { .. }));
    let mut e = expect("0.1.0");
    e.arch = "aarch64".into();
    let err = refuse(e);
    assert_eq!(
        err.to_string(),
        "bundle is for architecture x86_64, this node is aarch64"
    );
    for running in ["0.2.0", "0.3.0", "1.0"] {
        let err = refuse(expect(running));
        assert!(matches!(err, Error::Downgrade { .. }), "{running}: {err}");
        assert!(err.to_string().contains("--allow-downgrade"));
    }
    let mut e = expect("0.3.0");
    e.allow_downgrade = true;
    assert!(Reader::open(Cursor::new(&bytes), &keys, &e).is_ok());

    let mut m = base_manifest("0.5.0");
    m.min_version = Some("0.3.0".into());
    let g = fixture("minver", m);
    let gb = fs::read(&g.bundle).unwrap();
    let err = Reader::open(Cursor::new(&gb), &trusted(&g), &expect("0.2.9"))
        .err()
        .unwrap();
    assert!(matches!(err, Error::TooOld { .. }), "{err}");
    assert!(Reader::open(Cursor::new(&gb), &trusted(&g), &expect("0.3.0")).is_ok());
}

#[test]
fn an_untrusted_key_is_named_in_the_error() {
    let f = fixture("untrusted", base_manifest("0.2.0"));
    let bytes = fs::read(&f.bundle).unwrap();
    let other = SigningKey::generate().unwrap();
    let err = unpack(
        &bytes,
        &TrustedKeys(vec![other.public("x")]),
        &expect("0.1.0"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&f.key.id().0) && msg.contains(&other.id().0),
        "{msg}"
    );
    let err = unpack(&bytes, &TrustedKeys::default(), &expect("0.1.0")).unwrap_err();
    assert!(err.to_string().contains("trusts no keys"), "{err}");
    let err = unpack(
        b"PK\x03\x04 not a bundle at all",
        &trusted(&f),
        &expect("0.1.0"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Magic), "{err}");
}

#[test]
fn keys_round_trip_through_files() {
    let dir = temp_dir("keys");
    let key = SigningKey::generate().unwrap();
    let pem = key.to_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    fs::write(dir.join("k.pem"), &pem).unwrap();
    let again = SigningKey::load(&dir.join("k.pem")).unwrap();
    assert_eq!(again.id(), key.id());

    let line = key.public("release key").to_line();
    assert!(
        line.starts_with("cairn-ed25519 ") && line.ends_with(" release key"),
        "{line}"
    );
    fs::write(dir.join("release.pub"), format!("{line}\n")).unwrap();
    fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let keys = TrustedKeys::load_dir(&dir).unwrap();
    assert_eq!(keys.0.len(), 1);
    assert_eq!(keys.0[0].id(), key.id());
    let sig = key.sign(b"hello");
    assert!(keys.verify(b"hello", &sig).is_some());
    assert!(keys.verify(b"hellO", &sig).is_none());

    for bad in [
        "ssh-ed25519 AAAA",
        "cairn-ed25519",
        "cairn-ed25519 !!!",
        "cairn-ed25519 AAAA",
    ] {
        assert!(PublicKey::parse(bad).is_err(), "{bad}");
    }
    assert!(
        SigningKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .is_err()
    );
    assert!(TrustedKeys::load_dir(&dir.join("missing"))
        .unwrap()
        .is_empty());
}
