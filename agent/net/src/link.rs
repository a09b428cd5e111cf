//! The rtnetlink requests the network needs: links (bridge, veth), IPv4 addresses and the
//! default route, each an `ip` command's equivalent, over a [`Conn`] of the namespace to change.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::netlink::Conn;

/// What the network needs to know of an interface.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub kind: Option<InfoKind>,
}

fn no_device(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ENODEV)
}

/// `ip link show NAME`; `None` when there is none.
pub fn get(conn: &mut Conn, name: &str) -> io::Result<Option<Link>> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    let answers = match conn.request(RouteNetlinkMessage::GetLink(msg), 0) {
        Ok(a) => a,
        Err(e) if no_device(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(answers.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(link) => Some(Link {
            index: link.header.index,
            kind: link.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.clone()),
                    _ => None,
                }),
                _ => None,
            }),
        }),
        _ => None,
    }))
}

/// `ip link add NAME address MAC type bridge`; an existing one is left as it is.
pub fn add_bridge(conn: &mut Conn, name: &str, mac: [u8; 6]) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    msg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Bridge,
        )]));
    match conn.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EEXIST) => Ok(()),
        other => other.map(drop),
    }
}

/// `ip link add HOST master BRIDGE type veth peer name PEER netns NS`: the peer is made
/// inside the namespace `netns` (an open namespace file), so its name may be taken here.
pub fn add_veth(
    conn: &mut Conn,
    host: &str,
    bridge: u32,
    peer: &str,
    netns: &impl AsRawFd,
) -> io::Result<()> {
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(peer.to_owned()));
    peer_msg
        .attributes
        .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(host.to_owned()));
    msg.attributes.push(LinkAttribute::Controller(bridge));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));
    conn.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
        .map(drop)
}

/// `ip link set dev INDEX up [master M]`.
pub fn set_up(conn: &mut Conn, index: u32, master: Option<u32>) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    if let Some(m) = master {
        msg.attributes.push(LinkAttribute::Controller(m));
    }
    conn.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
}

/// `ip link del INDEX`; a missing one is fine.
pub fn delete(conn: &mut Conn, index: u32) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    match conn.request(RouteNetlinkMessage::DelLink(msg), 0) {
        Err(e) if no_device(&e) => Ok(()),
        other => other.map(drop),
    }
}

/// `ip link del NAME`; a missing one is fine.
pub fn delete_named(conn: &mut Conn, name: &str) -> io::Result<()> {
    match get(conn, name)? {
        Some(link) => delete(conn, link.index),
        None => Ok(()),
    }
}

/// The IPv4 addresses (with prefix lengths) of interface `index`.
pub fn addresses(conn: &mut Conn, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    let answers = conn.request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, a.header.prefix_len)),
                    _ => None,
                })
            }
            _ => None,
        })
        .collect())
}

fn address_message(index: u32, ip: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(ip.into()));
    msg.attributes.push(AddressAttribute::Address(ip.into()));
    if prefix < 31 {
        let broadcast = u32::from(ip) | (u32::MAX >> prefix);
        msg.attributes
            .push(AddressAttribute::Broadcast(Ipv4Addr::from(broadcast)));
    }
    msg
}

/// `ip addr replace IP/PREFIX dev INDEX`.
pub fn add_address(conn: &mut Conn, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
    conn.request(
        RouteNetlinkMessage::NewAddress(address_message(index, ip, prefix)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(drop)
}

/// `ip addr del IP/PREFIX dev INDEX`.
pub fn delete_address(conn: &mut Conn, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
    conn.request(
        RouteNetlinkMessage::DelAddress(address_message(index, ip, prefix)),
        0,
    )
    .map(drop)
}

/// Makes `want` the only IPv4 address of interface `index`.
pub fn set_only_address(conn: &mut Conn, index: u32, want: (Ipv4Addr, u8)) -> io::Result<()> {
    let have = addresses(conn, index)?;
    for (ip, prefix) in have.iter().filter(|a| **a != want) {
        delete_address(conn, index, *ip, *prefix)?;
    }
    if !have.contains(&want) {
        add_address(conn, index, want.0, want.1)?;
    }
    Ok(())
}

/// `ip route replace default via GATEWAY dev INDEX`.
pub fn replace_default_route(conn: &mut Conn, gateway: Ipv4Addr, index: u32) -> io::Result<()> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
    msg.attributes.push(RouteAttribute::Oif(index));
    conn.request(
        RouteNetlinkMessage::NewRoute(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(drop)
}
