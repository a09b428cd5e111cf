//! The Cairn node config and the YAML helpers every Cairn tool uses.
//!
//! **Purpose.** `/boot/cairn/node.yaml` is the one file a user edits to set up a node
//! (docs/design.md, "Node config"). This crate defines it ([`NodeConfig`]), validates it, and
//! renders it as the flat `KEY=VALUE` lines that PID 1 reads ([`render_env`]), so that `cairn`
//! on the device and `cairnctl` on the host accept exactly the same files.
//!
//! **Design.** Values are typed ([`Hostname`], [`Ipv4Cidr`], [`LabelKey`], ...) and check their
//! own syntax while serde deserialises them, so serde_yaml reports the offending value's line and
//! column. Rules spanning several keys (an agent needs a server) run afterwards and find the key's
//! position by scanning the text. Every error reads `file:line:column: message`, like a compiler's.
//! [`from_yaml_str`] gives other crates the same errors for their own YAML files (board configs,
//! recipes): derive `Deserialize` with `#[serde(deny_unknown_fields)]` and call it.
//! The crate does no I/O: callers read the file and pass its text and name.
//!
//! **Limitations.** Positions of errors raised after deserialising come from a line scanner that
//! knows block mappings and single-line flow mappings; for other layouts they point at the
//! nearest enclosing key found, or at 1:1. serde_yaml accepts YAML 1.1 scalars loosely as strings
//! (`hostname: 123` is the string `"123"`). Only IPv4 networking is described.

mod node;
mod render;
mod types;
mod yaml;

pub use node::{ConfigError, NetMode, Network, NodeConfig, Role, Update};
pub use render::render_env;
pub use types::{
    Hostname, HttpsUrl, InterfaceName, InvalidValue, Ipv4Cidr, LabelKey, LabelValue, Token,
};
pub use yaml::{from_yaml_str, locate_key, Location, YamlError};

#[cfg(test)]
mod tests;
