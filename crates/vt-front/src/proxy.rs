//! Requests to workspaces: forwarded with the prefix stripped and the front's own
//! credentials removed, bodies streamed both ways; WebSocket upgrades relayed byte for byte.
//!
//! Headers: `Host` kept; `X-Forwarded-For` (the client, replacing what it claimed),
//! `-Proto`, `-Host` and `-Prefix` set; hop-by-hop headers (RFC 9110 §7.6.1: `Connection`
//! and the ones it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`) dropped each way, except the upgrade itself on an upgrade.
//! The console user's `Authorization: Basic` and the origin's session cookie never reach a
//! workspace.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{StatusCode, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use vt_ids::Name;

use crate::auth::SESSION_COOKIE;
use crate::metrics::OriginMetrics;
use crate::serve::Peer;
use crate::UpstreamLimits;

/// Where a request goes in a workspace.
pub(crate) struct To<'a> {
    pub address: IpAddr,
    pub port: u16,
    /// The path after the prefix (starts with `/`).
    pub rest: &'a str,
    pub prefix: &'a str,
    pub workspace: &'a Name,
    /// The registered port asked for, or `None` for the IDE.
    pub registered: Option<u16>,
}

impl To<'_> {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    fn what(&self) -> String {
        match self.registered {
            Some(p) => format!("port {p} of workspace `{}`", self.workspace),
            None => format!("the IDE of workspace `{}`", self.workspace),
        }
    }
}

/// Why a workspace did not answer.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// Nothing accepted the connection.
    Connect(String),
    /// No response within the response timeout.
    Timeout(Duration),
    /// The connection broke, or the answer was not HTTP.
    Upstream(String),
}

impl ProxyError {
    pub(crate) fn page(&self, to: &To<'_>) -> Response {
        match self {
            ProxyError::Connect(e) => {
                tracing::debug!(workspace = %to.workspace, port = to.port, error = %e, "workspace did not accept");
                let text = match to.registered {
                    Some(p) => format!(
                        "Nothing is listening on port {p} in workspace `{}` yet. Start a server on port {p} \
                         (on all addresses, not only localhost) and reload.",
                        to.workspace
                    ),
                    None => format!(
                        "The IDE of workspace `{}` is not answering yet; it may still be starting. Reload in a \
                         few seconds; `vt workspace get {}` shows its state.",
                        to.workspace, to.workspace
                    ),
                };
                crate::pages::page(StatusCode::BAD_GATEWAY, "Nothing listening", &text)
            }
            ProxyError::Timeout(after) => crate::pages::page(
                StatusCode::GATEWAY_TIMEOUT,
                "No answer",
                &format!("{} did not answer within {} s.", to.what(), after.as_secs()),
            ),
            ProxyError::Upstream(e) => {
                tracing::debug!(workspace = %to.workspace, port = to.port, error = %e, "workspace answer failed");
                crate::pages::page(
                    StatusCode::BAD_GATEWAY,
                    "Bad answer",
                    &format!("The connection to {} failed before it answered.", to.what()),
                )
            }
        }
    }
}

pub(crate) struct Proxy {
    client: Client<HttpConnector, Body>,
    limits: UpstreamLimits,
}

impl Proxy {
    pub(crate) fn new(limits: UpstreamLimits) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Proxy { client, limits }
    }

    /// Forward a request (not an upgrade) and stream the answer back.
    pub(crate) async fn forward(&self, req: Request, to: &To<'_>, peer: Option<Peer>) -> Result<Response, ProxyError> {
        let (parts, body) = req.into_parts();
        let up = upstream_request(parts, body, to, peer, false)?;
        let resp = match tokio::time::timeout(self.limits.response_timeout, self.client.request(up)).await {
            Err(_) => return Err(ProxyError::Timeout(self.limits.response_timeout)),
            Ok(Err(e)) if e.is_connect() => return Err(ProxyError::Connect(error_chain(&e))),
            Ok(Err(e)) => return Err(ProxyError::Upstream(error_chain(&e))),
            Ok(Ok(resp)) => resp,
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// Relay an upgrade: the request goes to the workspace on a connection of its own; when
    /// it answers 101, both connections are spliced until either side closes.
    pub(crate) async fn upgrade(
        &self,
        mut req: Request,
        to: &To<'_>,
        peer: Option<Peer>,
        metrics: &std::sync::Arc<OriginMetrics>,
    ) -> Result<Response, ProxyError> {
        let client_side = hyper::upgrade::on(&mut req);
        let stream = match tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(to.addr())).await {
            Err(_) => return Err(ProxyError::Connect("connect timed out".into())),
            Ok(Err(e)) => return Err(ProxyError::Connect(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Upstream(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upgraded connection to a workspace ended with an error");
            }
        });
        let (parts, body) = req.into_parts();
        let up = upstream_request(parts, body, to, peer, true)?;
        let mut resp = match tokio::time::timeout(self.limits.response_timeout, sender.send_request(up)).await {
            Err(_) => return Err(ProxyError::Timeout(self.limits.response_timeout)),
            Ok(Err(e)) => return Err(ProxyError::Upstream(error_chain(&e))),
            Ok(Ok(resp)) => resp,
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers, false);
            return Ok(Response::from_parts(parts, Body::new(body)));
        }
        let upstream_side = hyper::upgrade::on(&mut resp);
        let metrics = metrics.clone();
        let workspace = to.workspace.clone();
        tokio::spawn(async move {
            let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(%workspace, error = %e, "upgrade did not complete");
                    return;
                }
            };
            match splice(client, upstream).await {
                Ok((to_upstream, to_client)) => metrics.upgraded_bytes(to_upstream, to_client),
                Err(e) => tracing::debug!(%workspace, error = %e, "upgraded connection ended with an error"),
            }
        });
        let (mut parts, _) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        Ok(Response::from_parts(parts, Body::empty()))
    }
}

/// Relay an upgraded connection both ways until either side closes: (bytes to the upstream,
/// bytes to the client). A side that is a plain TCP connection (the upstream always; the
/// client without TLS) is taken out of hyper's wrapper and relayed as the socket itself, the
/// bytes hyper had read past the upgrade's head sent on first.
async fn splice(client: Upgraded, upstream: Upgraded) -> std::io::Result<(u64, u64)> {
    type Plain = TokioIo<TcpStream>;
    match (client.downcast::<Plain>(), upstream.downcast::<Plain>()) {
        (Ok(c), Ok(u)) => relay(c.io.into_inner(), c.read_buf, u.io.into_inner(), u.read_buf).await,
        (Ok(c), Err(u)) => relay(c.io.into_inner(), c.read_buf, TokioIo::new(u), Bytes::new()).await,
        (Err(c), Ok(u)) => relay(TokioIo::new(c), Bytes::new(), u.io.into_inner(), u.read_buf).await,
        (Err(c), Err(u)) => relay(TokioIo::new(c), Bytes::new(), TokioIo::new(u), Bytes::new()).await,
    }
}

/// `a_read` and `b_read`: what was already read from `a` and `b`, owed to the other side.
async fn relay<A, B>(mut a: A, a_read: Bytes, mut b: B, b_read: Bytes) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    b.write_all(&a_read).await?;
    a.write_all(&b_read).await?;
    let (to_b, to_a) = tokio::io::copy_bidirectional(&mut a, &mut b).await?;
    Ok((to_b + a_read.len() as u64, to_a + b_read.len() as u64))
}

/// The request a workspace gets: the client's, its headers moved over and rewritten.
fn upstream_request(
    parts: hyper::http::request::Parts,
    body: Body,
    to: &To<'_>,
    peer: Option<Peer>,
    upgrade: bool,
) -> Result<hyper::Request<Body>, ProxyError> {
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{}?{q}", to.rest),
        None => to.rest.to_owned(),
    };
    let uri = if upgrade {
        // A request on a connection of its own: origin form.
        path_and_query.parse::<hyper::Uri>()
    } else {
        format!("http://{}{path_and_query}", to.addr()).parse::<hyper::Uri>()
    }
    .map_err(|e| ProxyError::Upstream(format!("cannot make the upstream URI: {e}")))?;
    let mut headers = parts.headers;
    let host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut headers, upgrade);
    strip_credentials(&mut headers);
    let tls = peer.is_some_and(|p| p.tls);
    if let Some(peer) = peer {
        set(&mut headers, "x-forwarded-for", &peer.addr.ip().to_string());
    }
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    headers.insert(HeaderName::from_static("x-forwarded-proto"), proto);
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    set(&mut headers, "x-forwarded-prefix", to.prefix);
    if !headers.contains_key(header::HOST) {
        set(&mut headers, "host", &to.addr().to_string());
    }
    let mut up = hyper::Request::new(body);
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = headers;
    Ok(up)
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Drop hop-by-hop headers; on an upgrade keep `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && *n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    let kept_upgrade = upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    if let Some(u) = kept_upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Remove basic auth (the console user's, or what would pass for it) and the origin's
/// session cookie. `Cookie` headers without that cookie are left as they are.
fn strip_credentials(headers: &mut HeaderMap) {
    if crate::auth::is_basic(headers) {
        headers.remove(header::AUTHORIZATION);
    }
    if crate::auth::cookies(headers, SESSION_COOKIE).next().is_none() {
        return;
    }
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').is_none_or(|(n, _)| n != SESSION_COOKIE))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !cookies.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// Whether a request asks for a WebSocket (or other) upgrade.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// An upgrade from a page of another origin is refused (cross-site WebSocket hijacking):
/// its `Origin` must be this origin (the scheme it was reached with and its `Host`). A
/// request without `Origin` (not from a browser) passes.
pub(crate) fn check_origin(headers: &HeaderMap, tls: bool) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let expected = format!("{}://{host}", if tls { "https" } else { "http" });
    match origin.to_str() {
        Ok(o) if o.eq_ignore_ascii_case(&expected) => Ok(()),
        Ok(o) => Err(format!(
            "A page of {} may not open a WebSocket to {expected}; open the workspace on its own origin.",
            vt_ids::shown(o)
        )),
        Err(_) => Err("The `Origin` header is not text.".into()),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        let mut h = headers(&[("connection", "Upgrade, x-private"), ("x-private", "1"), ("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(h.get("x-private").is_none());
    }

    #[test]
    fn credentials_never_reach_a_workspace() {
        let mut h = headers(&[
            ("authorization", "Basic dnQ6cHc="),
            ("cookie", &format!("a=1; {SESSION_COOKIE}=x.y")),
            ("cookie", "b=2"),
        ]);
        strip_credentials(&mut h);
        assert!(h.get("authorization").is_none());
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        let mut h = headers(&[("authorization", "Bearer app-token"), ("cookie", &format!("{SESSION_COOKIE}=x"))]);
        strip_credentials(&mut h);
        assert_eq!(h.get("authorization").unwrap(), "Bearer app-token", "the app's own scheme passes");
        assert!(h.get("cookie").is_none());
        let mut h = headers(&[("authorization", "Basic not-base64"), ("cookie", "a=1;b=2")]);
        strip_credentials(&mut h);
        assert!(h.get("authorization").is_none(), "no basic auth passes, well-formed or not");
        assert_eq!(h.get("cookie").unwrap(), "a=1;b=2", "cookies without the session's are left alone");
    }

    #[test]
    fn upgrades_and_origins() {
        assert!(is_upgrade(&headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")])));
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
        let h = |o: &str| headers(&[("host", "ws.example:7412"), ("origin", o)]);
        assert!(check_origin(&h("http://ws.example:7412"), false).is_ok());
        assert!(check_origin(&h("https://ws.example:7412"), true).is_ok());
        assert!(check_origin(&h("http://api.example:7411"), false).is_err());
        assert!(check_origin(&h("http://ws.example:7412"), true).is_err(), "scheme counts");
        assert!(check_origin(&headers(&[("host", "x")]), false).is_ok(), "no Origin: not a browser");
    }
}
