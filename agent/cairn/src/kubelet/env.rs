//! A container's environment: the image's, then the pod's `envFrom` and `env` (literal values,
//! ConfigMap and Secret keys, the downward API), with `$(VAR)` references expanded as the
//! kubelet does.

use std::collections::BTreeMap;

use serde_json::Value;

/// Reads ConfigMaps and Secrets (`data` already base64-decoded for Secrets).
pub trait Source {
    fn config_map(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, String>;
    fn secret(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, String>;
}

/// What the downward API can tell a container about its pod.
pub struct PodFacts<'a> {
    pub pod: &'a Value,
    pub node_name: &'a str,
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
}

/// The environment as `KEY=VALUE`, in order (later settings win, as in Kubernetes).
pub fn build(
    image_env: &[String],
    container: &Value,
    facts: &PodFacts,
    source: &mut dyn Source,
) -> Result<Vec<String>, String> {
    let mut vars: Vec<(String, String)> = image_env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let set = |vars: &mut Vec<(String, String)>, key: String, value: String| match vars
        .iter_mut()
        .find(|(k, _)| *k == key)
    {
        Some(slot) => slot.1 = value,
        None => vars.push((key, value)),
    };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        let (kind, r) = if from["configMapRef"].is_object() {
            ("ConfigMap", &from["configMapRef"])
        } else {
            ("Secret", &from["secretRef"])
        };
        let name = r["name"].as_str().unwrap_or_default();
        let optional = r["optional"].as_bool().unwrap_or(false);
        let data = if kind == "ConfigMap" {
            source.config_map(name)?
        } else {
            source.secret(name)?
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(&mut vars, format!("{prefix}{k}"), v);
                }
            }
            None if optional => {}
            None => return Err(format!("{kind} \"{name}\" not found")),
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else {
            continue;
        };
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            expand(v, &vars)
        } else if let Some(from) = e.get("valueFrom") {
            match value_from(from, facts, source)? {
                Some(v) => v,
                None => continue,
            }
        } else {
            String::new()
        };
        set(&mut vars, name.to_owned(), value);
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn value_from(
    from: &Value,
    facts: &PodFacts,
    source: &mut dyn Source,
) -> Result<Option<String>, String> {
    let key_of = |kind: &str, r: &Value, data: Option<BTreeMap<String, String>>| {
        let name = r["name"].as_str().unwrap_or_default();
        let key = r["key"].as_str().unwrap_or_default();
        let optional = r["optional"].as_bool().unwrap_or(false);
        match data.as_ref().map(|d| d.get(key)) {
            Some(Some(v)) => Ok(Some(v.clone())),
            _ if optional => Ok(None),
            None => Err(format!("{kind} \"{name}\" not found")),
            Some(None) => Err(format!("couldn't find key {key} in {kind} {name}")),
        }
    };
    if let Some(r) = from.get("configMapKeyRef") {
        let data = source.config_map(r["name"].as_str().unwrap_or_default())?;
        return key_of("ConfigMap", r, data);
    }
    if let Some(r) = from.get("secretKeyRef") {
        let data = source.secret(r["name"].as_str().unwrap_or_default())?;
        return key_of("Secret", r, data);
    }
    if let Some(r) = from.get("fieldRef") {
        let path = r["fieldPath"].as_str().unwrap_or_default();
        return field(facts, path).map(Some);
    }
    if let Some(r) = from.get("resourceFieldRef") {
        return Ok(Some(resource_field(facts.pod, r)));
    }
    Ok(None)
}

/// The downward API's `fieldRef` paths.
pub fn field(facts: &PodFacts, path: &str) -> Result<String, String> {
    let meta = &facts.pod["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(match path {
        "metadata.name" => s(&meta["name"]),
        "metadata.namespace" => s(&meta["namespace"]),
        "metadata.uid" => s(&meta["uid"]),
        "spec.nodeName" => facts.node_name.to_owned(),
        "spec.serviceAccountName" => s(&facts.pod["spec"]["serviceAccountName"]),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_owned(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_owned(),
        _ => {
            let map_key = |prefix: &str| {
                path.strip_prefix(prefix)
                    .and_then(|k| k.strip_prefix("['"))
                    .and_then(|k| k.strip_suffix("']"))
                    .map(str::to_owned)
            };
            if let Some(k) = map_key("metadata.labels") {
                s(&meta["labels"][k])
            } else if let Some(k) = map_key("metadata.annotations") {
                s(&meta["annotations"][k])
            } else {
                return Err(format!("unsupported fieldRef {path:?}"));
            }
        }
    })
}

/// `resourceFieldRef`: a container's limit or request, in the divisor's units (default 1).
fn resource_field(pod: &Value, r: &Value) -> String {
    let resource = r["resource"].as_str().unwrap_or_default();
    let container = r["containerName"].as_str();
    let spec = pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| container.is_none() || c["name"].as_str() == container)
        })
        .cloned()
        .unwrap_or(Value::Null);
    let (section, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let value = cairn_controllers::scheduler::quantity(&spec["resources"][section][name]);
    let divisor = match cairn_controllers::scheduler::quantity(&r["divisor"]) {
        d if d > 0.0 => d,
        _ => 1.0,
    };
    ((value / divisor).ceil() as u64).to_string()
}

/// `$(NAME)` → the value of NAME defined earlier; `$$` → `$`; unknown references stay as
/// they are (the kubelet's rules).
pub fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed;
    impl Source for Fixed {
        fn config_map(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok((name == "cfg").then(|| BTreeMap::from([("mode".to_owned(), "fast".to_owned())])))
        }
        fn secret(&mut self, name: &str) -> Result<Option<BTreeMap<String, String>>, String> {
            Ok((name == "sec").then(|| BTreeMap::from([("pw".to_owned(), "s3cret".to_owned())])))
        }
    }

    #[test]
    fn env_merges_image_pod_sources_and_the_downward_api() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}});
        let container = json!({
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "env": [
                {"name": "PATH", "value": "/usr/bin:$(PATH)"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "LIT", "value": "$$(POD) $(NOPE) $(POD)"},
                {"name": "GONE", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k", "optional": true}}}
            ]
        });
        let facts = PodFacts {
            pod: &pod,
            node_name: "n1",
            host_ip: "10.0.0.1",
            pod_ip: "10.42.0.5",
        };
        let env = build(
            &["PATH=/bin".into(), "HOME=/root".into()],
            &container,
            &facts,
            &mut Fixed,
        )
        .unwrap();
        assert_eq!(
            env,
            [
                "PATH=/usr/bin:/bin",
                "HOME=/root",
                "CFG_mode=fast",
                "PW=s3cret",
                "POD=p",
                "APP=web",
                "MEM=64",
                "LIT=$(POD) $(NOPE) p",
            ]
        );
        let missing = json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]});
        assert_eq!(
            build(&[], &missing, &facts, &mut Fixed).unwrap_err(),
            "ConfigMap \"absent\" not found"
        );
        let no_key = json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]});
        assert_eq!(
            build(&[], &no_key, &facts, &mut Fixed).unwrap_err(),
            "couldn't find key k in ConfigMap cfg"
        );
    }
}
