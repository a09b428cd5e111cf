//! CertificateSigningRequests: the request must be a signed PKCS #10 request, the signer and
//! usages named, and approval (the `Approved`/`Denied` conditions) only ever added, through
//! the `approval` subresource.

use base64::Engine as _;
use serde_json::{json, Value};

/// Usages a request may ask for (`certificates.k8s.io/v1` KeyUsage).
const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];
/// Condition types that are an approver's decision.
pub const APPROVAL_TYPES: [&str; 2] = ["Approved", "Denied"];

/// Checks a request object (on create and on every write).
pub fn validate(object: &mut Value) -> Result<(), String> {
    let spec = &object["spec"];
    let request = spec["request"]
        .as_str()
        .ok_or("spec.request: Required value")?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(request)
        .map_err(|e| format!("spec.request: Invalid value: not base64: {e}"))?;
    crate::csr::parse_pem(&pem).map_err(|e| format!("spec.request: Invalid value: {e}"))?;
    let signer = spec["signerName"].as_str().unwrap_or("");
    match signer.split_once('/') {
        _ if signer.is_empty() => return Err("spec.signerName: Required value".into()),
        Some((domain, path)) if !domain.is_empty() && !path.is_empty() && domain.contains('.') => {}
        _ => {
            return Err(format!(
                "spec.signerName: Invalid value: {signer:?}: must be a fully qualified domain \
                 and path of the form 'example.com/signer-name'"
            ))
        }
    }
    let usages = spec["usages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if usages.is_empty() {
        return Err("spec.usages: Required value".into());
    }
    for usage in usages {
        let usage = usage.as_str().unwrap_or_default();
        if !USAGES.contains(&usage) {
            return Err(format!(
                "spec.usages: Unsupported value: {usage:?}: supported values: {}",
                USAGES
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if let Some(seconds) = spec.get("expirationSeconds").filter(|v| !v.is_null()) {
        if seconds.as_i64().is_none_or(|s| s < 600) {
            return Err(format!(
                "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration \
                 less than 600 seconds (10 minutes)"
            ));
        }
    }
    let conditions = object["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut seen = Vec::new();
    for c in &conditions {
        let kind = c["type"].as_str().unwrap_or_default();
        if kind.is_empty() {
            return Err("status.conditions.type: Required value".into());
        }
        if seen.contains(&kind) {
            return Err(format!(
                "status.conditions: Duplicate value: {kind:?}: a condition type may appear once"
            ));
        }
        seen.push(kind);
        if ["Approved", "Denied", "Failed"].contains(&kind) && c["status"] != "True" {
            return Err(format!(
                "status.conditions.status: Unsupported value: {}: {kind} conditions must be \"True\"",
                c["status"]
            ));
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        return Err(
            "status.conditions: Invalid value: Approved and Denied conditions are \
                    mutually exclusive"
                .into(),
        );
    }
    // Conditions without times get the write's time (kubectl sends none).
    let now = crate::meta::now();
    if let Some(list) = object["status"]["conditions"].as_array_mut() {
        for c in list {
            for field in ["lastUpdateTime", "lastTransitionTime"] {
                if c.get(field).is_none_or(Value::is_null) {
                    c[field] = json!(now);
                }
            }
        }
    }
    Ok(())
}

/// Restores, in `new`, what the write may not change: through `/status` (`from_status`)
/// the approval conditions, through `/approval` every other condition. Approval and denial,
/// once given, stay: they are never removed or replaced.
pub fn keep_conditions(old: &Value, new: &mut Value, from_status: bool) {
    let list = |v: &Value| {
        v["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let is_approval = |c: &Value| APPROVAL_TYPES.contains(&c["type"].as_str().unwrap_or(""));
    let mut merged: Vec<Value> = list(new)
        .into_iter()
        .filter(|c| is_approval(c) != from_status)
        .collect();
    for c in list(old) {
        let same = merged.iter().position(|m| m["type"] == c["type"]);
        match same {
            Some(i) if is_approval(&c) => merged[i] = c,
            None if is_approval(&c) || !from_status => merged.push(c),
            _ => {}
        }
    }
    if merged.is_empty() {
        if let Some(status) = new["status"].as_object_mut() {
            status.remove("conditions");
        }
    } else {
        new["status"]["conditions"] = json!(merged);
    }
}

/// Fills `spec.username`, `uid`, `groups` and `extra` from the user creating the request
/// (what the client sent there is ignored, as kube-apiserver does).
pub fn set_requestor(object: &mut Value, user: &crate::auth::User) {
    let spec = &mut object["spec"];
    spec["username"] = json!(user.name);
    spec["groups"] = json!(user.groups);
    if let Some(map) = spec.as_object_mut() {
        map.remove("uid");
        map.remove("extra");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    fn csr(conditions: Value) -> Value {
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "c"},
            "spec": {
                "request": request(),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
            },
            "status": {"conditions": conditions},
        })
    }

    #[test]
    fn requests_are_checked() {
        let mut ok = csr(json!([]));
        validate(&mut ok).unwrap();
        let mut bad = ok.clone();
        bad["spec"]["request"] = json!("aGVsbG8=");
        assert!(validate(&mut bad)
            .unwrap_err()
            .starts_with("spec.request: Invalid value"));
        let mut bad = ok.clone();
        bad["spec"]["signerName"] = json!("kubelet");
        assert!(validate(&mut bad)
            .unwrap_err()
            .contains("example.com/signer-name"));
        let mut bad = ok.clone();
        bad["spec"]["usages"] = json!(["flying"]);
        assert!(validate(&mut bad)
            .unwrap_err()
            .contains("Unsupported value: \"flying\""));
        let mut bad = ok.clone();
        bad["spec"]["expirationSeconds"] = json!(60);
        assert!(validate(&mut bad).unwrap_err().contains("600 seconds"));
        let mut both = csr(json!([
            {"type": "Approved", "status": "True"},
            {"type": "Denied", "status": "True"},
        ]));
        assert!(validate(&mut both)
            .unwrap_err()
            .contains("mutually exclusive"));
        let mut approved = csr(json!([{"type": "Approved", "status": "True"}]));
        validate(&mut approved).unwrap();
        assert!(approved["status"]["conditions"][0]["lastUpdateTime"].is_string());
    }

    #[test]
    fn approval_only_through_its_subresource_and_never_taken_back() {
        let old = csr(json!([{"type": "Approved", "status": "True", "reason": "Auto"}]));
        // /status cannot remove or add approval, but may add Failed.
        let mut via_status = csr(json!([
            {"type": "Denied", "status": "True"},
            {"type": "Failed", "status": "True"},
        ]));
        keep_conditions(&old, &mut via_status, true);
        let types: Vec<&str> = via_status["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Failed", "Approved"]);
        // /approval cannot replace a decision: Denied is added next to Approved, and the
        // validation then refuses the pair.
        let mut deny = csr(json!([{"type": "Denied", "status": "True"}]));
        keep_conditions(&old, &mut deny, false);
        assert!(validate(&mut deny)
            .unwrap_err()
            .contains("mutually exclusive"));
        // A first approval goes through.
        let pending = csr(json!([]));
        let mut approve = csr(json!([{"type": "Approved", "status": "True"}]));
        keep_conditions(&pending, &mut approve, false);
        assert_eq!(approve["status"]["conditions"][0]["type"], "Approved");
    }
}
