//! Strict YAML loading for the builder's own files (board configs, recipes).

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Reads and parses `path`; errors read `path:line:column: message`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(cairn_config::from_yaml_str(
        &text,
        &path.display().to_string(),
    )?)
}

/// 1-based line and column of the first `key:` in `text` (for semantic errors found after
/// deserialising, where serde no longer knows the position).
pub fn locate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let col = line.len() - trimmed.len() + 1;
        trimmed
            .strip_prefix(key)
            .filter(|rest| rest.starts_with(':'))
            .map(|_| (i + 1, col))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn locates_nested_keys() {
        let t = "a: 1\nparts:\n  boot_mib: 3\n";
        assert_eq!(super::locate_key(t, "boot_mib"), Some((3, 3)));
        assert_eq!(super::locate_key(t, "boot"), None);
        assert_eq!(super::locate_key(t, "a"), Some((1, 1)));
    }
}
