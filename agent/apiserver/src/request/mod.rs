//! The I/O-free request parser: method, path, query and headers in, a typed [`ApiRequest`] out.
//!
//! Nothing here touches the store; every route is tested with inline cases. Request bodies
//! are not read here: the handlers decode them (after the content type was checked here;
//! protobuf bodies are turned into JSON by [`crate::protobuf`] before the handlers see them).

mod query;

pub use query::{decode, FieldValidation, Options, ResourceVersionMatch};

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, Method, Request};

use crate::error::ApiError;
use crate::resources::{Catalog, Resource};

/// How a PATCH body is to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902 (`application/json-patch+json`).
    Json,
    /// RFC 7386 (`application/merge-patch+json`).
    Merge,
    /// `application/strategic-merge-patch+json`: lists merged by key where the Kubernetes
    /// types say so (`handlers::strategic`).
    StrategicMerge,
    /// Server-side apply (`application/apply-patch+yaml`): the manager's whole intent,
    /// merged and owned field by field (`handlers::apply`).
    Apply,
}

/// What a resource request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch(PatchType),
    Delete,
    DeleteCollection,
}

/// How a request body is encoded (the `Content-Type` of a write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    #[default]
    Json,
    /// `application/vnd.kubernetes.protobuf` (kubectl's typed commands).
    Protobuf,
}

/// A subresource of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: reads the object, writes only its `status`.
    Status,
    /// `/scale`: an `autoscaling/v1 Scale` of `spec.replicas`.
    Scale,
    /// `pods/<name>/binding`: a `Binding` (POST) puts the pod on a node (schedulers).
    Binding,
    /// `pods/<name>/eviction`: a `policy/v1 Eviction` (POST) deletes the pod if its
    /// disruption budget allows (`kubectl drain`).
    Eviction,
    /// `serviceaccounts/<name>/token`: a `TokenRequest` (POST) answered with a signed token
    /// (`kubectl create token`).
    Token,
    /// `certificatesigningrequests/<name>/approval`: writes only the Approved/Denied
    /// conditions (`kubectl certificate approve|deny`).
    Approval,
    /// `pods/<name>/log`: the container's log, from the pod's node (`kubectl logs`).
    Log,
    /// `pods/<name>/exec`, `attach`, `portforward`: streams to the pod's node, upgraded
    /// connections passed through to its kubelet (`kubectl exec`, `attach`, `port-forward`).
    Exec,
    Attach,
    PortForward,
}

impl Subresource {
    /// Its path segment (`status`, `scale`, `binding`, `eviction`).
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Token => "token",
            Subresource::Approval => "approval",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
        }
    }

    /// The subresource a path segment names.
    pub fn from_name(name: &str) -> Option<Subresource> {
        [
            Subresource::Status,
            Subresource::Scale,
            Subresource::Binding,
            Subresource::Eviction,
            Subresource::Token,
            Subresource::Approval,
            Subresource::Log,
            Subresource::Exec,
            Subresource::Attach,
            Subresource::PortForward,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// The (apiVersion, kind) of its bodies when they are not the resource's own kind.
    pub fn body_kind(self) -> Option<(&'static str, &'static str)> {
        match self {
            Subresource::Status
            | Subresource::Approval
            | Subresource::Log
            | Subresource::Exec
            | Subresource::Attach
            | Subresource::PortForward => None,
            Subresource::Scale => Some(("autoscaling/v1", "Scale")),
            Subresource::Binding => Some(("v1", "Binding")),
            Subresource::Eviction => Some(("policy/v1", "Eviction")),
            Subresource::Token => Some(("authentication.k8s.io/v1", "TokenRequest")),
        }
    }

    /// The subresources that are created (POST), not read and written.
    pub fn is_action(self) -> bool {
        matches!(
            self,
            Subresource::Binding | Subresource::Eviction | Subresource::Token
        ) || self.is_stream()
    }

    /// The subresources that are streams to a kubelet: opened with a GET (WebSocket) or a
    /// POST (SPDY), authorized as `create` as Kubernetes does.
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            Subresource::Exec | Subresource::Attach | Subresource::PortForward
        )
    }
}

/// A request on a resource: which objects, which verb, which options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub verb: Verb,
    pub resource: &'static Resource,
    /// The namespace in the path (namespaced resources only; `None` = all namespaces).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub options: Options,
    /// The client accepts a `meta.k8s.io/v1 Table` (kubectl get).
    pub as_table: bool,
    pub subresource: Option<Subresource>,
    /// The encoding of the body (creates, updates and deletes carry one).
    pub body: BodyFormat,
    /// Who asks, once authenticated (set by the server; `None` for in-process callers such as
    /// the controllers, which are trusted). Writes of RBAC objects check it for escalation.
    pub user: Option<std::sync::Arc<crate::auth::User>>,
}

/// Discovery documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `/api`; `aggregated` when the client accepts `APIGroupDiscoveryList`.
    Api { aggregated: bool },
    /// `/apis`.
    Apis { aggregated: bool },
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`.
    GroupVersion { group: String, version: String },
}

/// Every request the server understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    Version,
    /// `/cacerts`: the cluster CA certificate, public like K3s', so a joining node can check
    /// it against the hash its join token pins before it trusts the server.
    CaCerts,
    Discovery(Discovery),
    /// `/openapi/v3` (`None`) or one group-version document (`Some("api/v1")`).
    OpenApiV3(Option<String>),
    /// `/openapi/v2`; `false` when the client accepts only the protobuf form.
    OpenApiV2 {
        json: bool,
    },
    /// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`): the
    /// caller's own identity. The body carries nothing the answer needs and is not read.
    SelfSubjectReview,
    /// `POST` of an `authorization.k8s.io/v1` access review (`kubectl auth can-i`); local
    /// reviews name their namespace.
    AccessReview {
        review: crate::authz::Review,
        namespace: Option<String>,
    },
    /// `GET /metrics` (Prometheus).
    Metrics,
    Resource(Action),
}

/// Parse a request (its body is ignored) against the resources of `catalog`.
pub fn parse<B>(req: &Request<B>, catalog: &Catalog) -> Result<ApiRequest, ApiError> {
    parse_parts(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
        catalog,
    )
}

/// [`parse`] from the request's parts.
pub fn parse_parts(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    catalog: &Catalog,
) -> Result<ApiRequest, ApiError> {
    let not_found = || ApiError::PathNotFound {
        path: path.to_owned(),
    };
    let not_allowed = || ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
    };
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let readable = method == Method::GET || method == Method::HEAD;
    let accept = header(headers, ACCEPT.as_str());
    // Aggregated discovery v2 (GA in 1.30); v2beta1-only clients get the classic documents.
    let aggregated = accept
        .split(',')
        .any(|t| t.contains("as=APIGroupDiscoveryList") && t.contains("v=v2;"));
    if segments == ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"] {
        return if method == Method::POST {
            Ok(ApiRequest::SelfSubjectReview)
        } else {
            Err(not_allowed())
        };
    }
    let review = match segments.as_slice() {
        ["apis", "authorization.k8s.io", "v1", plural] => crate::authz::Review::from_plural(plural)
            .filter(|r| *r != crate::authz::Review::LocalSubjectAccess)
            .map(|r| (r, None)),
        ["apis", "authorization.k8s.io", "v1", "namespaces", ns, "localsubjectaccessreviews"] => {
            Some((
                crate::authz::Review::LocalSubjectAccess,
                Some((*ns).to_owned()),
            ))
        }
        _ => None,
    };
    if let Some((review, namespace)) = review {
        return if method == Method::POST {
            Ok(ApiRequest::AccessReview { review, namespace })
        } else {
            Err(not_allowed())
        };
    }
    let meta = match segments.as_slice() {
        ["healthz" | "livez" | "readyz"] => Some(ApiRequest::Health),
        ["version"] => Some(ApiRequest::Version),
        ["cacerts"] => Some(ApiRequest::CaCerts),
        ["metrics"] => Some(ApiRequest::Metrics),
        ["api"] => Some(ApiRequest::Discovery(Discovery::Api { aggregated })),
        ["apis"] => Some(ApiRequest::Discovery(Discovery::Apis { aggregated })),
        ["api", version] => Some(ApiRequest::Discovery(Discovery::GroupVersion {
            group: String::new(),
            version: (*version).to_owned(),
        })),
        ["apis", group] => Some(ApiRequest::Discovery(Discovery::Group((*group).to_owned()))),
        ["openapi", "v2"] => Some(ApiRequest::OpenApiV2 {
            json: accept.is_empty()
                || accept.split(',').any(|t| {
                    let t = t.trim();
                    t.starts_with("application/json") || t.starts_with("*/*")
                }),
        }),
        ["openapi", "v3"] => Some(ApiRequest::OpenApiV3(None)),
        ["openapi", "v3", rest @ ..] => Some(ApiRequest::OpenApiV3(Some(rest.join("/")))),
        ["apis", group, version] => Some(ApiRequest::Discovery(Discovery::GroupVersion {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        })),
        _ => None,
    };
    if let Some(meta) = meta {
        return if readable {
            Ok(meta)
        } else {
            Err(not_allowed())
        };
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    // [namespaces, ns, plural, name?] or [plural, name?]; `namespaces/<name>` is the namespace.
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        [plural] => (None, *plural, None, None),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return Err(not_found()),
    };
    let resource = catalog.find(group, version, plural).ok_or_else(not_found)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(not_found());
    }
    let subresource = match sub {
        None => None,
        Some(s) if !resource.subresources.contains(&s) => return Err(not_found()),
        Some(s) => Some(Subresource::from_name(s).ok_or_else(not_found)?),
    };
    let options = Options::parse(query)?;
    if let Some(field) = options.field_selector.unsupported(resource.field_labels) {
        let mut supported: Vec<&str> = crate::selector::COMMON_FIELDS.to_vec();
        supported.extend(resource.field_labels);
        return Err(ApiError::BadRequest(format!(
            "field label not supported: {field} (supported for {}: {})",
            resource.plural,
            supported.join(", ")
        )));
    }
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "POST", true) if subresource.is_some_and(Subresource::is_stream) => Verb::Create,
        ("GET" | "HEAD", true) => Verb::Get,
        ("GET" | "HEAD", false) if options.watch => Verb::Watch,
        ("GET" | "HEAD", false) => Verb::List,
        ("POST", false) => Verb::Create,
        ("POST", true) if subresource.is_some_and(Subresource::is_action) => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch(patch_type(headers)?),
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return Err(not_allowed()),
    };
    if subresource == Some(Subresource::Log) && verb != Verb::Get {
        return Err(not_allowed());
    }
    let body = match verb {
        _ if subresource.is_some_and(Subresource::is_stream) => BodyFormat::Json,
        Verb::Create | Verb::Update | Verb::Delete | Verb::DeleteCollection => {
            body_format(headers)?
        }
        _ => BodyFormat::Json,
    };
    let verb_name = verb_name(verb);
    if !resource.verbs.contains(&verb_name) {
        return Err(not_allowed());
    }
    match subresource {
        Some(s) if s.is_action() && verb != Verb::Create => return Err(not_allowed()),
        Some(s) if !s.is_action() && !matches!(verb, Verb::Get | Verb::Update | Verb::Patch(_)) => {
            return Err(not_allowed())
        }
        _ => {}
    }
    // Writes to a namespaced resource need a namespace in the path.
    let needs_namespace = !matches!(verb, Verb::List | Verb::Watch);
    if resource.namespaced && namespace.is_none() && needs_namespace {
        return Err(not_allowed());
    }
    Ok(ApiRequest::Resource(Action {
        verb,
        resource,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        options,
        as_table: accept.contains("as=Table") && subresource != Some(Subresource::Scale),
        subresource,
        body,
        user: None,
    }))
}

/// The RBAC verb name of a [`Verb`].
pub fn verb_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch(_) => "patch",
        Verb::Delete => "delete",
        Verb::DeleteCollection => "deletecollection",
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The media type without parameters, lowercased.
fn media_type(headers: &HeaderMap) -> String {
    let ct = header(headers, CONTENT_TYPE.as_str());
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    match media_type(headers).as_str() {
        "application/json" | "" => Ok(BodyFormat::Json),
        crate::protobuf::MEDIA_TYPE => Ok(BodyFormat::Protobuf),
        other => Err(ApiError::UnsupportedMediaType {
            accepted: format!(
                "application/json, {} (got {other}; cairn does not accept YAML or CBOR bodies)",
                crate::protobuf::MEDIA_TYPE
            ),
        }),
    }
}

fn patch_type(headers: &HeaderMap) -> Result<PatchType, ApiError> {
    match media_type(headers).as_str() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
        "application/apply-patch+yaml" => Ok(PatchType::Apply),
        _ => Err(ApiError::UnsupportedMediaType {
            accepted: "application/json-patch+json, application/merge-patch+json, \
                       application/strategic-merge-patch+json, application/apply-patch+yaml"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests;
