//! Changes asked for by another site are refused (403), on every route: a browser visiting a
//! page elsewhere could otherwise post a form to a broker on its network — the API without
//! tokens takes a plain form post as a publish or a redrive. Browsers say where a request comes
//! from (`Sec-Fetch-Site`, or at least `Origin`); clients that are not browsers send neither
//! and pass. Reads (GET, HEAD, OPTIONS) always pass.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

/// Whether a request that changes something came from another site.
fn from_another_site(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        // `none`: typed or bookmarked by the user; `same-origin`: from the broker's own pages.
        return !matches!(site, "none" | "same-origin");
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            !authority.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

pub async fn refuse(request: Request, next: Next) -> Response {
    if from_another_site(request.method(), request.headers()) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "a change asked for by another site's page is refused",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_changes_from_another_site_are_refused() {
        let post = Method::POST;
        // Not a browser: no say where it comes from.
        assert!(!from_another_site(&post, &headers(&[("host", "b:1")])));
        // The broker's own pages, and what the user typed.
        for site in ["same-origin", "none"] {
            assert!(!from_another_site(
                &post,
                &headers(&[("sec-fetch-site", site)])
            ));
        }
        for site in ["cross-site", "same-site"] {
            assert!(from_another_site(
                &post,
                &headers(&[("sec-fetch-site", site)])
            ));
        }
        // Older browsers: Origin against Host.
        let same = headers(&[("origin", "http://b:1"), ("host", "b:1")]);
        assert!(!from_another_site(&post, &same));
        let other = headers(&[("origin", "http://evil.example"), ("host", "b:1")]);
        assert!(from_another_site(&post, &other));
        assert!(from_another_site(
            &post,
            &headers(&[("origin", "null"), ("host", "b:1")])
        ));
        // Reads pass whatever they say.
        let cross = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(!from_another_site(&Method::GET, &cross));
    }
}
