//! Image references, normalised the way Docker and containerd do: `busybox` is
//! `docker.io/library/busybox:latest`, `foo/bar` is `docker.io/foo/bar:latest`, a first
//! component with a `.` or `:` (or `localhost`) is a registry host, the tag defaults to
//! `latest` unless a digest is given.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The registry of references without a host.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The repository prefix of one-component names on the default registry.
const OFFICIAL_PREFIX: &str = "library/";
/// The tag of references with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository name (registry included) the distribution spec allows.
const NAME_MAX: usize = 255;
/// Longest tag.
const TAG_MAX: usize = 128;

/// A normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with its port if any (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag; `latest` when the reference had neither tag nor digest.
    pub tag: Option<String>,
    /// Content digest (`sha256:<64 hex>`) when the reference pins one.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference. Errors are [`Error::BadReference`] naming the input.
    pub fn parse(input: &str) -> Result<Reference, Error> {
        let bad = |reason: &str| Error::BadReference(input.to_owned(), reason.to_owned());
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                if !is_digest(digest) {
                    return Err(bad(
                        "the digest must be sha256: and 64 lowercase hex digits",
                    ));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        // A tag follows the last ':' that is after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !is_tag(tag) {
                    return Err(bad(
                        "a tag is 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                    ));
                }
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("no repository name"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry_like(first) => {
                if !is_host(first) {
                    return Err(bad("invalid registry host"));
                }
                (first.to_owned(), path.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_owned()
        } else {
            registry
        };
        if path.is_empty() || !path.split('/').all(is_path_component) {
            return Err(bad(
                "repository path components are lowercase letters and digits, separated by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What a registry's manifest endpoint is asked for: the digest if pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reference, Error> {
        Reference::parse(s)
    }
}

/// `sha256:` and 64 lowercase hex digits (the only digest algorithm the store accepts).
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(is_sha256_hex)
}

/// 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether the first component of a name is a registry host rather than a path component
/// (Docker's rule: it has a `.` or a `:`, or is `localhost`, or has an uppercase letter).
fn is_registry_like(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// `host[:port]`, host a DNS name, an IPv4 address or a bracketed IPv6 address.
fn is_host(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && host_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("index.docker.io/foo/bar:v1"), "docker.io/foo/bar:v1");
        assert_eq!(norm("host:5000/x"), "host:5000/x:latest");
        assert_eq!(norm("localhost/x/y:dev"), "localhost/x/y:dev");
        assert_eq!(
            norm("127.0.0.1:5000/test/busybox:latest"),
            "127.0.0.1:5000/test/busybox:latest"
        );
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
        assert_eq!(
            norm("cairn.local/test/busybox:latest"),
            "cairn.local/test/busybox:latest"
        );
        assert_eq!(
            norm("a__b/c-d---e.f:T_1.0-x"),
            "docker.io/a__b/c-d---e.f:T_1.0-x"
        );
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None, "no default tag next to a digest");
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(r.manifest_ref(), d);
        let r = Reference::parse(&format!("host:5000/x:v2@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.registry, "host:5000");
        assert_eq!(r.name(), "host:5000/x");
        assert_eq!(r.manifest_ref(), d, "the digest wins over the tag");
    }

    #[test]
    fn bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            &format!("busybox@sha256:{}", "AB".repeat(32)),
            "foo//bar",
            "foo/bar/",
            "/foo",
            "foo..bar",
            "foo_-bar",
            "host:port/x",
            "host:5000/",
            "-host.example/x",
            &format!("x:{}", "t".repeat(129)),
            &format!("example.com/{}", "a".repeat(250)),
        ] {
            match Reference::parse(bad) {
                Err(Error::BadReference(input, reason)) => {
                    assert_eq!(input, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let msg = Reference::parse("Busy").unwrap_err().to_string();
        assert!(msg.contains("\"Busy\""), "{msg}");
    }
}
