//! Request routing: method and path in, a complete response out. No socket, no state, so
//! every route is tested directly. Later, API groups get a file each and parse requests into
//! typed actions here before anything touches storage.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};

use super::status::ApiError;
use super::version::VersionInfo;

/// The response type of every route.
pub type ApiResponse = Response<Full<Bytes>>;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Routes requests; holds what the routes answer with.
#[derive(Debug, Clone)]
pub struct Router {
    version: Vec<u8>,
}

impl Router {
    /// A router answering `/version` with `version`.
    pub fn new(version: &VersionInfo) -> Router {
        let mut body = serde_json::to_vec_pretty(version).expect("VersionInfo serialises");
        body.push(b'\n');
        Router { version: body }
    }

    /// Answers one request. The query string is ignored (`/readyz?verbose` is `/readyz`).
    pub fn respond(&self, method: &Method, path: &str) -> ApiResponse {
        let readable = method == Method::GET || method == Method::HEAD;
        let result = match path {
            "/readyz" | "/livez" | "/healthz" if readable => {
                Ok(body(StatusCode::OK, TEXT, b"ok".to_vec()))
            }
            "/version" if readable => Ok(body(StatusCode::OK, JSON, self.version.clone())),
            "/readyz" | "/livez" | "/healthz" | "/version" => Err(ApiError::MethodNotAllowed {
                method: method.to_string(),
                path: path.to_owned(),
            }),
            _ => Err(ApiError::NotFound {
                path: path.to_owned(),
            }),
        };
        result.unwrap_or_else(|e| error(&e))
    }
}

fn body(code: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> ApiResponse {
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// An error as a `Status` JSON response.
pub fn error(err: &ApiError) -> ApiResponse {
    let status = err.status();
    let code = StatusCode::from_u16(status.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    body(
        code,
        JSON,
        serde_json::to_vec(&status).expect("Status serialises"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::{json, Value};
    use std::future::Future;

    fn call(method: Method, path: &str) -> (StatusCode, String, Vec<u8>) {
        let resp = Router::new(&VersionInfo::current()).respond(&method, path);
        let ct = resp.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
        let status = resp.status();
        let bytes = futures_body(resp.into_body());
        (status, ct, bytes)
    }

    /// `Full` is ready at once; poll it without a runtime.
    fn futures_body(body: Full<Bytes>) -> Vec<u8> {
        let mut fut = std::pin::pin!(body.collect());
        let waker = std::task::Waker::noop();
        match fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(Ok(c)) => c.to_bytes().to_vec(),
            _ => panic!("body not ready"),
        }
    }

    #[test]
    fn health_endpoints() {
        for path in ["/readyz", "/livez", "/healthz"] {
            let (code, ct, body) = call(Method::GET, path);
            assert_eq!(
                (code, ct.as_str(), body.as_slice()),
                (StatusCode::OK, TEXT, &b"ok"[..])
            );
            assert_eq!(call(Method::HEAD, path).0, StatusCode::OK);
        }
    }

    #[test]
    fn version_info() {
        let (code, ct, body) = call(Method::GET, "/version");
        assert_eq!((code, ct.as_str()), (StatusCode::OK, JSON));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "35");
        assert_eq!(
            v["gitVersion"],
            format!("v1.35.0+cairn-{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(v["gitTreeState"], "clean");
        assert_eq!(v["compiler"], "rustc");
        assert!(v["platform"].as_str().unwrap().starts_with("linux/"));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for key in ["buildDate", "gitCommit", "goVersion"] {
            assert!(keys.contains(&key), "{key}");
        }
    }

    #[test]
    fn unknown_path_is_a_not_found_status() {
        let (code, ct, body) = call(Method::GET, "/api/v1/pods");
        assert_eq!((code, ct.as_str()), (StatusCode::NOT_FOUND, JSON));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "the server could not find the requested resource /api/v1/pods",
                "reason": "NotFound",
                "code": 404
            })
        );
    }

    #[test]
    fn wrong_method_is_a_status() {
        let (code, _, body) = call(Method::POST, "/readyz");
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["reason"], "MethodNotAllowed");
        assert_eq!(v["code"], 405);
        assert_eq!(call(Method::DELETE, "/nope").0, StatusCode::NOT_FOUND);
    }
}
