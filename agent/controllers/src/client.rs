//! The controllers' client: the API server's own handlers, called in-process.
//!
//! Controllers read and write through [`cairn_apiserver::Api`] exactly as a remote client's
//! requests are handled (validation, defaulting, optimistic concurrency, finalizers), but
//! without HTTP, TLS or JSON re-encoding: a controller costs what its reconcile costs.

use cairn_apiserver::request::{Action, BodyFormat, Options, Subresource, Verb};
use cairn_apiserver::{Api, ApiError};
use serde_json::Value;

/// A resource by group, version and plural (`Res::core("pods")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Res {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
}

impl Res {
    pub const fn core(plural: &'static str) -> Res {
        Res {
            group: "",
            version: "v1",
            plural,
        }
    }

    pub const fn named(group: &'static str, plural: &'static str) -> Res {
        Res {
            group,
            version: "v1",
            plural,
        }
    }
}

pub const PODS: Res = Res::core("pods");
pub const NODES: Res = Res::core("nodes");
pub const NAMESPACES: Res = Res::core("namespaces");
pub const SERVICE_ACCOUNTS: Res = Res::core("serviceaccounts");
pub const EVENTS: Res = Res::core("events");
pub const REPLICA_SETS: Res = Res::named("apps", "replicasets");
pub const DEPLOYMENTS: Res = Res::named("apps", "deployments");

/// In-process access to the API.
#[derive(Clone)]
pub struct Client {
    api: Api,
}

impl Client {
    pub fn new(api: Api) -> Client {
        Client { api }
    }

    /// The API behind this client (its store is what controllers watch).
    pub fn api(&self) -> &Api {
        &self.api
    }

    fn action(
        &self,
        verb: Verb,
        res: Res,
        namespace: &str,
        name: Option<&str>,
        subresource: Option<Subresource>,
    ) -> Result<Action, ApiError> {
        let resource = self
            .api
            .catalog()
            .find(res.group, res.version, res.plural)
            .ok_or_else(|| ApiError::PathNotFound {
                path: format!("{}/{}/{}", res.group, res.version, res.plural),
            })?;
        Ok(Action {
            verb,
            resource,
            namespace: (resource.namespaced && !namespace.is_empty()).then(|| namespace.to_owned()),
            name: name.map(str::to_owned),
            options: Options::default(),
            as_table: false,
            subresource,
            body: BodyFormat::Json,
            user: None,
        })
    }

    /// One object; `None` when it does not exist.
    pub fn get(&self, res: Res, namespace: &str, name: &str) -> Result<Option<Value>, ApiError> {
        let action = self.action(Verb::Get, res, namespace, Some(name), None)?;
        match self.api.handle(&action, &[]) {
            Ok(reply) => Ok(Some(reply.body)),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object of `res` in `namespace` ("" for all namespaces, or cluster-scoped).
    pub fn list(&self, res: Res, namespace: &str) -> Result<Vec<Value>, ApiError> {
        let action = self.action(Verb::List, res, namespace, None, None)?;
        let mut reply = self.api.handle(&action, &[])?;
        match reply.body["items"].take() {
            Value::Array(items) => Ok(items),
            _ => Ok(Vec::new()),
        }
    }

    pub fn create(&self, res: Res, namespace: &str, object: &Value) -> Result<Value, ApiError> {
        let action = self.action(Verb::Create, res, namespace, None, None)?;
        Ok(self.api.handle(&action, &to_bytes(object))?.body)
    }

    /// PUT of `object` (its `metadata.resourceVersion` is the precondition).
    pub fn update(&self, res: Res, namespace: &str, object: &Value) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let action = self.action(Verb::Update, res, namespace, Some(name), None)?;
        Ok(self.api.handle(&action, &to_bytes(object))?.body)
    }

    /// PUT of `object`'s status.
    pub fn update_status(
        &self,
        res: Res,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let action = self.action(
            Verb::Update,
            res,
            namespace,
            Some(name),
            Some(Subresource::Status),
        )?;
        Ok(self.api.handle(&action, &to_bytes(object))?.body)
    }

    /// PUT of `object` through another subresource (`certificatesigningrequests/approval`).
    pub fn update_subresource(
        &self,
        res: Res,
        namespace: &str,
        object: &Value,
        subresource: Subresource,
    ) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let action = self.action(Verb::Update, res, namespace, Some(name), Some(subresource))?;
        Ok(self.api.handle(&action, &to_bytes(object))?.body)
    }

    /// POST to an action subresource (`pods/<name>/binding`).
    pub fn create_subresource(
        &self,
        res: Res,
        namespace: &str,
        name: &str,
        subresource: Subresource,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let action = self.action(Verb::Create, res, namespace, Some(name), Some(subresource))?;
        Ok(self.api.handle(&action, &to_bytes(body))?.body)
    }

    /// Server-side apply of `object` as `manager`, taking over conflicting fields (`force`).
    pub fn apply(
        &self,
        res: Res,
        namespace: &str,
        object: &Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let mut action = self.action(
            Verb::Patch(cairn_apiserver::request::PatchType::Apply),
            res,
            namespace,
            Some(name),
            None,
        )?;
        action.options.field_manager = Some(manager.to_owned());
        action.options.force = true;
        Ok(self.api.handle(&action, &to_bytes(object))?.body)
    }

    /// The served resource of `apiVersion` and `kind`, and whether it is namespaced. Another
    /// served version of the group does if that one is not (objects are stored once, whatever
    /// version wrote them).
    pub fn resource_of(&self, api_version: &str, kind: &str) -> Option<(Res, bool)> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let catalog = self.api.catalog();
        let found = catalog
            .iter()
            .filter(|r| r.group == group && r.kind == kind)
            .max_by_key(|r| r.version == version)
            .map(|r| {
                (
                    Res {
                        group: r.group,
                        version: r.version,
                        plural: r.plural,
                    },
                    r.namespaced,
                )
            });
        found
    }

    /// DELETE with `options` (a `DeleteOptions`: preconditions, propagation); a missing object
    /// is not an error.
    pub fn delete(
        &self,
        res: Res,
        namespace: &str,
        name: &str,
        options: Option<&Value>,
    ) -> Result<(), ApiError> {
        let action = self.action(Verb::Delete, res, namespace, Some(name), None)?;
        let body = options.map(to_bytes).unwrap_or_default();
        match self.api.handle(&action, &body) {
            Ok(_) | Err(ApiError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// DELETE of exactly `object` (a `uid` precondition: a newer object of the same name is
    /// left alone), optionally with a propagation policy; a missing object is not an error.
    pub fn delete_object(
        &self,
        res: Res,
        object: &Value,
        propagation: Option<&str>,
    ) -> Result<(), ApiError> {
        let meta = &object["metadata"];
        let mut options = serde_json::json!({"preconditions": {"uid": meta["uid"]}});
        if let Some(policy) = propagation {
            options["propagationPolicy"] = Value::from(policy);
        }
        self.delete(
            res,
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or(""),
            Some(&options),
        )
    }

    /// The store prefix holding `res`'s objects (what a controller watches).
    pub fn prefix(&self, res: Res) -> Option<String> {
        self.api
            .catalog()
            .find(res.group, res.version, res.plural)
            .map(|r| r.prefix(None))
    }
}

fn to_bytes(object: &Value) -> Vec<u8> {
    serde_json::to_vec(object).expect("JSON values serialise")
}
