//! Route tables: what the control plane feeds to the ingress.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How a listener port picks its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TLS passthrough, routed by the SNI host name of the ClientHello.
    Tls,
    /// Raw TCP, routed by listen port alone.
    Tcp,
}

/// One backend of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub addr: SocketAddr,
    pub healthy: bool,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Stable identifier; metrics are labelled with it.
    pub id: String,
    pub protocol: Protocol,
    /// Required for `Tls` (matched case-insensitively against SNI), absent
    /// for `Tcp`.
    #[serde(default)]
    pub hostname: Option<String>,
    pub listen_port: u16,
    /// Send a PROXY protocol v2 header with the real client address first.
    #[serde(default)]
    pub proxy_protocol: bool,
    pub backends: Vec<Backend>,
}

/// A complete set of routes, applied as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Opaque version (e.g. the control plane's change-stream cursor) that
    /// produced this table; persisted and exported as a metric.
    #[serde(default)]
    pub version: u64,
    pub routes: Vec<Route>,
}

/// Why a table was refused. A refused table changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    DuplicateId(String),
    EmptyId,
    TlsWithoutHostname(String),
    TcpWithHostname(String),
    InvalidHostname(String),
    /// Port used by both TLS and TCP routes, or by two TCP routes.
    PortConflict(u16),
    /// Two TLS routes for the same host name on the same port.
    DuplicateHostname {
        port: u16,
        hostname: String,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::DuplicateId(id) => write!(f, "duplicate route id {id:?}"),
            TableError::EmptyId => write!(f, "empty route id"),
            TableError::TlsWithoutHostname(id) => write!(f, "tls route {id:?} has no hostname"),
            TableError::TcpWithHostname(id) => write!(f, "tcp route {id:?} has a hostname"),
            TableError::InvalidHostname(h) => write!(f, "invalid hostname {h:?}"),
            TableError::PortConflict(p) => write!(f, "conflicting routes on port {p}"),
            TableError::DuplicateHostname { port, hostname } => {
                write!(f, "two routes for {hostname:?} on port {port}")
            }
        }
    }
}

impl std::error::Error for TableError {}

impl RouteTable {
    /// Check the table is consistent; see [`TableError`].
    pub fn validate(&self) -> Result<(), TableError> {
        let mut ids = BTreeSet::new();
        let mut ports: HashMap<u16, Protocol> = HashMap::new();
        let mut hosts = BTreeSet::new();
        for r in &self.routes {
            if r.id.is_empty() {
                return Err(TableError::EmptyId);
            }
            if !ids.insert(r.id.as_str()) {
                return Err(TableError::DuplicateId(r.id.clone()));
            }
            match (r.protocol, &r.hostname) {
                (Protocol::Tls, None) => return Err(TableError::TlsWithoutHostname(r.id.clone())),
                (Protocol::Tcp, Some(_)) => return Err(TableError::TcpWithHostname(r.id.clone())),
                (Protocol::Tls, Some(h)) => {
                    let norm = crate::sni::normalize_hostname(h.as_bytes())
                        .ok_or_else(|| TableError::InvalidHostname(h.clone()))?;
                    if !hosts.insert((r.listen_port, norm.clone())) {
                        return Err(TableError::DuplicateHostname { port: r.listen_port, hostname: norm });
                    }
                }
                (Protocol::Tcp, None) => {}
            }
            match ports.insert(r.listen_port, r.protocol) {
                None => {}
                Some(Protocol::Tls) if r.protocol == Protocol::Tls => {}
                Some(_) => return Err(TableError::PortConflict(r.listen_port)),
            }
        }
        Ok(())
    }

    /// The set of ports the table listens on.
    pub fn ports(&self) -> BTreeSet<u16> {
        self.routes.iter().map(|r| r.listen_port).collect()
    }

    /// Read a table persisted by [`RouteTable::save`]. `Ok(None)` if the file
    /// does not exist.
    pub fn load(path: &Path) -> io::Result<Option<RouteTable>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let table: RouteTable =
            serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some(table))
    }

    /// Persist atomically: write a temporary file beside `path`, fsync it,
    /// rename it over `path`, fsync the directory. A crash leaves either the
    /// old or the new table, never a torn one.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "state path has no file name"))?;
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(id: &str, host: &str, port: u16) -> Route {
        Route {
            id: id.into(),
            protocol: Protocol::Tls,
            hostname: Some(host.into()),
            listen_port: port,
            proxy_protocol: false,
            backends: vec![Backend { addr: "127.0.0.1:1".parse().unwrap(), healthy: true }],
        }
    }

    fn tcp(id: &str, port: u16) -> Route {
        Route { protocol: Protocol::Tcp, hostname: None, ..tls(id, "x", port) }
    }

    #[test]
    fn validation() {
        let ok =
            RouteTable { version: 1, routes: vec![tls("a", "a.test", 443), tls("b", "b.test", 443), tcp("c", 5432)] };
        assert_eq!(ok.validate(), Ok(()));
        let t = RouteTable { version: 1, routes: vec![tls("a", "a.test", 443), tls("a", "b.test", 443)] };
        assert_eq!(t.validate(), Err(TableError::DuplicateId("a".into())));
        let t = RouteTable { version: 1, routes: vec![tls("a", "A.test", 443), tls("b", "a.TEST", 443)] };
        assert!(matches!(t.validate(), Err(TableError::DuplicateHostname { port: 443, .. })));
        let t = RouteTable { version: 1, routes: vec![tls("a", "a.test", 443), tcp("b", 443)] };
        assert_eq!(t.validate(), Err(TableError::PortConflict(443)));
        let t = RouteTable { version: 1, routes: vec![tcp("a", 1), tcp("b", 1)] };
        assert_eq!(t.validate(), Err(TableError::PortConflict(1)));
        let t = RouteTable { version: 1, routes: vec![tls("a", "bad host", 1)] };
        assert!(matches!(t.validate(), Err(TableError::InvalidHostname(_))));
        let mut r = tcp("a", 1);
        r.hostname = Some("x.test".into());
        assert!(matches!(RouteTable { version: 0, routes: vec![r] }.validate(), Err(TableError::TcpWithHostname(_))));
    }

    #[test]
    fn save_load_roundtrip() {
        let dir = std::env::temp_dir().join(format!("vt-ingress-route-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.json");
        assert_eq!(RouteTable::load(&path).unwrap(), None);
        let t = RouteTable { version: 7, routes: vec![tls("a", "a.test", 443), tcp("c", 5432)] };
        t.save(&path).unwrap();
        assert_eq!(RouteTable::load(&path).unwrap(), Some(t.clone()));
        let json = std::fs::read_to_string(&path).unwrap();
        assert!(json.contains("\"protocol\": \"tls\""), "{json}");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(RouteTable::load(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
