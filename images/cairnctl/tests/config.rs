//! `cairnctl config set|get` on a real (small) GPT image with a FAT boot partition.

use cairnctl::{config, disk, fat};

fn image(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-config-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tree/cairn")).unwrap();
    std::fs::write(dir.join("tree/cairn/node.yaml"), "role: server\n").unwrap();
    let fat_img = dir.join("boot.fat");
    fat::make(
        &fat_img,
        40,
        "CAIRN-BOOT",
        0x1234,
        &dir.join("tree"),
        1_700_000_000,
    )
    .unwrap();
    let (parts, total) = disk::plan(40, 8, 16);
    let img = dir.join("disk.img");
    disk::create(&img, total, &parts, "test").unwrap();
    disk::write_sparse(&img, parts[0].start, parts[0].size, &fat_img).unwrap();
    img
}

#[test]
fn set_then_get_round_trips() {
    let img = image("ok");
    assert_eq!(config::get(&img).unwrap(), "role: server\n");
    let yaml = "hostname: edge-7\nrole: agent\nserver: https://10.0.0.1:6443\ntoken: K10abc::server:secret\n";
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    config::set(&img, yaml, "node.yaml").unwrap();
    assert_eq!(config::get(&img).unwrap(), yaml);
    // The time it was written, for nodes without a real-time clock.
    let (offset, _) = disk::find_partition(&img, "cairn-boot").unwrap();
    let out = fat::mtools("mtype", &img, offset, 0)
        .arg(config::CLOCK_PATH)
        .output()
        .unwrap();
    let stamped: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        (before..before + 60).contains(&stamped),
        "{stamped} vs {before}"
    );
}

/// A Raspberry Pi card: the seed is partition 1 of a Cairn MBR, found by number.
#[test]
fn set_then_get_on_an_mbr_card() {
    let dir = std::env::temp_dir().join(format!("cairn-config-test-{}-mbr", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tree/cairn")).unwrap();
    std::fs::write(dir.join("tree/cairn/node.yaml"), "role: server\n").unwrap();
    let fat_img = dir.join("seed.fat");
    fat::make(
        &fat_img,
        40,
        "CAIRN",
        0x1234,
        &dir.join("tree"),
        1_700_000_000,
    )
    .unwrap();
    let (parts, total) = disk::plan_mbr(40, 40, 16);
    let img = dir.join("disk.img");
    disk::create_mbr(&img, total, &parts).unwrap();
    disk::write_sparse(&img, parts[0].start, parts[0].size, &fat_img).unwrap();
    assert_eq!(config::get(&img).unwrap(), "role: server\n");
    config::set(&img, "hostname: pi-1\nrole: server\n", "node.yaml").unwrap();
    assert_eq!(config::get(&img).unwrap(), "hostname: pi-1\nrole: server\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_config_is_refused_and_the_image_keeps_its_own() {
    let img = image("bad");
    let before = std::fs::read(&img).unwrap();
    let err = config::set(
        &img,
        "role: server\nnetwork:\n  mode: dhcp\n  gatway: 10.0.0.1\n",
        "node.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("node.yaml:4:"), "{err}");
    assert!(err.contains("gatway"), "{err}");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "a refused config must not touch the image"
    );
    let err = config::set(&img, "role: [server\n", "node.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("node.yaml:"), "{err}");
}

#[test]
fn not_a_cairn_image_is_a_clear_error() {
    let p = std::env::temp_dir().join(format!("cairn-not-an-image-{}", std::process::id()));
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let err = format!(
        "{:#}",
        config::set(&p, "role: server\n", "n.yaml").unwrap_err()
    );
    assert!(
        err.contains("partition table") || err.contains("cairn-boot"),
        "{err}"
    );
}
