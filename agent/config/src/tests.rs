//! Node config parsing, validation and rendering, as `cairn config render` sees them.

use std::net::Ipv4Addr;

use crate::*;

const FULL: &str = "\
hostname: edge-1            # default: cairn-<mac>
role: agent
server: https://10.0.0.1:6443
token: K10abc::server:secret
network:
  interface: eth0
  mode: static
  address: 192.168.1.10/24
  gateway: 192.168.1.1
  dns: [192.168.1.1, 1.1.1.1]
labels: {site: lab, app.kubernetes.io/part-of: cairn}
";

fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(text, "node.yaml")
}

/// Parses text that must fail; returns (line, column, message).
fn fail(text: &str) -> (usize, usize, String) {
    let err = parse(text).expect_err(text);
    let loc = err.location().clone();
    assert_eq!(loc.file, "node.yaml");
    let shown = err.to_string();
    let prefix = format!("node.yaml:{}:{}: ", loc.line, loc.column);
    assert!(shown.starts_with(&prefix), "{shown}");
    let own = format!(" at line {} column {}", loc.line, loc.column);
    assert!(!shown.contains(&own), "{shown}");
    (loc.line, loc.column, shown[prefix.len()..].to_owned())
}

#[test]
fn full_config() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.hostname.as_ref().unwrap().as_str(), "edge-1");
    assert_eq!(c.role, Role::Agent);
    assert_eq!(c.server.as_ref().unwrap().as_str(), "https://10.0.0.1:6443");
    assert_eq!(c.token.as_ref().unwrap().as_str(), "K10abc::server:secret");
    assert_eq!(c.network.interface.as_ref().unwrap().as_str(), "eth0");
    assert_eq!(c.network.mode, NetMode::Static);
    assert_eq!(c.network.address.unwrap().to_string(), "192.168.1.10/24");
    assert_eq!(c.network.gateway, Some(Ipv4Addr::new(192, 168, 1, 1)));
    assert_eq!(
        c.network.dns,
        vec![Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(1, 1, 1, 1)]
    );
    assert_eq!(c.labels.len(), 2);
    assert_eq!(c.labels[&"site".parse().unwrap()].as_str(), "lab");
    assert_eq!(
        render_env(&c),
        "CAIRN_ROLE=agent\nCAIRN_HOSTNAME=edge-1\nCAIRN_NET_INTERFACE=eth0\nCAIRN_NET_MODE=static\n\
         CAIRN_NET_ADDRESS=192.168.1.10/24\nCAIRN_NET_GATEWAY=192.168.1.1\n\
         CAIRN_NET_DNS=192.168.1.1,1.1.1.1\n"
    );
}

#[test]
fn empty_and_comment_only_files_are_defaults() {
    for text in [
        "",
        "\n\n",
        "# nothing yet\n  # indented\n",
        "---\n",
        "---\n...\n",
    ] {
        assert_eq!(parse(text).unwrap(), NodeConfig::default(), "{text:?}");
    }
    assert_eq!(
        render_env(&NodeConfig::default()),
        "CAIRN_ROLE=server\nCAIRN_HOSTNAME=\nCAIRN_NET_INTERFACE=\nCAIRN_NET_MODE=dhcp\n\
         CAIRN_NET_ADDRESS=\nCAIRN_NET_GATEWAY=\nCAIRN_NET_DNS=\n"
    );
}

#[test]
fn empty_sections_are_defaults() {
    let c = parse("role: server\nnetwork:\nlabels:\n").unwrap();
    assert_eq!(c, NodeConfig::default());
    let c = parse("network: {}\nlabels: {}\n").unwrap();
    assert_eq!(c, NodeConfig::default());
    let c = parse("network:\n  dns:\n").unwrap();
    assert!(c.network.dns.is_empty());
}

#[test]
fn design_example_is_valid() {
    let c = parse("hostname: edge-1\nrole: server\nnetwork:\n  mode: dhcp\n  dns: [192.168.1.1]\nlabels: {site: lab}\n").unwrap();
    let env = render_env(&c);
    assert!(env.contains("CAIRN_HOSTNAME=edge-1\n"));
    assert!(env.contains("CAIRN_NET_DNS=192.168.1.1\n"));
}

#[test]
fn dhcp_ignores_static_settings_when_rendering() {
    let c = parse("network:\n  address: 10.0.0.5/8\n  gateway: 10.0.0.1\n").unwrap();
    let env = render_env(&c);
    assert!(
        env.contains("CAIRN_NET_MODE=dhcp\nCAIRN_NET_ADDRESS=\nCAIRN_NET_GATEWAY=\n"),
        "{env}"
    );
}

#[test]
fn render_has_exactly_the_documented_keys() {
    let keys: Vec<String> = render_env(&parse(FULL).unwrap())
        .lines()
        .map(|l| l.split_once('=').unwrap().0.to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "CAIRN_ROLE",
            "CAIRN_HOSTNAME",
            "CAIRN_NET_INTERFACE",
            "CAIRN_NET_MODE",
            "CAIRN_NET_ADDRESS",
            "CAIRN_NET_GATEWAY",
            "CAIRN_NET_DNS"
        ]
    );
}

#[test]
fn unknown_keys() {
    let (l, c, m) = fail("role: server\nhostnme: x\n");
    assert_eq!((l, c), (2, 1));
    assert!(
        m.starts_with("unknown field `hostnme`, expected one of `hostname`"),
        "{m}"
    );
    let (l, c, m) = fail("network:\n  mode: dhcp\n  gatway: 10.0.0.1\n");
    assert_eq!((l, c), (3, 3));
    assert!(m.starts_with("network: unknown field `gatway`"), "{m}");
}

#[test]
fn bad_enums() {
    let (l, c, m) = fail("hostname: a\nrole: master\n");
    assert_eq!((l, c), (2, 7));
    assert!(
        m.starts_with("role: unknown variant `master`, expected `server` or `agent`"),
        "{m}"
    );
    let (l, c, m) = fail("network:\n  mode: manual\n");
    assert_eq!((l, c), (2, 9));
    assert!(
        m.starts_with("network.mode: unknown variant `manual`"),
        "{m}"
    );
}

#[test]
fn bad_values_point_at_the_value() {
    let cases: &[(&str, (usize, usize), &str)] = &[
        (
            "hostname: Edge_1\n",
            (1, 11),
            "hostname: invalid hostname \"Edge_1\"",
        ),
        (
            "role: agent\nserver: http://10.0.0.1\n",
            (2, 9),
            "server: invalid server URL",
        ),
        ("token: \"a b\"\n", (1, 8), "token: invalid token"),
        (
            "network:\n  interface: a/b\n",
            (2, 14),
            "network.interface: invalid interface name",
        ),
        (
            "network:\n  mode: static\n  address: 10.0.0.1\n",
            (3, 12),
            "network.address: invalid address \"10.0.0.1\"",
        ),
        (
            "network:\n  address: 10.0.0.1/40\n",
            (2, 12),
            "network.address: invalid address \"10.0.0.1/40\": prefix",
        ),
        (
            "network:\n  gateway: 10.0.0.256\n",
            (2, 12),
            "network.gateway: invalid IPv4 address syntax",
        ),
        (
            "network:\n  dns: [1.1.1.1, fe80::1]\n",
            (2, 18),
            "network.dns[1]: invalid IPv4 address syntax",
        ),
        (
            "labels:\n  -bad: x\n",
            (2, 3),
            "labels: invalid label key \"-bad\"",
        ),
        (
            "labels:\n  site: \"a b\"\n",
            (2, 9),
            "labels.site: invalid label value \"a b\"",
        ),
    ];
    for (text, pos, start) in cases {
        let (l, c, m) = fail(text);
        assert_eq!((l, c), *pos, "{text:?}: {m}");
        assert!(m.starts_with(start), "{text:?}: {m}");
    }
}

#[test]
fn newlines_in_values_are_rejected() {
    for text in [
        "hostname: \"a\\nb\"\n",
        "token: \"a\\nCAIRN_ROLE=agent\"\n",
        "network:\n  interface: \"eth0\\n\"\n",
        "labels:\n  site: |\n    a\n    b\n",
    ] {
        fail(text);
    }
}

#[test]
fn wrong_types() {
    let (l, c, m) = fail("network: dhcp\n");
    assert_eq!((l, c), (1, 10));
    assert!(
        m.contains("invalid type: string \"dhcp\", expected struct Network"),
        "{m}"
    );
    let (_, _, m) = fail("labels: [a, b]\n");
    assert!(m.starts_with("labels: invalid type: sequence"), "{m}");
    let (_, _, m) = fail("network:\n  dns: 1.1.1.1\n");
    assert!(m.starts_with("network.dns: invalid type"), "{m}");
    let (_, _, m) = fail("- role: server\n");
    assert!(m.contains("invalid type: sequence"), "{m}");
}

#[test]
fn yaml_syntax_errors() {
    let (l, _, m) = fail("role: server\nnetwork:\n  mode: dhcp\n mode: static\n");
    assert_eq!(l, 4, "{m}");
    let (l, c, m) = fail("role: server\nlabels: {site: lab\n");
    assert!(l >= 2, "{l}:{c}: {m}");
    let (l, c, m) = fail("role: server\n\ttoken: x\n");
    assert_eq!((l, c), (2, 1), "{m}");
    let (_, _, m) = fail("role: server\nrole: agent\n");
    assert!(m.contains("duplicate"), "{m}");
    let (_, _, m) = fail("role: server\n---\nrole: agent\n");
    assert!(m.contains("more than one document"), "{m}");
}

#[test]
fn agent_needs_a_server() {
    let (l, c, m) = fail("hostname: w1\nrole: agent\ntoken: abc\n");
    assert_eq!((l, c), (2, 1));
    assert!(m.starts_with("role: an agent needs `server:"), "{m}");
    // a server may name another server (joining an HA cluster later)
    assert!(parse("role: server\nserver: https://10.0.0.1:6443\n").is_ok());
}

#[test]
fn static_needs_an_address() {
    let (l, c, m) =
        fail("role: server\nnetwork:\n  interface: eth0\n  mode: static\n  gateway: 10.0.0.1\n");
    assert_eq!((l, c), (4, 3));
    assert!(
        m.starts_with("network.mode: static needs `address:`"),
        "{m}"
    );
    let (l, c, _) = fail("network: {interface: eth0, mode: static}\n");
    assert_eq!((l, c), (1, 28));
    let c = parse("network:\n  mode: static\n  address: 10.0.0.5/8\n").unwrap();
    assert!(render_env(&c).contains("CAIRN_NET_ADDRESS=10.0.0.5/8\nCAIRN_NET_GATEWAY=\n"));
}

#[test]
fn numbers_are_accepted_as_strings() {
    // YAML reads `123` as a number; serde_yaml hands it over as a string where one is expected.
    let c = parse("hostname: 123\nlabels:\n  rack: 7\n").unwrap();
    assert_eq!(c.hostname.unwrap().as_str(), "123");
}

#[test]
fn round_trips_through_yaml() {
    let c = parse(FULL).unwrap();
    let text = serde_yaml::to_string(&c).unwrap();
    assert_eq!(parse(&text).unwrap(), c);
    assert_eq!(
        serde_yaml::to_string(&NodeConfig::default()).unwrap(),
        "role: server\nnetwork:\n  mode: dhcp\n"
    );
}

#[test]
fn update_health_deadline() {
    assert_eq!(NodeConfig::default().update.health_deadline_seconds, 300);
    let c = parse("update:\n  healthDeadlineSeconds: 900\n").unwrap();
    assert_eq!(c.update.health_deadline_seconds, 900);
    assert!(serde_yaml::to_string(&c)
        .unwrap()
        .contains("update:\n  healthDeadlineSeconds: 900\n"));
    let (l, c, m) = fail("role: server\nupdate:\n  healthDeadlineSeconds: 5\n");
    assert_eq!((l, c), (3, 3));
    assert!(
        m.starts_with("update.healthDeadlineSeconds: 5 is out of range: between 30 and 86400"),
        "{m}"
    );
    let (l, _, m) = fail("update:\n  healthDeadline: 60\n");
    assert_eq!(l, 2);
    assert!(m.contains("unknown field `healthDeadline`"), "{m}");
    let (l, _, _) = fail("update:\n  healthDeadlineSeconds: soon\n");
    assert_eq!(l, 2);
}
