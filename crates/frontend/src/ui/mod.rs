//! The dashboard at `/ui` (docs/dashboard.md): server-rendered pages over the Space the API
//! serves. Every page works without JavaScript; one small script (`assets/live.js`) refreshes
//! the part of a page marked `data-live`. Every list is paged and what a page reads of a queue
//! is bounded by what it shows, so pages stay fast on a queue of millions (docs/dashboard.md,
//! "Bounds").
//!
//! With `auth.tokens` set, a login form trades a `read` or `admin` token for a session cookie
//! (HttpOnly, SameSite=Strict); `read` sees, `admin` acts. A handler that changes anything
//! takes an [`session::Action`], which exists only for a form that carried the session's CSRF
//! token from an admin's session.

mod dag;
mod dead_letters;
mod message;
mod overview;
mod queue;
mod rates;
mod session;
mod subscribers;
mod widgets;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use space::Space;

use crate::auth::Token;
use crate::problem::Problem;
pub(crate) use session::Viewer;

/// What the dashboard's handlers share.
#[derive(Clone)]
pub(crate) struct Ui {
    space: Space,
    sessions: Arc<session::Sessions>,
    rates: Arc<rates::Rates>,
    /// The messages holding back the most, found at most every few seconds.
    blocking: Arc<overview::Blocking>,
    /// Largest body of a test message published from the queue page (`limits.max_body`).
    max_body: usize,
}

/// The dashboard's routes. Authentication is its own (sessions), so the API's bearer check
/// lets `/ui` through.
pub(crate) fn router(space: Space, tokens: &[Token], max_body: usize, https: bool) -> Router {
    let ui = Ui {
        rates: rates::Rates::start(space.clone()),
        blocking: Arc::new(overview::Blocking::default()),
        space,
        sessions: Arc::new(session::Sessions::new(tokens.to_vec(), https)),
        max_body,
    };
    // A test message's body may be up to `limits.max_body`, form-encoded (up to 3 bytes per
    // byte): only its own route takes that much.
    let publish_form_max = crate::limits::UI_FORM_BYTES_MAX.max(max_body.saturating_mul(3));
    let pages = Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/dead-letters", get(dead_letters::page))
        .route("/ui/subscribers", get(subscribers::page))
        .route("/ui/queues/{queue}", get(queue::page))
        .route("/ui/queues/{queue}/settings", post(queue::save_settings))
        .route(
            "/ui/queues/{queue}/publish",
            post(queue::publish).layer(DefaultBodyLimit::max(publish_form_max)),
        )
        .route("/ui/messages/{id}", get(message::find))
        .route(
            "/ui/queues/{queue}/subscribers/{id}/{action}",
            post(subscribers::act),
        )
        .route(
            "/ui/queues/{queue}/dead-letters/redrive",
            post(dead_letters::redrive_all),
        )
        .route("/ui/queues/{queue}/messages/{id}", get(message::page))
        .route(
            "/ui/queues/{queue}/messages/{id}/{action}",
            post(message::act),
        )
        .route("/ui/logout", post(session::logout))
        .layer(axum::middleware::from_fn_with_state(
            ui.sessions.clone(),
            session::gate,
        ));
    Router::new()
        .route(
            "/ui/login",
            get(session::login_page)
                .post(session::login)
                .layer(DefaultBodyLimit::max(session::LOGIN_FORM_BYTES_MAX)),
        )
        .route("/ui/assets/ui.css", get(css))
        .route("/ui/assets/live.js", get(script))
        .merge(pages.layer(DefaultBodyLimit::max(crate::limits::UI_FORM_BYTES_MAX)))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(ui)
}

/// Headers on every dashboard response: nothing from elsewhere runs or loads, the pages cannot
/// be framed (clickjacking), and nothing is cached (pages show live state and sessions).
async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/ui.css"))
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    )
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        text,
    )
        .into_response()
}

/// Which part of the site a page belongs to (the navigation marks it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    DeadLetters,
    Subscribers,
    None,
}

/// A whole page around `content`.
fn layout(title: &str, viewer: &Viewer, nav: Nav, content: Markup) -> Response {
    let link = |href: &str, text: &str, this: Nav| {
        html! { a href=(href) class=[(nav == this).then_some("here")] { (text) } }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · syncbrok" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/live.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui" { "syncbrok" }
                    nav {
                        (link("/ui", "Overview", Nav::Overview))
                        (link("/ui/dead-letters", "Dead letters", Nav::DeadLetters))
                        (link("/ui/subscribers", "Subscribers", Nav::Subscribers))
                    }
                    @if viewer.signed_in {
                        form.logout method="post" action="/ui/logout" {
                            (viewer.csrf_field())
                            span.role { (viewer.role_name()) }
                            button #logout type="submit" { "Log out" }
                        }
                    }
                }
                main { (content) }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// An error shown as a page: what went wrong, in the API's words, with the API's status.
pub(crate) struct UiError(Problem);

impl<E> From<E> for UiError
where
    Problem: From<E>,
{
    fn from(e: E) -> Self {
        UiError(Problem::from(e))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (status.as_u16()) " · syncbrok" }
                    link rel="stylesheet" href="/ui/assets/ui.css";
                }
                body {
                    main {
                        h1 { (status.canonical_reason().unwrap_or("Error")) }
                        p.error { (self.0.detail) }
                        p { a href="/ui" { "Back to the overview" } }
                    }
                }
            }
        };
        (status, Html(markup.into_string())).into_response()
    }
}

type UiResult = Result<Response, UiError>;

fn forbidden(detail: &str) -> Response {
    UiError(Problem::new(StatusCode::FORBIDDEN, detail)).into_response()
}

/// After a change: back to `to` with what was done (`done`, one of the fixed notices the page
/// knows, so that no link can make a page say something of its own).
fn done(to: &str, notice: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}done={notice}")).into_response()
}
