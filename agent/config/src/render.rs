//! `cairn config render`: the node config as flat `KEY=VALUE` lines for init, which has no
//! YAML parser.

use std::fmt::Write;

use crate::node::{NetMode, NodeConfig};

/// Renders the lines of design.md ("Node config"), each ending in `\n`, in a fixed order.
///
/// Values are never quoted and never contain a newline (the value types reject them).
/// Unset values are empty: init chooses the hostname and the interface itself.
/// `CAIRN_NET_ADDRESS` and `CAIRN_NET_GATEWAY` are empty unless the mode is static.
pub fn render_env(config: &NodeConfig) -> String {
    let net = &config.network;
    let is_static = net.mode == NetMode::Static;
    let or_empty = |v: Option<String>| v.unwrap_or_default();
    let dns: Vec<String> = net.dns.iter().map(ToString::to_string).collect();
    let lines = [
        ("CAIRN_ROLE", config.role.as_str().to_owned()),
        (
            "CAIRN_HOSTNAME",
            or_empty(config.hostname.as_ref().map(ToString::to_string)),
        ),
        (
            "CAIRN_NET_INTERFACE",
            or_empty(net.interface.as_ref().map(ToString::to_string)),
        ),
        ("CAIRN_NET_MODE", net.mode.as_str().to_owned()),
        (
            "CAIRN_NET_ADDRESS",
            or_empty(net.address.filter(|_| is_static).map(|a| a.to_string())),
        ),
        (
            "CAIRN_NET_GATEWAY",
            or_empty(net.gateway.filter(|_| is_static).map(|g| g.to_string())),
        ),
        ("CAIRN_NET_DNS", dns.join(",")),
    ];
    let mut out = String::new();
    for (key, value) in lines {
        debug_assert!(!value.contains('\n'));
        let _ = writeln!(out, "{key}={value}");
    }
    out
}
