//! Bearer tokens with roles (docs/api.md, "Security"): `admin` (everything), `publish` (publishing only),
//! `read` (GETs only). `/healthz`, `/readyz` and `/openapi.json` stay open; `/metrics` takes any
//! valid token. No token, or an unknown one: 401; a known token without the role: 403.
//! Tokens are never logged or returned.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Publish,
    Read,
}

/// One configured token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    pub token: String,
    pub role: Role,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Token")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    AnyToken,
    Role(Role),
}

fn need(method: &Method, path: &str) -> Need {
    // The dashboard signs its viewers in with its own sessions.
    if path == "/ui" || path.starts_with("/ui/") {
        return Need::Nothing;
    }
    match path {
        "/healthz" | "/readyz" | "/openapi.json" => return Need::Nothing,
        "/metrics" => return Need::AnyToken,
        "/queue" | "/subscrib" => return Need::Role(Role::Admin),
        "/msg" => return Need::Role(Role::Publish),
        _ => {}
    }
    let publishing = *method == Method::POST
        && path.starts_with("/v1/queues/")
        && (path.ends_with("/messages") || path.ends_with("/messages/batch"));
    if publishing {
        Need::Role(Role::Publish)
    } else if *method == Method::GET || *method == Method::HEAD {
        Need::Role(Role::Read)
    } else {
        Need::Role(Role::Admin)
    }
}

fn allows(role: Role, wanted: Role) -> bool {
    role == Role::Admin || role == wanted
}

/// Compares without stopping at the first difference, so that timing tells nothing of a
/// token's prefix.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured tokens; empty means authentication is off.
#[derive(Clone, Default)]
pub struct Tokens(pub Arc<Vec<Token>>);

fn refuse(status: StatusCode, path: &str, detail: &str) -> Response {
    let mut r = if path.starts_with("/v1/") || path == "/metrics" {
        Problem::new(status, detail).into_response()
    } else {
        // The original broker's clients read plain text.
        (status, detail.to_owned()).into_response()
    };
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// The middleware: checks the token and role a request needs.
pub async fn check(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    if tokens.0.is_empty() {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let wanted = need(request.method(), &path);
    if wanted == Need::Nothing {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &path,
            "a bearer token is required",
        );
    };
    let mut role = None;
    for t in tokens.0.iter() {
        if same(t.token.as_bytes(), presented.as_bytes()) {
            role = Some(t.role);
        }
    }
    let Some(role) = role else {
        return refuse(StatusCode::UNAUTHORIZED, &path, "unknown token");
    };
    match wanted {
        Need::Role(w) if !allows(role, w) => refuse(
            StatusCode::FORBIDDEN,
            &path,
            &format!("this token's role ({role:?}) does not allow this call"),
        ),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_needs_the_role_of_the_spec() {
        let q = "/v1/queues/q";
        assert_eq!(need(&Method::GET, "/healthz"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/metrics"), Need::AnyToken);
        assert_eq!(
            need(&Method::POST, "/v1/queues/q/messages"),
            Need::Role(Role::Publish)
        );
        assert_eq!(
            need(&Method::POST, "/v1/queues/q/messages/batch"),
            Need::Role(Role::Publish)
        );
        assert_eq!(
            need(&Method::GET, "/v1/queues/q/messages"),
            Need::Role(Role::Read)
        );
        assert_eq!(need(&Method::PUT, q), Need::Role(Role::Admin));
        assert_eq!(
            need(&Method::POST, "/v1/queues/q/messages/x/redrive"),
            Need::Role(Role::Admin)
        );
        assert_eq!(need(&Method::POST, "/msg"), Need::Role(Role::Publish));
        assert_eq!(need(&Method::POST, "/subscrib"), Need::Role(Role::Admin));
        assert!(allows(Role::Admin, Role::Read));
        assert!(!allows(Role::Publish, Role::Read));
        assert!(!allows(Role::Read, Role::Publish));
    }

    #[test]
    fn tokens_compare_whole_and_never_print() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        let t = Token {
            token: "s3cret".into(),
            role: Role::Admin,
        };
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
