//! IPv4 networks written `10.42.0.0/24`: parsing, membership and the addresses a pod range
//! gives out. No I/O.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: its first address and prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `network/prefix`; fails when `prefix` is over 32 or `network` has host bits set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Ipv4Cidr, String> {
        if prefix > 32 {
            return Err(format!("{network}/{prefix}: the prefix length is over 32"));
        }
        let cidr = Ipv4Cidr { network, prefix };
        if u32::from(network) & !cidr.mask_bits() != 0 {
            let n = Ipv4Addr::from(u32::from(network) & cidr.mask_bits());
            return Err(format!(
                "{network}/{prefix} has host bits set (the network is {n}/{prefix})"
            ));
        }
        Ok(cidr)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask_bits(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The netmask, `255.255.255.0` for a /24.
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    /// The last address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask_bits())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.network)
    }

    /// Whether every address of `other` is in this network.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }

    /// How many addresses the network spans (2^(32 - prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `index`th address of the network (0 is the network address itself).
    pub fn nth(&self, index: u64) -> Option<Ipv4Addr> {
        (index < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + index as u32))
    }

    /// The position of `ip` in the network (the inverse of [`Ipv4Cidr::nth`]).
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u64> {
        self.contains(ip)
            .then(|| u64::from(u32::from(ip) - u32::from(self.network)))
    }

    /// The pod range's gateway: the first address after the network address (`.1` of a /24).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.pod_addresses().next()
    }

    /// The addresses a range can give to hosts: all but the network and broadcast
    /// addresses (a /31 or /32 has none to spare here: it is not a pod range).
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let last = self.size().saturating_sub(1);
        (1..last).filter_map(|i| self.nth(i))
    }

    /// The `index`th subnet of prefix length `prefix` inside this network.
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Ipv4Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        (index < count).then(|| Ipv4Cidr {
            network: Ipv4Addr::from(
                u32::from(self.network) + (index << (32 - u32::from(prefix))) as u32,
            ),
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Ipv4Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected an IPv4 network like 10.42.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{text:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{text:?}: {prefix:?} is not a prefix length"))?;
        Ipv4Cidr::new(addr, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_print_and_hold_their_addresses() {
        let c: Ipv4Cidr = "10.42.3.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert_eq!(c.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 42, 3, 255));
        assert_eq!(c.gateway(), Some(Ipv4Addr::new(10, 42, 3, 1)));
        assert!(c.contains(Ipv4Addr::new(10, 42, 3, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 42, 4, 1)));
        let hosts: Vec<_> = c.pod_addresses().collect();
        assert_eq!(hosts.len(), 254);
        assert_eq!(hosts[0], Ipv4Addr::new(10, 42, 3, 1));
        assert_eq!(hosts[253], Ipv4Addr::new(10, 42, 3, 254));
        assert_eq!(c.index_of(Ipv4Addr::new(10, 42, 3, 9)), Some(9));
        assert_eq!(c.nth(256), None);

        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        assert!(cluster.covers(&c));
        assert!(!c.covers(&cluster));
        assert_eq!(cluster.subnet(24, 0).unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(
            cluster.subnet(24, 255).unwrap().to_string(),
            "10.42.255.0/24"
        );
        assert_eq!(cluster.subnet(24, 256), None);
        assert_eq!(cluster.subnet(8, 0), None);

        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(all.mask(), Ipv4Addr::UNSPECIFIED);
        let tiny: Ipv4Cidr = "10.0.0.4/30".parse().unwrap();
        assert_eq!(tiny.pod_addresses().count(), 2);
    }

    #[test]
    fn bad_networks_say_what_is_wrong() {
        for (text, says) in [
            ("10.42.0.0", "expected an IPv4 network"),
            (
                "10.42.0.1/16",
                "host bits set (the network is 10.42.0.0/16)",
            ),
            ("10.42.0.0/33", "over 32"),
            ("fd00::/64", "not an IPv4 address"),
            ("10.42.0.0/x", "not a prefix length"),
        ] {
            let err = text.parse::<Ipv4Cidr>().unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
