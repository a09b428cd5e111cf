//! CertificateSigningRequests: the approver and the signer of node client certificates, the
//! two halves of kubelet TLS bootstrapping as kube-controller-manager runs them.
//!
//! **Approver.** A pending request for `kubernetes.io/kube-apiserver-client-kubelet` whose
//! subject is `CN=system:node:<name>, O=system:nodes`, asking only for client usages, is
//! approved when its requestor may `create certificatesigningrequests/nodeclient` (a join
//! token: bound by default to `system:bootstrappers`) or, for the node renewing its own
//! certificate, `certificatesigningrequests/selfnodeclient`. Cairn adds one rule: node
//! names are unique. A Node of that name that is not the requester's (its
//! `cairn.dev/node-key-sha256` annotation names another key) keeps the request pending with a
//! `NameInUse` condition saying how to re-admit the machine: delete the Node, or approve the
//! request by hand (`kubectl certificate approve`).
//!
//! **Signer.** Approved requests of `kubernetes.io/kube-apiserver-client-kubelet` and
//! `kubernetes.io/kube-apiserver-client` get a certificate from the cluster CA in
//! `status.certificate`, valid for the requested `expirationSeconds` capped at a year. A
//! request the signer cannot honour gets a `Failed` condition with the reason.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use cairn_apiserver::authz::{Attributes, Target};
use cairn_apiserver::csr::Request;
use serde_json::{json, Value};

use crate::client::{Client, Res, NODES};
use crate::runtime::{Controller, Key, Outcome, Watched};

pub const CSRS: Res = Res::named("certificates.k8s.io", "certificatesigningrequests");
/// The signer of node client certificates.
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other client certificates (approved by an administrator).
pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The annotation a node puts on its Node: the SHA-256 of its client key's public key.
pub const NODE_KEY_ANNOTATION: &str = "cairn.dev/node-key-sha256";
/// Longest certificate the signer issues.
pub const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Usages a node client certificate may ask for.
const KUBELET_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

/// Issues certificates from the cluster CA (the process that holds the CA key implements it).
pub trait Signer: Send + Sync {
    /// A PEM certificate for `request`'s subject and public key, for client authentication,
    /// valid for `lifetime`.
    fn sign_client(&self, request: &Request, lifetime: Duration) -> Result<String, String>;
}

/// The approver.
pub struct Approver;

/// The signer, with the CA behind it.
pub struct Signing(pub Arc<dyn Signer>);

fn conditions(csr: &Value) -> Vec<&str> {
    csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect()
}

/// The verified request in `spec.request`.
fn request(csr: &Value) -> Result<Request, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(csr["spec"]["request"].as_str().unwrap_or(""))
        .map_err(|e| format!("spec.request is not base64: {e}"))?;
    cairn_apiserver::csr::parse_pem(&pem)
}

/// The node name a kubelet client request is for, when it is well-formed.
fn kubelet_node(csr: &Value, req: &Request) -> Result<String, String> {
    let name = req
        .common_name
        .as_deref()
        .and_then(|cn| cn.strip_prefix("system:node:"))
        .filter(|n| !n.is_empty())
        .ok_or("the subject's common name is not system:node:<name>")?;
    if req.organizations != ["system:nodes"] {
        return Err("the subject's organization is not exactly system:nodes".into());
    }
    let usages = csr["spec"]["usages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !usages.iter().any(|u| u == "client auth")
        || usages
            .iter()
            .any(|u| !KUBELET_USAGES.contains(&u.as_str().unwrap_or("")))
    {
        return Err(format!(
            "usages must include \"client auth\" and be among {KUBELET_USAGES:?}"
        ));
    }
    Ok(name.to_owned())
}

/// The requestor of `csr` as the authorizer sees them.
fn requestor(csr: &Value) -> cairn_apiserver::auth::User {
    let spec = &csr["spec"];
    let groups = spec["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    cairn_apiserver::auth::User::new(spec["username"].as_str().unwrap_or("").to_owned(), groups)
}

fn set_condition(csr: &mut Value, kind: &str, reason: &str, message: &str) {
    let now = cairn_apiserver::meta::now();
    let condition = json!({
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    });
    let list = csr["status"]["conditions"].as_array_mut();
    match list {
        Some(list) => {
            list.retain(|c| c["type"] != kind);
            list.push(condition);
        }
        None => csr["status"]["conditions"] = json!([condition]),
    }
}

fn write(client: &Client, csr: &Value, approval: bool) -> Result<Outcome, String> {
    let written = if approval {
        client.update_subresource(
            CSRS,
            "",
            csr,
            cairn_apiserver::request::Subresource::Approval,
        )
    } else {
        client.update_status(CSRS, "", csr)
    };
    match written {
        Ok(_) => Ok(Outcome::Done),
        // Changed or gone meanwhile: the watch brings the new state.
        Err(
            cairn_apiserver::ApiError::Conflict { .. } | cairn_apiserver::ApiError::NotFound(_),
        ) => Ok(Outcome::Done),
        Err(e) => Err(format!(
            "certificatesigningrequest {}: {e}",
            csr["metadata"]["name"].as_str().unwrap_or("")
        )),
    }
}

fn csr_keys(obj: &Value) -> Vec<Key> {
    vec![Key::of(obj)]
}

/// A Node written (its key annotation) may unblock requests for its name.
fn node_keys(_: &Value) -> Vec<Key> {
    vec![Key::new("", PENDING_FOR_NAME)]
}
/// The key that stands for "look at every pending request again".
const PENDING_FOR_NAME: &str = "*";

impl Controller for Approver {
    fn name(&self) -> &'static str {
        "csrapproving"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                resource: CSRS,
                keys: csr_keys,
            },
            Watched {
                resource: NODES,
                keys: node_keys,
            },
        ]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        if key.name == PENDING_FOR_NAME {
            let all = client.list(CSRS, "").map_err(|e| e.to_string())?;
            for csr in all.iter().filter(|c| conditions(c).contains(&"NameInUse")) {
                approve_one(client, csr.clone())?;
            }
            return Ok(Outcome::Done);
        }
        match client.get(CSRS, "", &key.name).map_err(|e| e.to_string())? {
            Some(csr) => approve_one(client, csr),
            None => Ok(Outcome::Done),
        }
    }
}

fn approve_one(client: &Client, mut csr: Value) -> Result<Outcome, String> {
    let decided = conditions(&csr)
        .iter()
        .any(|c| ["Approved", "Denied", "Failed"].contains(c));
    if decided || csr["spec"]["signerName"] != KUBELET_CLIENT {
        return Ok(Outcome::Done);
    }
    // Malformed requests are the signer's to fail; the approver just leaves them alone.
    let Ok(req) = request(&csr) else {
        return Ok(Outcome::Done);
    };
    let Ok(node) = kubelet_node(&csr, &req) else {
        return Ok(Outcome::Done);
    };
    let user = requestor(&csr);
    let renewal = req.common_name.as_deref() == Some(user.name.as_str());
    let subresource = if renewal {
        "selfnodeclient"
    } else {
        "nodeclient"
    };
    let mut attrs = Attributes::resource(
        "create",
        "certificates.k8s.io",
        "certificatesigningrequests",
        None,
        None,
    );
    if let Target::Resource { subresource: s, .. } = &mut attrs.target {
        *s = Some(subresource.to_owned());
    }
    let allowed = client
        .api()
        .authorizer()
        .decide(&user, &attrs)
        .map_err(|e| e.to_string())?
        .allowed;
    if !allowed {
        return Ok(Outcome::Done);
    }
    if !renewal {
        let holder = client.get(NODES, "", &node).map_err(|e| e.to_string())?;
        if let Some(holder) = holder {
            let key = holder["metadata"]["annotations"][NODE_KEY_ANNOTATION]
                .as_str()
                .unwrap_or("");
            if key != req.key_id() {
                if conditions(&csr).contains(&"NameInUse") {
                    return Ok(Outcome::Done);
                }
                let name = csr["metadata"]["name"].as_str().unwrap_or("").to_owned();
                let message = format!(
                    "node name {node:?} is registered to another machine (its key sha256 {}, \
                     this request's {}); to give the name to this machine, delete the Node \
                     (kubectl delete node {node}) or approve this request (kubectl \
                     certificate approve {name}); otherwise give this machine another name",
                    if key.is_empty() {
                        "unknown"
                    } else {
                        short(key)
                    },
                    short(&req.key_id()),
                );
                set_condition(&mut csr, "NameInUse", "NodeNameInUse", &message);
                return write(client, &csr, false);
            }
        }
    }
    set_condition(
        &mut csr,
        "Approved",
        "AutoApproved",
        if renewal {
            "Auto approving self kubelet client certificate after SubjectAccessReview."
        } else {
            "Auto approving kubelet client certificate after SubjectAccessReview."
        },
    );
    write(client, &csr, true)
}

fn short(key: &str) -> &str {
    &key[..key.len().min(16)]
}

impl Controller for Signing {
    fn name(&self) -> &'static str {
        "csrsigning"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![Watched {
            resource: CSRS,
            keys: csr_keys,
        }]
    }

    fn reconcile(&self, client: &Client, key: &Key) -> Result<Outcome, String> {
        let Some(mut csr) = client.get(CSRS, "", &key.name).map_err(|e| e.to_string())? else {
            return Ok(Outcome::Done);
        };
        let signer = csr["spec"]["signerName"].as_str().unwrap_or("");
        let have = conditions(&csr);
        let issued = csr["status"]["certificate"]
            .as_str()
            .is_some_and(|c| !c.is_empty());
        if ![KUBELET_CLIENT, CLIENT].contains(&signer)
            || !have.contains(&"Approved")
            || have.contains(&"Failed")
            || issued
        {
            return Ok(Outcome::Done);
        }
        let checked = request(&csr).and_then(|req| {
            if signer == KUBELET_CLIENT {
                kubelet_node(&csr, &req)?;
            } else {
                let usages = csr["spec"]["usages"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !usages.iter().any(|u| u == "client auth") {
                    return Err("usages must include \"client auth\"".into());
                }
            }
            Ok(req)
        });
        let lifetime = csr["spec"]["expirationSeconds"]
            .as_u64()
            .map_or(MAX_LIFETIME, |s| Duration::from_secs(s).min(MAX_LIFETIME));
        match checked.and_then(|req| self.0.sign_client(&req, lifetime)) {
            Ok(pem) => {
                csr["status"]["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(pem));
            }
            Err(reason) => set_condition(&mut csr, "Failed", "SignerValidationFailure", &reason),
        }
        write(client, &csr, false)
    }
}
