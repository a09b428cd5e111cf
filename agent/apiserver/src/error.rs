//! API errors and the Kubernetes `Status` object every error reaches the client as.
//!
//! One `match` ([`ApiError::status`]) maps each error to its HTTP code, `reason` and message;
//! handlers never build a `Status` by hand.

use cairn_store::StoreError;
use serde_json::Value;

/// Which object an error is about (`Status.details`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// An error answered to an API client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// the server could not find the requested resource {path}
    #[error("the server could not find the requested resource {path}")]
    PathNotFound { path: String },

    #[error("{} \"{}\" not found", plural_group(&.0.kind, &.0.group), .0.name)]
    NotFound(Subject),

    #[error("{} \"{}\" already exists", plural_group(&.0.kind, &.0.group), .0.name)]
    AlreadyExists(Subject),

    #[error("Operation cannot be fulfilled on {} \"{}\": {message}", plural_group(&subject.kind, &subject.group), subject.name)]
    Conflict { subject: Subject, message: String },

    #[error("the server does not allow this method on the requested resource: {method} {path}")]
    MethodNotAllowed { method: String, path: String },

    #[error("{0}")]
    BadRequest(String),

    /// `message` holds one line per invalid field (`spec.size: Invalid value: ...`); they
    /// become the Status' `details.causes`, which kubectl prints.
    #[error("{} \"{}\" is invalid: {}", .subject.kind, .subject.name, one_line(.message))]
    Invalid { subject: Subject, message: String },

    #[error("the body of the request was in an unknown format - accepted media types include: {accepted}")]
    UnsupportedMediaType { accepted: String },

    #[error("the request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },

    /// Begins as kube-apiserver's watch cache words it (the oldest revision still served in
    /// parentheses), then says what to do; clients go by the reason and list again.
    #[error("too old resource version: {requested} ({compacted}); list again and watch from the list's resourceVersion")]
    Expired { requested: u64, compacted: u64 },

    #[error("namespace \"{0}\" not found: create it first (kubectl create namespace {0})")]
    NamespaceNotFound(String),

    /// No valid credentials (the reason is logged by the server, not told to the client).
    #[error("Unauthorized")]
    Unauthorized,

    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),

    /// Any other answer an extension gives, with its own code and `reason`
    /// (`409 Conflict` for an upload resumed at the wrong offset, `507` for a full disk).
    #[error("{message}")]
    Other {
        code: u16,
        reason: &'static str,
        message: String,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

fn plural_group(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    /// HTTP code and Kubernetes `reason`.
    pub fn code_reason(&self) -> (u16, &'static str) {
        match self {
            ApiError::PathNotFound { .. } | ApiError::NotFound(_) => (404, "NotFound"),
            ApiError::NamespaceNotFound(_) => (404, "NotFound"),
            ApiError::AlreadyExists(_) => (409, "AlreadyExists"),
            ApiError::Conflict { .. } => (409, "Conflict"),
            ApiError::MethodNotAllowed { .. } => (405, "MethodNotAllowed"),
            ApiError::BadRequest(_) => (400, "BadRequest"),
            ApiError::Invalid { .. } => (422, "Invalid"),
            ApiError::UnsupportedMediaType { .. } => (415, "UnsupportedMediaType"),
            ApiError::TooLarge { .. } => (413, "RequestEntityTooLarge"),
            ApiError::Expired { .. } => (410, "Expired"),
            ApiError::Unauthorized => (401, "Unauthorized"),
            ApiError::Forbidden(_) => (403, "Forbidden"),
            ApiError::Other { code, reason, .. } => (*code, reason),
            ApiError::Internal(_) => (500, "InternalError"),
        }
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Status {
        let (code, reason) = self.code_reason();
        let subject = match self {
            ApiError::NotFound(s) | ApiError::AlreadyExists(s) => Some(s.clone()),
            ApiError::Conflict { subject, .. } | ApiError::Invalid { subject, .. } => {
                Some(subject.clone())
            }
            ApiError::NamespaceNotFound(name) => Some(Subject {
                group: String::new(),
                kind: "namespaces".into(),
                name: name.clone(),
            }),
            _ => None,
        };
        let details = subject.map(|s| {
            let mut d = serde_json::json!({"name": s.name, "kind": s.kind});
            if !s.group.is_empty() {
                d["group"] = Value::String(s.group);
            }
            if let ApiError::Invalid { message, .. } = self {
                d["causes"] = message.lines().map(cause).collect();
            }
            d
        });
        Status::failure(code, reason, self.to_string()).with_details(details)
    }

    /// Map a store error about `subject` (conflicts, missing keys, compaction).
    pub fn from_store(err: StoreError, subject: &Subject) -> ApiError {
        match err {
            StoreError::AlreadyExists { .. } => ApiError::AlreadyExists(subject.clone()),
            StoreError::NotFound { .. } => ApiError::NotFound(subject.clone()),
            StoreError::Conflict { .. } => ApiError::Conflict {
                subject: subject.clone(),
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            },
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::Expired {
                requested,
                compacted,
            },
            StoreError::FutureRevision { requested, current } => ApiError::BadRequest(format!(
                "resourceVersion {requested} is newer than the current resourceVersion {current}"
            )),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        ApiError::from_store(err, &Subject::default())
    }
}

pub use cairn_apimeta::Status;

/// A `Success` status (the answer to some deletes).
pub fn success(subject: &Subject) -> Value {
    let mut details = serde_json::json!({"name": subject.name, "kind": subject.kind});
    if !subject.group.is_empty() {
        details["group"] = Value::String(subject.group.clone());
    }
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "details": details,
    })
}

/// Several causes as kube-apiserver words them: `[a, b]`; one as it is.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    match lines.as_slice() {
        [one] => (*one).to_owned(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// A `StatusCause` from `field: message` (a cause without a field has only a message).
fn cause(line: &str) -> Value {
    let (field, message) = match line.split_once(": ") {
        Some((field, message)) if !field.contains(' ') => (field, message),
        _ => ("", line),
    };
    let reason = [
        ("Required value", "FieldValueRequired"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Too many", "FieldValueTooMany"),
        ("Forbidden", "FieldValueForbidden"),
        ("Duplicate value", "FieldValueDuplicate"),
    ]
    .iter()
    .find(|(prefix, _)| message.starts_with(prefix))
    .map_or("FieldValueInvalid", |(_, reason)| reason);
    let mut c = serde_json::json!({"reason": reason, "message": message});
    if !field.is_empty() {
        c["field"] = Value::String(field.to_owned());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str) -> Subject {
        Subject {
            group: String::new(),
            kind: "configmaps".into(),
            name: name.into(),
        }
    }

    #[test]
    fn messages_match_kubernetes() {
        assert_eq!(
            ApiError::NotFound(cm("a")).to_string(),
            "configmaps \"a\" not found"
        );
        let lease = Subject {
            group: "coordination.k8s.io".into(),
            kind: "leases".into(),
            name: "l".into(),
        };
        assert_eq!(
            ApiError::AlreadyExists(lease).to_string(),
            "leases.coordination.k8s.io \"l\" already exists"
        );
    }

    #[test]
    fn status_json() {
        let s = serde_json::to_value(ApiError::NotFound(cm("a")).status()).unwrap();
        assert_eq!(
            s,
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "configmaps \"a\" not found", "reason": "NotFound",
                "details": {"name": "a", "kind": "configmaps"}, "code": 404
            })
        );
        let e = ApiError::from_store(
            StoreError::Compacted {
                requested: 3,
                compacted: 9,
            },
            &cm("x"),
        );
        assert_eq!(e.code_reason(), (410, "Expired"));
        assert_eq!(
            e.to_string(),
            "too old resource version: 3 (9); list again and watch from the list's resourceVersion"
        );
    }

    #[test]
    fn invalid_fields_become_causes() {
        let e = ApiError::Invalid {
            subject: Subject {
                group: "example.com".into(),
                kind: "Widget".into(),
                name: "a".into(),
            },
            message: "spec.size: Required value\nspec.colour: Unsupported value: \"x\": supported values: \"red\"\nthe patch cannot be applied: no path".into(),
        };
        assert_eq!(
            e.to_string(),
            "Widget \"a\" is invalid: [spec.size: Required value, spec.colour: Unsupported value: \"x\": supported values: \"red\", the patch cannot be applied: no path]"
        );
        let s = serde_json::to_value(e.status()).unwrap();
        assert_eq!(
            s["details"]["causes"],
            serde_json::json!([
                {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.size"},
                {"reason": "FieldValueNotSupported", "message": "Unsupported value: \"x\": supported values: \"red\"", "field": "spec.colour"},
                {"reason": "FieldValueInvalid", "message": "the patch cannot be applied: no path"},
            ])
        );
    }
}
