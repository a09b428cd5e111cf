//! Object metadata: name rules, `generateName` suffixes, UIDs and timestamps.

use serde_json::Value;

/// Why a name is not valid; the message tells what the rules are.
/// The names RBAC objects may have (Kubernetes' path-segment rule: `system:basic-user` is
/// fine): anything but `.`, `..` and names containing `/` or `%`.
pub fn check_path_segment_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("metadata.name: Required value: name or generateName is required".into());
    }
    if name == "." || name == ".." {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: may not be '.' or '..'"
        ));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == '%') {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: may not contain '{c}'"
        ));
    }
    Ok(())
}

pub fn check_name(name: &str, dns_label: bool) -> Result<(), String> {
    let max = if dns_label { 63 } else { 253 };
    let chars_ok = name.chars().all(|c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!dns_label && c == '.')
    });
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() {
        return Err("metadata.name: Required value: name or generateName is required".into());
    }
    if name.len() > max
        || !chars_ok
        || !ends_ok(name.chars().next())
        || !ends_ok(name.chars().last())
    {
        let what = if dns_label {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc'), \
             at most 63 characters"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' \
             or '.', and must start and end with an alphanumeric character (e.g. 'example.com'), \
             at most 253 characters"
        };
        return Err(format!("metadata.name: Invalid value: {name:?}: {what}"));
    }
    Ok(())
}

/// `prefix` plus five random characters from Kubernetes' unambiguous alphabet.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    fill_random(&mut bytes);
    let suffix: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    // Kubernetes trims the prefix so the name stays within 63 characters.
    let prefix: String = prefix.chars().take(58).collect();
    format!("{prefix}{suffix}")
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn fill_random(buf: &mut [u8]) {
    // The OS random source only fails on exotic platforms; a fixed fallback keeps names valid.
    if getrandom::fill(buf).is_err() {
        let seed = jiff::Timestamp::now().as_nanosecond() as u64;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
}

/// Now, as Kubernetes writes timestamps: RFC 3339, seconds, UTC (`2025-01-02T03:04:05Z`).
pub fn now() -> String {
    seconds_from_now(0)
}

/// `seconds` from now, written as [`now`] writes it (a deletion's deadline).
pub fn seconds_from_now(seconds: i64) -> String {
    let now = jiff::Timestamp::now();
    let at = jiff::Timestamp::from_second(now.as_second() + seconds).unwrap_or(now);
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metadata` of an object, created if missing. Panics if `object` is not a JSON object
/// (callers check that first).
pub fn metadata(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    let obj = object.as_object_mut().expect("object");
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    meta.as_object_mut().expect("metadata is an object")
}

/// A string field of `metadata`, empty if absent.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or("")
}

/// Human age as kubectl shows it (`45s`, `3m12s`, `5h`, `2d`).
pub fn age(created: &str, now: jiff::Timestamp) -> String {
    let Ok(created) = created.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    human_duration((now.as_second() - created.as_second()).max(0))
}

/// A duration in seconds as kubectl shows ages and durations (`45s`, `3m12s`, `5h`, `2d`).
pub fn human_duration(s: i64) -> String {
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10800 => format!("{}m", s / 60),
        10800..172800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("my-cm.v1", false).is_ok());
        assert!(check_name("my-cm.v1", true).is_err());
        assert!(check_name("kube-system", true).is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"x".repeat(254)] {
            assert!(check_name(bad, false).is_err(), "{bad}");
        }
        assert!(check_name(&"x".repeat(64), true).is_err());
        assert!(check_path_segment_name("system:basic-user").is_ok());
        for bad in ["", ".", "..", "a/b", "50%"] {
            assert!(check_path_segment_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n.starts_with("web-"));
        assert!(check_name(&n, true).is_ok());
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
    }

    #[test]
    fn times() {
        let t = now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
        let base: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| jiff::Timestamp::from_second(base.as_second() + s).unwrap();
        assert_eq!(age("2025-01-01T00:00:00Z", at(5)), "5s");
        assert_eq!(age("2025-01-01T00:00:00Z", at(192)), "3m12s");
        assert_eq!(age("2025-01-01T00:00:00Z", at(7200)), "120m");
        assert_eq!(age("2025-01-01T00:00:00Z", at(3 * 86400)), "3d");
        assert_eq!(age("garbage", at(0)), "<unknown>");
    }
}
