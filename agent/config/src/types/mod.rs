//! Validated value types: each checks its syntax when it is built (and so when deserialised,
//! which lets serde_yaml report the value's own line and column).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A value that does not have the required syntax; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Deserialises a string and parses it inside the visitor, where serde_yaml still knows the
/// value's position (a `#[serde(try_from)]` error would come without one).
fn deserialize_parsed<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = InvalidValue>,
{
    struct Parse<T>(PhantomData<T>);
    impl<T: FromStr<Err = InvalidValue>> Visitor<'_> for Parse<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    de.deserialize_str(Parse(PhantomData))
}

/// Declares a `String` newtype checked by `$check`, (de)serialised as a plain string.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(into = "String")]
        pub struct $name(String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                deserialize_parsed(de)
            }
        }

        impl $name {
            /// The value as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, InvalidValue> {
                $check(&value).map_err(InvalidValue)?;
                Ok($name(value))
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, InvalidValue> {
                Self::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// A node name: a lowercase RFC 1123 label (`edge-1`), as Kubernetes requires of node names.
    Hostname,
    check_hostname
);
checked_string!(
    /// An `https://host[:port][/path]` URL of a Cairn server.
    HttpsUrl,
    check_https_url
);
checked_string!(
    /// A Linux network interface name (at most 15 bytes, no `/`, `:` or whitespace).
    InterfaceName,
    check_interface
);
checked_string!(
    /// A join token: printable ASCII without spaces.
    Token,
    check_token
);
checked_string!(
    /// A Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain.
    LabelKey,
    check_label_key
);
checked_string!(
    /// A Kubernetes label value: empty or at most 63 alphanumerics, `-`, `_`, `.`.
    LabelValue,
    check_label_value
);

fn check_hostname(s: &str) -> Result<(), String> {
    if is_dns_label(s) {
        Ok(())
    } else {
        Err(format!(
            "invalid hostname {s:?}: expected a lowercase RFC 1123 label \
             (1-63 characters a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ))
    }
}

/// RFC 1123 label, lowercase only (Kubernetes `IsDNS1123Label`).
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| ok(c) || *c == b'-')
        && ok(&b[0])
        && ok(&b[b.len() - 1])
}

/// DNS subdomain (Kubernetes `IsDNS1123Subdomain`): dot-separated labels, at most 253 bytes.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_https_url(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid server URL {s:?}: {why}"));
    let Some(rest) = s.strip_prefix("https://") else {
        return bad("expected https://host[:port]");
    };
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return bad("user information is not allowed");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return bad("unterminated IPv6 address");
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return bad("expected ':' after the IPv6 address"),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("missing host");
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return bad("port must be a number from 1 to 65535");
        }
    }
    Ok(())
}

fn check_interface(s: &str) -> Result<(), String> {
    let valid = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid interface name {s:?}: expected 1-15 characters without '/', ':' or whitespace"
        ))
    }
}

fn check_token(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 4096 && s.bytes().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("invalid token: expected printable ASCII characters without spaces".to_owned())
    }
}

/// Kubernetes label name part (`IsQualifiedName` name / `IsValidLabelValue`), may be empty.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    b.len() <= 63
        && (b.is_empty()
            || (b.iter().all(inner)
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()))
}

fn check_label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return Err(format!(
            "invalid label key {s:?}: the prefix before '/' must be a lowercase DNS subdomain"
        ));
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(format!(
            "invalid label key {s:?}: the name must be 1-63 characters a-z, A-Z, 0-9, '-', '_', \
             '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_label_value(s: &str) -> Result<(), String> {
    if is_label_name(s) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {s:?}: expected at most 63 characters a-z, A-Z, 0-9, '-', '_', \
             '.', starting and ending with a letter or digit"
        ))
    }
}

/// An IPv4 address with a prefix length (`192.168.1.10/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        deserialize_parsed(de)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bad = || {
            InvalidValue(format!(
                "invalid address {s:?}: expected IPv4/prefix such as 192.168.1.10/24"
            ))
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let address = addr.parse().map_err(|_| bad())?;
        // u8::from_str accepts a leading '+'; demand plain digits.
        if prefix.is_empty() || !prefix.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        match prefix.parse::<u8>() {
            Ok(prefix @ 1..=32) => Ok(Ipv4Cidr { address, prefix }),
            _ => Err(InvalidValue(format!(
                "invalid address {s:?}: prefix length must be 1 to 32"
            ))),
        }
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests;
