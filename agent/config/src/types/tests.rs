//! Syntax checks of the value types.

use super::*;

#[test]
fn hostnames() {
    for ok in ["edge-1", "a", "0abc", &"x".repeat(63)] {
        assert!(ok.parse::<Hostname>().is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "Edge",
        "a_b",
        "a.b",
        "a b",
        "a\nb",
        &"x".repeat(64),
    ] {
        assert!(bad.parse::<Hostname>().is_err(), "{bad:?}");
    }
}

#[test]
fn https_urls() {
    for ok in [
        "https://10.0.0.1:6443",
        "https://srv",
        "https://srv/x",
        "https://[fd00::1]:6443",
    ] {
        assert!(ok.parse::<HttpsUrl>().is_ok(), "{ok}");
    }
    for bad in [
        "http://10.0.0.1:6443",
        "https://",
        "https://:6443",
        "https://h:0",
        "https://h:99999",
        "https://h:x",
        "https://u@h",
        "https://h\n",
        "https://[::1",
        "10.0.0.1:6443",
    ] {
        assert!(bad.parse::<HttpsUrl>().is_err(), "{bad:?}");
    }
}

#[test]
fn interfaces_and_tokens() {
    assert!("eth0".parse::<InterfaceName>().is_ok());
    assert!("enp0s31f6.100".parse::<InterfaceName>().is_ok());
    for bad in ["", ".", "..", "a/b", "a:1", "a b", "abcdefghijklmnop"] {
        assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?}");
    }
    assert!("K10abc::server:secret".parse::<Token>().is_ok());
    for bad in ["", "a b", "a\nb", "é"] {
        assert!(bad.parse::<Token>().is_err(), "{bad:?}");
    }
}

#[test]
fn label_keys_and_values() {
    for ok in [
        "site",
        "app.kubernetes.io/name",
        "a",
        "A_b.c-D",
        "example.com/x",
    ] {
        assert!(ok.parse::<LabelKey>().is_ok(), "{ok}");
    }
    for bad in [
        "",
        "/x",
        "Example.com/x",
        "a/",
        "-a",
        "a-",
        "a/b/c",
        "a b",
        &"x".repeat(64),
    ] {
        assert!(bad.parse::<LabelKey>().is_err(), "{bad:?}");
    }
    for ok in ["", "lab", "v1.2_3", &"x".repeat(63)] {
        assert!(ok.parse::<LabelValue>().is_ok(), "{ok}");
    }
    for bad in ["-a", "a-", "a b", "a/b", "a\n", &"x".repeat(64)] {
        assert!(bad.parse::<LabelValue>().is_err(), "{bad:?}");
    }
}

#[test]
fn cidrs() {
    let c: Ipv4Cidr = "192.168.1.10/24".parse().unwrap();
    assert_eq!(c.address, Ipv4Addr::new(192, 168, 1, 10));
    assert_eq!(c.prefix, 24);
    assert_eq!(c.to_string(), "192.168.1.10/24");
    assert!("10.0.0.1/32".parse::<Ipv4Cidr>().is_ok());
    for bad in [
        "192.168.1.10",
        "192.168.1.10/0",
        "192.168.1.10/33",
        "1.2.3/8",
        "::1/64",
        "1.2.3.4/+8",
        "1.2.3.4/",
    ] {
        assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad:?}");
    }
}
