//! What every cluster has from its first start: the system namespaces and the `kubernetes`
//! Service.

use serde_json::json;

use crate::error::ApiError;
use crate::handlers::Api;
use crate::request::{Action, Options, Verb};
use crate::resources;

/// Namespaces kube-apiserver creates itself.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that are missing; returns the names created.
pub fn ensure_system_namespaces(api: &Api) -> Result<Vec<&'static str>, ApiError> {
    let namespaces = resources::find("", "v1", "namespaces").expect("namespaces are served");
    let mut created = Vec::new();
    for name in SYSTEM_NAMESPACES {
        let mut get = action(Verb::Get, namespaces, None);
        get.name = Some(name.to_owned());
        match api.handle(&get, b"") {
            Ok(_) => continue,
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let create = action(Verb::Create, namespaces, None);
        match api.handle(&create, body.to_string().as_bytes()) {
            Ok(_) => created.push(name),
            Err(ApiError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Creates the `default/kubernetes` Service (10.43.0.1, port 443 to the API server's
/// `port`) if missing; returns whether it was created.
pub fn ensure_kubernetes_service(api: &Api, port: u16) -> Result<bool, ApiError> {
    let services = resources::find("", "v1", "services").expect("services are served");
    if api
        .store
        .get(&services.key(Some("default"), "kubernetes"))?
        .is_some()
    {
        return Ok(false);
    }
    let create = action(Verb::Create, services, Some("default"));
    let body = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "clusterIP": crate::handlers::services::KUBERNETES_IP.to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        },
    });
    match api.handle(&create, body.to_string().as_bytes()) {
        Ok(_) => Ok(true),
        Err(ApiError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A JSON request on `resource` (in `namespace`), without a name.
pub(crate) fn action(
    verb: Verb,
    resource: &'static resources::Resource,
    namespace: Option<&str>,
) -> Action {
    Action {
        verb,
        resource,
        namespace: namespace.map(str::to_owned),
        name: None,
        options: Options::default(),
        as_table: false,
        subresource: None,
        body: Default::default(),
        user: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn creates_missing_namespaces_once() {
        let api = Api::new(Arc::new(cairn_store::MemoryStore::new()));
        assert_eq!(ensure_system_namespaces(&api).unwrap(), SYSTEM_NAMESPACES);
        assert!(ensure_system_namespaces(&api).unwrap().is_empty());
        let key = "/registry/core/namespaces/kube-system";
        assert!(api.store.get(key).unwrap().is_some());
    }
}
