//! Health checks: whether a running instance serves. The manifest's `tcp` check connects to
//! the port; `http` sends `GET <path>` and wants a 2xx or 3xx status line. Checks go from the
//! host to the instance's address over its tap.
//!
//! [`Tracker`] is the verdict logic, pure and clock-free (the caller passes the time since
//! the entrypoint started): `pending` until the first pass; `passing` after a pass;
//! `failing` after `retries` consecutive failures, where failures inside the grace period
//! count only once the instance has passed at least once (a slow start is not a failure).
//! Before the first pass the checks run every `min(interval, 500 ms)`, so readiness is seen
//! quickly; afterwards every `interval`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vt_events::Health;
use vt_manifest::{Healthcheck, HealthcheckKind, PortRef, Process};

/// A health check with its port resolved (kept in the instance record, so a restarted agent
/// checks an adopted VM the same way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub http_path: Option<String>,
    pub port: u16,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub grace_ms: u64,
    pub retries: u32,
}

impl Probe {
    /// The process's check, `None` when it has none. A port name the process does not
    /// declare is an error (the manifest parser already refuses it; this is the backstop).
    pub fn from_manifest(process: &Process) -> Result<Option<Probe>, String> {
        let Some(hc) = &process.healthcheck else { return Ok(None) };
        let Healthcheck { kind, port, path, interval_ms, timeout_ms, grace_ms, retries } = hc;
        let port = match port {
            PortRef::Number(n) => *n,
            PortRef::Name(name) => {
                process.ports.iter().find(|p| &p.name == name).map(|p| p.port).ok_or_else(|| {
                    format!("the health check names port `{name}`, which the process does not declare")
                })?
            }
        };
        Ok(Some(Probe {
            http_path: match kind {
                HealthcheckKind::Tcp => None,
                HealthcheckKind::Http => Some(path.clone().unwrap_or_else(|| "/".into())),
            },
            port,
            interval_ms: *interval_ms,
            timeout_ms: *timeout_ms,
            grace_ms: *grace_ms,
            retries: (*retries).max(1),
        }))
    }

    pub fn describe(&self) -> String {
        match &self.http_path {
            Some(p) => format!("GET {p} on port {}", self.port),
            None => format!("TCP connect to port {}", self.port),
        }
    }

    /// One check against `ip`, bounded by the timeout.
    pub async fn check(&self, ip: std::net::IpAddr) -> Result<(), String> {
        let addr = SocketAddr::new(ip, self.port);
        let limit = Duration::from_millis(self.timeout_ms);
        match tokio::time::timeout(limit, self.check_unbounded(addr)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    async fn check_unbounded(&self, addr: SocketAddr) -> Result<(), String> {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let Some(path) = &self.http_path else { return Ok(()) };
        let host = match addr {
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
            SocketAddr::V4(a) => a.ip().to_string(),
        };
        let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: vt-agent\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        // The status line is all we need; read until the first line ends (or 1 KiB).
        let mut buf = Vec::with_capacity(128);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 1024 {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        http_status_ok(&buf)
    }
}

/// `HTTP/1.x 2xx|3xx ...` → Ok; anything else → the reason.
pub fn http_status_ok(head: &[u8]) -> Result<(), String> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim_end().to_owned();
    let mut parts = line.splitn(3, ' ');
    let (Some(proto), Some(code)) = (parts.next(), parts.next()) else {
        return Err(if line.is_empty() {
            "empty response".into()
        } else {
            format!("not an HTTP status line: {line:?}")
        });
    };
    if !proto.starts_with("HTTP/") {
        return Err(format!("not an HTTP status line: {line:?}"));
    }
    match code.parse::<u16>() {
        Ok(200..=399) => Ok(()),
        Ok(c) => Err(format!("status {c}")),
        Err(_) => Err(format!("not an HTTP status line: {line:?}")),
    }
}

/// The verdict over a sequence of check results.
#[derive(Debug, Clone)]
pub struct Tracker {
    probe: Probe,
    health: Health,
    passed_once: bool,
    failures: u32,
    last_error: Option<String>,
}

/// A change of verdict to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub health: Health,
    /// Why (for `failing`): the check, how often it failed, the last error.
    pub reason: Option<String>,
    /// True on the first pass (the instance became ready: record `healthy_ms`).
    pub first_pass: bool,
}

impl Tracker {
    pub fn new(probe: Probe) -> Self {
        Tracker { probe, health: Health::Pending, passed_once: false, failures: 0, last_error: None }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// How long to wait before the next check.
    pub fn next_delay(&self) -> Duration {
        let every = Duration::from_millis(self.probe.interval_ms);
        if self.passed_once {
            every
        } else {
            every.min(Duration::from_millis(500))
        }
    }

    /// Feed one result, `since_start` after the entrypoint started.
    pub fn observe(&mut self, result: Result<(), String>, since_start: Duration) -> Option<Change> {
        match result {
            Ok(()) => {
                self.failures = 0;
                let first_pass = !self.passed_once;
                self.passed_once = true;
                (self.health != Health::Passing).then(|| {
                    self.health = Health::Passing;
                    Change { health: Health::Passing, reason: None, first_pass }
                })
            }
            Err(e) => {
                self.last_error = Some(e);
                let in_grace = since_start < Duration::from_millis(self.probe.grace_ms);
                if in_grace && !self.passed_once {
                    return None;
                }
                self.failures += 1;
                (self.failures >= self.probe.retries && self.health != Health::Failing).then(|| {
                    self.health = Health::Failing;
                    Change {
                        health: Health::Failing,
                        reason: Some(format!(
                            "health check failing: {} failed {} time(s) in a row{}: {}",
                            self.probe.describe(),
                            self.failures,
                            if self.passed_once { "" } else { " and never passed since the start" },
                            self.last_error.as_deref().unwrap_or("")
                        )),
                        first_pass: false,
                    }
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe {
            http_path: Some("/healthz".into()),
            port: 8080,
            interval_ms: 10_000,
            timeout_ms: 2_000,
            grace_ms: 30_000,
            retries: 3,
        }
    }
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn pending_until_the_first_pass_and_grace_forgives_a_slow_start() {
        let mut t = Tracker::new(probe());
        assert_eq!(t.next_delay(), Duration::from_millis(500));
        for s in 0..29 {
            assert_eq!(t.observe(Err("refused".into()), S(s)), None, "failures in the grace period do not count");
        }
        assert_eq!(t.health(), Health::Pending);
        let c = t.observe(Ok(()), S(29)).unwrap();
        assert_eq!(c, Change { health: Health::Passing, reason: None, first_pass: true });
        assert_eq!(t.next_delay(), S(10));
        assert_eq!(t.observe(Ok(()), S(40)), None, "no change, nothing to report");
    }

    #[test]
    fn retries_consecutive_failures_make_it_failing_and_a_pass_recovers() {
        let mut t = Tracker::new(probe());
        t.observe(Ok(()), S(1));
        assert_eq!(t.observe(Err("refused".into()), S(2)), None, "after a pass, failures count even in grace");
        assert_eq!(t.observe(Err("refused".into()), S(3)), None);
        let c = t.observe(Err("connection refused".into()), S(4)).unwrap();
        assert_eq!(c.health, Health::Failing);
        assert_eq!(
            c.reason.as_deref(),
            Some("health check failing: GET /healthz on port 8080 failed 3 time(s) in a row: connection refused")
        );
        assert_eq!(t.observe(Err("x".into()), S(5)), None, "already failing");
        let c = t.observe(Ok(()), S(6)).unwrap();
        assert_eq!((c.health, c.first_pass), (Health::Passing, false));
    }

    #[test]
    fn never_passing_after_grace_fails() {
        let mut t = Tracker::new(Probe { grace_ms: 1_000, retries: 2, http_path: None, ..probe() });
        assert_eq!(t.observe(Err("refused".into()), S(0)), None);
        assert_eq!(t.observe(Err("refused".into()), S(1)), None);
        let c = t.observe(Err("refused".into()), S(2)).unwrap();
        assert!(c.reason.unwrap().contains("TCP connect to port 8080 failed 2 time(s) in a row and never passed"));
    }

    #[test]
    fn status_lines() {
        assert_eq!(http_status_ok(b"HTTP/1.1 200 OK\r\n"), Ok(()));
        assert_eq!(http_status_ok(b"HTTP/1.0 302 Found\r\nLocation: /\r\n"), Ok(()));
        assert_eq!(http_status_ok(b"HTTP/1.1 503 Service Unavailable\r\n"), Err("status 503".into()));
        assert!(http_status_ok(b"").unwrap_err().contains("empty"));
        assert!(http_status_ok(b"SSH-2.0-OpenSSH\r\n").unwrap_err().contains("not an HTTP"));
        assert!(http_status_ok(b"HTTP/1.1 abc\r\n").unwrap_err().contains("not an HTTP"));
    }

    #[tokio::test]
    async fn checks_against_real_sockets() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let n = s.read(&mut b).await.unwrap_or(0);
                let ok = String::from_utf8_lossy(&b[..n]).starts_with("GET /healthz ");
                let _ = s
                    .write_all(if ok { b"HTTP/1.1 204 No Content\r\n\r\n" } else { b"HTTP/1.1 404 Not Found\r\n\r\n" })
                    .await;
            }
        });
        let ip = "127.0.0.1".parse().unwrap();
        let p = Probe { port, ..probe() };
        assert_eq!(p.check(ip).await, Ok(()));
        assert_eq!(Probe { http_path: Some("/nope".into()), ..p.clone() }.check(ip).await, Err("status 404".into()));
        assert_eq!(Probe { http_path: None, ..p.clone() }.check(ip).await, Ok(()));
        // A closed port.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = Probe { port: closed, ..p }.check(ip).await.unwrap_err();
        assert!(e.to_lowercase().contains("refused"), "{e}");
    }
}
