//! API errors and the Kubernetes `Status` object every error reaches the client as.

use serde::Serialize;

/// An error answered to an API client. One match maps each to its HTTP code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No route for the path.
    NotFound { path: String },
    /// The path exists but not for this method.
    MethodNotAllowed { method: String, path: String },
}

impl ApiError {
    /// The `Status` object for this error.
    pub fn status(&self) -> Status {
        let (code, reason, message) = match self {
            ApiError::NotFound { path } => {
                (404, "NotFound", format!("the server could not find the requested resource {path}"))
            }
            ApiError::MethodNotAllowed { method, path } => (
                405,
                "MethodNotAllowed",
                format!("the server does not allow this method on the requested resource: {method} {path}"),
            ),
        };
        Status::failure(code, reason, message)
    }
}

/// Kubernetes `meta/v1 Status` (only the fields cairn fills).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub metadata: Empty,
    pub status: &'static str,
    pub message: String,
    pub reason: &'static str,
    pub code: u16,
}

/// `{}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Empty {}

impl Status {
    /// A `Failure` status.
    pub fn failure(code: u16, reason: &'static str, message: String) -> Status {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message,
            reason,
            code,
        }
    }
}
