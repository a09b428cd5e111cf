//! Discovery documents, generated from the resource table: `/api`, `/apis`, `/apis/<group>`,
//! `/api/v1`, `/apis/<group>/<version>`, and aggregated discovery (`apidiscovery.k8s.io/v2`),
//! which kubectl asks for first.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::request::{Discovery, Subresource};
use crate::resources::{Catalog, Resource};

/// Content type of an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The document for `request`, and whether it is the aggregated format.
pub fn document(request: &Discovery, catalog: &Catalog) -> Result<(Value, bool), ApiError> {
    match request {
        Discovery::Api { aggregated: true } => Ok((aggregated(catalog, true), true)),
        Discovery::Apis { aggregated: true } => Ok((aggregated(catalog, false), true)),
        Discovery::Api { aggregated: false } => Ok((
            json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
            }),
            false,
        )),
        Discovery::Apis { aggregated: false } => {
            let groups: Vec<Value> = named_groups(catalog)
                .into_iter()
                .map(|g| group(catalog, g))
                .collect();
            Ok((
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                false,
            ))
        }
        Discovery::Group(name) => named_groups(catalog)
            .into_iter()
            .find(|g| g == name)
            .map(|g| {
                let mut doc = group(catalog, g);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                (doc, false)
            })
            .ok_or_else(|| ApiError::PathNotFound {
                path: format!("/apis/{name}"),
            }),
        Discovery::GroupVersion { group, version } => {
            let list: Vec<Value> = catalog
                .in_group_version(group, version)
                .flat_map(|r| std::iter::once(resource(r)).chain(subresources(r)))
                .collect();
            if list.is_empty() {
                let path = if group.is_empty() {
                    format!("/api/{version}")
                } else {
                    format!("/apis/{group}/{version}")
                };
                return Err(ApiError::PathNotFound { path });
            }
            let gv = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            Ok((
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
                false,
            ))
        }
    }
}

/// Verbs of every subresource.
const SUBRESOURCE_VERBS: [&str; 3] = ["get", "patch", "update"];

/// The verbs of subresource `sub`: bindings and evictions are only created.
fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    if Subresource::from_name(sub).is_some_and(Subresource::is_stream) {
        &["create", "get"]
    } else if Subresource::from_name(sub).is_some_and(Subresource::is_action) {
        &["create"]
    } else if sub == "log" {
        &["get"]
    } else {
        &SUBRESOURCE_VERBS
    }
}

/// The kind a subresource answers with: (group, version, kind).
fn subresource_kind<'a>(r: &'a Resource, sub: &str) -> (&'a str, &'a str, &'a str) {
    match Subresource::from_name(sub).and_then(Subresource::body_kind) {
        Some((api_version, kind)) => {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            (group, version, kind)
        }
        None => (r.group, r.version, r.kind),
    }
}

/// Classic discovery entries for `r`'s subresources (`deployments/scale`).
fn subresources(r: &Resource) -> Vec<Value> {
    r.subresources
        .iter()
        .map(|sub| {
            let (group, version, kind) = subresource_kind(r, sub);
            let mut v = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": subresource_verbs(sub),
            });
            if group != r.group || version != r.version {
                v["group"] = json!(group);
                v["version"] = json!(version);
            }
            v
        })
        .collect()
}

/// Non-core groups, in table order.
fn named_groups(catalog: &Catalog) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for (g, _) in catalog.group_versions() {
        if !g.is_empty() && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

/// The versions of `group`, preferred first (Kubernetes' order: GA before beta before alpha,
/// higher numbers first: `v2, v1, v1beta2, v1alpha1`).
fn versions_of(catalog: &Catalog, group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = catalog
        .group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(_, v)| v)
        .collect();
    versions.sort_by_key(|v| version_priority(v));
    versions
}

/// Sort key of a version: `v<major>[(alpha|beta)<minor>]` first (GA, then beta, then alpha,
/// higher numbers first), other names after, alphabetically.
fn version_priority(v: &str) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    use std::cmp::Reverse;
    let other = (3, Reverse(0), Reverse(0), v.to_owned());
    let Some(rest) = v.strip_prefix('v') else {
        return other;
    };
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let Ok(major) = rest[..digits].parse::<u64>() else {
        return other;
    };
    let tail = &rest[digits..];
    let (level, minor) = if tail.is_empty() {
        (0, "0")
    } else if let Some(m) = tail.strip_prefix("beta") {
        (1, m)
    } else if let Some(m) = tail.strip_prefix("alpha") {
        (2, m)
    } else {
        return other;
    };
    match minor.parse::<u64>() {
        Ok(minor) => (level, Reverse(major), Reverse(minor), String::new()),
        Err(_) => other,
    }
}

/// An `APIGroup` entry.
fn group(catalog: &Catalog, name: &str) -> Value {
    let versions: Vec<Value> = versions_of(catalog, name)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": versions, "preferredVersion": preferred})
}

/// An `APIResource` entry.
fn resource(r: &Resource) -> Value {
    let mut v = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    v
}

/// `APIGroupDiscoveryList` for the core group (`core`) or for the named groups.
fn aggregated(catalog: &Catalog, core: bool) -> Value {
    let groups: Vec<&str> = if core {
        vec![""]
    } else {
        named_groups(catalog)
    };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let versions: Vec<Value> = versions_of(catalog, g)
                .into_iter()
                .map(|v| {
                    let list: Vec<Value> = catalog
                        .in_group_version(g, v)
                        .map(|r| {
                            let mut e = json!({
                                "resource": r.plural,
                                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": r.verbs,
                            });
                            if !r.short_names.is_empty() {
                                e["shortNames"] = json!(r.short_names);
                            }
                            if !r.categories.is_empty() {
                                e["categories"] = json!(r.categories);
                            }
                            if !r.subresources.is_empty() {
                                let subs: Vec<Value> = r
                                    .subresources
                                    .iter()
                                    .map(|sub| {
                                        let (group, version, kind) = subresource_kind(r, sub);
                                        json!({
                                            "subresource": sub,
                                            "responseKind": {"group": group, "version": version, "kind": kind},
                                            "verbs": subresource_verbs(sub),
                                        })
                                    })
                                    .collect();
                                e["subresources"] = json!(subs);
                            }
                            e
                        })
                        .collect();
                    json!({"version": v, "resources": list, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_documents() {
        let (api, _) =
            document(&Discovery::Api { aggregated: false }, &Catalog::default()).unwrap();
        assert_eq!(api["versions"], json!(["v1"]));
        let (apis, _) =
            document(&Discovery::Apis { aggregated: false }, &Catalog::default()).unwrap();
        assert_eq!(apis["groups"][0]["name"], "apps");
        assert_eq!(
            apis["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        let (v1, _) = document(
            &Discovery::GroupVersion {
                group: "".into(),
                version: "v1".into(),
            },
            &Catalog::default(),
        )
        .unwrap();
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            &names[..4],
            ["namespaces", "namespaces/status", "nodes", "nodes/status"]
        );
        assert!(names.contains(&"configmaps") && names.contains(&"persistentvolumeclaims"));
        let pods = &v1["resources"][4];
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(v1["resources"][0]["shortNames"], json!(["ns"]));
        assert!(document(
            &Discovery::Group("widgets.example.com".into()),
            &Catalog::default()
        )
        .is_err());
        assert!(document(
            &Discovery::GroupVersion {
                group: "".into(),
                version: "v2".into()
            },
            &Catalog::default()
        )
        .is_err());
    }

    #[test]
    fn aggregated_documents() {
        let (core, agg) =
            document(&Discovery::Api { aggregated: true }, &Catalog::default()).unwrap();
        assert!(agg);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        assert_eq!(
            core["items"][0]["versions"][0]["resources"][2]["scope"],
            "Namespaced"
        );
        let (apps, _) =
            document(&Discovery::Apis { aggregated: true }, &Catalog::default()).unwrap();
        let deploy = &apps["items"][0]["versions"][0]["resources"][0];
        assert_eq!(deploy["subresources"][1]["subresource"], "scale");
        assert_eq!(deploy["subresources"][1]["responseKind"]["kind"], "Scale");
        let (apps_v1, _) = document(
            &Discovery::GroupVersion {
                group: "apps".into(),
                version: "v1".into(),
            },
            &Catalog::default(),
        )
        .unwrap();
        assert_eq!(apps_v1["resources"][2]["name"], "deployments/scale");
        assert_eq!(apps_v1["resources"][2]["group"], "autoscaling");
        let (groups, _) =
            document(&Discovery::Apis { aggregated: true }, &Catalog::default()).unwrap();
        assert_eq!(
            groups["items"][0]["versions"][0]["resources"][0]["responseKind"]["kind"],
            "Deployment"
        );
    }
}
