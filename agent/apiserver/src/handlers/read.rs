//! get and list (with selectors, `limit` and `continue` at a fixed store revision).

use serde_json::{json, Value};

use super::{decode_object, subject, target, Api, Reply};
use crate::error::ApiError;
use crate::request::{Action, Subresource};

impl Api {
    pub(super) fn get(&self, action: &Action) -> Result<Reply, ApiError> {
        let (ns, name) = target(action);
        let key = action.resource.key(ns, name);
        let kv = self
            .store
            .get(&key)
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(subject(action.resource, name)))?;
        let obj = decode_object(&kv)?;
        if action.subresource == Some(Subresource::Scale) {
            return Ok(Reply::ok(super::scale::to_scale(action.resource, &obj)));
        }
        Ok(Reply::ok(obj))
    }

    pub(super) fn list(&self, action: &Action) -> Result<Reply, ApiError> {
        let page = self.list_items(action)?;
        let mut metadata = json!({"resourceVersion": page.revision.to_string()});
        if let Some(token) = page.next {
            metadata["continue"] = Value::String(token);
        }
        if let Some(n) = page.remaining {
            metadata["remainingItemCount"] = json!(n);
        }
        Ok(Reply::ok(json!({
            "kind": action.resource.list_kind(),
            "apiVersion": action.resource.api_version(),
            "metadata": metadata,
            "items": page.items,
        })))
    }

    /// One page of a list: the matching objects, the snapshot revision, the next page's
    /// token and, as kube-apiserver gives it, how many objects the later pages hold (only
    /// for lists without selectors, where the store can count them without reading them).
    pub(crate) fn list_items(&self, action: &Action) -> Result<ListPage, ApiError> {
        let opts = &action.options;
        let prefix = action.resource.prefix(action.namespace.as_deref());
        let (mut at_rev, mut start_after) = match &opts.continue_token {
            Some(token) => {
                let (rev, key) = decode_continue(token)?;
                if !key.starts_with(&prefix) {
                    return Err(ApiError::BadRequest(
                        "the continue token belongs to a different list: start the list again"
                            .into(),
                    ));
                }
                if opts.resource_version.is_some() {
                    return Err(ApiError::BadRequest(
                        "specifying resource version is not allowed when using continue".into(),
                    ));
                }
                (Some(rev), Some(key))
            }
            None => (self.list_revision(opts)?, None),
        };
        let mut items = Vec::new();
        loop {
            // Fetch more than asked when filtering, so selective lists take few round trips.
            let fetch = if opts.limit == 0 {
                0
            } else {
                (opts.limit - items.len()).max(64)
            };
            let page = self
                .store
                .list(&prefix, start_after.as_deref(), fetch, at_rev)
                .map_err(|e| match e {
                    cairn_store::StoreError::Compacted { .. } => ApiError::Expired {
                        requested: at_rev.unwrap_or(0),
                        compacted: self.store.compacted_revision().unwrap_or(0),
                    },
                    other => other.into(),
                })?;
            at_rev = Some(page.revision);
            let mut scanned = page.items.len();
            for kv in &page.items {
                let obj = decode_object(kv)?;
                scanned -= 1;
                start_after = Some(kv.key.clone());
                if opts.label_selector.matches_object(&obj)
                    && opts.field_selector.matches_object(&obj)
                {
                    items.push(obj);
                    if opts.limit != 0 && items.len() == opts.limit {
                        break;
                    }
                }
            }
            let more = page.more || scanned > 0;
            let revision = page.revision;
            if !more {
                return Ok(ListPage {
                    items,
                    revision,
                    next: None,
                    remaining: None,
                });
            }
            if opts.limit != 0 && items.len() == opts.limit {
                let last = start_after.as_deref().unwrap_or("");
                let remaining =
                    if opts.label_selector.0.is_empty() && opts.field_selector.0.is_empty() {
                        Some(self.store.count(&prefix, Some(last), Some(revision))?)
                    } else {
                        None
                    };
                return Ok(ListPage {
                    items,
                    revision,
                    next: Some(encode_continue(revision, last)),
                    remaining,
                });
            }
        }
    }
}

/// What [`Api::list_items`] found.
pub(crate) struct ListPage {
    pub items: Vec<Value>,
    /// The store revision the list was read at (its `resourceVersion`).
    pub revision: u64,
    /// The `continue` token for the next page.
    pub next: Option<String>,
    /// `remainingItemCount`.
    pub remaining: Option<u64>,
}

impl Api {
    /// The revision a list is read at from its `resourceVersion` and `resourceVersionMatch`:
    /// `Exact` reads that revision (410 once compacted); otherwise the current state, which
    /// is never older than any revision a client has seen; a revision not reached yet is
    /// refused as kube-apiserver does (504, retried by clients).
    fn list_revision(&self, opts: &crate::request::Options) -> Result<Option<u64>, ApiError> {
        use crate::request::ResourceVersionMatch;
        let rv = opts.revision()?;
        match (opts.resource_version_match, rv) {
            (Some(_), _) if opts.resource_version.is_none() => Err(ApiError::BadRequest(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            )),
            (Some(ResourceVersionMatch::Exact), None) => Err(ApiError::BadRequest(
                "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into(),
            )),
            (Some(ResourceVersionMatch::Exact), Some(rv)) => {
                self.require_reached(rv)?;
                Ok(Some(rv))
            }
            (_, Some(rv)) => {
                self.require_reached(rv)?;
                Ok(None)
            }
            (_, None) => Ok(None),
        }
    }

    fn require_reached(&self, rv: u64) -> Result<(), ApiError> {
        let current = self.store.current_revision()?;
        if rv > current {
            return Err(ApiError::Other {
                code: 504,
                reason: "Timeout",
                message: format!("Too large resource version: {rv}, current: {current}"),
            });
        }
        Ok(())
    }
}

/// `continue` tokens: `<revision>:<last key>`, hex-encoded so they are opaque and URL-safe.
pub fn encode_continue(revision: u64, key: &str) -> String {
    let raw = format!("{revision}:{key}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "invalid continue token {token:?}: pass the metadata.continue value of the previous page unchanged"
        ))
    };
    if token.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let raw = String::from_utf8(bytes.ok_or_else(bad)?).map_err(|_| bad())?;
    let (rev, key) = raw.split_once(':').ok_or_else(bad)?;
    Ok((rev.parse().map_err(|_| bad())?, key.to_owned()))
}
