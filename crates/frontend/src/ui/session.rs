//! Who looks at the dashboard: sessions from the login form, the gate in front of every page,
//! and the CSRF-checked forms ([`Signed`], [`Action`]) every change goes through.
//!
//! Sessions live in memory: a restart signs everyone out. Without `auth.tokens` there is no
//! login and everyone acts, but forms still carry a CSRF token (one per process); changes a
//! browser says another site asked for are refused on every route (`cross_site`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::{Ui, forbidden};
use crate::auth::{Role, Token, same};

/// How long a session lasts from login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; a login beyond ends the oldest of its own role (so that logins with
/// a read token cannot sign the admins out).
pub const SESSIONS_MAX: usize = 1024;
/// The largest login form (a token and its name).
pub const LOGIN_FORM_BYTES_MAX: usize = 4 * 1024;
/// The session cookie's name (scoped to `/ui`).
const COOKIE: &str = "syncbrok_session";

struct Session {
    role: Role,
    csrf: Arc<str>,
    expires: Instant,
}

pub(crate) struct Sessions {
    tokens: Vec<Token>,
    /// The cookie is `Secure` (the broker serves https).
    https: bool,
    /// The CSRF token of every form when authentication is off.
    anonymous_csrf: Arc<str>,
    open: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes from the OS, as hex.
fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Sessions {
    pub fn new(tokens: Vec<Token>, https: bool) -> Sessions {
        Sessions {
            tokens,
            https,
            // Without the OS's randomness the process could not have started its runtime;
            // should it fail here, forms get a token nobody can guess either way: none match.
            anonymous_csrf: random_hex().unwrap_or_else(|_| String::new()).into(),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn auth_on(&self) -> bool {
        !self.tokens.is_empty()
    }

    fn role_of_token(&self, presented: &str) -> Option<Role> {
        let mut role = None;
        for t in &self.tokens {
            if same(t.token.as_bytes(), presented.as_bytes()) {
                role = Some(t.role);
            }
        }
        role
    }

    fn open(&self, role: Role) -> Result<String, getrandom::Error> {
        let id = random_hex()?;
        let csrf = random_hex()?.into();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, s| s.expires > now);
        if open.len() >= SESSIONS_MAX {
            let same_role = open.values().any(|s| s.role == role);
            let oldest = open
                .iter()
                .filter(|(_, s)| !same_role || s.role == role)
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                open.remove(&k);
            }
        }
        open.insert(
            id.clone(),
            Session {
                role,
                csrf,
                expires: now + SESSION_TTL,
            },
        );
        Ok(id)
    }

    fn viewer(&self, headers: &HeaderMap) -> Option<(String, Viewer)> {
        let id = cookie(headers)?;
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let s = open.get(id).filter(|s| s.expires > Instant::now())?;
        Some((
            id.to_owned(),
            Viewer {
                role: s.role,
                csrf: s.csrf.clone(),
                signed_in: true,
            },
        ))
    }

    fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(id);
    }
}

/// The session id the browser sent, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Who is looking, put on every request past the gate.
#[derive(Clone)]
pub(crate) struct Viewer {
    role: Role,
    csrf: Arc<str>,
    /// Signed in through the login form (authentication is on).
    pub signed_in: bool,
}

impl Viewer {
    /// May change things (an admin, or anyone when authentication is off).
    pub fn can_act(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Admin => "admin",
            Role::Read => "read",
            Role::Publish => "publish",
        }
    }

    /// The hidden field every form that changes something carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

/// In front of every page but the login form: finds the session (or, with authentication
/// off, lets everyone in as an admin); without one, to the login form.
pub(crate) async fn gate(
    State(sessions): State<Arc<Sessions>>,
    mut request: Request,
    next: Next,
) -> Response {
    let viewer = if sessions.auth_on() {
        match sessions.viewer(request.headers()) {
            Some((_, v)) => v,
            None if request.method() == Method::GET || request.method() == Method::HEAD => {
                return Redirect::to("/ui/login").into_response();
            }
            None => return forbidden("sign in first: your session ended or never began"),
        }
    } else {
        Viewer {
            role: Role::Admin,
            csrf: sessions.anonymous_csrf.clone(),
            signed_in: false,
        }
    };
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

/// A form posted from one of the dashboard's own pages: it carried the session's CSRF token.
/// The other fields, by name.
pub(crate) struct Signed {
    pub viewer: Viewer,
    pub fields: HashMap<String, String>,
}

impl<S: Send + Sync> FromRequest<S> for Signed {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let Some(viewer) = request.extensions().get::<Viewer>().cloned() else {
            return Err(forbidden("sign in first"));
        };
        let Form(mut fields) = Form::<HashMap<String, String>>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let presented = fields.remove("csrf").unwrap_or_default();
        if viewer.csrf.is_empty() || !same(presented.as_bytes(), viewer.csrf.as_bytes()) {
            return Err(forbidden(
                "this form's CSRF token is missing or stale: reload the page and try again",
            ));
        }
        Ok(Signed { viewer, fields })
    }
}

/// A change: a [`Signed`] form from a viewer who may act.
pub(crate) struct Action {
    pub fields: HashMap<String, String>,
}

impl Action {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl<S: Send + Sync> FromRequest<S> for Action {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let signed = Signed::from_request(request, state).await?;
        if !signed.viewer.can_act() {
            return Err(forbidden(
                "a read token shows the dashboard; changing anything takes an admin token",
            ));
        }
        Ok(Action {
            fields: signed.fields,
        })
    }
}

fn login_form(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · syncbrok" }
                link rel="stylesheet" href="/ui/assets/ui.css";
            }
            body.login {
                main {
                    h1 { "syncbrok" }
                    @if let Some(e) = error { p.error { (e) } }
                    form method="post" action="/ui/login" {
                        label for="token" { "Token (read or admin)" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

pub(crate) async fn login_page(State(ui): State<Ui>) -> Response {
    if !ui.sessions.auth_on() {
        return Redirect::to("/ui").into_response();
    }
    Html(login_form(None).into_string()).into_response()
}

#[derive(Deserialize)]
pub(crate) struct Login {
    token: String,
}

pub(crate) async fn login(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Form(login): Form<Login>,
) -> Response {
    let refuse = |status: StatusCode, why: &str| {
        (status, Html(login_form(Some(why)).into_string())).into_response()
    };
    if !ui.sessions.auth_on() {
        return Redirect::to("/ui").into_response();
    }
    let role = match ui.sessions.role_of_token(login.token.trim()) {
        None => return refuse(StatusCode::UNAUTHORIZED, "unknown token"),
        Some(Role::Publish) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "a publish token cannot open the dashboard: use a read or admin token",
            );
        }
        Some(role) => role,
    };
    // A new session for a new login: whatever session the browser had ends.
    if let Some((old, _)) = ui.sessions.viewer(&headers) {
        ui.sessions.close(&old);
    }
    let Ok(id) = ui.sessions.open(role) else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the broker could not make a session id (no randomness from the OS)",
        );
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if ui.sessions.https { "; Secure" } else { "" }
    );
    let mut r = Redirect::to("/ui").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(crate) async fn logout(State(ui): State<Ui>, headers: HeaderMap, _form: Signed) -> Response {
    if let Some((id, _)) = ui.sessions.viewer(&headers) {
        ui.sessions.close(&id);
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "syncbrok_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; syncbrok_session=abc; b=2"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("syncbrok_sessionx=abc"),
        );
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn sessions_are_bounded_and_end() {
        let s = Sessions::new(Vec::new(), false);
        let admin = s.open(Role::Admin).unwrap();
        let first = s.open(Role::Read).unwrap();
        for _ in 2..SESSIONS_MAX + 1 {
            s.open(Role::Read).unwrap();
        }
        let open = s.open.lock().unwrap();
        assert_eq!(open.len(), SESSIONS_MAX);
        assert!(!open.contains_key(&first), "the oldest read session ended");
        assert!(
            open.contains_key(&admin),
            "logins with a read token end no admin session"
        );
    }
}
