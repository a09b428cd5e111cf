use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn discover() -> Vec<u8> {
    encode(&Message {
        kind: Kind::Discover,
        xid: 0xdead_beef,
        secs: 3,
        mac: MAC,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        requested: None,
        server_id: None,
        hostname: Some("cairn-123456"),
    })
}

/// The options of an encoded packet as (code, data) pairs.
fn options(p: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 240;
    while p[i] != 255 {
        let len = p[i + 1] as usize;
        out.push((p[i], p[i + 2..i + 2 + len].to_vec()));
        i += 2 + len;
    }
    out
}

/// A server reply like QEMU's slirp sends.
fn reply(kind: u8, xid: u32, extra: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[..3].copy_from_slice(&[2, 1, 6]);
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[16..20].copy_from_slice(&[10, 0, 2, 15]);
    p[20..24].copy_from_slice(&[10, 0, 2, 2]);
    p[28..34].copy_from_slice(&MAC);
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&[53, 1, kind, 0, 0]); // two pad bytes
    for (code, data) in extra {
        p.push(*code);
        p.push(data.len() as u8);
        p.extend_from_slice(data);
    }
    p.push(255);
    p
}

#[test]
fn discover_packet() {
    let p = discover();
    assert_eq!(p.len(), 300);
    assert_eq!(p[..4], [1, 1, 6, 0]);
    assert_eq!(p[4..8], [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(p[8..10], [0, 3]);
    assert_eq!(p[10..12], [0x80, 0], "BROADCAST flag");
    assert_eq!(p[12..28], [0; 16], "ciaddr, yiaddr, siaddr, giaddr");
    assert_eq!(p[28..34], MAC);
    assert_eq!(p[34..44], [0; 10]);
    assert_eq!(p[236..240], [99, 130, 83, 99]);
    let opts = options(&p);
    assert_eq!(opts[0], (53, vec![1]));
    assert_eq!(opts[1], (61, [&[1u8][..], &MAC].concat()));
    assert!(opts.contains(&(12, b"cairn-123456".to_vec())));
    assert!(opts.contains(&(55, vec![1, 3, 6, 15, 51, 54])));
}

#[test]
fn request_and_renew_packets() {
    let mut m = Message {
        kind: Kind::Request,
        xid: 7,
        secs: 0,
        mac: MAC,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        requested: Some(Ipv4Addr::new(10, 0, 2, 15)),
        server_id: Some(Ipv4Addr::new(10, 0, 2, 2)),
        hostname: None,
    };
    let opts = options(&encode(&m));
    assert_eq!(opts[0], (53, vec![3]));
    assert!(opts.contains(&(50, vec![10, 0, 2, 15])));
    assert!(opts.contains(&(54, vec![10, 0, 2, 2])));
    assert!(!opts.iter().any(|(c, _)| *c == 12));

    m.ciaddr = Ipv4Addr::new(10, 0, 2, 15);
    m.requested = None;
    m.server_id = None;
    let p = encode(&m);
    assert_eq!(p[10], 0, "no BROADCAST flag when renewing");
    assert_eq!(p[12..16], [10, 0, 2, 15]);
    assert!(!options(&p).iter().any(|(c, _)| *c == 50 || *c == 54));
}

#[test]
fn decode_offer() {
    let p = reply(
        2,
        42,
        &[
            (1, &[255, 255, 255, 0]),
            (3, &[10, 0, 2, 2, 10, 0, 2, 1]),
            (6, &[10, 0, 2, 3, 1, 1, 1, 1]),
            (51, &[0, 1, 81, 128]),
            (54, &[10, 0, 2, 2]),
            (15, b"example"),
        ],
    );
    let r = decode(&p, 42, &MAC).unwrap();
    assert_eq!(r.kind, Some(Kind::Offer));
    assert_eq!(r.yiaddr, Some(Ipv4Addr::new(10, 0, 2, 15)));
    assert_eq!(r.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(r.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
    assert_eq!(
        r.dns,
        [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
    );
    assert_eq!(r.lease_secs, Some(86400));
    assert_eq!(r.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
    let lease = Lease::from_ack(&r).unwrap();
    assert_eq!(
        (lease.address, lease.prefix, lease.lease_secs),
        (Ipv4Addr::new(10, 0, 2, 15), 24, 86400)
    );
}

#[test]
fn decode_rejects_foreign_and_malformed() {
    let p = reply(5, 42, &[]);
    assert!(decode(&p, 42, &MAC).is_some());
    assert!(decode(&p, 43, &MAC).is_none(), "other transaction");
    assert!(decode(&p, 42, &[0; 6]).is_none(), "other client");
    assert!(
        decode(&discover(), 0xdead_beef, &MAC).is_none(),
        "a request, not a reply"
    );
    assert!(decode(&p[..239], 42, &MAC).is_none(), "truncated header");
    let mut bad = reply(5, 42, &[]);
    bad.truncate(bad.len() - 1);
    bad.extend_from_slice(&[6, 40, 1, 2]);
    assert!(decode(&bad, 42, &MAC).is_none(), "option runs past the end");
    assert!(
        decode(&reply(9, 42, &[]), 42, &MAC).is_none(),
        "unknown message type"
    );
    let mut no_end = reply(6, 42, &[]);
    no_end.pop();
    assert_eq!(
        decode(&no_end, 42, &MAC).unwrap().kind,
        Some(Kind::Nak),
        "missing end option tolerated"
    );
}

#[test]
fn lease_defaults() {
    let r = Reply {
        kind: Some(Kind::Ack),
        yiaddr: Some(Ipv4Addr::new(172, 16, 0, 9)),
        ..Reply::default()
    };
    let lease = Lease::from_ack(&r).unwrap();
    assert_eq!(
        (lease.prefix, lease.lease_secs, lease.router),
        (16, 3600, None)
    );
    assert!(Lease::from_ack(&Reply::default()).is_none());
    assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 240, 0)), 20);
    assert_eq!(mask_to_prefix(Ipv4Addr::UNSPECIFIED), 0);
}
