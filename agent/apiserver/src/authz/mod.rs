//! Authorization: may this user do this?
//!
//! Three authorizers are asked in kube-apiserver's order; the first that allows wins and
//! nothing is allowed otherwise:
//! 1. members of `system:masters` may do everything (the admin kubeconfig);
//! 2. the node authorizer ([`node`]) for users `system:node:<name>` in `system:nodes`;
//! 3. RBAC ([`rbac`]) over the Roles, ClusterRoles and bindings in the store, including the
//!    default ones [`defaults`] creates at start.
//!
//! The RBAC objects are read into an [`rbac::Index`] once and rebuilt after any RBAC object
//! or namespace is written through the API ([`Authorizer::invalidate`]), so checks cost no
//! store reads. Also here: impersonation (`kubectl --as`), the access reviews behind
//! `kubectl auth can-i` and the escalation rule (one may only grant what one holds).
//!
//! Limitations: one server per store (another server's RBAC writes are seen after this one
//! next writes an RBAC object, or restarts); aggregated ClusterRoles grant their collected
//! rules but the collected rules are not written back into the stored object.

pub mod defaults;
pub mod node;
pub mod rbac;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};

use cairn_store::Store;
use http::{HeaderMap, Method};
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::{json, Value};

use crate::auth::User;
use crate::error::ApiError;
use crate::request::{verb_name, Action};
use crate::resources::{self, Resource};

/// The group whose members may do everything.
pub const MASTERS: &str = "system:masters";

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or
    /// a special verb (`impersonate`, `bind`, `escalate`); for paths the HTTP method's verb.
    pub verb: String,
    pub target: Target,
}

/// What a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Resource {
        group: String,
        resource: String,
        subresource: Option<String>,
        namespace: Option<String>,
        /// The object's name; for lists and watches the `metadata.name` field selector's.
        name: Option<String>,
    },
    NonResource {
        path: String,
    },
}

impl Attributes {
    /// What an API action asks.
    pub fn from_action(action: &Action) -> Attributes {
        let name = action.name.clone().or_else(|| {
            action
                .options
                .field_selector
                .exact_name()
                .map(str::to_owned)
        });
        // As in Kubernetes, a namespace is in itself: a RoleBinding in `demo` may grant
        // reading the namespace `demo`.
        let namespace = match (action.resource.group, action.resource.plural) {
            ("", "namespaces") => action.name.clone(),
            _ => action.namespace.clone(),
        };
        Attributes {
            verb: verb_name(action.verb).to_owned(),
            target: Target::Resource {
                group: action.resource.group.to_owned(),
                resource: action.resource.plural.to_owned(),
                subresource: action.subresource.map(|s| s.name().to_owned()),
                namespace,
                name,
            },
        }
    }

    /// A request for a path outside the resource API (discovery, OpenAPI, health, metrics).
    pub fn path(method: &Method, path: &str) -> Attributes {
        let verb = match *method {
            Method::GET | Method::HEAD => "get",
            Method::POST => "post",
            Method::PUT => "put",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "options",
        };
        Attributes {
            verb: verb.to_owned(),
            target: Target::NonResource {
                path: path.to_owned(),
            },
        }
    }

    /// `verb` on a resource.
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes {
            verb: verb.to_owned(),
            target: Target::Resource {
                group: group.to_owned(),
                resource: resource.to_owned(),
                subresource: None,
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
            },
        }
    }

    /// kube-apiserver's wording of a refusal of `user`.
    fn forbidden(&self, user: &User, reason: &str) -> ApiError {
        let mut message = match &self.target {
            Target::NonResource { path } => format!(
                "forbidden: User {:?} cannot {} path {path:?}",
                user.name, self.verb
            ),
            Target::Resource {
                group,
                resource,
                subresource,
                namespace,
                name,
            } => {
                let combined = match subresource {
                    Some(sub) => format!("{resource}/{sub}"),
                    None => resource.clone(),
                };
                let subject = match name {
                    Some(name) if self.verb != "list" && self.verb != "watch" => {
                        format!("{combined} {name:?}")
                    }
                    _ => combined.clone(),
                };
                let scope = match namespace {
                    Some(ns) => format!("in the namespace {ns:?}"),
                    None => "at the cluster scope".to_owned(),
                };
                format!(
                    "{subject} is forbidden: User {:?} cannot {} resource {combined:?} in API \
                     group {group:?} {scope}",
                    user.name, self.verb
                )
            }
        };
        if !reason.is_empty() {
            message.push_str(": ");
            message.push_str(reason);
        }
        ApiError::Forbidden(message)
    }
}

/// An authorization decision with the reason given to the client (access reviews show it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Decides requests; shared by every request of one server.
pub struct Authorizer {
    store: Arc<dyn Store>,
    /// (generation, index built at that generation). [`Authorizer::invalidate`] bumps the
    /// generation, so an index built from reads that raced a write is never kept.
    cache: Mutex<(u64, Option<Arc<rbac::Index>>)>,
}

impl Authorizer {
    pub fn new(store: Arc<dyn Store>) -> Authorizer {
        Authorizer {
            store,
            cache: Mutex::new((0, None)),
        }
    }

    /// Forget the RBAC snapshot: an RBAC object (or a namespace) was written.
    pub fn invalidate(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.0 += 1;
        cache.1 = None;
    }

    /// Whether writing `resource` changes what RBAC allows.
    pub fn affects(resource: &Resource) -> bool {
        resource.group == "rbac.authorization.k8s.io"
            || (resource.group.is_empty() && resource.plural == "namespaces")
    }

    /// The RBAC snapshot, read from the store if there is none.
    pub fn index(&self) -> Result<Arc<rbac::Index>, ApiError> {
        let generation = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(index) = &cache.1 {
                return Ok(index.clone());
            }
            cache.0
        };
        let read = |plural: &str| -> Result<Vec<Value>, ApiError> {
            let resource = resources::find("rbac.authorization.k8s.io", "v1", plural)
                .expect("RBAC resources are built in");
            list_all(&*self.store, &resource.prefix(None))
        };
        let index = Arc::new(rbac::Index::build(
            &read("clusterroles")?,
            &read("roles")?,
            &read("clusterrolebindings")?,
            &read("rolebindings")?,
        ));
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.0 == generation {
            cache.1 = Some(index.clone());
        }
        Ok(index)
    }

    /// Whether `user` may do what `attrs` asks, and why.
    pub fn decide(&self, user: &User, attrs: &Attributes) -> Result<Decision, ApiError> {
        let allow = |reason: String| {
            Ok(Decision {
                allowed: true,
                reason,
            })
        };
        if user.groups.iter().any(|g| g == MASTERS) {
            return allow(format!("member of {MASTERS}"));
        }
        let mut reason = String::new();
        if let Some(node) = node::node_name(user) {
            match node::authorize(&*self.store, node, attrs)? {
                node::Decision::Allow => return allow(String::new()),
                node::Decision::NoOpinion(why) => reason = why,
            }
        }
        if let Some(why) = self.index()?.allows(user, attrs) {
            return allow(why);
        }
        Ok(Decision {
            allowed: false,
            reason,
        })
    }

    /// `Ok` when `user` may do what `attrs` asks, else kube-apiserver's `403 Forbidden`.
    pub fn authorize(&self, user: &User, attrs: &Attributes) -> Result<(), ApiError> {
        let decision = self.decide(user, attrs)?;
        if decision.allowed {
            Ok(())
        } else {
            Err(attrs.forbidden(user, &decision.reason))
        }
    }

    /// The user a request acts as: `user`, or the one its `Impersonate-*` headers name when
    /// `user` may impersonate it (`kubectl --as`, `--as-group`).
    pub fn impersonate(&self, user: User, headers: &HeaderMap) -> Result<User, ApiError> {
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect()
        };
        let name = values("impersonate-user").into_iter().next();
        let groups = values("impersonate-group");
        let extras = headers
            .keys()
            .any(|k| k.as_str().starts_with("impersonate-extra-"));
        let Some(name) = name else {
            if groups.is_empty() && !extras && values("impersonate-uid").is_empty() {
                return Ok(user);
            }
            return Err(ApiError::BadRequest(
                "impersonating groups, a uid or extra fields requires impersonating a user".into(),
            ));
        };
        let check = |attrs: Attributes| self.authorize(&user, &attrs);
        let mut implied = Vec::new();
        match name
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
        {
            Some((ns, sa)) => {
                check(Attributes::resource(
                    "impersonate",
                    "",
                    "serviceaccounts",
                    Some(ns),
                    Some(sa),
                ))?;
                implied = vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{ns}"),
                ];
            }
            None => check(Attributes::resource(
                "impersonate",
                "",
                "users",
                None,
                Some(&name),
            ))?,
        }
        for group in &groups {
            check(Attributes::resource(
                "impersonate",
                "",
                "groups",
                None,
                Some(group),
            ))?;
        }
        for uid in values("impersonate-uid") {
            check(Attributes::resource(
                "impersonate",
                "authentication.k8s.io",
                "uids",
                None,
                Some(&uid),
            ))?;
        }
        let mut all = groups;
        for g in implied {
            if !all.contains(&g) {
                all.push(g);
            }
        }
        Ok(User::new(name, all))
    }

    /// Refuses an RBAC object `obj` that would grant more than `user` holds, unless `user` may
    /// `escalate` (roles) or `bind` (bindings) the role in question.
    pub fn check_escalation(
        &self,
        user: &User,
        resource: &Resource,
        obj: &Value,
    ) -> Result<(), ApiError> {
        if resource.group != "rbac.authorization.k8s.io" || user.groups.iter().any(|g| g == MASTERS)
        {
            return Ok(());
        }
        let namespace = obj["metadata"]["namespace"]
            .as_str()
            .filter(|_| resource.namespaced);
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let index = self.index()?;
        let held = index.rules_for(user, namespace);
        let may = |verb: &str, plural: &str, name: &str| -> Result<bool, ApiError> {
            let attrs = Attributes::resource(
                verb,
                "rbac.authorization.k8s.io",
                plural,
                namespace,
                Some(name),
            );
            Ok(self.decide(user, &attrs)?.allowed)
        };
        let refuse = |what: String| {
            Err(ApiError::Forbidden(format!(
                "{} {name:?} is forbidden: user {:?} (groups={:?}) is attempting to grant RBAC \
                 permissions not currently held: {what}",
                resource.plural, user.name, user.groups
            )))
        };
        // Every rule must be one `user` holds.
        let held_or_refuse = |rules: &[PolicyRule]| {
            let missing: Vec<String> = rules
                .iter()
                .filter(|r| !rbac::covers(&held, r))
                .map(rbac::describe_rule)
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                refuse(missing.join(", "))
            }
        };
        match resource.plural {
            "roles" | "clusterroles" => {
                if may("escalate", resource.plural, name)? {
                    return Ok(());
                }
                if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                    return refuse(
                        "an aggregated ClusterRole collects rules; it needs the escalate verb"
                            .into(),
                    );
                }
                let rules: Vec<PolicyRule> =
                    serde_json::from_value(obj["rules"].clone()).unwrap_or_default();
                held_or_refuse(&rules)
            }
            "rolebindings" | "clusterrolebindings" => {
                let kind = obj["roleRef"]["kind"].as_str().unwrap_or_default();
                let role = obj["roleRef"]["name"].as_str().unwrap_or_default();
                let plural = if kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                if may("bind", plural, role)? {
                    return Ok(());
                }
                match index.role(kind, role, namespace) {
                    Some(rules) => held_or_refuse(rules),
                    None => refuse(format!("{kind} {role:?} does not exist")),
                }
            }
            _ => Ok(()),
        }
    }

    /// Answers an access review (`POST` of `body` to `kind`, in `namespace` for local
    /// reviews) asked by `user`, as the `201` body.
    pub fn review(
        &self,
        user: &User,
        kind: Review,
        namespace: Option<&str>,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let mut review: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("the {} is not valid JSON: {e}", kind.kind()))
        })?;
        if !review.is_object() {
            return Err(ApiError::BadRequest(format!(
                "the {} must be a JSON object",
                kind.kind()
            )));
        }
        let spec = review["spec"].clone();
        if kind == Review::SelfSubjectRules {
            let ns = spec["namespace"].as_str().filter(|n| !n.is_empty());
            let rules = self.index()?.rules_for(user, ns);
            review["status"] = rules_status(&rules);
            return Ok(finish(review, kind));
        }
        // Who the question is about: the caller, or the user in the spec.
        let subject = match kind {
            Review::SelfSubjectAccess => user.clone(),
            _ => User {
                name: spec["user"].as_str().unwrap_or_default().to_owned(),
                groups: spec["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect(),
            },
        };
        let attrs = if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
            let text = |k: &str| r[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
            let ns = text("namespace");
            if kind == Review::LocalSubjectAccess && ns.as_deref() != namespace {
                return Err(ApiError::BadRequest(format!(
                    "spec.resourceAttributes.namespace must match the namespace of the request \
                     ({})",
                    namespace.unwrap_or_default()
                )));
            }
            Attributes {
                verb: text("verb").unwrap_or_default(),
                target: Target::Resource {
                    group: text("group").unwrap_or_default(),
                    resource: text("resource").unwrap_or_default(),
                    subresource: text("subresource"),
                    namespace: ns,
                    name: text("name"),
                },
            }
        } else if let Some(n) = spec.get("nonResourceAttributes").filter(|n| n.is_object()) {
            Attributes {
                verb: n["verb"].as_str().unwrap_or_default().to_owned(),
                target: Target::NonResource {
                    path: n["path"].as_str().unwrap_or_default().to_owned(),
                },
            }
        } else {
            return Err(ApiError::BadRequest(format!(
                "{}: exactly one of spec.resourceAttributes and spec.nonResourceAttributes must \
                 be set",
                kind.kind()
            )));
        };
        let decision = self.decide(&subject, &attrs)?;
        let mut status = json!({"allowed": decision.allowed});
        if !decision.reason.is_empty() {
            status["reason"] = json!(decision.reason);
        }
        review["status"] = status;
        Ok(finish(review, kind))
    }
}

/// The access reviews of `authorization.k8s.io/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// `selfsubjectaccessreviews`: may I? (`kubectl auth can-i`)
    SelfSubjectAccess,
    /// `selfsubjectrulesreviews`: what may I do in a namespace? (`kubectl auth can-i --list`)
    SelfSubjectRules,
    /// `subjectaccessreviews`: may this user?
    SubjectAccess,
    /// `namespaces/<ns>/localsubjectaccessreviews`: may this user, in this namespace?
    LocalSubjectAccess,
}

impl Review {
    /// The resource a path segment names.
    pub fn from_plural(plural: &str) -> Option<Review> {
        Some(match plural {
            "selfsubjectaccessreviews" => Review::SelfSubjectAccess,
            "selfsubjectrulesreviews" => Review::SelfSubjectRules,
            "subjectaccessreviews" => Review::SubjectAccess,
            "localsubjectaccessreviews" => Review::LocalSubjectAccess,
            _ => return None,
        })
    }

    pub fn kind(self) -> &'static str {
        match self {
            Review::SelfSubjectAccess => "SelfSubjectAccessReview",
            Review::SelfSubjectRules => "SelfSubjectRulesReview",
            Review::SubjectAccess => "SubjectAccessReview",
            Review::LocalSubjectAccess => "LocalSubjectAccessReview",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Review::SelfSubjectAccess => "selfsubjectaccessreviews",
            Review::SelfSubjectRules => "selfsubjectrulesreviews",
            Review::SubjectAccess => "subjectaccessreviews",
            Review::LocalSubjectAccess => "localsubjectaccessreviews",
        }
    }
}

fn finish(mut review: Value, kind: Review) -> Value {
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!(kind.kind());
    if !review["metadata"].is_object() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review
}

/// A `SelfSubjectRulesReview` status listing `rules`.
fn rules_status(rules: &[PolicyRule]) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        if rule
            .non_resource_urls
            .as_ref()
            .is_some_and(|u| !u.is_empty())
        {
            non_resource_rules.push(json!({
                "verbs": rule.verbs,
                "nonResourceURLs": rule.non_resource_urls,
            }));
        }
        if rule.resources.as_ref().is_some_and(|r| !r.is_empty()) {
            let mut r = json!({
                "verbs": rule.verbs,
                "apiGroups": rule.api_groups.clone().unwrap_or_default(),
                "resources": rule.resources,
            });
            if let Some(names) = rule.resource_names.as_ref().filter(|n| !n.is_empty()) {
                r["resourceNames"] = json!(names);
            }
            resource_rules.push(r);
        }
    }
    json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    })
}

/// Every object under `prefix`, as JSON (one snapshot).
fn list_all(store: &dyn Store, prefix: &str) -> Result<Vec<Value>, ApiError> {
    let page = store.list(prefix, None, 0, None)?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}
