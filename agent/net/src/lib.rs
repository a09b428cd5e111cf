//! Pod networking on one node, as K3s' flannel does it with the CNI `bridge` plugin: every pod
//! gets an address from the node's pod range on a bridge, and the node masquerades pod traffic
//! leaving the cluster range.
//!
//! ```text
//!  pod netns: eth0 10.42.0.5/24 ── veth ──┐
//!  pod netns: eth0 10.42.0.6/24 ── veth ──┤ bridge cairn0 10.42.0.1/24 (gateway)
//!                                         └─ host routing, ip_forward, nf_tables masquerade
//! ```
//!
//! **Design.** [`Network::setup`] makes the bridge with the gateway address and brings it up,
//! turns on `net.ipv4.ip_forward` and installs the masquerade rule (table `ip cairn`, one NAT
//! chain per bridge; see [`nft`]); all of it idempotent, so it runs at every start.
//! [`Network::attach`] gives a pod namespace an `eth0` (a veth pair made with its peer
//! already inside the namespace, the host end a port of the bridge), an address from
//! [`ipam`] and a default route via the gateway; asked again for the same pod (after a
//! restart of `cairn`) it returns the same address and repairs what is missing.
//! [`Network::detach`] deletes the host end (which takes the pod's end along) and frees the
//! address. Everything speaks netlink through the rust-netlink packet crates over a blocking
//! socket: no `ip`, `nft` or `iptables` binary, no C library. Calls block; async callers use
//! `spawn_blocking`.
//!
//! **Limits.** IPv4 only; one node (no routes to other nodes' pod ranges yet); the host ends
//! are named `veth` + 8 hex digits of a hash of the pod's key (a clash between two pods of a
//! node is possible in theory, and fails that pod's attach).

pub mod cidr;
pub mod ipam;
mod link;
mod netlink;
pub mod nft;

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use netlink_packet_route::link::InfoKind;

pub use cidr::Ipv4Cidr;
use ipam::Ipam;
use netlink::{in_netns, Conn};

/// The nf_tables table of every Cairn network.
pub const TABLE: &str = "cairn";
/// The pod's end of its veth pair.
pub const POD_INTERFACE: &str = "eth0";
/// The bridge of a node's pods.
pub const DEFAULT_BRIDGE: &str = "cairn0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink request the kernel refused, or a socket that failed.
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The allocation files.
    #[error("{}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no free pod address left in {range}: all {count} are taken by pods of this node")]
    Exhausted { range: Ipv4Cidr, count: usize },
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn kernel(what: impl Into<String>, source: io::Error) -> Error {
        Error::Kernel {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn state(path: &Path, source: io::Error) -> Error {
        Error::State {
            path: path.to_owned(),
            source,
        }
    }
}

/// A node's pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The bridge (at most 15 bytes), `cairn0` on a node.
    pub bridge: String,
    /// The node's pod range (`spec.podCIDR`): the gateway is its first address.
    pub pod_cidr: Ipv4Cidr,
    /// The cluster's pod range: traffic to it is not masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    /// Where address allocations are kept (`DATA/agent/net`).
    pub state_dir: PathBuf,
    /// The nf_tables table ([`TABLE`]).
    pub table: String,
}

impl Config {
    pub fn new(
        bridge: &str,
        pod_cidr: Ipv4Cidr,
        cluster_cidr: Ipv4Cidr,
        state_dir: &Path,
    ) -> Config {
        Config {
            bridge: bridge.to_owned(),
            pod_cidr,
            cluster_cidr,
            state_dir: state_dir.to_owned(),
            table: TABLE.to_owned(),
        }
    }
}

/// A network made by [`Network::setup`].
pub struct Network {
    config: Config,
    gateway: Ipv4Addr,
    bridge_index: u32,
    /// The host namespace's rtnetlink socket and the allocations, one user at a time.
    inner: Mutex<(Conn, Ipam)>,
}

impl Network {
    /// Makes (or finds and repairs) the bridge, its gateway address, IP forwarding and the
    /// masquerade rule in the calling thread's network namespace.
    pub fn setup(config: Config) -> Result<Network, Error> {
        if config.bridge.is_empty() || config.bridge.len() > 15 || config.bridge.contains('/') {
            return Err(Error::Config(format!(
                "{:?} cannot be an interface name (1 to 15 bytes, no slash)",
                config.bridge
            )));
        }
        if !config.cluster_cidr.covers(&config.pod_cidr) {
            return Err(Error::Config(format!(
                "the node's pod range {} is not inside the cluster's {}",
                config.pod_cidr, config.cluster_cidr
            )));
        }
        let ipam = Ipam::open(&config.state_dir, config.pod_cidr)?;
        let gateway = config
            .pod_cidr
            .gateway()
            .ok_or_else(|| Error::Config(format!("{} has no gateway", config.pod_cidr)))?;
        let mut conn = Conn::route().map_err(|e| Error::kernel("opening rtnetlink", e))?;
        let bridge = &config.bridge;
        let what = |step: &str| format!("{step} {bridge}");
        let mut found =
            link::get(&mut conn, bridge).map_err(|e| Error::kernel(what("finding"), e))?;
        if found.is_none() {
            link::add_bridge(&mut conn, bridge, mac_for(bridge))
                .map_err(|e| Error::kernel(what("creating the bridge"), e))?;
            found = link::get(&mut conn, bridge).map_err(|e| Error::kernel(what("finding"), e))?;
        }
        let found = found.ok_or_else(|| Error::Config(format!("the bridge {bridge} vanished")))?;
        if found.kind != Some(InfoKind::Bridge) {
            return Err(Error::Config(format!(
                "an interface named {bridge} exists and is not a bridge"
            )));
        }
        link::set_only_address(&mut conn, found.index, (gateway, config.pod_cidr.prefix()))
            .map_err(|e| Error::kernel(format!("giving {bridge} the address {gateway}"), e))?;
        link::set_up(&mut conn, found.index, None)
            .map_err(|e| Error::kernel(what("bringing up"), e))?;
        enable_forwarding()?;
        let mut nf = Conn::netfilter().map_err(|e| Error::kernel("opening nfnetlink", e))?;
        nft::install(
            &mut nf,
            &config.table,
            bridge,
            config.pod_cidr,
            config.cluster_cidr,
        )?;
        Ok(Network {
            gateway,
            bridge_index: found.index,
            inner: Mutex::new((conn, ipam)),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Gives the namespace pinned at `netns` its `eth0` on the bridge, with the address `key`
    /// holds (a new one if none) and a default route via the gateway. Idempotent: a pod
    /// attached before (by this or an earlier process) keeps its address.
    pub fn attach(&self, netns: &Path, key: &str) -> Result<Ipv4Addr, Error> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (conn, ipam) = &mut *inner;
        let ip = ipam.allocate(key)?;
        let host = host_interface(key);
        let pod_end = in_netns(netns, || {
            let mut c = Conn::route().map_err(|e| Error::kernel("opening rtnetlink", e))?;
            link::get(&mut c, POD_INTERFACE)
                .map_err(|e| Error::kernel(format!("finding the pod's {POD_INTERFACE}"), e))
        })?;
        let host_end =
            link::get(conn, &host).map_err(|e| Error::kernel(format!("finding {host}"), e))?;
        if host_end.is_none() || pod_end.is_none() {
            // Half a pair (or none): start again.
            if let Some(h) = host_end {
                link::delete(conn, h.index)
                    .map_err(|e| Error::kernel(format!("deleting {host}"), e))?;
            }
            if pod_end.is_some() {
                in_netns(netns, || {
                    let mut c = Conn::route().map_err(|e| Error::kernel("opening rtnetlink", e))?;
                    link::delete_named(&mut c, POD_INTERFACE).map_err(|e| {
                        Error::kernel(format!("deleting the pod's old {POD_INTERFACE}"), e)
                    })
                })?;
            }
            let ns = File::open(netns).map_err(|e| Error::state(netns, e))?;
            link::add_veth(conn, &host, self.bridge_index, POD_INTERFACE, &ns)
                .map_err(|e| Error::kernel(format!("creating the veth pair {host}"), e))?;
        }
        let host_end = link::get(conn, &host)
            .map_err(|e| Error::kernel(format!("finding {host}"), e))?
            .ok_or_else(|| Error::Config(format!("the veth {host} vanished")))?;
        link::set_up(conn, host_end.index, Some(self.bridge_index)).map_err(|e| {
            Error::kernel(format!("bringing up {host} on {}", self.config.bridge), e)
        })?;
        let (gateway, prefix) = (self.gateway, self.config.pod_cidr.prefix());
        in_netns(netns, || {
            let mut c = Conn::route().map_err(|e| Error::kernel("opening rtnetlink", e))?;
            let eth0 = link::get(&mut c, POD_INTERFACE)
                .map_err(|e| Error::kernel(format!("finding the pod's {POD_INTERFACE}"), e))?
                .ok_or_else(|| Error::Config(format!("the pod's {POD_INTERFACE} vanished")))?;
            link::set_only_address(&mut c, eth0.index, (ip, prefix))
                .map_err(|e| Error::kernel(format!("giving the pod the address {ip}"), e))?;
            link::set_up(&mut c, eth0.index, None)
                .map_err(|e| Error::kernel(format!("bringing up the pod's {POD_INTERFACE}"), e))?;
            link::replace_default_route(&mut c, gateway, eth0.index)
                .map_err(|e| Error::kernel(format!("the pod's default route via {gateway}"), e))
        })?;
        Ok(ip)
    }

    /// Deletes the pod's veth pair (if its namespace still has one) and frees its address.
    pub fn detach(&self, key: &str) -> Result<(), Error> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (conn, ipam) = &mut *inner;
        let host = host_interface(key);
        link::delete_named(conn, &host)
            .map_err(|e| Error::kernel(format!("deleting {host}"), e))?;
        ipam.release(key)?;
        Ok(())
    }

    /// The address `key` holds, if any.
    pub fn address_of(&self, key: &str) -> Result<Option<Ipv4Addr>, Error> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.1.lookup(key)
    }

    /// Detaches every holder of an address for which `keep` says no (pods that went away while
    /// `cairn` was not running); returns what was freed.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<(Ipv4Addr, String)>, Error> {
        let allocations = {
            let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.1.allocations()?
        };
        let gone: Vec<(Ipv4Addr, String)> = allocations
            .into_iter()
            .filter(|(_, key)| !keep(key))
            .collect();
        for (_, key) in &gone {
            self.detach(key)?;
        }
        Ok(gone)
    }
}

/// Deletes the bridge of `bridge` and its chain (and the table, once empty). Allocations are
/// left on file. For tests and for taking a node's network down by hand.
pub fn teardown(bridge: &str, table: &str) -> Result<(), Error> {
    let mut conn = Conn::route().map_err(|e| Error::kernel("opening rtnetlink", e))?;
    link::delete_named(&mut conn, bridge)
        .map_err(|e| Error::kernel(format!("deleting {bridge}"), e))?;
    let mut nf = Conn::netfilter().map_err(|e| Error::kernel("opening nfnetlink", e))?;
    nft::remove(&mut nf, table, bridge)
}

/// `net.ipv4.ip_forward = 1` (of the calling thread's namespace); written only when off.
fn enable_forwarding() -> Result<(), Error> {
    let path = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| Error::state(path, e))
}

/// 64-bit FNV-1a: a stable hash for names (std's hashers may change between releases).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The host end of a pod's veth pair: `veth` and 8 hex digits of a hash of its key.
pub fn host_interface(key: &str) -> String {
    format!("veth{:08x}", fnv1a(key.as_bytes()) as u32)
}

/// A fixed, locally administered MAC address for the bridge: left to itself a bridge takes
/// the lowest address of its ports, which changes as pods come and go and breaks the pods'
/// ARP entries for the gateway.
fn mac_for(bridge: &str) -> [u8; 6] {
    let h = fnv1a(bridge.as_bytes()).to_be_bytes();
    [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_are_stable() {
        assert_eq!(host_interface("abc"), host_interface("abc"));
        assert_ne!(host_interface("abc"), host_interface("abd"));
        let name = host_interface("0dac6b03-2e7a-4eb4-85e7-2aef633924b5");
        assert!(name.len() <= 15 && name.starts_with("veth"), "{name}");
        let mac = mac_for("cairn0");
        assert_eq!(mac[0] & 0x03, 0x02, "unicast, locally administered");
        assert_eq!(mac, mac_for("cairn0"));
    }
}
