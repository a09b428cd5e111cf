//! The node config as rendered by `cairn config render` (flat `KEY=VALUE` lines, see
//! docs/design.md "Node config") and the board file `/etc/cairn/board`.

use std::net::Ipv4Addr;
use std::path::Path;

pub const CAIRN_BIN: &str = "/usr/bin/cairn";
pub const NODE_YAML: &str = "/boot/cairn/node.yaml";
pub const BOARD_FILE: &str = "/etc/cairn/board";

/// Parses `KEY=VALUE` lines. Blank lines, `#` comments and lines without `=` are skipped;
/// keys and values are trimmed; there is no quoting.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    Dhcp,
    /// A fixed address and prefix length.
    Static(Ipv4Addr, u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub role: Role,
    pub hostname: Option<String>,
    pub interface: Option<String>,
    pub mode: NetMode,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Every `CAIRN_*` pair of the rendered config, passed to `cairn` as its environment.
    pub env: Vec<(String, String)>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            role: Role::Server,
            hostname: None,
            interface: None,
            mode: NetMode::Dhcp,
            gateway: None,
            dns: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((addr.parse().ok()?, len))
}

impl NodeConfig {
    /// Builds the config from rendered pairs. Values init cannot use are reported in
    /// `problems` and replaced by defaults, so a bad value never stops the boot.
    pub fn from_pairs(pairs: &[(String, String)], problems: &mut Vec<String>) -> NodeConfig {
        let mut cfg = NodeConfig::default();
        let mut address = None;
        let mut static_mode = false;
        for (key, value) in pairs {
            if key.starts_with("CAIRN_") {
                cfg.env.push((key.clone(), value.clone()));
            }
            let v = value.as_str();
            let mut bad = || problems.push(format!("{key}={value}"));
            match key.as_str() {
                "CAIRN_ROLE" => match v {
                    "server" => cfg.role = Role::Server,
                    "agent" => cfg.role = Role::Agent,
                    _ => bad(),
                },
                "CAIRN_HOSTNAME" if !v.is_empty() => cfg.hostname = Some(v.to_string()),
                "CAIRN_NET_INTERFACE" if !v.is_empty() => cfg.interface = Some(v.to_string()),
                "CAIRN_NET_MODE" => match v {
                    "dhcp" | "" => static_mode = false,
                    "static" => static_mode = true,
                    _ => bad(),
                },
                "CAIRN_NET_ADDRESS" if !v.is_empty() => match parse_cidr(v) {
                    Some(a) => address = Some(a),
                    None => bad(),
                },
                "CAIRN_NET_GATEWAY" if !v.is_empty() => match v.parse() {
                    Ok(gw) => cfg.gateway = Some(gw),
                    Err(_) => bad(),
                },
                "CAIRN_NET_DNS" => {
                    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        match part.parse() {
                            Ok(ip) => cfg.dns.push(ip),
                            Err(_) => problems.push(format!("{key}: {part}")),
                        }
                    }
                }
                _ => {}
            }
        }
        if static_mode {
            match address {
                Some((ip, len)) => cfg.mode = NetMode::Static(ip, len),
                None => problems.push("CAIRN_NET_MODE=static without CAIRN_NET_ADDRESS".into()),
            }
        }
        cfg
    }
}

/// Runs `cairn config render` on the seed config. Any failure means defaults, logged.
pub fn render() -> NodeConfig {
    if !Path::new(NODE_YAML).exists() {
        info!("config {NODE_YAML} absent, using defaults");
        return NodeConfig::default();
    }
    let output = crate::sys::command(CAIRN_BIN)
        .args(["config", "render", NODE_YAML])
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            warn!("cannot run {CAIRN_BIN} config render: {e}; using defaults");
            return NodeConfig::default();
        }
    };
    if !output.status.success() {
        warn!("invalid node config ({}), using defaults:", output.status);
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            warn!("  {line}");
        }
        return NodeConfig::default();
    }
    let mut problems = Vec::new();
    let cfg = NodeConfig::from_pairs(
        &parse_env(&String::from_utf8_lossy(&output.stdout)),
        &mut problems,
    );
    for p in problems {
        warn!("config value ignored: {p}");
    }
    cfg
}

/// Board facts baked into the image by the builder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Board {
    /// Grow the data partition and filesystem to the end of the disk.
    pub grow_data: bool,
    /// Without a data partition, keep node state on a tmpfs (network-booted, possibly
    /// diskless nodes) instead of stopping the boot.
    pub data_tmpfs_fallback: bool,
    /// A slot's read-only root is a file on the slot's boot partition (`cairn-boot-<slot>`,
    /// [`cairn_slots::mbr::ROOT_FILE`]): Raspberry Pi cards, whose slots are FAT partitions.
    pub root_in_boot: bool,
}

impl Board {
    pub fn parse(text: &str) -> Board {
        let mut board = Board::default();
        for (k, v) in parse_env(text) {
            match k.as_str() {
                "grow_data" => board.grow_data = matches!(v.as_str(), "1" | "true" | "yes"),
                "data_fallback" => board.data_tmpfs_fallback = v == "tmpfs",
                "slot_root" => board.root_in_boot = v == "boot-file",
                _ => {}
            }
        }
        board
    }

    pub fn load() -> Board {
        std::fs::read_to_string(BOARD_FILE)
            .map(|t| Board::parse(&t))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> (NodeConfig, Vec<String>) {
        let mut problems = Vec::new();
        (
            NodeConfig::from_pairs(&parse_env(text), &mut problems),
            problems,
        )
    }

    #[test]
    fn env_lines() {
        let pairs = parse_env("# c\n\nA=1\n B = x y \nnoequals\n=v\nC=\nD=a=b\r\n");
        let want = [("A", "1"), ("B", "x y"), ("C", ""), ("D", "a=b")];
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn design_example() {
        let (c, problems) = cfg(
            "CAIRN_ROLE=server\nCAIRN_HOSTNAME=edge-1\nCAIRN_NET_INTERFACE=\n\
             CAIRN_NET_MODE=dhcp\nCAIRN_NET_ADDRESS=\nCAIRN_NET_GATEWAY=\n\
             CAIRN_NET_DNS=192.168.1.1,1.1.1.1\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.role, Role::Server);
        assert_eq!(c.hostname.as_deref(), Some("edge-1"));
        assert_eq!(c.interface, None);
        assert_eq!(c.mode, NetMode::Dhcp);
        assert_eq!(
            c.dns,
            [Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(c.env.len(), 7);
    }

    #[test]
    fn static_agent() {
        let (c, problems) = cfg("CAIRN_ROLE=agent\nCAIRN_SERVER=https://10.0.0.1:6443\n\
             CAIRN_NET_INTERFACE=eth1\nCAIRN_NET_MODE=static\nCAIRN_NET_ADDRESS=192.168.1.10/24\n\
             CAIRN_NET_GATEWAY=192.168.1.1\nOTHER=x\n");
        assert!(problems.is_empty());
        assert_eq!(c.role, Role::Agent);
        assert_eq!(c.interface.as_deref(), Some("eth1"));
        assert_eq!(c.mode, NetMode::Static(Ipv4Addr::new(192, 168, 1, 10), 24));
        assert_eq!(c.gateway, Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert!(c
            .env
            .iter()
            .any(|(k, v)| k == "CAIRN_SERVER" && v == "https://10.0.0.1:6443"));
        assert!(!c.env.iter().any(|(k, _)| k == "OTHER"));
    }

    #[test]
    fn bad_values_fall_back() {
        let (c, problems) =
            cfg("CAIRN_ROLE=boss\nCAIRN_NET_MODE=static\nCAIRN_NET_ADDRESS=10.0.0.1/40\nCAIRN_NET_DNS=x,8.8.8.8");
        assert_eq!(c.role, Role::Server);
        assert_eq!(c.mode, NetMode::Dhcp);
        assert_eq!(c.dns, [Ipv4Addr::new(8, 8, 8, 8)]);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("10.0.2.15/24"),
            Some((Ipv4Addr::new(10, 0, 2, 15), 24))
        );
        assert_eq!(parse_cidr("10.0.2.15"), None);
        assert_eq!(parse_cidr("10.0.2/24"), None);
    }

    #[test]
    fn board() {
        assert!(Board::parse("# rpi4\ngrow_data=1\n").grow_data);
        assert!(!Board::parse("grow_data=0\n").grow_data);
        assert!(!Board::parse("").grow_data);
        assert!(Board::parse("grow_data=0\ndata_fallback=tmpfs\n").data_tmpfs_fallback);
        assert!(!Board::parse("data_fallback=none\n").data_tmpfs_fallback);
        assert!(Board::parse("slot_root=boot-file\n").root_in_boot);
        assert!(!Board::parse("slot_root=partition\n").root_in_boot);
    }
}
