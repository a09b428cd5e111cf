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
    /// Kubernetes manifests (files, or directories of `.yaml`/`.yml`/`.json` files, relative
    /// to the recipes directory) baked into `/usr/lib/cairn/manifests`: a server applies them
    /// on start and keeps them applied, like K3s' auto-deploy manifests.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Bake the test container images (`cairn.local/test/busybox:latest` and
    /// `cairn.local/test/httpd:latest`, for the board's architecture) into
    /// `/usr/lib/cairn/images`, which the kubelet imports at start.
    #[serde(default)]
    pub test_images: bool,
}

/// Where baked manifests go in the root filesystem (read by `cairn server`).
pub const MANIFESTS_DIR: &str = cairn::BAKED_MANIFESTS;

impl Recipe {
    /// The manifest files the recipe bakes in, as (file name in the image, source), sorted by
    /// name; each checked to hold Kubernetes objects.
    pub fn manifest_files(&self, dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
        let mut out: Vec<(String, std::path::PathBuf)> = Vec::new();
        for entry in &self.manifests {
            if entry.starts_with('/') || entry.split('/').any(|c| c == "..") {
                bail!("manifests: `{entry}` must be a path inside the recipes directory");
            }
            let path = dir.join(entry);
            let files: Vec<std::path::PathBuf> = if path.is_dir() {
                let mut files: Vec<_> = std::fs::read_dir(&path)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_manifest(p))
                    .collect();
                files.sort();
                files
            } else if path.is_file() && is_manifest(&path) {
                vec![path.clone()]
            } else if path.is_file() {
                bail!("manifests: `{entry}` is not a .yaml, .yml or .json file");
            } else {
                bail!(
                    "manifests: `{entry}` does not exist under {}",
                    dir.display()
                );
            };
            for file in files {
                check_manifest(&file)?;
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Some((_, other)) = out.iter().find(|(n, _)| *n == name) {
                    bail!(
                        "manifests: {} and {} would both be {MANIFESTS_DIR}/{name}",
                        other.display(),
                        file.display()
                    );
                }
                out.push((name, file));
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Recipe {
    /// Copies the recipe's manifests into the root tree `root` (0644, under
    /// [`MANIFESTS_DIR`]); returns how many.
    pub fn install_manifests(&self, root: &Path, dir: &Path) -> Result<usize> {
        let files = self.manifest_files(dir)?;
        for (name, src) in &files {
            crate::rootfs::copy(root, &format!("{MANIFESTS_DIR}/{name}"), src, false)?;
        }
        Ok(files.len())
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Every document in `file` must be a Kubernetes object (`apiVersion` and `kind`).
fn check_manifest(file: &Path) -> Result<()> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| match e.location() {
            Some(at) => anyhow::anyhow!("{}:{}:{}: {e}", file.display(), at.line(), at.column()),
            None => anyhow::anyhow!("{}: {e}", file.display()),
        })?;
        if value.is_null() {
            continue;
        }
        let field = |k: &str| value.get(k).and_then(serde_yaml::Value::as_str).is_some();
        if !field("apiVersion") || !field("kind") {
            bail!(
                "{}: document {} is not a Kubernetes object (it needs apiVersion and kind)",
                file.display(),
                i + 1
            );
        }
    }
    Ok(())
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
    r.manifest_files(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", at("manifests")))?;
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
    fn manifests_are_checked_and_listed() {
        let tmp = std::env::temp_dir().join(format!("cairn-recipe-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("apps")).unwrap();
        std::fs::write(
            tmp.join("apps/a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: a}\n",
        )
        .unwrap();
        std::fs::write(tmp.join("apps/notes.txt"), "not a manifest").unwrap();
        std::fs::write(
            tmp.join("b.json"),
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}"#,
        )
        .unwrap();
        let recipe = |manifests: &str| {
            std::fs::write(
                tmp.join("r.yaml"),
                format!("name: r\ndescription: test\nmanifests: {manifests}\n"),
            )
            .unwrap();
            load(&tmp, "r")
        };
        let r = recipe("[apps, b.json]").unwrap();
        let names: Vec<String> = r
            .manifest_files(&tmp)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["a.yaml", "b.json"]);
        let root = tmp.join("root");
        assert_eq!(r.install_manifests(&root, &tmp).unwrap(), 2);
        let baked = root.join("usr/lib/cairn/manifests/a.yaml");
        assert_eq!(
            std::fs::read(&baked).unwrap(),
            std::fs::read(tmp.join("apps/a.yaml")).unwrap()
        );

        let e = format!("{:#}", recipe("[missing.yaml]").unwrap_err());
        assert!(
            e.contains("r.yaml:3:1") && e.contains("does not exist"),
            "{e}"
        );
        let e = format!("{:#}", recipe("[../etc]").unwrap_err());
        assert!(e.contains("inside the recipes directory"), "{e}");
        std::fs::write(tmp.join("bad.yaml"), "apiVersion: v1\nkind: [unclosed\n").unwrap();
        let e = format!("{:#}", recipe("[bad.yaml]").unwrap_err());
        assert!(e.contains("bad.yaml:3:1: did not find expected"), "{e}");
        std::fs::write(
            tmp.join("kindless.yaml"),
            "apiVersion: v1\nmetadata: {name: x}\n",
        )
        .unwrap();
        let e = format!("{:#}", recipe("[kindless.yaml]").unwrap_err());
        assert!(e.contains("document 1 is not a Kubernetes object"), "{e}");
        std::fs::create_dir_all(tmp.join("other")).unwrap();
        std::fs::write(
            tmp.join("other/a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n",
        )
        .unwrap();
        let e = format!("{:#}", recipe("[apps, other]").unwrap_err());
        assert!(
            e.contains("would both be /usr/lib/cairn/manifests/a.yaml"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn unknown_recipe_lists_known() {
        let e = load(&dir(), "nope").unwrap_err().to_string();
        assert!(e.contains("known recipes: default"), "{e}");
    }
}
