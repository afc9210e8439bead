//! Who may use an origin from a browser: the console user's basic auth, the workspace
//! origin's own session cookie, and a limit on failed logins per client.
//!
//! - [`Credentials`] decides whether a user name and password are the console user's
//!   (`vt server` checks the password as the console token; `vt-front` never stores one).
//!   A verified `Authorization` value is remembered for [`VERIFIED_FOR`] (its hash only),
//!   so a browser that sends it with every request does not cost a store lookup each.
//! - [`Sessions`]: after a successful basic auth the workspace origin sets its own cookie
//!   (`HttpOnly`, `SameSite=Strict`, `Secure` under TLS, `Path=/workspace/`), an expiry
//!   and an HMAC under a key made at start and never shared with the API origin, so a
//!   WebSocket reconnect does not prompt again and no other origin's cookie is accepted.
//! - [`LoginLimiter`] ([`limit_logins`], on both origins): a client with [`MAX_FAILURES`]
//!   failed logins within [`FAILURE_WINDOW`] gets 429 (with `Retry-After`) until the window
//!   has passed, before its credentials are even looked at.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use sha2::{Digest, Sha256};

use crate::serve::Peer;

/// The console user's name.
pub const CONSOLE_USER: &str = "vt";

/// How long a verified `Authorization` value, and the credential's standing, are believed
/// without asking [`Credentials`] again: a revoked password stops working within this.
pub const VERIFIED_FOR: Duration = Duration::from_secs(5);

/// Failed logins from one client within [`FAILURE_WINDOW`] before it is refused.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// How long a workspace session cookie is valid.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The workspace origin's session cookie.
pub const SESSION_COOKIE: &str = "vt_workspace_session";

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Decides whether a user name and password may use an origin.
pub trait Credentials: Send + Sync + 'static {
    /// `Ok(true)`: they may; `Ok(false)`: wrong; `Err`: could not tell (the store is down).
    fn verify<'a>(&'a self, user: &'a str, password: &'a str) -> BoxFuture<'a, Result<bool, String>>;

    /// Whether the credential sessions were opened with still stands (the console token is
    /// not revoked). Asked at most every [`VERIFIED_FOR`]; while it is `false`, no session
    /// cookie and no remembered password lets anyone in.
    fn active(&self) -> BoxFuture<'_, Result<bool, String>>;
}

/// The user name and password of an `Authorization: Basic` header.
pub fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whether `headers` carry an `Authorization` of the `Basic` scheme, well-formed or not
/// (what [`basic`] would decode, without decoding it).
pub fn is_basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().get(..6))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"basic "))
}

/// How a request authenticated on the workspace origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// A valid session cookie of this origin.
    Session,
    /// Basic auth, verified (now or within [`VERIFIED_FOR`]): set a session cookie.
    Basic,
}

/// Why a request is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or wrong ones: 401 with a basic challenge.
    Unauthorized,
    /// The credentials could not be checked: 503.
    Unavailable(String),
}

/// The workspace origin's authentication: basic auth through [`Credentials`], remembered
/// briefly, and its own session cookies.
pub struct Gate {
    credentials: Box<dyn Credentials>,
    sessions: Sessions,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// The credential's standing, and until when it is believed.
    active: Mutex<Option<(bool, Instant)>>,
}

/// At most this many verified `Authorization` values are remembered.
const VERIFIED_MAX: usize = 1024;

impl Gate {
    pub fn new(credentials: Box<dyn Credentials>) -> Result<Gate, getrandom::Error> {
        Ok(Gate { credentials, sessions: Sessions::new()?, verified: Mutex::default(), active: Mutex::default() })
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Whether `headers` let a request in: a session cookie of this origin, or the console
    /// user's basic auth. Bearer tokens and other origins' cookies never do.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Login, Refusal> {
        let now = Instant::now();
        let remembered = self.sessions.valid_in(headers).then_some(Login::Session).or_else(|| {
            let value = headers.get(header::AUTHORIZATION)?;
            let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
            let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            verified.get(&key).is_some_and(|until| *until > now).then_some(Login::Basic)
        });
        if let Some(login) = remembered {
            if self.active(now).await? {
                return Ok(login);
            }
            self.verified.lock().unwrap_or_else(|e| e.into_inner()).clear();
            return Err(Refusal::Unauthorized);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Err(Refusal::Unauthorized) };
        let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        let Some((user, password)) = basic(headers) else { return Err(Refusal::Unauthorized) };
        if user != CONSOLE_USER {
            return Err(Refusal::Unauthorized);
        }
        match self.credentials.verify(&user, &password).await {
            Ok(true) => {
                let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if verified.len() >= VERIFIED_MAX {
                    verified.retain(|_, until| *until > now);
                    if verified.len() >= VERIFIED_MAX {
                        verified.clear();
                    }
                }
                verified.insert(key, now + VERIFIED_FOR);
                Ok(Login::Basic)
            }
            Ok(false) => Err(Refusal::Unauthorized),
            Err(e) => Err(Refusal::Unavailable(e)),
        }
    }
}

impl Gate {
    /// The credential's standing, asked again when [`VERIFIED_FOR`] has passed.
    async fn active(&self, now: Instant) -> Result<bool, Refusal> {
        if let Some((active, until)) = *self.active.lock().unwrap_or_else(|e| e.into_inner()) {
            if until > now {
                return Ok(active);
            }
        }
        let active = self.credentials.active().await.map_err(Refusal::Unavailable)?;
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = Some((active, now + VERIFIED_FOR));
        Ok(active)
    }
}

/// Session cookies of one origin: `<expiry unix seconds>.<HMAC-SHA256 of it, base64url>`
/// under a key made at start (a restart asks for the password again).
///
/// A cookie names only its expiry, so all sessions issued within one second are the same
/// value: the last `Set-Cookie` (with and without `Secure`) is kept and given again within
/// its second rather than signed anew for every response.
pub struct Sessions {
    key: [u8; 32],
    /// The last `Set-Cookie` without and with `Secure`, by the expiry it carries.
    issued: Mutex<[Option<(u64, HeaderValue)>; 2]>,
}

impl Sessions {
    pub fn new() -> Result<Sessions, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Sessions { key, issued: Mutex::default() })
    }

    fn mac(&self, expires: u64) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|e| unreachable!("any key length: {e}"));
        mac.update(SESSION_COOKIE.as_bytes());
        mac.update(b"\0");
        mac.update(expires.to_string().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session's cookie value, valid for [`SESSION_TTL`].
    pub fn issue(&self) -> String {
        self.value(unix_now() + SESSION_TTL.as_secs())
    }

    fn value(&self, expires: u64) -> String {
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.mac(expires));
        format!("{expires}.{mac}")
    }

    /// The `Set-Cookie` header of a new session.
    pub fn set_cookie(&self, secure: bool) -> HeaderValue {
        let expires = unix_now() + SESSION_TTL.as_secs();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let last = &mut issued[usize::from(secure)];
        if let Some((_, value)) = last.as_ref().filter(|(at, _)| *at == expires) {
            return value.clone();
        }
        let flag = if secure { "; Secure" } else { "" };
        let value = format!(
            "{SESSION_COOKIE}={}; Path=/workspace/; Max-Age={}; HttpOnly; SameSite=Strict{flag}",
            self.value(expires),
            SESSION_TTL.as_secs()
        );
        let value = HeaderValue::from_str(&value).unwrap_or_else(|e| unreachable!("a cookie of visible ASCII: {e}"));
        *last = Some((expires, value.clone()));
        value
    }

    /// Whether `value` is a session of this origin that has not expired.
    pub fn valid(&self, value: &str) -> bool {
        let Some((expires, mac)) = value.split_once('.') else { return false };
        let Ok(expires) = expires.parse::<u64>() else { return false };
        let Ok(mac) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac) else { return false };
        let expected = self.mac(expires);
        expires > unix_now() && subtle::ConstantTimeEq::ct_eq(expected.as_slice(), mac.as_slice()).into()
    }

    /// Whether a `Cookie` header of `headers` holds a valid session.
    pub fn valid_in(&self, headers: &HeaderMap) -> bool {
        cookies(headers, SESSION_COOKIE).any(|v| self.valid(v))
    }
}

/// The values of the cookies named `name` in `headers`.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| pair.trim().split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Failed logins per client address, in a fixed window. A login is a request with basic
/// auth (well-formed or not); it failed when it was answered 401.
pub struct LoginLimiter {
    clients: Mutex<HashMap<IpAddr, Failures>>,
    refusal: fn(Duration) -> Response,
    /// Count only 401s marked [`LoginFailed`] (the workspace origin: a workspace's own 401
    /// is not a failed login of ours).
    marked_only: bool,
}

/// Marks a 401 as a failed login of the origin itself (a response extension).
#[derive(Debug, Clone, Copy)]
pub struct LoginFailed;

impl Default for LoginLimiter {
    /// The workspace origin's: refusals are a page ([`crate::pages::too_many_logins`]), and
    /// only its own 401s count.
    fn default() -> Self {
        LoginLimiter::new(crate::pages::too_many_logins).marked_only()
    }
}

struct Failures {
    since: Instant,
    count: u32,
}

/// At most this many clients are tracked; past it, expired windows are dropped first.
const TRACKED_MAX: usize = 16 * 1024;

impl LoginLimiter {
    /// A limiter that answers a refused login with `refusal(wait)`.
    pub fn new(refusal: fn(Duration) -> Response) -> LoginLimiter {
        LoginLimiter { clients: Mutex::default(), refusal, marked_only: false }
    }

    /// Count only the 401s marked [`LoginFailed`].
    pub fn marked_only(mut self) -> LoginLimiter {
        self.marked_only = true;
        self
    }

    /// `Some(wait)`: `client` failed too often; refuse it for `wait`.
    pub fn refused(&self, client: IpAddr) -> Option<Duration> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let f = clients.get(&client)?;
        let passed = f.since.elapsed();
        (f.count >= MAX_FAILURES && passed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - passed)
    }

    /// Count a failed login of `client`.
    pub fn failed(&self, client: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if clients.len() >= TRACKED_MAX && !clients.contains_key(&client) {
            clients.retain(|_, f| now.duration_since(f.since) < FAILURE_WINDOW);
            if clients.len() >= TRACKED_MAX {
                return;
            }
        }
        let f = clients.entry(client).or_insert(Failures { since: now, count: 0 });
        if now.duration_since(f.since) >= FAILURE_WINDOW {
            *f = Failures { since: now, count: 0 };
        }
        f.count += 1;
    }
}

/// Middleware: refuse a login from a client that failed too often (before its credentials
/// are looked at), and count the logins that fail.
pub async fn limit_logins(State(limiter): State<Arc<LoginLimiter>>, req: Request, next: Next) -> Response {
    let client = req.extensions().get::<Peer>().map(|p| p.addr.ip()).filter(|_| is_basic(req.headers()));
    let Some(client) = client else { return next.run(req).await };
    if let Some(wait) = limiter.refused(client) {
        return (limiter.refusal)(wait);
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED
        && (!limiter.marked_only || resp.extensions().get::<LoginFailed>().is_some())
    {
        limiter.failed(client);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn parses_basic() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("vt:pa:ss");
        assert_eq!(basic(&headers(&[("authorization", &format!("Basic {b64}"))])), Some(("vt".into(), "pa:ss".into())));
        assert_eq!(basic(&headers(&[("authorization", &format!("basic {b64}"))])).map(|b| b.0), Some("vt".into()));
        assert_eq!(basic(&headers(&[("authorization", "Bearer vt_x")])), None);
        assert_eq!(basic(&headers(&[("authorization", "Basic !!!")])), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("vt");
        assert_eq!(basic(&headers(&[("authorization", &format!("Basic {no_colon}"))])), None);
        for (value, is) in [
            (format!("Basic {b64}"), true),
            (format!("bASIC {b64}"), true),
            ("Basic !!!".into(), true),
            ("Basic".into(), false),
            ("Basicx".into(), false),
            ("Bearer vt_x".into(), false),
        ] {
            assert_eq!(is_basic(&headers(&[("authorization", &value)])), is, "{value}");
        }
        assert!(!is_basic(&headers(&[])));
    }

    #[test]
    fn sessions_are_this_origins_own() {
        let (a, b) = (Sessions::new().unwrap(), Sessions::new().unwrap());
        let v = a.issue();
        assert!(a.valid(&v));
        assert!(!b.valid(&v), "another key's cookie");
        let (exp, mac) = v.split_once('.').unwrap();
        let later = exp.parse::<u64>().unwrap() + 1;
        assert!(!a.valid(&format!("{later}.{mac}")), "an expiry it did not sign");
        assert!(!a.valid(&format!("1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(a.mac(1)))));
        for bad in ["", ".", "x.y", "1", "99999999999999999999999.AAAA"] {
            assert!(!a.valid(bad), "{bad}");
        }
        let h = headers(&[("cookie", &format!("other=1; {SESSION_COOKIE}={v}; x=y"))]);
        assert!(a.valid_in(&h));
        let set = a.set_cookie(true);
        let set = set.to_str().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.ends_with("; Secure"), "{set}");
        assert!(!a.set_cookie(false).to_str().unwrap().contains("Secure"));
        // Within a second the same cookie is given again; each is valid.
        let (x, y) = (a.set_cookie(false), a.set_cookie(false));
        let value =
            |h: &HeaderValue| h.to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
        assert!(a.valid(&value(&x)) && a.valid(&value(&y)));
        assert!(x == y || value(&x).split('.').next() != value(&y).split('.').next(), "only a new second changes it");
    }

    #[test]
    fn limits_failed_logins() {
        let l = LoginLimiter::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(ip);
        }
        assert_eq!(l.refused(ip), None);
        l.failed(ip);
        assert!(l.refused(ip).is_some_and(|w| w <= FAILURE_WINDOW));
        assert_eq!(l.refused([192, 0, 2, 2].into()), None, "other clients are not refused");
    }
}
