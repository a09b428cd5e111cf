//! Role-based access control as `rbac.authorization.k8s.io/v1` defines it.
//!
//! An [`Index`] is a snapshot of every Role, ClusterRole, RoleBinding and ClusterRoleBinding,
//! with aggregated ClusterRoles (`aggregationRule`) already resolved to the union of the
//! rules of the ClusterRoles their selectors pick. A request is allowed when a binding that
//! names the user (by user name, group or service account) grants a role with a rule that
//! matches it; nothing is ever denied explicitly.

use std::collections::HashMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::Value;

use super::{Attributes, Target};
use crate::auth::User;
use crate::selector::LabelSelector;

/// One binding, reduced to what matching needs.
#[derive(Debug, Clone)]
struct Binding {
    /// `ClusterRoleBinding "x"` or `RoleBinding "ns/x"`, for reasons.
    describe: String,
    /// `None` for ClusterRoleBindings.
    namespace: Option<String>,
    role_kind: String,
    role_name: String,
    subjects: Vec<k8s_openapi::api::rbac::v1::Subject>,
}

/// A snapshot of the cluster's RBAC objects.
#[derive(Debug, Default)]
pub struct Index {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    bindings: Vec<Binding>,
}

impl Index {
    /// Builds the index from stored objects (as JSON). Objects that do not parse are skipped
    /// (they were validated when written; a skipped object grants nothing).
    pub fn build(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_bindings: &[Value],
        bindings: &[Value],
    ) -> Index {
        let mut index = Index::default();
        let parsed: Vec<ClusterRole> = cluster_roles
            .iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect();
        for role in &parsed {
            let name = role.metadata.name.clone().unwrap_or_default();
            let mut rules = role.rules.clone().unwrap_or_default();
            if let Some(selectors) = role
                .aggregation_rule
                .as_ref()
                .and_then(|a| a.cluster_role_selectors.as_ref())
            {
                rules.extend(aggregated(&name, selectors, &parsed));
            }
            index.cluster_roles.insert(name, rules);
        }
        for role in roles {
            if let Ok(role) = serde_json::from_value::<Role>(role.clone()) {
                let key = (
                    role.metadata.namespace.unwrap_or_default(),
                    role.metadata.name.unwrap_or_default(),
                );
                index.roles.insert(key, role.rules.unwrap_or_default());
            }
        }
        for b in cluster_bindings {
            if let Ok(b) = serde_json::from_value::<ClusterRoleBinding>(b.clone()) {
                let name = b.metadata.name.unwrap_or_default();
                index.bindings.push(Binding {
                    describe: format!("ClusterRoleBinding {name:?}"),
                    namespace: None,
                    role_kind: b.role_ref.kind,
                    role_name: b.role_ref.name,
                    subjects: b.subjects.unwrap_or_default(),
                });
            }
        }
        for b in bindings {
            if let Ok(b) = serde_json::from_value::<RoleBinding>(b.clone()) {
                let ns = b.metadata.namespace.unwrap_or_default();
                let name = b.metadata.name.unwrap_or_default();
                index.bindings.push(Binding {
                    describe: format!("RoleBinding \"{ns}/{name}\""),
                    namespace: Some(ns),
                    role_kind: b.role_ref.kind,
                    role_name: b.role_ref.name,
                    subjects: b.subjects.unwrap_or_default(),
                });
            }
        }
        index
    }

    /// Why `user` may do what `attrs` describes, or `None` when no binding allows it.
    pub fn allows(&self, user: &User, attrs: &Attributes) -> Option<String> {
        let namespace = match &attrs.target {
            Target::Resource { namespace, .. } => namespace.as_deref(),
            Target::NonResource { .. } => None,
        };
        for binding in &self.bindings {
            // A RoleBinding grants only inside its namespace, and never non-resource URLs.
            if let Some(ns) = &binding.namespace {
                if namespace != Some(ns.as_str()) {
                    continue;
                }
            }
            let Some(subject) = binding.subject_for(user) else {
                continue;
            };
            let Some(rules) = self.role_rules(binding) else {
                continue;
            };
            if rules.iter().any(|rule| rule_allows(rule, attrs)) {
                return Some(format!(
                    "RBAC: allowed by {} of {} {:?} to {}",
                    binding.describe, binding.role_kind, binding.role_name, subject
                ));
            }
        }
        None
    }

    /// Every rule granted to `user` in `namespace` (cluster-wide rules included), for
    /// `SelfSubjectRulesReview` and escalation checks. `None`: only cluster-wide rules.
    pub fn rules_for(&self, user: &User, namespace: Option<&str>) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        for binding in &self.bindings {
            if let Some(ns) = &binding.namespace {
                if namespace != Some(ns.as_str()) {
                    continue;
                }
            }
            if binding.subject_for(user).is_none() {
                continue;
            }
            if let Some(rules) = self.role_rules(binding) {
                out.extend(rules.iter().cloned());
            }
        }
        out
    }

    /// The rules a role reference resolves to (`None`: no such role).
    pub fn role(&self, kind: &str, name: &str, namespace: Option<&str>) -> Option<&[PolicyRule]> {
        match kind {
            "ClusterRole" => self.cluster_roles.get(name).map(Vec::as_slice),
            "Role" => self
                .roles
                .get(&(namespace?.to_owned(), name.to_owned()))
                .map(Vec::as_slice),
            _ => None,
        }
    }

    fn role_rules(&self, binding: &Binding) -> Option<&[PolicyRule]> {
        self.role(
            &binding.role_kind,
            &binding.role_name,
            binding.namespace.as_deref(),
        )
    }
}

impl Binding {
    /// The subject of this binding that `user` is, described for a reason.
    fn subject_for(&self, user: &User) -> Option<String> {
        self.subjects.iter().find_map(|s| {
            let hit = match s.kind.as_str() {
                "User" => s.name == user.name,
                "Group" => user.groups.contains(&s.name),
                "ServiceAccount" => {
                    let ns = s.namespace.as_deref().or(self.namespace.as_deref());
                    ns.is_some_and(|ns| {
                        user.name == format!("system:serviceaccount:{ns}:{}", s.name)
                    })
                }
                _ => false,
            };
            hit.then(|| format!("{} {:?}", s.kind, s.name))
        })
    }
}

/// The rules an aggregated ClusterRole `name` collects from the others.
fn aggregated(
    name: &str,
    selectors: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector],
    roles: &[ClusterRole],
) -> Vec<PolicyRule> {
    let selectors: Vec<LabelSelector> = selectors
        .iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .filter_map(|s| LabelSelector::from_json(&s).ok())
        .collect();
    let mut out = Vec::new();
    for role in roles {
        if role.metadata.name.as_deref() == Some(name) {
            continue;
        }
        let labels = role.metadata.labels.clone().unwrap_or_default();
        if selectors
            .iter()
            .any(|s| !s.0.is_empty() && s.matches(&labels))
        {
            out.extend(role.rules.clone().unwrap_or_default());
        }
    }
    out
}

/// Whether one rule matches a request (Kubernetes' `RuleAllows`).
pub fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !has(&rule.verbs, &attrs.verb) {
        return false;
    }
    match &attrs.target {
        Target::NonResource { path } => rule
            .non_resource_urls
            .iter()
            .flatten()
            .any(|u| url_matches(u, path)),
        Target::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            has_opt(&rule.api_groups, group)
                && resource_matches(rule, resource, subresource.as_deref())
                && match rule.resource_names.as_deref() {
                    None | Some([]) => true,
                    Some(names) => name.as_ref().is_some_and(|n| names.contains(n)),
                }
        }
    }
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

fn has_opt(list: &Option<Vec<String>>, value: &str) -> bool {
    list.as_deref().is_some_and(|l| has(l, value))
}

fn resource_matches(rule: &PolicyRule, resource: &str, subresource: Option<&str>) -> bool {
    let combined = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    rule.resources.iter().flatten().any(|r| {
        r == "*"
            || *r == combined
            || subresource.is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
    })
}

fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// Whether `owner` holds every permission `rule` grants (Kubernetes' escalation check: one
/// may only grant what one has). Wildcards in `rule` are covered only by wildcards.
pub fn covers(owner: &[PolicyRule], rule: &PolicyRule) -> bool {
    let names: Vec<Option<String>> = match rule.resource_names.as_deref() {
        None | Some([]) => vec![None],
        Some(names) => names.iter().cloned().map(Some).collect(),
    };
    let urls = rule.non_resource_urls.as_deref().unwrap_or_default();
    for verb in &rule.verbs {
        for url in urls {
            if !owner.iter().any(|o| {
                has(&o.verbs, verb)
                    && o.non_resource_urls
                        .iter()
                        .flatten()
                        .any(|u| url_matches(u, url))
            }) {
                return false;
            }
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for name in &names {
                    let held = owner.iter().any(|o| {
                        has(&o.verbs, verb)
                            && has_opt(&o.api_groups, group)
                            && o.resources
                                .iter()
                                .flatten()
                                .any(|r| r == "*" || r == resource)
                            && match o.resource_names.as_deref() {
                                None | Some([]) => true,
                                Some(held) => name.as_ref().is_some_and(|n| held.contains(n)),
                            }
                    });
                    if !held {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// A rule in the form kubectl prints and reasons quote.
pub fn describe_rule(rule: &PolicyRule) -> String {
    let list = |l: &Option<Vec<String>>| l.as_deref().unwrap_or_default().join(",");
    if rule
        .non_resource_urls
        .as_ref()
        .is_some_and(|u| !u.is_empty())
    {
        return format!(
            "{{NonResourceURLs:[{}] Verbs:[{}]}}",
            list(&rule.non_resource_urls),
            rule.verbs.join(",")
        );
    }
    let mut out = format!(
        "{{APIGroups:[{}] Resources:[{}]",
        list(&rule.api_groups)
            .split(',')
            .map(|g| format!("{g:?}"))
            .collect::<Vec<_>>()
            .join(" "),
        list(&rule.resources)
    );
    if rule.resource_names.as_ref().is_some_and(|n| !n.is_empty()) {
        out.push_str(&format!(" ResourceNames:[{}]", list(&rule.resource_names)));
    }
    out.push_str(&format!(" Verbs:[{}]}}", rule.verbs.join(",")));
    out
}
