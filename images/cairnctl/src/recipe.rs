//! Recipes (`images/recipes/<name>.yaml`): what goes into an image's root filesystem beyond
//! init and cairn.

use std::path::Path;

use anyhow::{bail, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    /// Debian packages of the board's architecture that `install` takes files from.
    #[serde(default)]
    pub debian_packages: Vec<String>,
    /// Paths inside those packages to install (with their libraries and ELF interpreter).
    #[serde(default)]
    pub install: Vec<String>,
    /// Overlay directories (under `overlays/`) laid into the root, in order.
    #[serde(default)]
    pub overlays: Vec<String>,
}

pub fn load(dir: &Path, name: &str) -> Result<Recipe> {
    let path = dir.join(format!("{name}.yaml"));
    if !path.is_file() {
        bail!(
            "unknown recipe `{name}`; known recipes: {}",
            crate::board::known_boards(dir).join(", ")
        );
    }
    let r: Recipe = crate::yamlfile::load(&path)?;
    let text = std::fs::read_to_string(&path)?;
    let file = path.display().to_string();
    let at = |k: &str| {
        crate::yamlfile::locate_key(&text, k)
            .map_or(file.clone(), |(l, c)| format!("{file}:{l}:{c}"))
    };
    if r.name != name {
        bail!(
            "{}: name `{}` does not match the file name `{name}`",
            at("name"),
            r.name
        );
    }
    if !r.install.is_empty() && r.debian_packages.is_empty() {
        bail!(
            "{}: install lists paths but debian_packages is empty",
            at("install")
        );
    }
    for p in &r.install {
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            bail!(
                "{}: install path `{p}` must be relative to the package root",
                at("install")
            );
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes")
    }

    #[test]
    fn shipped_recipes_parse() {
        for n in crate::board::known_boards(&dir()) {
            load(&dir(), &n).unwrap_or_else(|e| panic!("{n}: {e:#}"));
        }
        assert!(load(&dir(), "default").is_ok());
    }

    #[test]
    fn unknown_recipe_lists_known() {
        let e = load(&dir(), "nope").unwrap_err().to_string();
        assert!(e.contains("known recipes: default"), "{e}");
    }
}
