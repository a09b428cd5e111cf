//! `POST serviceaccounts/<name>/token`: a `TokenRequest` answered with a signed token for the
//! service account (`kubectl create token`), optionally bound to a Pod, Secret or Node so the
//! token dies with that object. Rules as in kube-apiserver: audiences default to the API's,
//! the lifetime defaults to an hour and may not be under ten minutes, a bound object must
//! exist (with the uid given, if one is).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::write::parse_body_as;
use super::{decode_object, subject, target, Api, Reply};
use crate::error::{ApiError, Subject};
use crate::request::{Action, Subresource};
use crate::resources;
use crate::serviceaccount::{self as sa, Claims, KubernetesClaim, Ref};

impl Api {
    pub(super) fn request_token(&self, action: &Action, body: &[u8]) -> Result<Reply, ApiError> {
        let (api_version, kind) = Subresource::Token.body_kind().expect("a body kind");
        let mut request = parse_body_as(body, kind, api_version)?;
        let (ns, name) = target(action);
        let ns = ns.unwrap_or_default();
        let signer = self.token_signer().ok_or_else(|| ApiError::Other {
            code: 503,
            reason: "ServiceUnavailable",
            message: "this server issues no service-account tokens (it has no signing key)".into(),
        })?;
        let account = self
            .store
            .get(&action.resource.key(Some(ns), name))?
            .ok_or_else(|| ApiError::NotFound(subject(action.resource, name)))?;
        let account = decode_object(&account)?;
        let spec = &request["spec"];
        let audiences: Vec<String> = match spec["audiences"].as_array() {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|a| a.as_str().filter(|a| !a.is_empty()).map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    invalid(
                        name,
                        "spec.audiences: Invalid value: audiences are non-empty strings",
                    )
                })?,
            _ => vec![sa::ISSUER.to_owned()],
        };
        let seconds = match &spec["expirationSeconds"] {
            Value::Null => sa::DEFAULT_EXPIRATION.as_secs(),
            v => v.as_u64().ok_or_else(|| {
                invalid(
                    name,
                    &format!("spec.expirationSeconds: Invalid value: {v}: a number of seconds"),
                )
            })?,
        };
        if seconds < sa::MIN_EXPIRATION.as_secs() {
            return Err(invalid(
                name,
                &format!("spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
            ));
        }
        if seconds >= 1 << 32 {
            return Err(invalid(
                name,
                &format!("spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"),
            ));
        }
        let mut claim = KubernetesClaim {
            namespace: ns.to_owned(),
            serviceaccount: Ref {
                name: name.to_owned(),
                uid: crate::meta::meta_str(&account, "uid").to_owned(),
            },
            pod: None,
            secret: None,
            node: None,
        };
        let bound = &spec["boundObjectRef"];
        if bound.is_object() {
            let reference = self.bound_object(ns, name, bound)?;
            match bound["kind"].as_str() {
                Some("Pod") => claim.pod = Some(reference),
                Some("Secret") => claim.secret = Some(reference),
                _ => claim.node = Some(reference),
            }
        }
        let now = SystemTime::now();
        let issued = sa::unix_seconds(now);
        let expires = issued + seconds;
        let claims = Claims {
            iss: sa::ISSUER.to_owned(),
            sub: sa::user_name(ns, name),
            aud: audiences.clone(),
            exp: expires,
            iat: issued,
            nbf: issued,
            jti: crate::meta::new_uid(),
            kubernetes: claim,
        };
        let token = signer.sign(&claims).map_err(ApiError::Internal)?;
        let expiration = jiff::Timestamp::try_from(now + Duration::from_secs(seconds)).map_or_else(
            |_| String::new(),
            |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
        request["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": null});
        request["spec"]["audiences"] = json!(audiences);
        request["spec"]["expirationSeconds"] = json!(seconds);
        request["status"] = json!({"token": token, "expirationTimestamp": expiration});
        Ok(Reply::with_code(201, request))
    }

    /// The Pod, Secret (in the account's namespace) or Node a token is bound to, checked.
    fn bound_object(&self, ns: &str, account: &str, bound: &Value) -> Result<Ref, ApiError> {
        let kind = bound["kind"].as_str().unwrap_or("");
        let (plural, namespace) = match kind {
            "Pod" => ("pods", Some(ns)),
            "Secret" => ("secrets", Some(ns)),
            "Node" => ("nodes", None),
            other => {
                return Err(invalid(
                    account,
                    &format!("spec.boundObjectRef.kind: Unsupported value: {other:?}: supported values: \"Pod\", \"Secret\", \"Node\""),
                ))
            }
        };
        let name = bound["name"].as_str().unwrap_or("");
        if name.is_empty() {
            return Err(invalid(account, "spec.boundObjectRef.name: Required value"));
        }
        let resource = resources::find("", "v1", plural).expect("core resource");
        let stored = self
            .store
            .get(&resource.key(namespace, name))?
            .ok_or_else(|| ApiError::NotFound(subject(resource, name)))?;
        let object = decode_object(&stored)?;
        let uid = crate::meta::meta_str(&object, "uid");
        if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
            if want != uid {
                return Err(ApiError::Conflict {
                    subject: subject(resource, name),
                    message: format!(
                        "the UID in the bound object reference ({want}) does not match the UID in record ({uid}); the object might have been deleted and then recreated"
                    ),
                });
            }
        }
        Ok(Ref {
            name: name.to_owned(),
            uid: uid.to_owned(),
        })
    }
}

fn invalid(account: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        subject: Subject {
            group: "authentication.k8s.io".into(),
            kind: "TokenRequest".into(),
            name: account.to_owned(),
        },
        message: message.to_owned(),
    }
}
