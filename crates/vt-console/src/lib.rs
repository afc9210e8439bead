//! The web console (docs/console.md): the single-page app of `console/`, built by `build.rs`
//! with npm and embedded here, served at `/app/` on the API origin behind the console user's
//! basic auth. The app talks only to the public `/v1` API; this crate serves files and
//! nothing else.
//!
//! - `/app` → 308 to `/app/`; `/app/assets/*` are the hashed build outputs (cached for a
//!   year, `immutable`), a missing one is a 404; every other path under `/app/` is
//!   `index.html` (the app routes in the browser), never cached.
//! - Every answer carries a Content-Security-Policy that lets the page load and connect to
//!   its own origin only: nothing of the workspace origin (or any other) is loaded into the
//!   API origin; workspaces are links that open a new tab.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use vt_front::auth::{Gate, Refusal};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// The basic-auth realm of the API origin (the console and `/v1` both answer it).
pub const REALM: &str = "vt";

/// The policy every console answer carries: this origin only, no frames, no plugins.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; object-src 'none'; frame-src 'none'; frame-ancestors 'none'; \
                       base-uri 'none'; form-action 'self'";

/// The console's built files: (path under `/app/`, contents), sorted by path.
pub fn assets() -> &'static [(&'static str, &'static [u8])] {
    assets::ASSETS
}

/// `/app` and everything under it, for requests that `gate` lets in (the console user).
pub fn router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/app", axum::routing::any(serve))
        .route("/app/", axum::routing::any(serve))
        .route("/app/{*rest}", axum::routing::any(serve))
        .layer(axum::middleware::from_fn_with_state(gate, login))
}

/// Let the console user in; anyone else gets the basic challenge (a browser asks for the
/// password) or 503 when the password cannot be checked now.
async fn login(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    match gate.check(req.headers()).await {
        Ok(_) => next.run(req).await,
        Err(Refusal::Unauthorized) => {
            let mut resp = page(
                StatusCode::UNAUTHORIZED,
                "Sign in: the console user is `vt`; its password is in <data-dir>/console-password on the server.\n",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")).expect("a header value"),
            );
            resp
        }
        Err(Refusal::Unavailable(why)) => {
            tracing::warn!(error = %why, "the console could not check a password");
            page(StatusCode::SERVICE_UNAVAILABLE, "The console password cannot be checked now; try again shortly.\n")
        }
    }
}

async fn serve(req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = page(StatusCode::METHOD_NOT_ALLOWED, "The console serves files: GET or HEAD only.\n");
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/app/") else {
        // `/app` itself.
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        resp.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/app/"));
        return resp;
    };
    let (name, bytes, immutable) = match find(rest) {
        Some((name, bytes)) => (name, bytes, name.starts_with("assets/")),
        None if rest.starts_with("assets/") => {
            return page(
                StatusCode::NOT_FOUND,
                "No such file of the console (a newer build may have replaced it: reload).\n",
            )
        }
        None => match find("index.html") {
            Some((name, bytes)) => (name, bytes, false),
            None => {
                return page(StatusCode::INTERNAL_SERVER_ERROR, "This vt was built without the console's index.html.\n")
            }
        },
    };
    let mut resp = Response::new(if req.method() == Method::HEAD { Body::empty() } else { Body::from(bytes) });
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable { "public, max-age=31536000, immutable" } else { "no-cache" }),
    );
    secure(h);
    resp
}

fn find(name: &str) -> Option<(&'static str, &'static [u8])> {
    let all = assets();
    all.binary_search_by(|(n, _)| (*n).cmp(name)).ok().map(|i| all[i])
}

/// The content type of a built file, by its extension.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn page(status: StatusCode, text: &'static str) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    use vt_front::auth::{BoxFuture, Credentials};

    struct Fixed;

    impl Credentials for Fixed {
        fn verify<'a>(&'a self, user: &'a str, password: &'a str) -> BoxFuture<'a, Result<bool, String>> {
            Box::pin(async move { Ok(user == "vt" && password == "right") })
        }
        fn active(&self) -> BoxFuture<'_, Result<bool, String>> {
            Box::pin(async { Ok(true) })
        }
    }

    fn app() -> Router {
        router(Arc::new(Gate::new(Box::new(Fixed)).unwrap()))
    }

    fn basic(user_password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_password))
    }

    async fn get(path: &str, auth: Option<&str>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    fn hashed_script() -> &'static str {
        assets()
            .iter()
            .map(|(n, _)| *n)
            .find(|n| n.starts_with("assets/") && n.ends_with(".js"))
            .expect("a built script")
    }

    #[test]
    fn the_build_is_embedded_sorted_with_an_index_that_loads_its_hashed_script() {
        let names: Vec<&str> = assets().iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let index = String::from_utf8(find("index.html").unwrap().1.to_vec()).unwrap();
        assert!(index.contains(&format!("/app/{}", hashed_script())), "{index}");
        assert!(names.iter().any(|n| n.starts_with("assets/") && n.ends_with(".css")), "{names:?}");
    }

    #[tokio::test]
    async fn without_the_console_password_a_browser_is_asked_for_it() {
        for auth in [None, Some(basic("vt:wrong").as_str()), Some(basic("admin:right").as_str()), Some("Bearer right")]
        {
            let (status, headers, body) = get("/app/", auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"vt\", charset=\"UTF-8\"");
            assert!(String::from_utf8(body).unwrap().contains("console-password"));
        }
        let (status, ..) = get(&format!("/app/{}", hashed_script()), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn index_for_app_routes_hashed_assets_immutable_missing_assets_404() {
        let auth = basic("vt:right");
        let auth = Some(auth.as_str());
        for path in ["/app/", "/app/workspaces", "/app/orgs/acme/apps/web/envs/prod"] {
            let (status, headers, body) = get(path, auth).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(body, find("index.html").unwrap().1);
        }
        let (status, headers, body) = get(&format!("/app/{}", hashed_script()), auth).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
        assert_eq!(body, find(hashed_script()).unwrap().1);
        let (status, headers, _) = get("/app/assets/index-gone.js", auth).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let (status, headers, _) = get("/app", auth).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/app/");
    }

    #[tokio::test]
    async fn only_get_and_head() {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/app/")
            .header(header::AUTHORIZATION, basic("vt:right"))
            .body(Body::empty())
            .unwrap();
        let resp = app().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("assets/a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("noextension"), "application/octet-stream");
    }
}
