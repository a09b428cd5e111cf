//! Query parameters: percent-decoding and the typed [`Options`] every action carries.

use crate::error::ApiError;
use crate::selector::{FieldSelector, LabelSelector};

/// Options from the query string. Unknown parameters are ignored, as kube-apiserver does for
/// parameters a verb does not use (`pretty`, `timeout`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    /// 0: no limit.
    pub limit: usize,
    /// The opaque `continue` token of the previous page.
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    /// `resourceVersionMatch` of a list: how `resource_version` is read.
    pub resource_version_match: Option<ResourceVersionMatch>,
    pub watch: bool,
    pub allow_watch_bookmarks: bool,
    /// `sendInitialEvents=true`: a watch that starts with the current objects and a bookmark
    /// marking their end.
    pub send_initial_events: bool,
    pub timeout_seconds: Option<u64>,
    /// `dryRun=All`: validate and answer, but do not write.
    pub dry_run: bool,
    /// `fieldValidation`: what to do with fields the schema does not know.
    pub field_validation: FieldValidation,
    /// `fieldManager`: who is writing (server-side apply requires it).
    pub field_manager: Option<String>,
    /// `force=true`: a server-side apply takes over fields other managers own.
    pub force: bool,
    /// `gracePeriodSeconds` of a deletion (a `DeleteOptions` body says it too, and wins).
    pub grace_period_seconds: Option<i64>,
}

/// `resourceVersionMatch` of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceVersionMatch {
    /// The objects as they were at exactly `resourceVersion` (410 once compacted).
    Exact,
    /// Objects at least as new as `resourceVersion` (the current ones here).
    NotOlderThan,
}

/// How unknown fields in a written object are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in `Warning` headers (kube-apiserver's default).
    #[default]
    Warn,
    /// Refuse the request (kubectl's default).
    Strict,
}

impl Options {
    /// Parse a raw query string (`a=b&c=d`, percent-encoded).
    pub fn parse(query: Option<&str>) -> Result<Options, ApiError> {
        let mut opts = Options::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key)?;
            let value = decode(value)?;
            let bad = |what: &str| {
                ApiError::BadRequest(format!(
                    "invalid value {value:?} for query parameter {key}: {what}"
                ))
            };
            match key.as_str() {
                "labelSelector" => {
                    opts.label_selector = LabelSelector::parse(&value)
                        .map_err(|e| ApiError::BadRequest(format!("labelSelector: {e}")))?;
                }
                "fieldSelector" => {
                    opts.field_selector = FieldSelector::parse(&value)
                        .map_err(|e| ApiError::BadRequest(format!("fieldSelector: {e}")))?;
                }
                "limit" => opts.limit = value.parse().map_err(|_| bad("expected a number"))?,
                "continue" if !value.is_empty() => opts.continue_token = Some(value),
                "resourceVersion" if !value.is_empty() => opts.resource_version = Some(value),
                "resourceVersionMatch" => {
                    opts.resource_version_match = match value.as_str() {
                        "Exact" => Some(ResourceVersionMatch::Exact),
                        "NotOlderThan" => Some(ResourceVersionMatch::NotOlderThan),
                        "" => None,
                        _ => return Err(bad("expected Exact or NotOlderThan")),
                    }
                }
                "watch" => {
                    opts.watch = parse_bool(&value).ok_or_else(|| bad("expected true or false"))?
                }
                "allowWatchBookmarks" => {
                    opts.allow_watch_bookmarks =
                        parse_bool(&value).ok_or_else(|| bad("expected true or false"))?;
                }
                "sendInitialEvents" => {
                    opts.send_initial_events =
                        parse_bool(&value).ok_or_else(|| bad("expected true or false"))?;
                }
                "timeoutSeconds" => {
                    opts.timeout_seconds = Some(
                        value
                            .parse()
                            .map_err(|_| bad("expected a number of seconds"))?,
                    );
                }
                "fieldValidation" => {
                    opts.field_validation = match value.as_str() {
                        "Ignore" => FieldValidation::Ignore,
                        "Warn" | "" => FieldValidation::Warn,
                        "Strict" => FieldValidation::Strict,
                        _ => return Err(bad("expected Ignore, Warn or Strict")),
                    }
                }
                "fieldManager" => {
                    if value.len() > 128 {
                        return Err(bad("at most 128 characters"));
                    }
                    opts.field_manager = Some(value);
                }
                "gracePeriodSeconds" if !value.is_empty() => {
                    opts.grace_period_seconds = Some(
                        value
                            .parse()
                            .map_err(|_| bad("expected a number of seconds"))?,
                    );
                }
                "force" => {
                    opts.force = parse_bool(&value).ok_or_else(|| bad("expected true or false"))?;
                }
                "dryRun" => match value.as_str() {
                    "All" => opts.dry_run = true,
                    "" => {}
                    _ => return Err(bad("the only supported dryRun value is All")),
                },
                _ => {}
            }
        }
        Ok(opts)
    }

    /// The `resourceVersion` as a revision; `None` for absent or "0" (meaning "any").
    pub fn revision(&self) -> Result<Option<u64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("0") => Ok(None),
            Some(rv) => rv.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid resourceVersion {rv:?}: cairn resource versions are decimal numbers"
                ))
            }),
        }
    }
}

/// Kubernetes accepts `1`, `true`, `0`, `false` and an empty value (`?watch` means true).
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "" | "1" | "true" | "True" => Some(true),
        "0" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Percent-decode one query component (`+` is a space, as in forms).
pub fn decode(text: &str) -> Result<String, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!("invalid percent-encoding in query {text:?}"))
                    })?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::BadRequest(format!("query {text:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::Requirement;

    #[test]
    fn list_options() {
        let o = Options::parse(Some(
            "labelSelector=app%20in%20(a%2Cb),x!%3Dy&fieldSelector=metadata.name%3Dfoo&limit=5&continue=abc&resourceVersion=7",
        ))
        .unwrap();
        assert_eq!(
            o.label_selector.0,
            vec![
                Requirement::In("app".into(), vec!["a".into(), "b".into()]),
                Requirement::NotEquals("x".into(), "y".into())
            ]
        );
        assert_eq!(o.field_selector.exact_name(), Some("foo"));
        assert_eq!((o.limit, o.continue_token.as_deref()), (5, Some("abc")));
        assert_eq!(o.revision().unwrap(), Some(7));
    }

    #[test]
    fn watch_flags() {
        let o = Options::parse(Some(
            "watch=1&allowWatchBookmarks=true&timeoutSeconds=30&resourceVersion=0",
        ))
        .unwrap();
        assert!(o.watch && o.allow_watch_bookmarks);
        assert_eq!(o.timeout_seconds, Some(30));
        assert_eq!(o.revision().unwrap(), None);
        assert!(Options::parse(Some("watch")).unwrap().watch);
        assert!(!Options::parse(Some("watch=false")).unwrap().watch);
        assert!(Options::parse(Some("dryRun=All")).unwrap().dry_run);
        assert!(Options::parse(Some("pretty=true&fieldManager=kubectl")).is_ok());
    }

    #[test]
    fn bad_values_are_400() {
        for q in [
            "limit=x",
            "watch=maybe",
            "labelSelector=a%20in%20b",
            "dryRun=Some",
            "fieldSelector=spec..a%3D1",
            "fieldValidation=Loose",
            "x=%zz",
        ] {
            let err = Options::parse(Some(q)).unwrap_err();
            assert_eq!(err.code_reason().0, 400, "{q}");
        }
        let o = Options::parse(Some("resourceVersion=abc")).unwrap();
        assert_eq!(o.revision().unwrap_err().code_reason().0, 400);
    }
}
