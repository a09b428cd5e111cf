//! Handlers: execute a parsed [`Action`] against the store and answer with a JSON value.
//!
//! Handlers are synchronous (the store is); the HTTP layer runs them on tokio's blocking pool.
//! Watches are the exception and live in [`watch`]. Objects are stored as JSON without
//! `metadata.resourceVersion`: it is the key's store revision and is filled in on every read.

mod apply;
mod namespaces;
mod patch;
mod pods;
mod read;
pub mod scale;
pub mod services;
pub mod strategic;
mod tokens;
pub mod watch;
mod write;

pub use write::MAX_BODY;

use std::sync::{Arc, PoisonError, RwLock};

use cairn_store::{KeyValue, Store};
use serde_json::Value;

use crate::authz::Authorizer;
use crate::error::{ApiError, Subject};
use crate::request::{Action, Subresource, Verb};
use crate::resources::{Catalog, Resource};
use crate::serviceaccount::TokenSigner;

/// A handler's answer: HTTP code, JSON body and warnings for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
    /// Sent as `Warning: 299 - "<text>"` headers (kubectl prints them).
    pub warnings: Vec<String>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply::with_code(200, body)
    }

    fn with_code(code: u16, body: Value) -> Reply {
        Reply {
            code,
            body,
            warnings: Vec::new(),
        }
    }
}

/// The API server's state: the store and what it serves.
#[derive(Clone)]
pub struct Api {
    pub store: Arc<dyn Store>,
    /// The served resources; replaced whenever a CustomResourceDefinition is written.
    catalog: Arc<RwLock<Arc<Catalog>>>,
    /// Signs service-account tokens (`serviceaccounts/<name>/token`); `None`: none issued.
    tokens: Option<Arc<TokenSigner>>,
    /// Decides who may do what; its RBAC snapshot is dropped when RBAC objects are written.
    authz: Arc<Authorizer>,
}

impl Api {
    /// An API over `store`, serving the built-in resources and the custom resources of the
    /// definitions stored there.
    pub fn new(store: Arc<dyn Store>) -> Api {
        let api = Api {
            authz: Arc::new(Authorizer::new(store.clone())),
            store,
            catalog: Arc::new(RwLock::new(Catalog::builtin())),
            tokens: None,
        };
        if let Err(e) = api.reload_catalog() {
            eprintln!("cairn: apiserver: reading CustomResourceDefinitions: {e} (retried on the next definition written)");
        }
        api
    }

    /// This API issuing and accepting service-account tokens signed by `signer`.
    pub fn with_token_signer(mut self, signer: TokenSigner) -> Api {
        self.tokens = Some(Arc::new(signer));
        self
    }

    /// The service-account token signer, if tokens are issued.
    pub fn token_signer(&self) -> Option<Arc<TokenSigner>> {
        self.tokens.clone()
    }

    /// The authorizer of requests to this API.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authz
    }

    /// What is served now (a snapshot: a request keeps the one it started with).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the definitions from the store (after one was written).
    fn reload_catalog(&self) -> Result<(), ApiError> {
        let catalog = Arc::new(crate::crd::catalog(&*self.store)?);
        *self.catalog.write().unwrap_or_else(PoisonError::into_inner) = catalog;
        Ok(())
    }

    /// Admission of a write by an authenticated user, on the object as it will be stored: no
    /// RBAC escalation, and nodes create only their own Node, Lease and mirror pods.
    fn admit(&self, action: &Action, obj: &Value, creating: bool) -> Result<(), ApiError> {
        let Some(user) = &action.user else {
            return Ok(());
        };
        self.authz.check_escalation(user, action.resource, obj)?;
        if let Some(node) = crate::authz::node::node_name(user).filter(|_| creating) {
            crate::authz::node::check_create(node, action.resource, obj)?;
        }
        Ok(())
    }

    /// Execute a non-watch action with its request body.
    pub fn handle(&self, action: &Action, body: &[u8]) -> Result<Reply, ApiError> {
        let mut reply = match action.verb {
            Verb::Get => self.get(action)?,
            Verb::List => self.list(action)?,
            Verb::Watch => {
                return Err(ApiError::BadRequest(
                    "watch requests are served by the streaming handler".into(),
                ))
            }
            Verb::Create => match action.subresource {
                Some(Subresource::Binding) => self.bind(action, body)?,
                Some(Subresource::Eviction) => self.evict(action, body)?,
                Some(Subresource::Token) => self.request_token(action, body)?,
                _ => self.create(action, body)?,
            },
            Verb::Update => self.update(action, body)?,
            Verb::Patch(crate::request::PatchType::Apply) => {
                self.server_side_apply(action, body)?
            }
            Verb::Patch(kind) => self.patch(action, kind, body)?,
            Verb::Delete => self.delete(action, body)?,
            Verb::DeleteCollection => self.delete_collection(action, body)?,
        };
        let writes = !matches!(action.verb, Verb::Get | Verb::List);
        if writes && crate::crd::is_definitions(action.resource) && !action.options.dry_run {
            self.reload_catalog()?;
        }
        if writes && Authorizer::affects(action.resource) && !action.options.dry_run {
            self.authz.invalidate();
        }
        if action.resource.custom.is_some() && !writes {
            crate::crd::set_api_version(action.resource, &mut reply.body);
        }
        if action.as_table && matches!(action.verb, Verb::Get | Verb::List) {
            return Ok(Reply {
                body: crate::table::to_table(action.resource, &reply.body),
                ..reply
            });
        }
        Ok(reply)
    }
}

/// The subject of errors about `name`.
fn subject(resource: &Resource, name: &str) -> Subject {
    Subject {
        group: resource.group.to_owned(),
        kind: resource.plural.to_owned(),
        name: name.to_owned(),
    }
}

/// The stored bytes as the object a client sees (with `resourceVersion`).
pub fn decode_object(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::Internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

fn set_resource_version(obj: &mut Value, rev: u64) {
    if obj.is_object() {
        crate::meta::metadata(obj).insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// The bytes to store: the object without `resourceVersion`.
fn encode_object(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).expect("JSON values serialise")
}

/// The namespace and name of an action on one object.
fn target(action: &Action) -> (Option<&str>, &str) {
    let ns = if action.resource.namespaced {
        action.namespace.as_deref()
    } else {
        None
    };
    (ns, action.name.as_deref().unwrap_or(""))
}

#[cfg(test)]
mod tests;
