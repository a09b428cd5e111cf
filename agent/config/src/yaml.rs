//! YAML deserialisation with `file:line:column: message` errors, shared by every Cairn YAML file.

use std::fmt;

use serde::de::DeserializeOwned;
use thiserror::Error;

/// A position in a named file; lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// A location in `file`; `line` and `column` count from 1.
    pub fn new(file: &str, line: usize, column: usize) -> Self {
        Location {
            file: file.to_owned(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A YAML syntax error, unknown key, wrong type or invalid value, with where it is.
///
/// The message names the key path where serde_yaml knows it (`network.mode: unknown variant ...`).
/// Errors without a position (an empty document, several documents) point at 1:1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{location}: {message}")]
pub struct YamlError {
    pub location: Location,
    pub message: String,
}

/// Deserialises one YAML document; `file` is only used in error messages.
///
/// ```
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Board { name: String }
/// let err = cairn_config::from_yaml_str::<Board>("name: x\nsize: 3\n", "board.yaml").err().unwrap();
/// assert!(err.to_string().starts_with("board.yaml:2:1: unknown field `size`"));
/// ```
pub fn from_yaml_str<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| yaml_error(&e, file))
}

/// Converts a serde_yaml error, moving its position from the end of the message to the front.
fn yaml_error(err: &serde_yaml::Error, file: &str) -> YamlError {
    let mut message = err.to_string();
    let (line, column) = match err.location() {
        Some(loc) => {
            // serde_yaml appends " at line L column C" (libyaml errors may add a context after it).
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            message = message.replacen(&suffix, "", 1);
            (loc.line(), loc.column())
        }
        None => (1, 1),
    };
    YamlError {
        location: Location::new(file, line, column),
        message,
    }
}

/// Finds the line and column of a key given by its path (`["network", "mode"]`) in YAML text.
///
/// A best-effort scan for errors found after deserialising: it understands block mappings
/// indented with spaces and one level of flow mapping on the key's line (`network: {mode: x}`),
/// and returns the deepest ancestor it found when the key itself is written some other way.
pub fn locate_key(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    if path.is_empty() {
        return None;
    }
    let mut depth = 0;
    let mut parent_indent: Option<usize> = None;
    let mut child_indent: Option<usize> = None;
    let mut found = None;
    for (idx, raw) in text.lines().enumerate() {
        let content = raw.trim_start_matches(' ');
        let indent = raw.len() - content.len();
        if content.is_empty() || content.starts_with('#') || content.starts_with("---") {
            continue;
        }
        if parent_indent.is_some_and(|p| indent <= p) {
            break; // left the parent's block without finding the child
        }
        let child = *child_indent.get_or_insert(indent);
        if indent != child {
            continue;
        }
        let Some((key, rest)) = split_key(content) else {
            continue;
        };
        if key != path[depth] {
            continue;
        }
        found = Some((idx + 1, indent + 1));
        if depth + 1 == path.len() {
            return found;
        }
        if let Some(col) = find_flow_key(rest, path[depth + 1]) {
            return Some((idx + 1, raw.len() - rest.len() + col + 1));
        }
        parent_indent = Some(indent);
        child_indent = None;
        depth += 1;
    }
    found
}

/// Splits `key: rest` (plain or quoted key); `None` when the line is not a mapping entry.
fn split_key(content: &str) -> Option<(&str, &str)> {
    let (key, after) = match content.chars().next()? {
        q @ ('"' | '\'') => {
            let end = content[1..].find(q)? + 1;
            (&content[1..end], &content[end + 1..])
        }
        _ => {
            let colon = content
                .find(": ")
                .or_else(|| content.strip_suffix(':').map(str::len))?;
            (content[..colon].trim_end(), &content[colon..])
        }
    };
    let rest = after.strip_prefix(':')?;
    Some((key, rest))
}

/// Byte offset of `key:` inside a flow mapping `{a: 1, key: 2}` that starts `rest`.
fn find_flow_key(rest: &str, key: &str) -> Option<usize> {
    let open = rest.find(|c: char| c != ' ')?;
    if !rest[open..].starts_with('{') {
        return None;
    }
    let mut offset = open + 1;
    for entry in rest[open + 1..].split(',') {
        let trimmed = entry.trim_start();
        let lead = entry.len() - trimmed.len();
        if let Some((k, _)) = split_key(trimmed.trim_end_matches('}')) {
            if k == key {
                return Some(offset + lead);
            }
        }
        offset += entry.len() + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn err(text: &str) -> YamlError {
        from_yaml_str::<Doc>(text, "f.yaml").unwrap_err()
    }

    #[test]
    fn unknown_field_is_located_and_named() {
        let e = err("name: a\ninner:\n  count: 1\n  colour: red\n");
        assert_eq!(e.location, Location::new("f.yaml", 4, 3));
        assert!(
            e.message
                .starts_with("inner: unknown field `colour`, expected `count`"),
            "{e}"
        );
        assert!(e
            .to_string()
            .starts_with("f.yaml:4:3: inner: unknown field `colour`"));
    }

    #[test]
    fn wrong_type_is_located() {
        let e = err("name: a\ninner:\n  count: lots\n");
        assert_eq!((e.location.line, e.location.column), (3, 10));
        assert!(
            e.message
                .starts_with("inner.count: invalid type: string \"lots\""),
            "{e}"
        );
        assert!(!e.message.contains(" at line "), "{e}");
    }

    #[test]
    fn missing_field_is_reported() {
        let e = err("inner:\n  count: 1\n");
        assert!(e.message.contains("missing field `name`"), "{e}");
        assert_eq!(e.location.line, 1);
    }

    #[test]
    fn syntax_error_is_located() {
        let e = err("name: a\ninner:\n  count: 1\n count: 2\n");
        assert_eq!(e.location.line, 4, "{e}");
        assert!(
            !e.message
                .contains(&format!(" at line {} ", e.location.line)),
            "{e}"
        );
        let e = err("name: [a\n");
        assert_eq!(e.location.file, "f.yaml");
        assert!(e.location.line >= 1);
    }

    #[test]
    fn errors_without_position_point_at_start() {
        let e = err("");
        assert_eq!((e.location.line, e.location.column), (1, 1));
        let e = err("name: a\n---\nname: b\n");
        assert!(e.message.contains("more than one document"), "{e}");
    }

    #[test]
    fn locate_block_keys() {
        let text = "# comment\nrole: agent\nnetwork:\n  # x\n  interface: eth0\n  mode: static\nlabels:\n  mode: x\n";
        assert_eq!(locate_key(text, &["role"]), Some((2, 1)));
        assert_eq!(locate_key(text, &["network", "mode"]), Some((6, 3)));
        assert_eq!(locate_key(text, &["labels", "mode"]), Some((8, 3)));
        // a key that is not there falls back to its parent, or to nothing
        assert_eq!(locate_key(text, &["network", "address"]), Some((3, 1)));
        assert_eq!(locate_key(text, &["server"]), None);
        // nested keys with the same name as a top-level key are not top-level keys
        assert_eq!(
            locate_key("labels:\n  role: x\nrole: y\n", &["role"]),
            Some((3, 1))
        );
    }

    #[test]
    fn locate_quoted_and_flow_keys() {
        assert_eq!(locate_key("\"role\": agent\n", &["role"]), Some((1, 1)));
        let text = "network: {interface: eth0, mode: static}\n";
        assert_eq!(locate_key(text, &["network", "mode"]), Some((1, 28)));
        assert_eq!(locate_key(text, &["network", "interface"]), Some((1, 11)));
        assert_eq!(locate_key("  role: agent\n", &["role"]), Some((1, 3)));
        assert_eq!(locate_key("---\nrole: agent\n", &["role"]), Some((2, 1)));
    }
}
