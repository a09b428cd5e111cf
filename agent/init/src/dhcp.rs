//! A minimal DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK over a UDP socket bound
//! to the interface (`SO_BINDTODEVICE`, `SO_BROADCAST`). The BROADCAST flag asks the server
//! to broadcast its replies, since the kernel drops unicast to an address it does not have
//! yet. Renewal uses the REBINDING form (broadcast REQUEST with `ciaddr`), which any server
//! answers. Packet encoding and decoding are pure functions.

use std::ffi::OsString;
use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

use crate::error::{bail, Context, Result};

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
/// Subnet mask, router, DNS, domain name, lease time, server identifier.
const PARAMS: [u8; 6] = [1, 3, 6, 15, 51, 54];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Ack = 5,
    Nak = 6,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Discover,
            2 => Kind::Offer,
            3 => Kind::Request,
            5 => Kind::Ack,
            6 => Kind::Nak,
            _ => return None,
        })
    }
}

/// A client message.
#[derive(Debug)]
pub struct Message<'a> {
    pub kind: Kind,
    pub xid: u32,
    pub secs: u16,
    pub mac: [u8; 6],
    /// Our current address when renewing, else unspecified.
    pub ciaddr: Ipv4Addr,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub hostname: Option<&'a str>,
}

fn option(p: &mut Vec<u8>, code: u8, data: &[u8]) {
    let data = &data[..data.len().min(255)];
    p.push(code);
    p.push(data.len() as u8);
    p.extend_from_slice(data);
}

pub fn encode(m: &Message) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[..4].copy_from_slice(&[1, 1, 6, 0]); // BOOTREQUEST, Ethernet, 6-byte address, 0 hops
    p[4..8].copy_from_slice(&m.xid.to_be_bytes());
    p[8..10].copy_from_slice(&m.secs.to_be_bytes());
    if m.ciaddr.is_unspecified() {
        p[10] = 0x80; // BROADCAST flag
    }
    p[12..16].copy_from_slice(&m.ciaddr.octets());
    p[28..34].copy_from_slice(&m.mac);
    p.extend_from_slice(&MAGIC);
    option(&mut p, 53, &[m.kind as u8]);
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&m.mac);
    option(&mut p, 61, &client_id);
    if let Some(ip) = m.requested {
        option(&mut p, 50, &ip.octets());
    }
    if let Some(ip) = m.server_id {
        option(&mut p, 54, &ip.octets());
    }
    if let Some(name) = m.hostname.filter(|n| !n.is_empty()) {
        option(&mut p, 12, name.as_bytes());
    }
    option(&mut p, 55, &PARAMS);
    option(&mut p, 57, &1500u16.to_be_bytes());
    p.push(255);
    if p.len() < 300 {
        p.resize(300, 0); // the BOOTP minimum; some servers drop shorter packets
    }
    p
}

/// A server reply addressed to us.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub kind: Option<Kind>,
    pub yiaddr: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: Option<u32>,
}

fn ip4(d: &[u8]) -> Option<Ipv4Addr> {
    (d.len() >= 4).then(|| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
}

/// Decodes a BOOTREPLY for transaction `xid` and hardware address `mac`; anything else,
/// including malformed packets, is `None`.
pub fn decode(buf: &[u8], xid: u32, mac: &[u8; 6]) -> Option<Reply> {
    if buf.len() < 240 || buf[..3] != [2, 1, 6] || buf[4..8] != xid.to_be_bytes() {
        return None;
    }
    if buf[28..34] != mac[..] || buf[236..240] != MAGIC {
        return None;
    }
    let mut r = Reply {
        yiaddr: ip4(&buf[16..20]).filter(|a| !a.is_unspecified()),
        ..Reply::default()
    };
    let mut i = 240;
    while i < buf.len() {
        let code = buf[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = *buf.get(i + 1)? as usize;
        let data = buf.get(i + 2..i + 2 + len)?;
        match code {
            53 => r.kind = data.first().and_then(|k| Kind::from_u8(*k)),
            1 => r.netmask = ip4(data),
            3 => r.router = ip4(data),
            6 => r.dns = data.chunks_exact(4).filter_map(ip4).collect(),
            51 => {
                r.lease_secs =
                    (len >= 4).then(|| u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
            }
            54 => r.server_id = ip4(data),
            _ => {}
        }
        i += 2 + len;
    }
    r.kind?;
    Some(r)
}

/// Prefix length of a netmask (its leading one bits).
pub fn mask_to_prefix(mask: Ipv4Addr) -> u8 {
    u32::from(mask).leading_ones() as u8
}

/// An acquired address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: u32,
}

impl Lease {
    /// Builds a lease from an ACK; without a netmask option the classful prefix is used.
    pub fn from_ack(ack: &Reply) -> Option<Lease> {
        let address = ack.yiaddr?;
        let classful = match address.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        };
        Some(Lease {
            address,
            prefix: ack.netmask.map_or(classful, mask_to_prefix),
            router: ack.router,
            dns: ack.dns.clone(),
            lease_secs: ack.lease_secs.unwrap_or(3600).max(60),
        })
    }
}

fn random_xid() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u32::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id()
}

/// A DHCP conversation on one interface.
pub struct Client<'a> {
    sock: UdpSocket,
    mac: [u8; 6],
    hostname: Option<&'a str>,
    started: Instant,
}

impl<'a> Client<'a> {
    pub fn open(iface: &str, mac: [u8; 6], hostname: Option<&'a str>) -> Result<Client<'a>> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context("socket")?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("SO_REUSEADDR")?;
        setsockopt(&fd, sockopt::Broadcast, &true).context("SO_BROADCAST")?;
        setsockopt(&fd, sockopt::BindToDevice, &OsString::from(iface))
            .context("SO_BINDTODEVICE")?;
        bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, CLIENT_PORT)).context("bind port 68")?;
        Ok(Client {
            sock: UdpSocket::from(fd),
            mac,
            hostname,
            started: Instant::now(),
        })
    }

    fn send(
        &self,
        kind: Kind,
        xid: u32,
        ciaddr: Ipv4Addr,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
    ) -> Result<()> {
        let secs = u16::try_from(self.started.elapsed().as_secs()).unwrap_or(u16::MAX);
        let msg = Message {
            kind,
            xid,
            secs,
            mac: self.mac,
            ciaddr,
            requested,
            server_id,
            hostname: self.hostname,
        };
        self.sock
            .send_to(&encode(&msg), (Ipv4Addr::BROADCAST, SERVER_PORT))
            .context(format!("send DHCP {kind:?}"))?;
        Ok(())
    }

    /// Waits until `deadline` for a reply of one of `kinds`.
    fn receive(&self, xid: u32, deadline: Instant, kinds: &[Kind]) -> Result<Option<Reply>> {
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sock
                .set_read_timeout(Some(left))
                .context("SO_RCVTIMEO")?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(r) = decode(&buf[..n], xid, &self.mac) {
                        if r.kind.is_some_and(|k| kinds.contains(&k)) {
                            return Ok(Some(r));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e).context("receive DHCP reply"),
            }
        }
    }

    /// DISCOVER/OFFER/REQUEST/ACK, retransmitting after 1, 2, 4, 4... s, within `budget`.
    pub fn acquire(&self, budget: Duration) -> Result<Lease> {
        let deadline = Instant::now() + budget;
        let mut wait = Duration::from_secs(1);
        while Instant::now() < deadline {
            let xid = random_xid();
            self.send(Kind::Discover, xid, Ipv4Addr::UNSPECIFIED, None, None)?;
            let offer_by = deadline.min(Instant::now() + wait);
            wait = (wait * 2).min(Duration::from_secs(4));
            let Some(offer) = self.receive(xid, offer_by, &[Kind::Offer])? else {
                continue;
            };
            let Some(offered) = offer.yiaddr else {
                continue;
            };
            self.send(
                Kind::Request,
                xid,
                Ipv4Addr::UNSPECIFIED,
                Some(offered),
                offer.server_id,
            )?;
            let ack_by = deadline.min(Instant::now() + Duration::from_secs(2));
            match self.receive(xid, ack_by, &[Kind::Ack, Kind::Nak])? {
                Some(r) if r.kind == Some(Kind::Ack) => {
                    let ack = Reply {
                        yiaddr: r.yiaddr.or(Some(offered)),
                        ..r
                    };
                    if let Some(lease) = Lease::from_ack(&ack) {
                        return Ok(lease);
                    }
                }
                _ => {}
            }
        }
        bail!("no DHCP lease within {}s", budget.as_secs())
    }

    /// Extends `lease`; `Ok(None)` when the server refuses (NAK) and a new lease is needed.
    pub fn renew(&self, lease: &Lease, budget: Duration) -> Result<Option<Lease>> {
        let xid = random_xid();
        self.send(Kind::Request, xid, lease.address, None, None)?;
        match self.receive(xid, Instant::now() + budget, &[Kind::Ack, Kind::Nak])? {
            Some(r) if r.kind == Some(Kind::Ack) => Ok(Lease::from_ack(&Reply {
                yiaddr: r.yiaddr.or(Some(lease.address)),
                ..r
            })),
            Some(_) => Ok(None),
            None => bail!("no answer to DHCP renewal"),
        }
    }
}

#[cfg(test)]
#[path = "dhcp_tests.rs"]
mod tests;
