//! The pages the workspace origin answers itself: each says what happened and what to do,
//! in HTML for a browser, never cached.

use axum::body::Body;
use axum::response::Response;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;

/// A page with `status`, a title and one paragraph (both plain text, escaped here).
pub fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\n\
         <body style=\"font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto\">\
         <h1>{t}</h1>\n<p>{p}</p>\n<p style=\"color: #666\">{status}</p></body></html>\n",
        t = escape(title),
        p = escape(text),
    );
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// 401 with the basic challenge of the console user.
pub fn unauthorized() -> Response {
    let mut resp = page(
        StatusCode::UNAUTHORIZED,
        "Sign in",
        "Workspaces need the console user `vt` and its password (in <data-dir>/console-password on the server).",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"vt workspaces\", charset=\"UTF-8\""));
    resp.extensions_mut().insert(crate::auth::LoginFailed);
    resp
}

/// 429: too many failed logins from this client.
pub fn too_many_logins(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut resp = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed sign-ins",
        &format!("Too many wrong passwords from this address; try again in {secs} s."),
    );
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// A redirect to `location` that keeps the method (308).
pub fn redirect(location: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(super::escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
    }
}
