//! The dashboard's doors: who gets in (a login trading a token for a session cookie), what a
//! `read` session may do (see, not act), that every change needs the session's CSRF token,
//! that lists are paged and bodies are escaped and bounded. In-process on an ephemeral port
//! over a simulated disk; the browser test (scripts/ui-browser.sh) drives the same pages in
//! Chromium.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use space::{Space, SpaceConfig};
use storage::sim::SimDisk;

const ADMIN: &str = "admin-token-0123456789";
const READ: &str = "read-token-0123456789";
const PUBLISH: &str = "publish-token-0123456789";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The session cookie it sets (`name=value`).
    fn session(&self) -> Option<String> {
        let set = self.headers.get(header::SET_COOKIE)?.to_str().ok()?;
        Some(set.split(';').next()?.to_owned())
    }

    /// The CSRF token of the first form on the page.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find("name=\"csrf\" value=\"")
            .expect("a form with csrf");
        let rest = &self.text[at + 19..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

struct Broker {
    base: String,
    space: Space,
}

impl Broker {
    async fn start(tokens: bool) -> Broker {
        Self::start_with(tokens, false).await
    }

    async fn start_with(tokens: bool, https: bool) -> Broker {
        let (space, _) = Space::open(
            Arc::new(SimDisk::new(7)),
            SpaceConfig::new(storage::Config::default()),
            Arc::new(handler::HttpDeliverer::new()),
        )
        .unwrap();
        let token = |t: &str, role: &str| {
            serde_json::from_value::<frontend::auth::Token>(
                serde_json::json!({"token": t, "role": role}),
            )
            .unwrap()
        };
        let config = frontend::ApiConfig {
            tokens: if tokens {
                vec![
                    token(ADMIN, "admin"),
                    token(READ, "read"),
                    token(PUBLISH, "publish"),
                ]
            } else {
                Vec::new()
            },
            https,
            ..frontend::ApiConfig::default()
        };
        let router = frontend::router(space.clone(), &config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Broker { base, space }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let r = client
            .request(
                request
                    .body(Full::new(Bytes::from(body.to_owned())))
                    .unwrap(),
            )
            .await
            .unwrap();
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let h: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        self.send(Method::GET, path, &h, "").await
    }

    async fn form(&self, path: &str, cookie: Option<&str>, form: &str) -> Answer {
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(c) = cookie {
            h.push(("cookie", c));
        }
        self.send(Method::POST, path, &h, form).await
    }

    async fn api(&self, method: Method, path: &str, body: &str) -> Answer {
        let auth = format!("Bearer {ADMIN}");
        self.send(
            method,
            path,
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    async fn login(&self, token: &str) -> Answer {
        self.form("/ui/login", None, &format!("token={token}"))
            .await
    }

    /// A queue `q` with a subscriber nobody answers at (its attempts fail).
    async fn queue_with_subscriber(&self) {
        assert!(
            self.api(Method::PUT, "/v1/queues/q", "{}")
                .await
                .status
                .is_success()
        );
        let r = self
            .api(
                Method::POST,
                "/v1/queues/q/subscribers",
                r#"{"endpoint": "http://127.0.0.1:9/"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
}

fn subscriber_state(space: &Space) -> space::SubscriberState {
    space.subscribers("q").unwrap()[0].state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_comes_from_a_token_and_only_an_admin_acts_with_the_csrf_token() {
    let b = Broker::start(true).await;
    b.queue_with_subscriber().await;

    // No session: pages go to the login form, changes are refused.
    let r = b.get("/ui", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/ui/login");
    assert_eq!(b.get("/ui/login", None).await.status, StatusCode::OK);
    let r = b
        .form("/ui/queues/q/subscribers/1/pause", None, "csrf=x")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The API's bearer tokens are not sessions, and a session is not a bearer token.
    assert_eq!(
        b.get("/v1/queues", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Wrong tokens: the form again, saying why, and no cookie.
    let r = b.login("nope").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("class=\"error\"") && r.session().is_none());
    let r = b.login(PUBLISH).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.session().is_none());

    // A read session sees, and may not act even with its own CSRF token.
    let r = b.login(READ).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui")
    );
    let read = r.session().unwrap();
    let page = b.get("/ui/queues/q", Some(&read)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(
        !page.text.contains(">Pause<"),
        "no buttons for a read session"
    );
    let csrf = page.csrf(); // the logout form's
    let r = b
        .form(
            "/ui/queues/q/subscribers/1/pause",
            Some(&read),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(subscriber_state(&b.space), space::SubscriberState::Active);

    // An admin session: without the token, or with another session's, nothing happens.
    let admin = b.login(ADMIN).await.session().unwrap();
    let page = b.get("/ui/queues/q", Some(&admin)).await;
    assert!(page.text.contains(">Pause<"));
    let mine = page.csrf();
    assert_ne!(mine, csrf, "each session has its own token");
    for form in ["", "csrf=", &format!("csrf={csrf}")] {
        let r = b
            .form("/ui/queues/q/subscribers/1/pause", Some(&admin), form)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form:?}");
    }
    assert_eq!(subscriber_state(&b.space), space::SubscriberState::Active);
    let r = b
        .form(
            "/ui/queues/q/subscribers/1/pause",
            Some(&admin),
            &format!("csrf={mine}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/ui/queues/q?done=paused");
    assert_eq!(subscriber_state(&b.space), space::SubscriberState::Paused);

    // Logging out ends the session for good.
    let r = b
        .form("/ui/logout", Some(&admin), &format!("csrf={mine}"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = b.get("/ui", Some(&admin)).await;
    assert_eq!(r.location(), "/ui/login");
    let r = b
        .form(
            "/ui/queues/q/subscribers/1/resume",
            Some(&admin),
            &format!("csrf={mine}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(subscriber_state(&b.space), space::SubscriberState::Paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_everyone_acts_but_forms_still_need_their_csrf_token() {
    let b = Broker::start(false).await;
    b.queue_with_subscriber().await;
    let page = b.get("/ui", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("href=\"/ui/queues/q\""));
    assert!(!page.text.contains("id=\"logout\""), "nobody to log out");
    let r = b
        .form("/ui/queues/q/subscribers/1/pause", None, "csrf=guess")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let csrf = b.get("/ui/queues/q", None).await.csrf();
    let r = b
        .form(
            "/ui/queues/q/subscribers/1/pause",
            None,
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(subscriber_state(&b.space), space::SubscriberState::Paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paged_bodies_escaped_and_cut_and_errors_are_pages() {
    let b = Broker::start(false).await;
    b.queue_with_subscriber().await;
    // Paused: the messages stay ready, in order.
    b.space
        .update_subscriber("q", 1, space::SubscriberUpdate::Pause)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        let body = if i == 0 {
            "<script>alert('x')</script>".to_owned()
        } else {
            "y".repeat(if i == 1 { 100_000 } else { 10 })
        };
        let r = b.api(Method::POST, "/v1/queues/q/messages", &body).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let v: serde_json::Value = serde_json::from_str(&r.text).unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let first = b.get("/ui/queues/q", None).await;
    let rows = |t: &str| {
        ids.iter()
            .filter(|id| t.contains(&format!("/messages/{id}\"")))
            .count()
    };
    assert_eq!(rows(&first.text), 50, "a page holds 50");
    let next = format!("/ui/queues/q?after={}", ids[49]);
    assert!(first.text.contains(&next), "a link to the next page");
    let second = b.get(&next, None).await;
    assert_eq!(rows(&second.text), 10);
    assert!(!second.text.contains("Next page"));

    let m = b
        .get(&format!("/ui/queues/q/messages/{}", ids[0]), None)
        .await;
    assert!(
        m.text.contains("&lt;script&gt;alert"),
        "the body is text, not markup"
    );
    assert!(!m.text.contains("<script>alert"));
    let m = b
        .get(&format!("/ui/queues/q/messages/{}", ids[1]), None)
        .await;
    assert!(m.text.contains("Showing the first 64.0 KiB of 97.7 KiB"));
    let hex = b
        .get(&format!("/ui/queues/q/messages/{}?view=hex", ids[2]), None)
        .await;
    assert!(hex.text.contains("00000000  79 79 79"));

    let r = b.get("/ui/queues/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text.contains("class=\"error\""));
    let r = b.get("/ui/queues/q/messages/not-an-id", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_renewed_at_login_and_secure_over_https() {
    let b = Broker::start_with(true, true).await;
    let r = b.login(READ).await;
    assert!(
        r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    let first = r.session().unwrap();
    // Logging in again (with the old cookie) ends the old session.
    let r = b
        .send(
            Method::POST,
            "/ui/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", first.as_str()),
            ],
            &format!("token={ADMIN}"),
        )
        .await;
    let second = r.session().unwrap();
    assert_ne!(first, second);
    assert_eq!(b.get("/ui", Some(&first)).await.location(), "/ui/login");
    assert_eq!(b.get("/ui", Some(&second)).await.status, StatusCode::OK);
    // The login form is small: a huge one is refused before it is read.
    let huge = format!("token={}", "x".repeat(8 * 1024));
    assert_eq!(
        b.form("/ui/login", None, &huge).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_another_site_are_refused_and_bodies_never_run_as_pages() {
    let b = Broker::start(false).await;
    b.queue_with_subscriber().await;
    let csrf = b.get("/ui/queues/q", None).await.csrf();
    let form = format!("csrf={csrf}");
    let pause = |site: &'static str| {
        let form = form.clone();
        let b = &b;
        async move {
            b.send(
                Method::POST,
                "/ui/queues/q/subscribers/1/pause",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("sec-fetch-site", site),
                ],
                &form,
            )
            .await
            .status
        }
    };
    assert_eq!(pause("cross-site").await, StatusCode::FORBIDDEN);
    assert_eq!(subscriber_state(&b.space), space::SubscriberState::Active);
    assert_eq!(pause("same-origin").await, StatusCode::SEE_OTHER);
    // The API without tokens: a page elsewhere cannot publish through a visitor's browser, a
    // client that is not a browser can.
    let evil = b
        .send(
            Method::POST,
            "/v1/queues/q/messages",
            &[
                ("origin", "http://evil.example"),
                ("content-type", "text/plain"),
            ],
            "<html><script>steal()</script></html>",
        )
        .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    let r = b
        .send(
            Method::POST,
            "/v1/queues/q/messages",
            &[("content-type", "text/html")],
            "<html><script>steal()</script></html>",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = serde_json::from_str::<serde_json::Value>(&r.text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = b
        .get(&format!("/v1/queues/q/messages/{id}/body"), None)
        .await;
    assert_eq!(body.headers[header::CONTENT_SECURITY_POLICY], "sandbox");
    assert_eq!(body.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_find_messages_of_other_queues_and_a_discard_goes_back_to_the_queue() {
    let b = Broker::start(false).await;
    for q in ["a", "b"] {
        assert!(
            b.api(Method::PUT, &format!("/v1/queues/{q}"), "{}")
                .await
                .status
                .is_success()
        );
    }
    // A paused subscriber of b: the child stays (a queue without subscribers is done with a
    // message at once).
    let r = b
        .api(
            Method::POST,
            "/v1/queues/b/subscribers",
            r#"{"endpoint": "http://127.0.0.1:9/"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    b.space
        .update_subscriber("b", 1, space::SubscriberUpdate::Pause)
        .await
        .unwrap();
    let r = b.api(Method::POST, "/v1/queues/a/messages", "{}").await;
    let parent = serde_json::from_str::<serde_json::Value>(&r.text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = b
        .send(
            Method::POST,
            "/v1/queues/b/messages",
            &[("syncbrok-parent", parent.as_str())],
            "x".repeat(70_000).as_str(),
        )
        .await;
    let child = serde_json::from_str::<serde_json::Value>(&r.text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = b.get(&format!("/ui/queues/b/messages/{child}"), None).await;
    let link = format!("/ui/messages/{parent}");
    assert!(
        page.text.contains(&link),
        "the parent is linked by its id alone"
    );
    let r = b.get(&link, None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), format!("/ui/queues/a/messages/{parent}"));
    // A body too large to pretty-print is not parsed.
    let json = b
        .get(&format!("/ui/queues/b/messages/{child}?view=json"), None)
        .await;
    assert!(json.text.contains("Too large to format"));

    let csrf = page.csrf();
    let r = b
        .form(
            &format!("/ui/queues/b/messages/{child}/discard"),
            None,
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(r.location(), "/ui/queues/b?done=discarded");
    assert_eq!(b.get(r.location(), None).await.status, StatusCode::OK);
}
