//! Label and field selectors: parsed once by the request parser, matched by the handlers.

use std::collections::BTreeMap;

use serde_json::Value;

/// A parse error: the message names the offending selector part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A label selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    /// Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut out = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            out.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(out))
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, `matchExpressions` with `In`, `NotIn`,
    /// `Exists`, `DoesNotExist`); `{}` selects everything.
    pub fn from_json(selector: &Value) -> Result<LabelSelector, SelectorError> {
        let mut out = Vec::new();
        if let Some(labels) = selector["matchLabels"].as_object() {
            for (k, v) in labels {
                let v = v
                    .as_str()
                    .ok_or_else(|| SelectorError(format!("matchLabels.{k}")))?;
                out.push(Requirement::Equals(k.clone(), v.to_owned()));
            }
        }
        for expr in selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = expr["key"].as_str().unwrap_or_default().to_owned();
            let values: Vec<String> = expr["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            out.push(match expr["operator"].as_str().unwrap_or_default() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(SelectorError(format!(
                        "matchExpressions: unknown operator {other:?} for {key:?}"
                    )))
                }
            });
        }
        Ok(LabelSelector(out))
    }

    /// True if `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|req| match req {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// [`LabelSelector::matches`] for a JSON object's `metadata.labels`.
    pub fn matches_object(&self, object: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels = object["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

/// Split at commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    let bad = || SelectorError(part.to_owned());
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(key.trim(), part)?));
    }
    for (op, is_in) in [(" notin ", false), (" in ", true)] {
        if let Some((key, rest)) = part.split_once(op) {
            let key = check_key(key.trim(), part)?;
            let list = rest.trim();
            let inner = list
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
            if values.iter().any(|v| !valid_value(v)) {
                return Err(bad());
            }
            return Ok(if is_in {
                Requirement::In(key, values)
            } else {
                Requirement::NotIn(key, values)
            });
        }
    }
    for (op, equals) in [("!=", false), ("==", true), ("=", true)] {
        if let Some((key, value)) = part.split_once(op) {
            let key = check_key(key.trim(), part)?;
            let value = value.trim();
            if !valid_value(value) {
                return Err(bad());
            }
            return Ok(if equals {
                Requirement::Equals(key, value.to_owned())
            } else {
                Requirement::NotEquals(key, value.to_owned())
            });
        }
    }
    Ok(Requirement::Exists(check_key(part, part)?))
}

fn check_key(key: &str, part: &str) -> Result<String, SelectorError> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.len() <= 253
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
    if name_ok && prefix_ok && !(key.contains('/') && prefix.is_empty()) {
        Ok(key.to_owned())
    } else {
        Err(SelectorError(format!("{part}: invalid label key {key:?}")))
    }
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A field selector: `field=value`, `field==value`, `field!=value` terms, all of which must
/// hold. Fields are dotted paths into the object (`involvedObject.name`); which ones a
/// resource accepts is checked against its table row ([`FieldSelector::unsupported`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// Fields every resource can be selected by.
pub const COMMON_FIELDS: [&str; 2] = ["metadata.name", "metadata.namespace"];

impl FieldSelector {
    /// Parse `metadata.name=x,metadata.namespace!=y`.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equals, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!("{part}: expected field=value")));
            };
            let field = field.trim();
            let valid = !field.is_empty()
                && field
                    .split('.')
                    .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()));
            if !valid {
                return Err(SelectorError(format!("{part}: invalid field {field:?}")));
            }
            out.push((field.to_owned(), equals, value.trim().to_owned()));
        }
        Ok(FieldSelector(out))
    }

    /// The first field that is neither common nor in `extra`, for the error message.
    pub fn unsupported(&self, extra: &[&str]) -> Option<&str> {
        self.0
            .iter()
            .map(|(f, _, _)| f.as_str())
            .find(|f| !COMMON_FIELDS.contains(f) && !extra.contains(f))
    }

    /// True if `object` satisfies every term. A missing field is the empty string.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equals, value)| {
            // Events select by `source`, which is `source.component`.
            let path = if path == "source" {
                "source.component"
            } else {
                path
            };
            let field = path.split('.').fold(object, |v, seg| &v[seg]);
            let text = match field {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (text == *value) == *equals
        })
    }

    /// The name an `metadata.name=x` term pins, which turns a list into a single get.
    pub fn exact_name(&self) -> Option<&str> {
        self.0.iter().find_map(|(path, equals, value)| {
            (path == "metadata.name" && *equals).then_some(value.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("a=1,b==2,c!=3,d in (x, y),e notin (z),f,!g").unwrap();
        assert_eq!(
            s.0,
            vec![
                Requirement::Equals("a".into(), "1".into()),
                Requirement::Equals("b".into(), "2".into()),
                Requirement::NotEquals("c".into(), "3".into()),
                Requirement::In("d".into(), vec!["x".into(), "y".into()]),
                Requirement::NotIn("e".into(), vec!["z".into()]),
                Requirement::Exists("f".into()),
                Requirement::DoesNotExist("g".into()),
            ]
        );
        assert_eq!(LabelSelector::parse("").unwrap(), LabelSelector::default());
        assert!(LabelSelector::parse("app.kubernetes.io/name=x").is_ok());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["a=b c", "a in x", "=v", "a/=b", "a in (b", "a=(", "/x"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("app=web"));
        assert!(!m("app!=web"));
        assert!(m("app in (db,web)"));
        assert!(!m("app notin (db,web)"));
        assert!(m("missing notin (x)"));
        assert!(!m("missing in (x)"));
        assert!(m("tier,!missing"));
        assert!(!m("!tier"));
        assert!(m("x!=y"));
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        let f = |s: &str| FieldSelector::parse(s).unwrap().matches_object(&obj);
        assert!(f("metadata.name=a"));
        assert!(f("metadata.name==a,metadata.namespace=ns"));
        assert!(!f("metadata.namespace!=ns"));
        assert_eq!(
            FieldSelector::parse("metadata.name=a")
                .unwrap()
                .exact_name(),
            Some("a")
        );
        assert!(FieldSelector::parse("spec..x=1").is_err());
        assert!(FieldSelector::parse("a b=1").is_err());
        let event = json!({"involvedObject": {"name": "d", "kind": "ConfigMap"}, "source": {"component": "k"}, "count": 2});
        let e = |s: &str| FieldSelector::parse(s).unwrap().matches_object(&event);
        assert!(e(
            "involvedObject.name=d,involvedObject.kind=ConfigMap,source=k,count=2"
        ));
        assert!(e("involvedObject.uid=,type!=Warning"));
        assert!(!e("involvedObject.name=e"));
        let sel = FieldSelector::parse("metadata.name=a,spec.x=1,reason=r").unwrap();
        assert_eq!(sel.unsupported(&["reason"]), Some("spec.x"));
        assert_eq!(sel.unsupported(&["reason", "spec.x"]), None);
    }
}
