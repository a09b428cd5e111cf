//! Authorization against the in-memory store, through the API's own handlers (what the
//! server does for each request, minus HTTP).

use std::sync::Arc;

use cairn_store::MemoryStore;
use http::{HeaderMap, Method};
use serde_json::{json, Value};

use super::*;
use crate::handlers::Api;
use crate::request::{parse_parts, ApiRequest};

fn api() -> Api {
    let api = Api::new(Arc::new(MemoryStore::new()));
    crate::bootstrap::ensure_system_namespaces(&api).unwrap();
    for ns in ["demo", "other"] {
        call(
            &api,
            None,
            "POST",
            "/api/v1/namespaces",
            json!({"metadata": {"name": ns}}),
        )
        .unwrap();
    }
    assert!(!defaults::ensure(&api).unwrap().is_empty());
    api
}

fn user(name: &str, groups: &[&str]) -> User {
    User::new(
        name.to_owned(),
        groups.iter().map(|g| (*g).to_owned()).collect(),
    )
}

fn admin() -> User {
    user("admin", &[MASTERS])
}

/// A request as `who` (`None`: in-process, unchecked); authorized first, like the server.
fn call(
    api: &Api,
    who: Option<&User>,
    method: &str,
    uri: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let uri: http::Uri = uri.parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    let method: Method = method.parse().unwrap();
    let ApiRequest::Resource(mut action) =
        parse_parts(&method, uri.path(), uri.query(), &headers, &api.catalog())?
    else {
        panic!("not a resource request");
    };
    if let Some(who) = who {
        api.authorizer()
            .authorize(who, &Attributes::from_action(&action))?;
        action.user = Some(Arc::new(who.clone()));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    Ok(api.handle(&action, &body)?.body)
}

fn allowed(
    api: &Api,
    who: &User,
    verb: &str,
    group: &str,
    resource: &str,
    ns: Option<&str>,
) -> bool {
    let attrs = Attributes::resource(verb, group, resource, ns, None);
    api.authorizer().decide(who, &attrs).unwrap().allowed
}

fn bind(api: &Api, ns: &str, name: &str, role_kind: &str, role: &str, subject: Value) {
    call(
        api,
        None,
        "POST",
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        json!({"metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
               "subjects": [subject]}),
    )
    .unwrap();
}

#[test]
fn defaults_are_written_once_and_restored_while_auto_updated() {
    let api = api();
    assert!(
        defaults::ensure(&api).unwrap().is_empty(),
        "nothing changed"
    );
    let uri = "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:basic-user";
    let mut role = call(&api, None, "GET", uri, Value::Null).unwrap();
    role["rules"] = json!([]);
    call(&api, None, "PUT", uri, role.clone()).unwrap();
    assert_eq!(defaults::ensure(&api).unwrap(), ["system:basic-user"]);
    // Opting out keeps local changes.
    let mut role = call(&api, None, "GET", uri, Value::Null).unwrap();
    role["rules"] = json!([]);
    role["metadata"]["annotations"][defaults::AUTOUPDATE] = json!("false");
    call(&api, None, "PUT", uri, role).unwrap();
    assert!(defaults::ensure(&api).unwrap().is_empty());
}

#[test]
fn masters_may_do_anything_and_others_only_what_is_bound() {
    let api = api();
    assert!(allowed(&api, &admin(), "delete", "", "nodes", None));
    let alice = user("alice", &[]);
    // Every authenticated user: discovery, whoami, can-i; nothing else.
    let discovery = Attributes::path(&Method::GET, "/apis/apps/v1");
    assert!(api.authorizer().decide(&alice, &discovery).unwrap().allowed);
    let metrics = Attributes::path(&Method::GET, "/metrics");
    let e = api.authorizer().authorize(&alice, &metrics).unwrap_err();
    assert_eq!(
        e.to_string(),
        "forbidden: User \"alice\" cannot get path \"/metrics\""
    );
    assert!(allowed(
        &api,
        &alice,
        "create",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        None
    ));
    assert!(!allowed(&api, &alice, "list", "", "pods", Some("demo")));
    let e = call(
        &api,
        Some(&alice),
        "GET",
        "/api/v1/namespaces/demo/pods",
        Value::Null,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in \
         the namespace \"demo\""
    );

    // `view` in demo: reads there, no secrets, no writes, nothing elsewhere.
    bind(
        &api,
        "demo",
        "alice-view",
        "ClusterRole",
        "view",
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}),
    );
    call(
        &api,
        Some(&alice),
        "GET",
        "/api/v1/namespaces/demo/pods",
        Value::Null,
    )
    .unwrap();
    let reason = api
        .authorizer()
        .decide(
            &alice,
            &Attributes::resource("list", "apps", "deployments", Some("demo"), None),
        )
        .unwrap()
        .reason;
    assert_eq!(
        reason,
        "RBAC: allowed by RoleBinding \"demo/alice-view\" of ClusterRole \"view\" to User \"alice\""
    );
    assert!(!allowed(&api, &alice, "get", "", "secrets", Some("demo")));
    assert!(!allowed(&api, &alice, "create", "", "pods", Some("demo")));
    assert!(!allowed(&api, &alice, "list", "", "pods", Some("other")));
    assert!(
        !allowed(&api, &alice, "list", "", "pods", None),
        "all namespaces need a cluster grant"
    );

    // Deleting the binding revokes at once.
    call(
        &api,
        None,
        "DELETE",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings/alice-view",
        Value::Null,
    )
    .unwrap();
    assert!(!allowed(&api, &alice, "list", "", "pods", Some("demo")));
}

#[test]
fn groups_service_accounts_and_cluster_bindings() {
    let api = api();
    call(&api, None, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
         json!({"metadata": {"name": "ops-edit"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "ops"}]}))
        .unwrap();
    let bob = user("bob", &["ops"]);
    assert!(allowed(
        &api,
        &bob,
        "create",
        "apps",
        "deployments",
        Some("other")
    ));
    assert!(allowed(&api, &bob, "list", "", "pods", None));
    assert!(!allowed(
        &api,
        &bob,
        "create",
        "rbac.authorization.k8s.io",
        "roles",
        Some("demo")
    ));

    // A RoleBinding's ServiceAccount subject defaults to the binding's namespace.
    bind(
        &api,
        "demo",
        "bot",
        "ClusterRole",
        "view",
        json!({"kind": "ServiceAccount", "name": "bot"}),
    );
    let bot = user(
        "system:serviceaccount:demo:bot",
        &["system:serviceaccounts"],
    );
    let impostor = user(
        "system:serviceaccount:other:bot",
        &["system:serviceaccounts"],
    );
    assert!(allowed(&api, &bot, "get", "", "configmaps", Some("demo")));
    assert!(!allowed(
        &api,
        &impostor,
        "get",
        "",
        "configmaps",
        Some("demo")
    ));
}

#[test]
fn rules_match_names_subresources_and_url_prefixes() {
    let rule: PolicyRule = serde_json::from_value(json!({
        "apiGroups": ["apps"], "resources": ["deployments", "*/scale"],
        "resourceNames": ["web"], "verbs": ["get", "update"]
    }))
    .unwrap();
    let on = |verb: &str, resource: &str, sub: Option<&str>, name: Option<&str>| Attributes {
        verb: verb.into(),
        target: Target::Resource {
            group: "apps".into(),
            resource: resource.into(),
            subresource: sub.map(Into::into),
            namespace: Some("demo".into()),
            name: name.map(Into::into),
        },
    };
    assert!(rbac::rule_allows(
        &rule,
        &on("get", "deployments", None, Some("web"))
    ));
    assert!(!rbac::rule_allows(
        &rule,
        &on("get", "deployments", None, Some("db"))
    ));
    assert!(!rbac::rule_allows(
        &rule,
        &on("list", "deployments", None, None)
    ));
    assert!(rbac::rule_allows(
        &rule,
        &on("update", "statefulsets", Some("scale"), Some("web"))
    ));
    assert!(!rbac::rule_allows(
        &rule,
        &on("update", "deployments", Some("status"), Some("web"))
    ));
    let urls: PolicyRule = serde_json::from_value(
        json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]}),
    )
    .unwrap();
    let path = |p: &str| Attributes::path(&Method::GET, p);
    assert!(rbac::rule_allows(&urls, &path("/apis/apps/v1")));
    assert!(rbac::rule_allows(&urls, &path("/healthz")));
    assert!(!rbac::rule_allows(&urls, &path("/healthz/etcd")));
}

#[test]
fn aggregated_roles_collect_labelled_roles() {
    let api = api();
    call(&api, None, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles",
         json!({"metadata": {"name": "widgets-view",
                             "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list"]}]}))
        .unwrap();
    bind(
        &api,
        "demo",
        "carol",
        "ClusterRole",
        "view",
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "carol"}),
    );
    let carol = user("carol", &[]);
    assert!(allowed(
        &api,
        &carol,
        "list",
        "example.com",
        "widgets",
        Some("demo")
    ));
    assert!(!allowed(
        &api,
        &carol,
        "delete",
        "example.com",
        "widgets",
        Some("demo")
    ));
}

#[test]
fn nobody_grants_more_than_they_hold() {
    let api = api();
    bind(
        &api,
        "demo",
        "dave-admin",
        "ClusterRole",
        "admin",
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dave"}),
    );
    let dave = user("dave", &[]);
    let roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/roles";
    call(
        &api,
        Some(&dave),
        "POST",
        roles,
        json!({"metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
    )
    .unwrap();
    let e = call(
        &api,
        Some(&dave),
        "POST",
        roles,
        json!({"metadata": {"name": "nodes"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]}),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 403);
    assert!(e.to_string().contains("not currently held"), "{e}");
    let e = call(
        &api,
        Some(&dave),
        "POST",
        roles,
        json!({"metadata": {"name": "all"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 403);

    let bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/demo/rolebindings";
    let binding = |role: &str| {
        json!({"metadata": {"name": format!("to-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "erin"}]})
    };
    call(&api, Some(&dave), "POST", bindings, binding("view")).unwrap();
    let e = call(
        &api,
        Some(&dave),
        "POST",
        bindings,
        binding("cluster-admin"),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 403, "{e}");
    // The bind verb on that role lifts it.
    call(&api, None, "POST", roles,
         json!({"metadata": {"name": "binder"},
                "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                           "resourceNames": ["cluster-admin"], "verbs": ["bind"]}]}))
        .unwrap();
    bind(
        &api,
        "demo",
        "dave-binder",
        "Role",
        "binder",
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dave"}),
    );
    call(
        &api,
        Some(&dave),
        "POST",
        bindings,
        binding("cluster-admin"),
    )
    .unwrap();
    // Admins are not checked.
    call(
        &api,
        Some(&admin()),
        "POST",
        roles,
        json!({"metadata": {"name": "nodes"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]}),
    )
    .unwrap();
}

#[test]
fn impersonation_needs_the_impersonate_verb() {
    let api = api();
    let mut headers = HeaderMap::new();
    headers.insert(
        "impersonate-user",
        "system:serviceaccount:demo:bot".parse().unwrap(),
    );
    headers.append("impersonate-group", "ops".parse().unwrap());
    let as_bot = api.authorizer().impersonate(admin(), &headers).unwrap();
    assert_eq!(as_bot.name, "system:serviceaccount:demo:bot");
    assert_eq!(
        as_bot.groups,
        [
            "ops",
            "system:serviceaccounts",
            "system:serviceaccounts:demo",
            "system:authenticated"
        ]
    );
    let e = api
        .authorizer()
        .impersonate(user("alice", &[]), &headers)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot impersonate resource \"serviceaccounts\""),
        "{e}"
    );
    let mut only_group = HeaderMap::new();
    only_group.insert("impersonate-group", "ops".parse().unwrap());
    assert_eq!(
        api.authorizer()
            .impersonate(admin(), &only_group)
            .unwrap_err()
            .code_reason()
            .0,
        400
    );
    assert_eq!(
        api.authorizer()
            .impersonate(admin(), &HeaderMap::new())
            .unwrap(),
        admin()
    );
}

#[test]
fn access_reviews() {
    let api = api();
    bind(
        &api,
        "demo",
        "alice-view",
        "ClusterRole",
        "view",
        json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}),
    );
    let alice = user("alice", &[]);
    let review = |kind, ns: Option<&str>, body: Value| {
        api.authorizer()
            .review(&alice, kind, ns, body.to_string().as_bytes())
    };
    let yes = review(
        Review::SelfSubjectAccess,
        None,
        json!({"spec": {"resourceAttributes":
        {"namespace": "demo", "verb": "list", "resource": "pods"}}}),
    )
    .unwrap();
    assert_eq!(yes["status"]["allowed"], true);
    assert_eq!(yes["kind"], "SelfSubjectAccessReview");
    let no = review(
        Review::SelfSubjectAccess,
        None,
        json!({"spec": {"resourceAttributes":
        {"namespace": "demo", "verb": "create", "resource": "pods"}}}),
    )
    .unwrap();
    assert_eq!(no["status"]["allowed"], false);
    let rules = review(
        Review::SelfSubjectRules,
        None,
        json!({"spec": {"namespace": "demo"}}),
    )
    .unwrap();
    let text = rules["status"].to_string();
    assert!(
        text.contains("\"deployments\"") && text.contains("/apis/*"),
        "{text}"
    );
    // Someone else's permissions.
    let sar = review(
        Review::SubjectAccess,
        None,
        json!({"spec": {"user": "admin",
        "groups": [MASTERS], "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}}),
    )
    .unwrap();
    assert_eq!(sar["status"]["allowed"], true);
    let e = review(
        Review::LocalSubjectAccess,
        Some("demo"),
        json!({"spec": {"user": "x",
        "resourceAttributes": {"namespace": "other", "verb": "get", "resource": "pods"}}}),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 400);
    let e = review(Review::SelfSubjectAccess, None, json!({"spec": {}})).unwrap_err();
    assert!(e.to_string().contains("exactly one of"), "{e}");
    assert_eq!(
        review(Review::SelfSubjectAccess, None, json!([1]))
            .unwrap_err()
            .code_reason()
            .0,
        400
    );
}

#[test]
fn nodes_touch_only_their_own_and_what_their_pods_use() {
    let api = api();
    let pod = |name: &str, node: &str, secret: &str| {
        call(&api, None, "POST", "/api/v1/namespaces/demo/pods", json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}],
                "volumes": [{"name": "v", "configMap": {"name": format!("{secret}-config")}}]}
        }))
        .unwrap();
    };
    pod("a", "n1", "s1");
    pod("b", "n2", "s2");
    let n1 = user("system:node:n1", &[node::NODES_GROUP]);
    let get = |what: &str, name: &str| {
        let attrs = Attributes::resource("get", "", what, Some("demo"), Some(name));
        api.authorizer().decide(&n1, &attrs).unwrap()
    };
    assert!(get("secrets", "s1").allowed);
    assert!(get("configmaps", "s1-config").allowed);
    let denied = get("secrets", "s2");
    assert!(!denied.allowed);
    assert_eq!(
        denied.reason,
        "no relationship found between node 'n1' and this object"
    );
    assert!(!get("secrets", "s1-config").allowed);
    // A watch of one secret by name counts as a get.
    let uri = "/api/v1/namespaces/demo/secrets?watch=true&fieldSelector=metadata.name%3Ds1";
    let uri: http::Uri = uri.parse().unwrap();
    let ApiRequest::Resource(action) = parse_parts(
        &Method::GET,
        uri.path(),
        uri.query(),
        &HeaderMap::new(),
        &api.catalog(),
    )
    .unwrap() else {
        unreachable!()
    };
    assert!(
        api.authorizer()
            .decide(&n1, &Attributes::from_action(&action))
            .unwrap()
            .allowed
    );

    let on = |verb: &str, resource: &str, sub: Option<&str>, ns: Option<&str>, name: &str| {
        let attrs = Attributes {
            verb: verb.into(),
            target: Target::Resource {
                group: String::new(),
                resource: resource.into(),
                subresource: sub.map(Into::into),
                namespace: ns.map(Into::into),
                name: Some(name.into()),
            },
        };
        api.authorizer().decide(&n1, &attrs).unwrap().allowed
    };
    assert!(on("patch", "nodes", Some("status"), None, "n1"));
    assert!(!on("patch", "nodes", Some("status"), None, "n2"));
    assert!(on("update", "pods", Some("status"), Some("demo"), "a"));
    assert!(!on("update", "pods", Some("status"), Some("demo"), "b"));
    assert!(
        !on("update", "pods", None, Some("demo"), "a"),
        "only the status"
    );
    assert!(on("delete", "pods", None, Some("demo"), "a"));
    assert!(!on("delete", "pods", None, Some("demo"), "b"));
    assert!(on("list", "pods", None, None, "b"));

    // Creating: only itself, and only mirror pods bound to it.
    call(
        &api,
        Some(&n1),
        "POST",
        "/api/v1/nodes",
        json!({"metadata": {"name": "n1"}}),
    )
    .unwrap();
    let e = call(
        &api,
        Some(&n1),
        "POST",
        "/api/v1/nodes",
        json!({"metadata": {"name": "n3"}}),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 403, "{e}");
    let e = call(
        &api,
        Some(&n1),
        "POST",
        "/api/v1/namespaces/demo/pods",
        json!({
        "metadata": {"name": "sneaky"},
        "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .unwrap_err();
    assert_eq!(e.code_reason().0, 403, "{e}");
    call(
        &api,
        Some(&n1),
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        json!({"metadata": {"name": "n1"}}),
    )
    .unwrap();
    // Not a node without the group.
    let fake = user("system:node:n1", &[]);
    assert!(
        !api.authorizer()
            .decide(
                &fake,
                &Attributes::resource("get", "", "secrets", Some("demo"), Some("s1"))
            )
            .unwrap()
            .allowed
    );
}
