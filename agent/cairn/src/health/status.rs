//! API errors and the Kubernetes `Status` object every error reaches the client as.

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

pub use cairn_apimeta::Status;
