//! Counters and their Prometheus text exposition.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// Why a connection accepted on a listener was closed before a route was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// The first bytes were not a TLS ClientHello.
    NotTls,
    /// A ClientHello without a server name.
    NoSni,
    /// A server name no route on this port serves.
    UnknownSni,
    /// The ClientHello did not arrive within the timeout.
    Timeout,
    /// The client closed (or errored) before a ClientHello was complete.
    ClientClosed,
    /// The port has no route any more (table changed under the connection).
    NoRoute,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotTls => "not_tls",
            RejectReason::NoSni => "no_sni",
            RejectReason::UnknownSni => "unknown_sni",
            RejectReason::Timeout => "timeout",
            RejectReason::ClientClosed => "client_closed",
            RejectReason::NoRoute => "no_route",
        }
    }
}

/// Why a routed connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureReason {
    /// The route has no healthy backend.
    NoHealthyBackend,
    /// Every healthy backend refused or timed out.
    ConnectFailed,
    /// Writing the PROXY header or the peeked bytes to the backend failed.
    BackendWrite,
    /// The spliced connection ended with an I/O error.
    Io,
}

impl FailureReason {
    pub const ALL: [FailureReason; 4] =
        [FailureReason::NoHealthyBackend, FailureReason::ConnectFailed, FailureReason::BackendWrite, FailureReason::Io];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::NoHealthyBackend => "no_healthy_backend",
            FailureReason::ConnectFailed => "connect_failed",
            FailureReason::BackendWrite => "backend_write",
            FailureReason::Io => "io",
        }
    }
}

/// Counters of one route. Kept across table swaps while the route id exists.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    pub connections_total: AtomicU64,
    pub active: AtomicU64,
    /// Client to backend bytes (peeked ClientHello included), counted live.
    pub bytes_in: AtomicU64,
    /// Backend to client bytes, counted live.
    pub bytes_out: AtomicU64,
    /// Backend connect attempts that failed (each try, before failover).
    pub backend_connect_errors: AtomicU64,
    failures: [AtomicU64; 4],
}

impl RouteMetrics {
    pub fn fail(&self, reason: FailureReason) {
        self.failures[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.failures[reason as usize].load(Relaxed)
    }
}

/// All counters of an ingress.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    rejects: Mutex<BTreeMap<(u16, RejectReason), u64>>,
    pub table_version: AtomicU64,
    pub tables_applied: AtomicU64,
    /// Ports of the table in force that could not be bound.
    pub ports_failed: AtomicU64,
}

impl Metrics {
    /// Counters for route `id`, created if new.
    pub fn route(&self, id: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes.entry(id.to_owned()).or_default().clone()
    }

    /// Forget routes not in `keep` unless they still carry connections.
    pub fn retain_routes(&self, keep: &dyn Fn(&str) -> bool) {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes.retain(|id, m| keep(id) || m.active.load(Relaxed) > 0);
    }

    pub fn reject(&self, port: u16, reason: RejectReason) {
        let mut rejects = self.rejects.lock().unwrap_or_else(PoisonError::into_inner);
        *rejects.entry((port, reason)).or_default() += 1;
    }

    pub fn rejects(&self, port: u16, reason: RejectReason) -> u64 {
        let rejects = self.rejects.lock().unwrap_or_else(PoisonError::into_inner);
        rejects.get(&(port, reason)).copied().unwrap_or(0)
    }

    /// Render in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let routes: Vec<(String, Arc<RouteMetrics>)> = {
            let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            routes.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut out = String::new();
        let route_family =
            |out: &mut String, name: &str, kind: &str, help: &str, get: &dyn Fn(&RouteMetrics) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                for (id, m) in &routes {
                    let _ = writeln!(out, "{name}{{route=\"{}\"}} {}", escape(id), get(m));
                }
            };
        route_family(
            &mut out,
            "vt_ingress_route_connections_total",
            "counter",
            "Connections routed to the route.",
            &|m| m.connections_total.load(Relaxed),
        );
        route_family(
            &mut out,
            "vt_ingress_route_active_connections",
            "gauge",
            "Connections currently open on the route.",
            &|m| m.active.load(Relaxed),
        );
        route_family(&mut out, "vt_ingress_route_bytes_in_total", "counter", "Bytes from clients to backends.", &|m| {
            m.bytes_in.load(Relaxed)
        });
        route_family(
            &mut out,
            "vt_ingress_route_bytes_out_total",
            "counter",
            "Bytes from backends to clients.",
            &|m| m.bytes_out.load(Relaxed),
        );
        route_family(
            &mut out,
            "vt_ingress_route_backend_connect_errors_total",
            "counter",
            "Failed backend connect attempts, failover included.",
            &|m| m.backend_connect_errors.load(Relaxed),
        );
        let name = "vt_ingress_route_failures_total";
        let _ = writeln!(out, "# HELP {name} Routed connections that failed, by reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (id, m) in &routes {
            for reason in FailureReason::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{}\",reason=\"{}\"}} {}",
                    escape(id),
                    reason.as_str(),
                    m.failures(reason)
                );
            }
        }
        let name = "vt_ingress_listener_rejects_total";
        let _ = writeln!(out, "# HELP {name} Connections closed before routing, by listen port and reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        {
            let rejects = self.rejects.lock().unwrap_or_else(PoisonError::into_inner);
            for ((port, reason), n) in rejects.iter() {
                let _ = writeln!(out, "{name}{{port=\"{port}\",reason=\"{}\"}} {n}", reason.as_str());
            }
        }
        let name = "vt_ingress_table_version";
        let _ = writeln!(out, "# HELP {name} Version of the route table in force.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.table_version.load(Relaxed));
        let name = "vt_ingress_tables_applied_total";
        let _ = writeln!(out, "# HELP {name} Route tables applied since start.");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", self.tables_applied.load(Relaxed));
        let name = "vt_ingress_ports_failed";
        let _ = writeln!(out, "# HELP {name} Ports of the route table that could not be bound (retried).");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.ports_failed.load(Relaxed));
        out
    }
}

/// Escape a label value: backslash, double quote and line feed.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let m = Metrics::default();
        let r = m.route("web");
        r.connections_total.fetch_add(3, Relaxed);
        r.active.fetch_add(1, Relaxed);
        r.bytes_in.fetch_add(100, Relaxed);
        r.bytes_out.fetch_add(200, Relaxed);
        r.fail(FailureReason::ConnectFailed);
        m.route("we\"ird\\id\n");
        m.reject(443, RejectReason::UnknownSni);
        m.reject(443, RejectReason::UnknownSni);
        m.reject(443, RejectReason::NotTls);
        m.table_version.store(9, Relaxed);
        let text = m.render();
        assert!(text.contains("vt_ingress_route_connections_total{route=\"web\"} 3\n"), "{text}");
        assert!(text.contains("vt_ingress_route_active_connections{route=\"web\"} 1\n"));
        assert!(text.contains("vt_ingress_route_bytes_in_total{route=\"web\"} 100\n"));
        assert!(text.contains("vt_ingress_route_bytes_out_total{route=\"web\"} 200\n"));
        assert!(text.contains("vt_ingress_route_failures_total{route=\"web\",reason=\"connect_failed\"} 1\n"));
        assert!(text.contains("vt_ingress_route_failures_total{route=\"web\",reason=\"io\"} 0\n"));
        assert!(text.contains("vt_ingress_listener_rejects_total{port=\"443\",reason=\"unknown_sni\"} 2\n"));
        assert!(text.contains("vt_ingress_listener_rejects_total{port=\"443\",reason=\"not_tls\"} 1\n"));
        assert!(text.contains("vt_ingress_table_version 9\n"));
        assert!(text.contains("{route=\"we\\\"ird\\\\id\\n\"}"), "{text}");
        check_exposition(&text);
    }

    /// A small checker for the text format: every sample belongs to the
    /// family announced by the preceding TYPE line, HELP precedes TYPE, each
    /// family appears once, names and label syntax are valid, values parse.
    pub(crate) fn check_exposition(text: &str) {
        let mut families = std::collections::BTreeSet::new();
        let mut current: Option<String> = None;
        let mut last_help: Option<String> = None;
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                last_help = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap();
                let kind = it.next().unwrap();
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert_eq!(last_help.as_deref(), Some(name), "HELP before TYPE: {line}");
                assert!(families.insert(name.to_owned()), "family twice: {name}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
                current = Some(name.to_owned());
            } else {
                assert!(!line.starts_with('#'), "{line}");
                let name_end = line.find(['{', ' ']).unwrap();
                let name = &line[..name_end];
                assert_eq!(Some(name), current.as_deref(), "sample outside its family: {line}");
                assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
                let value_part = if line[name_end..].starts_with('{') {
                    // Walk labels respecting escapes.
                    let bytes = line.as_bytes();
                    let mut i = name_end + 1;
                    loop {
                        let eq = i + line[i..].find('=').unwrap();
                        let lname = &line[i..eq];
                        assert!(lname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
                        assert_eq!(bytes[eq + 1], b'"');
                        let mut j = eq + 2;
                        while bytes[j] != b'"' {
                            if bytes[j] == b'\\' {
                                assert!(matches!(bytes[j + 1], b'\\' | b'"' | b'n'), "{line}");
                                j += 1;
                            }
                            j += 1;
                        }
                        match bytes[j + 1] {
                            b',' => i = j + 2,
                            b'}' => break &line[j + 2..],
                            _ => panic!("bad label syntax: {line}"),
                        }
                    }
                } else {
                    &line[name_end..]
                };
                let v = value_part.strip_prefix(' ').expect("space before value");
                v.parse::<f64>().expect("numeric value");
            }
        }
    }
}
