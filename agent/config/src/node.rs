//! The node config (`/boot/cairn/node.yaml`) and its validation.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::types::{Hostname, HttpsUrl, InterfaceName, Ipv4Cidr, LabelKey, LabelValue, Token};
use crate::yaml::{from_yaml_str, locate_key, Location, YamlError};

/// What a node runs: the control plane, or a worker that joins a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Server,
    Agent,
}

impl Role {
    /// The name used in YAML, on the command line and in `CAIRN_ROLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

/// How the node's interface gets its address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    #[default]
    Dhcp,
    Static,
}

impl NetMode {
    /// The name used in YAML and in `CAIRN_NET_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Dhcp => "dhcp",
            NetMode::Static => "static",
        }
    }
}

/// The `network:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Interface to configure; `None` means the first non-loopback interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<InterfaceName>,
    pub mode: NetMode,
    /// Address and prefix; required with `mode: static`, ignored with DHCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Cidr>,
    /// Default gateway; used with `mode: static` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Name servers, in addition to those DHCP supplies.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dns: Vec<Ipv4Addr>,
}

/// The node config users edit on the boot partition. Every field has a default, so an empty
/// file is a DHCP server node named after its MAC address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// `None`: init derives `cairn-<last 3 bytes of the first MAC, hex>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Hostname>,
    pub role: Role,
    /// The server an agent joins; required for `role: agent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<HttpsUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    #[serde(deserialize_with = "null_as_default")]
    pub network: Network,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<LabelKey, LabelValue>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Update::is_default"
    )]
    pub update: Update,
}

/// The `update:` section: how A/B updates behave on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Update {
    /// Seconds a trial boot has to pass its health gate before the node reboots into the
    /// previous slot.
    pub health_deadline_seconds: u32,
}

impl Update {
    /// The allowed range of `healthDeadlineSeconds`: long enough for a slow board to start,
    /// short enough that a broken update does not keep a node down for a day.
    pub const DEADLINE_RANGE: std::ops::RangeInclusive<u32> = 30..=86_400;

    fn is_default(&self) -> bool {
        *self == Update::default()
    }
}

impl Default for Update {
    fn default() -> Update {
        Update {
            health_deadline_seconds: 300,
        }
    }
}

/// A node config that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// YAML syntax, an unknown key, a wrong type or a malformed value.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// Well-formed values that do not fit together (an agent without a server, ...).
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
}

impl ConfigError {
    /// Where the problem is.
    pub fn location(&self) -> &Location {
        match self {
            ConfigError::Yaml(e) => &e.location,
            ConfigError::Invalid { location, .. } => location,
        }
    }
}

/// A missing section (`network:` with nothing under it) means the section's defaults.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

impl NodeConfig {
    /// Parses and validates a node config; `file` names it in error messages.
    ///
    /// A file that is empty or holds only comments gives the defaults.
    pub fn parse(text: &str, file: &str) -> Result<NodeConfig, ConfigError> {
        if is_blank(text) {
            return Ok(NodeConfig::default());
        }
        let config: NodeConfig = from_yaml_str(text, file)?;
        config.validate(text, file)?;
        Ok(config)
    }

    /// Checks the rules that involve more than one key, pointing errors at the key to change.
    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let invalid = |path: &[&str], message: &str| {
            let (line, column) = locate_key(text, path).unwrap_or((1, 1));
            ConfigError::Invalid {
                location: Location::new(file, line, column),
                message: format!("{}: {message}", path.join(".")),
            }
        };
        if self.role == Role::Agent && self.server.is_none() {
            return Err(invalid(
                &["role"],
                "an agent needs `server: https://<server>:6443`",
            ));
        }
        if self.network.mode == NetMode::Static && self.network.address.is_none() {
            return Err(invalid(
                &["network", "mode"],
                "static needs `address:` (IPv4/prefix such as 192.168.1.10/24)",
            ));
        }
        let deadline = self.update.health_deadline_seconds;
        if !Update::DEADLINE_RANGE.contains(&deadline) {
            return Err(invalid(
                &["update", "healthDeadlineSeconds"],
                &format!(
                    "{deadline} is out of range: between {} and {} seconds",
                    Update::DEADLINE_RANGE.start(),
                    Update::DEADLINE_RANGE.end()
                ),
            ));
        }
        Ok(())
    }
}

/// True when the YAML text has no content: blank lines, comments and document markers only.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}
