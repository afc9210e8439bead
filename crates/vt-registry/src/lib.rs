//! An OCI Distribution (v2) registry: an axum [`Router`] over a content-addressed store on disk.
//!
//! [`router`] answers paths relative to `/v2` (the control plane mounts it with
//! `.nest_service("/v2", ...)`); [`app`] is the same mounted at `/v2` for standalone use.
//! See `docs/registry.md`.
//!
//! # Authorization
//!
//! Every request is put to an [`Authorizer`] before storage is touched, as (token, repository,
//! [`Access`]): the token is `Authorization: Bearer <token>`, or the password of Basic auth (any
//! user name), `None` without credentials; the repository is the one in the path (`None` for the
//! `/v2/` version check); the access is [`Access::Pull`] for GET and HEAD and [`Access::Push`]
//! for everything else, and for every request under `blobs/uploads/`. A repository name is
//! checked (`NAME_INVALID`) before the authorizer is asked, so authorizers only see valid names.
//! The per-repository rules (which tokens may pull or push what) are the authorizer's.
//!
//! # Blobs belong to repositories
//!
//! Blob bytes are stored once, but a blob is served through a repository only when it belongs to
//! it: an upload to that repository finished with it, or it was mounted into it (the manifests of
//! a repository may also be read as its blobs). A cross-repository mount
//! (`POST <name>/blobs/uploads/?mount=<digest>&from=<repo>`) links the blob only when the caller
//! may pull `from` and the blob belongs to `from`; otherwise a normal upload starts (202), which
//! tells the caller nothing about `from`. An image manifest may only reference blobs of its own
//! repository. See [`Storage`] for the layout and the migration of older stores.
//!
//! # Strict input
//!
//! Before storage is touched, a manifest reference must be a tag or a `sha256:` digest, a blob
//! reference a digest and an upload id 32 hex digits. A pushed manifest must be one JSON
//! document with no key twice ([`vt_json`]), and every descriptor in it must name a blob (image
//! manifests) or a manifest (indexes) of the repository with the size it states: no media type
//! is exempt, so foreign and non-distributable layers must be pushed like any other blob.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use vt_image::oci::{self, ImageIndex, ImageManifest, ManifestKind};
use vt_image::Digest;

mod storage;

pub use storage::{FinishError, Full, GcReport, Limits, Storage, StoredManifest, DEFAULT_UPLOAD_TTL, LAYOUT_VERSION};
use vt_ids::{cut, shown};
use vt_image::reference::{valid_repository, valid_tag};

/// Largest manifest accepted (4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;

/// What a request wants to do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read: GET and HEAD of manifests, blobs and tags (and the `/v2/` version check); also asked
    /// for the source repository of a cross-repository mount.
    Pull,
    /// Write: uploads (every method under `blobs/uploads/`), manifest PUT, and any other method.
    Push,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// No credentials, or credentials that are not valid: 401 UNAUTHORIZED with this message (and `WWW-Authenticate: Basic realm="vt"`).
    Unauthenticated(String),
    /// Valid credentials without this access: 403 DENIED with this message. Authorizers answer the same for a repository that does not exist and one the caller may not see.
    Deny(String),
}

/// A boxed future (keeps [`Authorizer`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides what a request may do. The registry asks before it touches storage, and sends the
/// messages of [`Verdict::Unauthenticated`] and [`Verdict::Deny`] to the client as they are.
/// `Err(String)` is an internal failure: the registry logs it and answers 500 without it. None
/// of these strings may contain the token.
pub trait Authorizer: Send + Sync + 'static {
    /// May `token` (`None`: no credentials were presented) do `access` to `repository` (`None`: the `/v2/` version check)?
    fn authorize<'a>(
        &'a self,
        token: Option<&'a str>,
        repository: Option<&'a str>,
        access: Access,
    ) -> BoxFuture<'a, Result<Verdict, String>>;
}

/// Accepts one fixed token for every repository and access (tests, standalone use); anything
/// else is [`Verdict::Unauthenticated`].
pub struct StaticToken(pub String);

impl Authorizer for StaticToken {
    fn authorize<'a>(
        &'a self,
        token: Option<&'a str>,
        _repository: Option<&'a str>,
        _access: Access,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        let verdict = match token {
            Some(t) if t == self.0 => Verdict::Allow,
            Some(_) => Verdict::Unauthenticated("the token is not valid: present the registry's token".into()),
            None => Verdict::Unauthenticated(
                "authentication required: `Authorization: Bearer <token>` or Basic with the token as password".into(),
            ),
        };
        Box::pin(async move { Ok(verdict) })
    }
}

struct Shared {
    storage: Storage,
    auth: Arc<dyn Authorizer>,
}

/// The registry's routes, relative to `/v2` (mount with `.nest_service("/v2", router(..))`).
pub fn router(storage: Storage, auth: Arc<dyn Authorizer>) -> Router {
    Router::new().fallback(dispatch).with_state(Arc::new(Shared { storage, auth }))
}

/// [`router`] mounted at `/v2`.
pub fn app(storage: Storage, auth: Arc<dyn Authorizer>) -> Router {
    Router::new().nest_service("/v2", router(storage, auth))
}

// ---- errors ----

/// An error in the spec's JSON shape: `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug)]
pub struct RegErr {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: serde_json::Value,
    range: Option<u64>,
}

impl RegErr {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RegErr { status, code, message: message.into(), detail: serde_json::Value::Null, range: None }
    }
    fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d;
        self
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "registry storage failed");
        Self::server_error()
    }
    fn authorizer_failed(e: &str) -> Self {
        tracing::error!(error = e, "registry authorizer failed");
        Self::server_error()
    }
    fn server_error() -> Self {
        RegErr::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "internal error; the server log has the details")
    }
    fn blob_unknown(d: &Digest) -> Self {
        RegErr::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "blob unknown to registry")
            .detail(serde_json::json!({ "digest": d.to_string() }))
    }
    fn upload_unknown() -> Self {
        RegErr::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
    }
    fn manifest_unknown(r: &str) -> Self {
        RegErr::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", "manifest unknown")
            .detail(serde_json::json!({ "reference": r }))
    }
    fn manifest_invalid(why: impl Into<String>) -> Self {
        RegErr::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", why)
    }
    fn digest_invalid(why: impl Into<String>) -> Self {
        RegErr::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", why)
    }
    fn unsupported() -> Self {
        RegErr::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "the operation is unsupported")
    }
}

impl IntoResponse for RegErr {
    fn into_response(self) -> Response {
        let mut err = serde_json::json!({ "code": self.code, "message": self.message });
        if !self.detail.is_null() {
            err["detail"] = self.detail;
        }
        let body = serde_json::to_vec(&serde_json::json!({ "errors": [err] })).unwrap_or_default();
        let mut resp = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"vt\""));
        }
        if let Some(size) = self.range {
            resp.headers_mut().insert(header::RANGE, range_value(size));
        }
        api_version(resp)
    }
}

type R = Result<Response, RegErr>;

fn api_version(mut resp: Response) -> Response {
    resp.headers_mut().insert("Docker-Distribution-API-Version", HeaderValue::from_static("registry/2.0"));
    resp
}

fn range_value(size: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("0-{}", size.saturating_sub(1))).expect("ascii")
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

// ---- dispatch ----

/// The token in `Authorization`: Bearer, or the password of Basic.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let s = String::from_utf8(raw).ok()?;
        return s.split_once(':').map(|(_, pw)| pw.to_owned());
    }
    None
}

enum Route {
    Base,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Upload(String, Option<String>),
}

impl Route {
    /// The repository in the path.
    fn name(&self) -> Option<&str> {
        match self {
            Route::Base => None,
            Route::Tags(n) | Route::Manifest(n, _) | Route::Blob(n, _) | Route::Upload(n, _) => Some(n),
        }
    }
}

/// What a request needs: `(repository, access)`. The version check and unknown endpoints need
/// only valid credentials (`None`, Pull); GET and HEAD pull; uploads and other methods push.
fn scope<'r>(route: Option<&'r Route>, method: &Method) -> (Option<&'r str>, Access) {
    match route {
        None | Some(Route::Base) => (None, Access::Pull),
        Some(r @ Route::Upload(..)) => (r.name(), Access::Push),
        Some(r) if matches!(*method, Method::GET | Method::HEAD) => (r.name(), Access::Pull),
        Some(r) => (r.name(), Access::Push),
    }
}

/// Ask the authorizer; `Ok(())` when allowed, else the error to answer with.
async fn authorize(
    auth: &dyn Authorizer,
    token: Option<&str>,
    repo: Option<&str>,
    access: Access,
) -> Result<(), RegErr> {
    match auth.authorize(token, repo, access).await {
        Ok(Verdict::Allow) => Ok(()),
        Ok(Verdict::Unauthenticated(m)) => Err(RegErr::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", m)),
        Ok(Verdict::Deny(m)) => Err(RegErr::new(StatusCode::FORBIDDEN, "DENIED", m)),
        Err(e) => Err(RegErr::authorizer_failed(&e)),
    }
}

fn route(path: &str) -> Option<Route> {
    let path = path.replace("%3A", ":").replace("%3a", ":");
    let p = path.trim_start_matches('/');
    if p.is_empty() {
        return Some(Route::Base);
    }
    let segs: Vec<&str> = p.split('/').collect();
    let n = segs.len();
    let name = |k: usize| segs[..n - k].join("/");
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Some(Route::Tags(name(2)));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let id = segs[n - 1];
        return Some(Route::Upload(name(3), (!id.is_empty()).then(|| id.to_owned())));
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Some(Route::Upload(name(2), None));
    }
    if n >= 3 && segs[n - 2] == "manifests" {
        return Some(Route::Manifest(name(2), segs[n - 1].to_owned()));
    }
    if n >= 3 && segs[n - 2] == "blobs" {
        return Some(Route::Blob(name(2), segs[n - 1].to_owned()));
    }
    None
}

async fn dispatch(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    match handle(&sh, req).await {
        Ok(r) => api_version(r),
        Err(e) => e.into_response(),
    }
}

async fn handle(sh: &Shared, req: Request) -> R {
    let method = req.method().clone();
    let route = route(req.uri().path());
    // The name first: whether it is valid depends on the request alone, so the answer reveals
    // nothing about the store, and the authorizer is only asked about valid names.
    if let Some(n) = route.as_ref().and_then(Route::name) {
        if !valid_repository(n) {
            return Err(RegErr::new(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                "invalid repository name: lowercase components of [a-z0-9] joined by `.`, `_`, `__` or `-`, \
                 separated by `/`, at most 255 bytes",
            )
            .detail(serde_json::json!({ "name": cut(n, 256) })));
        }
    }
    if let Some(Route::Manifest(_, reference)) = &route {
        check_reference(reference)?;
    }
    let token = presented_token(req.headers());
    let (repo, access) = scope(route.as_ref(), &method);
    authorize(sh.auth.as_ref(), token.as_deref(), repo, access).await?;
    let route = route.ok_or_else(|| RegErr::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such registry endpoint"))?;
    let query: HashMap<String, String> =
        serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let st = &sh.storage;
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        (Route::Tags(name), Method::GET) => tags_list(st, &name, &query),
        (Route::Blob(name, d), m @ (Method::GET | Method::HEAD)) => blob_get(st, &name, &d, m == Method::HEAD).await,
        (Route::Blob(..), _) => Err(RegErr::unsupported()),
        (Route::Upload(name, None), Method::POST) => upload_start(sh, token.as_deref(), &name, &query, req).await,
        (Route::Upload(name, Some(id)), Method::GET) => {
            let size = st.upload_size(&name, &id).map_err(RegErr::internal)?.ok_or_else(RegErr::upload_unknown)?;
            Ok(upload_accepted(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Route::Upload(name, Some(id)), Method::PATCH) => {
            let size = append(st, &name, &id, req).await?;
            Ok(upload_accepted(StatusCode::ACCEPTED, &name, &id, size))
        }
        (Route::Upload(name, Some(id)), Method::PUT) => {
            let digest = query
                .get("digest")
                .cloned()
                .ok_or_else(|| RegErr::digest_invalid("`digest` query parameter is required"))?;
            append(st, &name, &id, req).await?;
            finish(st, &name, &id, &digest).await
        }
        (Route::Upload(name, Some(id)), Method::DELETE) => {
            st.upload_size(&name, &id).map_err(RegErr::internal)?.ok_or_else(RegErr::upload_unknown)?;
            st.cancel_upload(&id).map_err(RegErr::internal)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Route::Manifest(name, r), m @ (Method::GET | Method::HEAD)) => manifest_get(st, &name, &r, m == Method::HEAD),
        (Route::Manifest(name, r), Method::PUT) => manifest_put(st, &name, &r, req).await,
        _ => Err(RegErr::unsupported()),
    }
}

/// A manifest reference is a tag or a digest; anything else (`..`, `.`, a path) is refused
/// before it can name a file.
fn check_reference(reference: &str) -> Result<(), RegErr> {
    if reference.contains(':') {
        parse_digest(reference).map(|_| ())
    } else if valid_tag(reference) {
        Ok(())
    } else {
        Err(RegErr::manifest_invalid(format!(
            "invalid reference {}: a tag (1-128 of [A-Za-z0-9_.-], not starting with `.` or `-`) or a digest (sha256:<64 lowercase hex>)",
            shown(reference)
        ))
        .detail(serde_json::json!({ "reference": cut(reference, 128) })))
    }
}

// ---- tags ----

fn tags_list(st: &Storage, name: &str, q: &HashMap<String, String>) -> R {
    let tags = st.tags(name).map_err(RegErr::internal)?.ok_or_else(|| {
        RegErr::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "repository name not known to registry")
            .detail(serde_json::json!({ "name": name }))
    })?;
    let mut tags: Vec<String> = match q.get("last") {
        Some(last) => tags.into_iter().filter(|t| t > last).collect(),
        None => tags,
    };
    if let Some(n) = q.get("n").and_then(|n| n.parse::<usize>().ok()) {
        tags.truncate(n);
    }
    Ok(axum::Json(serde_json::json!({ "name": name, "tags": tags })).into_response())
}

// ---- blobs ----

fn parse_digest(d: &str) -> Result<Digest, RegErr> {
    d.parse::<Digest>()
        .map_err(|_| RegErr::digest_invalid(format!("invalid digest {}: expected sha256:<64 lowercase hex>", shown(d))))
}

async fn blob_get(st: &Storage, name: &str, d: &str, head: bool) -> R {
    let digest = parse_digest(d)?;
    // Only the repository's own blobs: a digest learned elsewhere does not open another's.
    let size =
        st.blob_size_in(name, &digest).map_err(RegErr::internal)?.ok_or_else(|| RegErr::blob_unknown(&digest))?;
    let body = if head {
        Body::empty()
    } else {
        let f = tokio::fs::File::open(st.blob_path(&digest)).await.map_err(RegErr::internal)?;
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024))
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert("Docker-Content-Digest", hv(&digest.to_string()));
    Ok(resp)
}

fn upload_accepted(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/blobs/uploads/{id}")));
    h.insert(header::RANGE, range_value(size));
    h.insert("Docker-Upload-UUID", hv(id));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/blobs/{digest}")));
    h.insert("Docker-Content-Digest", hv(&digest.to_string()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

async fn upload_start(sh: &Shared, token: Option<&str>, name: &str, q: &HashMap<String, String>, req: Request) -> R {
    let st = &sh.storage;
    if let Some(m) = q.get("mount") {
        // Cross-repository mount; when it cannot be done, a normal upload starts (as the spec says).
        if let Ok(d) = m.parse::<Digest>() {
            if mount(sh, token, name, &d, q.get("from").map(String::as_str)).await? {
                return Ok(blob_created(name, &d));
            }
        }
    }
    let id = st.start_upload(name).map_err(RegErr::internal)?;
    if let Some(digest) = q.get("digest") {
        append(st, name, &id, req).await?;
        return finish(st, name, &id, digest).await;
    }
    Ok(upload_accepted(StatusCode::ACCEPTED, name, &id, 0))
}

/// Mount blob `digest` into `name` (the caller may push `name`): `true` when it is already a
/// blob of `name`, or when `from` is a repository the caller may pull and the blob belongs to it
/// (then it is linked into `name`). `false` tells nothing about `from`: no access, no such
/// repository and no such blob look alike.
async fn mount(
    sh: &Shared,
    token: Option<&str>,
    name: &str,
    digest: &Digest,
    from: Option<&str>,
) -> Result<bool, RegErr> {
    let st = &sh.storage;
    if st.blob_size_in(name, digest).map_err(RegErr::internal)?.is_some() {
        return Ok(true);
    }
    let Some(from) = from.filter(|f| *f != name && valid_repository(f)) else { return Ok(false) };
    match sh.auth.authorize(token, Some(from), Access::Pull).await {
        Ok(Verdict::Allow) => {}
        Ok(Verdict::Unauthenticated(_) | Verdict::Deny(_)) => return Ok(false),
        Err(e) => return Err(RegErr::authorizer_failed(&e)),
    }
    let _referencing = st.referencing();
    if st.blob_size_in(from, digest).map_err(RegErr::internal)?.is_none() {
        return Ok(false);
    }
    st.link_blob(name, digest).map_err(RegErr::internal)?;
    tracing::info!(repository = name, from, %digest, "blob mounted");
    Ok(true)
}

/// `Content-Range: <start>-<end>` (a `bytes ` prefix and a `/total` suffix are tolerated).
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else { return Ok(None) };
    let s = v.to_str().map_err(|_| ())?.trim();
    let s = s.strip_prefix("bytes ").or_else(|| s.strip_prefix("bytes=")).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or(())?;
    let (a, b) = (a.trim().parse::<u64>().map_err(|_| ())?, b.trim().parse::<u64>().map_err(|_| ())?);
    if b < a {
        return Err(());
    }
    Ok(Some((a, b)))
}

/// Append the request body to upload `id`, honouring `Content-Range`; returns the new size.
async fn append(st: &Storage, name: &str, id: &str, req: Request) -> Result<u64, RegErr> {
    let size = st.upload_size(name, id).map_err(RegErr::internal)?.ok_or_else(RegErr::upload_unknown)?;
    let range = content_range(req.headers()).map_err(|_| {
        let mut e = RegErr::new(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID", "invalid Content-Range");
        e.range = Some(size);
        e
    })?;
    if let Some((start, _)) = range {
        if start != size {
            let mut e = RegErr::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                format!("chunk starts at {start}, but the upload has {size} bytes: chunks must be sent in order"),
            );
            e.range = Some(size);
            return Err(e);
        }
    }
    // What the disk budget and the namespace's quota leave; a request that says it needs more
    // is refused before a byte is written, one that grows past it when it does.
    let announced = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let room = match room(st, name, size, announced.unwrap_or(1)).await {
        Ok(room) => room,
        Err(e) => {
            let _ = st.cancel_upload(id);
            return Err(e);
        }
    };
    let mut f = tokio::fs::OpenOptions::new().append(true).open(st.upload_data(id)).await.map_err(RegErr::internal)?;
    let mut stream = req.into_body().into_data_stream();
    let mut written = 0u64;
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) if written + c.len() as u64 > room => {
                // Say exactly what does not fit, then drop the whole upload: nothing partial stays.
                let e = room_err(st, name, size, written + c.len() as u64).await;
                drop(f);
                let _ = st.cancel_upload(id);
                return Err(e);
            }
            Ok(c) => {
                if let Err(e) = f.write_all(&c).await {
                    failed = Some(RegErr::internal(e));
                    break;
                }
                written += c.len() as u64;
            }
            Err(e) => {
                failed = Some(RegErr::new(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    format!("reading the request body failed: {e}"),
                ));
                break;
            }
        }
    }
    let flushed = f.flush().await;
    let mismatch = range.is_some_and(|(a, b)| failed.is_none() && b - a + 1 != written);
    if failed.is_some() || mismatch || flushed.is_err() {
        // Keep the upload consistent: drop what this request added.
        if let Ok(f) = tokio::fs::OpenOptions::new().write(true).open(st.upload_data(id)).await {
            let _ = f.set_len(size).await;
        }
        if mismatch {
            let mut e =
                RegErr::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", "the body's length does not match Content-Range");
            e.range = Some(size);
            return Err(e);
        }
        return Err(failed.unwrap_or_else(|| RegErr::internal("flush failed")));
    }
    Ok(size + written)
}

/// [`Storage::room`] off the async threads.
async fn room(st: &Storage, name: &str, size: u64, needed: u64) -> Result<u64, RegErr> {
    let (st, name2) = (st.clone(), name.to_owned());
    let res = tokio::task::spawn_blocking(move || st.room(&name2, size, needed)).await.map_err(RegErr::internal)?;
    res.map_err(|e| full(name, e))
}

/// The error for an upload of `size` bytes that needs `needed` more and does not get them.
async fn room_err(st: &Storage, name: &str, size: u64, needed: u64) -> RegErr {
    match room(st, name, size, needed).await {
        Err(e) => e,
        // Freed meanwhile: the client may retry.
        Ok(_) => RegErr::new(StatusCode::INSUFFICIENT_STORAGE, "DENIED", "the upload outgrew the space left; retry it"),
    }
}

fn full(name: &str, e: Full) -> RegErr {
    match e {
        Full::Disk(e) => {
            tracing::warn!(repository = name, error = %e, "registry upload refused: the disk budget is spent");
            RegErr::new(StatusCode::INSUFFICIENT_STORAGE, "DENIED", e.to_string())
        }
        Full::Quota { .. } => RegErr::new(StatusCode::FORBIDDEN, "DENIED", e.to_string()),
        Full::Stat(e) => RegErr::internal(e),
        Full::Io(e) => RegErr::internal(e),
    }
}

async fn finish(st: &Storage, name: &str, id: &str, digest: &str) -> R {
    let digest = match digest.parse::<Digest>() {
        Ok(d) => d,
        Err(_) => {
            let _ = st.cancel_upload(id);
            return Err(RegErr::digest_invalid(format!(
                "invalid digest {}: expected sha256:<64 lowercase hex>",
                shown(digest)
            )));
        }
    };
    let (st2, id2, d2) = (st.clone(), id.to_owned(), digest.clone());
    let res = tokio::task::spawn_blocking(move || st2.finish_upload(&id2, &d2)).await.map_err(RegErr::internal)?;
    match res {
        Ok(_) => Ok(blob_created(name, &digest)),
        Err(FinishError::DigestMismatch { actual }) => {
            Err(RegErr::digest_invalid(format!("provided digest {digest} does not match uploaded content ({actual})"))
                .detail(serde_json::json!({ "digest": digest.to_string(), "actual": actual.to_string() })))
        }
        Err(FinishError::Io(e)) => Err(RegErr::internal(e)),
    }
}

// ---- manifests ----

fn manifest_get(st: &Storage, name: &str, reference: &str, head: bool) -> R {
    let m =
        st.resolve(name, reference).map_err(RegErr::internal)?.ok_or_else(|| RegErr::manifest_unknown(reference))?;
    let len = m.bytes.len();
    let mut resp = Response::new(if head { Body::empty() } else { Body::from(m.bytes) });
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, hv(&m.media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("Docker-Content-Digest", hv(&m.digest.to_string()));
    Ok(resp)
}

/// Check a manifest's media type, shape and references; returns the media type to store.
///
/// The manifest must be one JSON document with no key twice. An image manifest's config and
/// layers (whatever their media type: foreign and non-distributable layers are not exempt) must
/// be blobs of repository `name` with the sizes the descriptors say; an index's manifests must
/// be manifests of `name`, with the sizes its descriptors say.
pub fn validate_manifest(st: &Storage, name: &str, content_type: Option<&str>, bytes: &[u8]) -> Result<String, RegErr> {
    let v: serde_json::Value =
        vt_json::parse(bytes).map_err(|e| RegErr::manifest_invalid(format!("manifest is not strict JSON: {e}")))?;
    let body_type = v.get("mediaType").and_then(|t| t.as_str());
    let ct = content_type.map(|c| c.split(';').next().unwrap_or(c).trim()).filter(|c| oci::manifest_kind(c).is_some());
    let media_type = match (ct, body_type) {
        (Some(c), Some(b)) if c != b => {
            return Err(RegErr::manifest_invalid(format!("Content-Type {c} differs from the manifest's mediaType {b}")))
        }
        (Some(c), _) => c.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) if v.get("manifests").is_some() => oci::media::OCI_INDEX.to_owned(),
        (None, None) => oci::media::OCI_MANIFEST.to_owned(),
    };
    let kind = oci::manifest_kind(&media_type)
        .ok_or_else(|| RegErr::manifest_invalid(format!("unsupported manifest media type {media_type}")))?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(RegErr::manifest_invalid("schemaVersion must be 2"));
    }
    let missing = |d: &Digest, what: &str| {
        RegErr::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!("manifest references {d}, which is not {what} of repository {name}: push it to {name} first"),
        )
        .detail(serde_json::json!({ "digest": d.to_string() }))
    };
    match kind {
        ManifestKind::Manifest => {
            let m: ImageManifest = serde_json::from_value(v)
                .map_err(|e| RegErr::manifest_invalid(format!("invalid image manifest: {e}")))?;
            for d in std::iter::once(&m.config).chain(&m.layers) {
                match st.blob_size_in(name, &d.digest).map_err(RegErr::internal)? {
                    None => return Err(missing(&d.digest, "a blob")),
                    Some(size) if size != d.size => {
                        return Err(RegErr::manifest_invalid(format!(
                            "descriptor of {} says {} bytes, the blob has {size}",
                            d.digest, d.size
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        ManifestKind::Index => {
            let ix: ImageIndex =
                serde_json::from_value(v).map_err(|e| RegErr::manifest_invalid(format!("invalid image index: {e}")))?;
            for d in &ix.manifests {
                if !st.has_manifest(name, &d.digest) {
                    return Err(missing(&d.digest, "a manifest"));
                }
                match st.blob_size(&d.digest).map_err(RegErr::internal)? {
                    Some(size) if size == d.size => {}
                    Some(size) => {
                        return Err(RegErr::manifest_invalid(format!(
                            "descriptor of {} says {} bytes, the manifest has {size}",
                            d.digest, d.size
                        )))
                    }
                    None => return Err(missing(&d.digest, "a manifest")),
                }
            }
        }
    }
    Ok(media_type)
}

async fn manifest_put(st: &Storage, name: &str, reference: &str, req: Request) -> R {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = axum::body::to_bytes(req.into_body(), MAX_MANIFEST).await.map_err(|_| {
        RegErr::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            format!("manifests are limited to {MAX_MANIFEST} bytes"),
        )
    })?;
    let actual = Digest::of(&bytes);
    let tag = if reference.contains(':') {
        let want = parse_digest(reference)?;
        if want != actual {
            return Err(RegErr::digest_invalid(format!("manifest hashes to {actual}, not {want}")));
        }
        None
    } else if valid_tag(reference) {
        Some(reference)
    } else {
        return Err(RegErr::manifest_invalid(format!(
            "invalid tag {}: 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            shown(reference)
        )));
    };
    let digest = {
        // No gc between the check that its blobs exist and the manifest that keeps them.
        let _referencing = st.referencing();
        let media_type = validate_manifest(st, name, content_type.as_deref(), &bytes)?;
        st.put_manifest(name, &media_type, &bytes, tag).map_err(RegErr::internal)?
    };
    tracing::info!(repository = name, reference, %digest, "manifest pushed");
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{name}/manifests/{digest}")));
    h.insert("Docker-Content-Digest", hv(&digest.to_string()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(resp)
}
