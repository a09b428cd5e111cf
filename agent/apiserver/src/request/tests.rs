//! Inline cases for the request parser.

use super::*;

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<ApiRequest, ApiError> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    parse(&b.body(()).unwrap(), &crate::resources::Catalog::default())
}

fn action(method: &str, uri: &str) -> Action {
    match req(method, uri, &[]) {
        Ok(ApiRequest::Resource(a)) => a,
        other => panic!("{method} {uri}: {other:?}"),
    }
}

fn action_with(method: &str, uri: &str, headers: &[(&str, &str)]) -> Action {
    match req(method, uri, headers).unwrap() {
        ApiRequest::Resource(a) => a,
        other => panic!("{other:?}"),
    }
}

fn code(r: Result<ApiRequest, ApiError>) -> u16 {
    r.unwrap_err().code_reason().0
}

#[test]
fn meta_paths() {
    assert_eq!(req("GET", "/healthz", &[]).unwrap(), ApiRequest::Health);
    assert_eq!(
        req("GET", "/readyz?verbose", &[]).unwrap(),
        ApiRequest::Health
    );
    assert_eq!(req("GET", "/version", &[]).unwrap(), ApiRequest::Version);
    assert_eq!(
        req("GET", "/api", &[]).unwrap(),
        ApiRequest::Discovery(Discovery::Api { aggregated: false })
    );
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    assert_eq!(
        req("GET", "/apis", &[("accept", accept)]).unwrap(),
        ApiRequest::Discovery(Discovery::Apis { aggregated: true })
    );
    assert_eq!(
        req("GET", "/api/v1", &[]).unwrap(),
        ApiRequest::Discovery(Discovery::GroupVersion {
            group: "".into(),
            version: "v1".into()
        })
    );
    assert_eq!(
        req("GET", "/apis/coordination.k8s.io/v1/", &[]).unwrap(),
        ApiRequest::Discovery(Discovery::GroupVersion {
            group: "coordination.k8s.io".into(),
            version: "v1".into()
        })
    );
    assert_eq!(code(req("POST", "/version", &[])), 405);
    assert_eq!(code(req("GET", "/nope", &[])), 404);
}

#[test]
fn reads() {
    let a = action("GET", "/api/v1/namespaces/default/configmaps/cfg");
    assert_eq!((a.verb, a.resource.kind), (Verb::Get, "ConfigMap"));
    assert_eq!(
        (a.namespace.as_deref(), a.name.as_deref()),
        (Some("default"), Some("cfg"))
    );

    let a = action("GET", "/api/v1/configmaps?labelSelector=a%3Db&limit=2");
    assert_eq!((a.verb, a.namespace), (Verb::List, None));
    assert_eq!(a.options.limit, 2);

    let a = action("GET", "/api/v1/namespaces/kube-system");
    assert_eq!(
        (a.verb, a.resource.kind, a.name.as_deref()),
        (Verb::Get, "Namespace", Some("kube-system"))
    );
    assert_eq!(a.namespace, None);

    let a = action("GET", "/api/v1/namespaces");
    assert_eq!((a.verb, a.resource.kind), (Verb::List, "Namespace"));

    let a = action(
        "GET",
        "/apis/coordination.k8s.io/v1/namespaces/n/leases?watch=true&resourceVersion=5",
    );
    assert_eq!((a.verb, a.resource.kind), (Verb::Watch, "Lease"));
    assert_eq!(a.options.revision().unwrap(), Some(5));
}

#[test]
fn writes() {
    let a = action("POST", "/api/v1/namespaces/default/secrets?dryRun=All");
    assert_eq!(
        (a.verb, a.name, a.options.dry_run),
        (Verb::Create, None, true)
    );
    assert_eq!(action("POST", "/api/v1/namespaces").verb, Verb::Create);
    assert_eq!(
        action("PUT", "/api/v1/namespaces/d/serviceaccounts/x").verb,
        Verb::Update
    );
    assert_eq!(
        action("DELETE", "/api/v1/namespaces/d/events/x").verb,
        Verb::Delete
    );
    assert_eq!(
        action("DELETE", "/api/v1/namespaces/d/events").verb,
        Verb::DeleteCollection
    );
    for (ct, t) in [
        ("application/json-patch+json", PatchType::Json),
        ("application/merge-patch+json", PatchType::Merge),
        (
            "application/strategic-merge-patch+json; charset=utf-8",
            PatchType::StrategicMerge,
        ),
    ] {
        match req(
            "PATCH",
            "/api/v1/namespaces/d/configmaps/x",
            &[("content-type", ct)],
        ) {
            Ok(ApiRequest::Resource(a)) => assert_eq!(a.verb, Verb::Patch(t)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn errors() {
    // Unknown resource, cluster-scoped resource under a namespace, subresource.
    assert_eq!(code(req("GET", "/api/v1/widgets", &[])), 404);
    assert_eq!(
        code(req("GET", "/api/v1/namespaces/d/namespaces", &[])),
        404
    );
    assert_eq!(
        code(req("GET", "/api/v1/namespaces/d/configmaps/x/status", &[])),
        404
    );
    assert_eq!(
        code(req("GET", "/apis/coordination.k8s.io/v2/leases", &[])),
        404
    );
    // Verbs that do not apply.
    assert_eq!(
        code(req("POST", "/api/v1/namespaces/d/configmaps/x", &[])),
        405
    );
    assert_eq!(
        code(req("PUT", "/api/v1/namespaces/d/configmaps", &[])),
        405
    );
    assert_eq!(code(req("POST", "/api/v1/configmaps", &[])), 405);
    assert_eq!(code(req("DELETE", "/api/v1/namespaces", &[])), 405);
    // Media types.
    let yaml = [("content-type", "application/yaml")];
    assert_eq!(code(req("POST", "/api/v1/namespaces", &yaml)), 415);
    let apply = [("content-type", "application/apply-patch+yaml")];
    let a = action_with(
        "PATCH",
        "/api/v1/namespaces/x?fieldManager=me&force=true",
        &apply,
    );
    assert_eq!(a.verb, Verb::Patch(crate::request::PatchType::Apply));
    assert_eq!(a.options.field_manager.as_deref(), Some("me"));
    assert!(a.options.force);
    assert_eq!(code(req("PATCH", "/api/v1/namespaces/x", &[])), 415);
    // Bad query.
    assert_eq!(code(req("GET", "/api/v1/namespaces?limit=-1", &[])), 400);
}

#[test]
fn table_accept() {
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    match req("GET", "/api/v1/namespaces", &[("accept", accept)]) {
        Ok(ApiRequest::Resource(a)) => assert!(a.as_table),
        other => panic!("{other:?}"),
    }
}

#[test]
fn field_selectors_per_resource_and_openapi_paths() {
    let a = action(
        "GET",
        "/api/v1/namespaces/d/events?fieldSelector=involvedObject.name%3Dx%2Creason%3DY",
    );
    assert_eq!(a.options.field_selector.0.len(), 2);
    let err = req("GET", "/api/v1/configmaps?fieldSelector=data.x%3D1", &[]).unwrap_err();
    assert_eq!(err.code_reason().0, 400);
    assert!(
        err.to_string()
            .contains("field label not supported: data.x"),
        "{err}"
    );
    assert_eq!(
        req("GET", "/openapi/v3", &[]).unwrap(),
        ApiRequest::OpenApiV3(None)
    );
    assert_eq!(
        req("GET", "/openapi/v2", &[("accept", "application/json, */*")]).unwrap(),
        ApiRequest::OpenApiV2 { json: true }
    );
    assert_eq!(
        req(
            "GET",
            "/openapi/v2",
            &[(
                "accept",
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
            )]
        )
        .unwrap(),
        ApiRequest::OpenApiV2 { json: false }
    );
    assert_eq!(
        req(
            "GET",
            "/openapi/v3/apis/coordination.k8s.io/v1?hash=AB",
            &[]
        )
        .unwrap(),
        ApiRequest::OpenApiV3(Some("apis/coordination.k8s.io/v1".into()))
    );
    let w = action(
        "GET",
        "/api/v1/configmaps?watch=true&sendInitialEvents=true",
    );
    assert!(w.options.send_initial_events && w.verb == Verb::Watch);
    let p = action(
        "POST",
        "/api/v1/namespaces/d/configmaps?fieldValidation=Strict",
    );
    assert_eq!(p.options.field_validation, FieldValidation::Strict);
}

#[test]
fn self_subject_review() {
    assert_eq!(
        req(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &[("content-type", "application/vnd.kubernetes.protobuf")]
        )
        .unwrap(),
        ApiRequest::SelfSubjectReview
    );
    assert_eq!(
        code(req(
            "GET",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &[]
        )),
        405
    );
}
