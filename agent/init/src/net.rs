//! Network bring-up: loopback, the node's interface (static or DHCP), the default route and
//! `/run/cairn/resolv.conf`; afterwards DHCP retries and renewals from the supervisor loop.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::config::{NetMode, NodeConfig};
use crate::dhcp::{Client, Lease};
use crate::error::{Context, Result};
use crate::sys;

const SYS_NET: &str = "/sys/class/net";
pub const RESOLV: &str = "/run/cairn/resolv.conf";
const DHCP_BOOT_BUDGET: Duration = Duration::from_secs(10);
const DHCP_RETRY: Duration = Duration::from_secs(30);
const DHCP_TRY_BUDGET: Duration = Duration::from_secs(4);

/// Parses `52:54:00:12:34:56`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `cairn-` and the last three bytes of the MAC in hex.
pub fn default_hostname(mac: Option<[u8; 6]>) -> String {
    match mac {
        Some(m) => format!("cairn-{:02x}{:02x}{:02x}", m[3], m[4], m[5]),
        None => "cairn".to_string(),
    }
}

pub fn mac_of(iface: &str) -> Option<[u8; 6]> {
    parse_mac(&fs::read_to_string(format!("{SYS_NET}/{iface}/address")).ok()?)
        .filter(|m| *m != [0; 6])
}

/// Non-loopback interfaces, best first: Ethernet-like devices backed by hardware, then other
/// Ethernet-like ones (gretap0 and friends), then the rest; by name within each group.
pub fn interfaces() -> Vec<String> {
    let mut names: Vec<(u8, String)> = fs::read_dir(SYS_NET)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .map(|n| {
            let ether =
                fs::read_to_string(format!("{SYS_NET}/{n}/type")).is_ok_and(|t| t.trim() == "1");
            let hardware = Path::new(&format!("{SYS_NET}/{n}/device")).exists();
            (u8::from(!ether) * 2 + u8::from(!hardware), n)
        })
        .collect();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

/// Waits up to `timeout` for the configured interface, or any interface.
pub fn wait_for_interface(configured: Option<&str>, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = match configured {
            Some(name) => Path::new(SYS_NET)
                .join(name)
                .exists()
                .then(|| name.to_string()),
            None => interfaces().into_iter().next(),
        };
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        sleep(Duration::from_millis(50));
    }
}

pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0),
    )
}

/// The resolver file: configured servers first, then DHCP's, at most three (glibc's limit).
pub fn resolv_conf(configured: &[Ipv4Addr], dhcp: &[Ipv4Addr]) -> String {
    let mut seen: Vec<Ipv4Addr> = Vec::new();
    for ip in configured.iter().chain(dhcp) {
        if !seen.contains(ip) && seen.len() < 3 {
            seen.push(*ip);
        }
    }
    seen.iter().map(|ip| format!("nameserver {ip}\n")).collect()
}

fn write_atomic(path: &str, text: &str) -> Result<()> {
    let tmp = format!("{path}.tmp");
    fs::write(&tmp, text).context(format!("write {tmp}"))?;
    fs::rename(&tmp, path).context(format!("rename {tmp}"))
}

pub fn loopback_up() -> Result<()> {
    sys::link_up("lo")?;
    sys::set_ipv4("lo", Ipv4Addr::LOCALHOST, Ipv4Addr::new(255, 0, 0, 0))
}

/// The node's network and, in DHCP mode, the state of its lease.
pub struct Network {
    iface: String,
    hostname: String,
    mac: [u8; 6],
    dns: Vec<Ipv4Addr>,
    lease: Option<Lease>,
    /// When to renew (with a lease) or retry (without); `None` for static addresses.
    next: Option<Instant>,
    expires: Option<Instant>,
    /// A failed DHCP attempt was reported; later ones stay quiet until one succeeds.
    reported: bool,
}

impl Network {
    /// Brings up loopback and `iface` as configured and logs the `network` marker.
    pub fn start(cfg: &NodeConfig, iface: Option<String>, hostname: &str) -> Option<Network> {
        if let Err(e) = loopback_up() {
            warn!("loopback: {e}");
        }
        let _ = write_atomic(RESOLV, &resolv_conf(&cfg.dns, &[]));
        let Some(iface) = iface else {
            warn!("no network interface found");
            return None;
        };
        if let Err(e) = sys::link_up(&iface) {
            warn!("{e}");
        }
        let mut net = Network {
            mac: mac_of(&iface).unwrap_or([0; 6]),
            iface,
            hostname: hostname.to_string(),
            dns: cfg.dns.clone(),
            lease: None,
            next: None,
            expires: None,
            reported: false,
        };
        match cfg.mode {
            NetMode::Static(address, prefix) => {
                let lease = Lease {
                    address,
                    prefix,
                    router: cfg.gateway,
                    dns: Vec::new(),
                    lease_secs: 0,
                };
                match net.apply(&lease) {
                    Ok(()) => net.marker("static", &lease),
                    Err(e) => warn!("network iface={} mode=static: {e}", net.iface),
                }
            }
            NetMode::Dhcp => net.dhcp(DHCP_BOOT_BUDGET),
        }
        Some(net)
    }

    fn marker(&self, mode: &str, lease: &Lease) {
        let gateway = lease.router.map_or("none".to_string(), |g| g.to_string());
        info!(
            "network iface={} mode={mode} address={}/{} gateway={gateway}",
            self.iface, lease.address, lease.prefix
        );
    }

    fn apply(&self, lease: &Lease) -> Result<()> {
        sys::set_ipv4(&self.iface, lease.address, prefix_to_mask(lease.prefix))?;
        if let Some(gw) = lease.router {
            sys::add_default_route(&self.iface, gw)?;
        }
        write_atomic(RESOLV, &resolv_conf(&self.dns, &lease.dns))
    }

    fn take_lease(&mut self, lease: Lease) {
        let now = Instant::now();
        self.next = Some(now + Duration::from_secs(u64::from(lease.lease_secs / 2)));
        self.expires = Some(now + Duration::from_secs(u64::from(lease.lease_secs)));
        self.lease = Some(lease);
    }

    /// Runs DISCOVER..ACK within `budget`; on failure schedules a retry.
    fn dhcp(&mut self, budget: Duration) {
        let got = Client::open(&self.iface, self.mac, Some(&self.hostname))
            .and_then(|c| c.acquire(budget));
        match got.and_then(|lease| self.apply(&lease).map(|()| lease)) {
            Ok(lease) => {
                self.marker("dhcp", &lease);
                self.take_lease(lease);
                self.reported = false;
            }
            Err(e) => {
                if !self.reported {
                    warn!(
                        "network iface={} mode=dhcp: {e}; retrying every {}s",
                        self.iface,
                        DHCP_RETRY.as_secs()
                    );
                    self.reported = true;
                }
                self.next = Some(Instant::now() + DHCP_RETRY);
            }
        }
    }

    /// When [`Network::tick`] wants to run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Renews the lease or retries DHCP when due. Blocks for at most a few seconds.
    pub fn tick(&mut self, now: Instant) {
        if self.next.is_none_or(|t| now < t) {
            return;
        }
        let Some(lease) = self.lease.clone() else {
            self.dhcp(DHCP_TRY_BUDGET);
            return;
        };
        let renewed = Client::open(&self.iface, self.mac, Some(&self.hostname))
            .and_then(|c| c.renew(&lease, Duration::from_secs(3)));
        match renewed {
            Ok(Some(new)) if new.address == lease.address => self.take_lease(new),
            Ok(Some(_)) | Ok(None) => {
                info!(
                    "DHCP lease of {} refused, asking for a new one",
                    lease.address
                );
                self.lease = None;
                self.dhcp(DHCP_TRY_BUDGET);
            }
            Err(e) => {
                if self.expires.is_some_and(|t| now >= t) {
                    warn!(
                        "DHCP lease of {} expired ({e}); keeping the address, looking for a server",
                        lease.address
                    );
                    self.lease = None;
                }
                self.next = Some(now + Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_and_hostname() {
        let mac = parse_mac("52:54:00:ab:cd:0e\n");
        assert_eq!(mac, Some([0x52, 0x54, 0, 0xab, 0xcd, 0x0e]));
        assert_eq!(default_hostname(mac), "cairn-abcd0e");
        assert_eq!(default_hostname(None), "cairn");
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:0e:ff"), None);
        assert_eq!(parse_mac("zz:54:00:ab:cd:0e"), None);
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_to_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_to_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_to_mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(prefix_to_mask(20), Ipv4Addr::new(255, 255, 240, 0));
    }

    #[test]
    fn resolver_file() {
        let a = Ipv4Addr::new(192, 168, 1, 1);
        let b = Ipv4Addr::new(10, 0, 2, 3);
        assert_eq!(
            resolv_conf(&[a], &[b, a]),
            "nameserver 192.168.1.1\nnameserver 10.0.2.3\n"
        );
        assert_eq!(resolv_conf(&[], &[]), "");
        assert_eq!(
            resolv_conf(
                &[a, b],
                &[Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)]
            )
            .lines()
            .count(),
            3
        );
    }
}
