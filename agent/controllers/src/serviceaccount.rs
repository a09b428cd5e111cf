//! Every namespace gets a `default` ServiceAccount (pods run as it unless they name another),
//! re-created if deleted, as kube-controller-manager's service-account controller does.

use serde_json::json;

use crate::client::{Client, NAMESPACES, SERVICE_ACCOUNTS};
use crate::runtime::{Controller, Key, Outcome, Watched};

pub struct DefaultServiceAccounts;

impl Controller for DefaultServiceAccounts {
    fn name(&self) -> &'static str {
        "serviceaccount-controller"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: NAMESPACES,
                keys: |ns| vec![Key::new("", ns["metadata"]["name"].as_str().unwrap_or(""))],
            },
            Watched {
                resource: SERVICE_ACCOUNTS,
                keys: |sa| {
                    let meta = &sa["metadata"];
                    if meta["name"] == "default" {
                        vec![Key::new("", meta["namespace"].as_str().unwrap_or(""))]
                    } else {
                        Vec::new()
                    }
                },
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(ns) = client
            .get(NAMESPACES, "", &key.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Outcome::Done);
        };
        if ns["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Outcome::Done);
        }
        if client
            .get(SERVICE_ACCOUNTS, &key.name, "default")
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok(Outcome::Done);
        }
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        match client.create(SERVICE_ACCOUNTS, &key.name, &sa) {
            Ok(_) | Err(cairn_apiserver::ApiError::AlreadyExists(_)) => Ok(Outcome::Done),
            // Deleted meanwhile, or terminating: nothing to do.
            Err(
                cairn_apiserver::ApiError::NamespaceNotFound(_)
                | cairn_apiserver::ApiError::Forbidden(_),
            ) => Ok(Outcome::Done),
            Err(e) => Err(format!("creating the default service account: {e}")),
        }
    }
}
