//! What the ruleset needs from the host: IP forwarding switched on (for egress and the mesh), and the
//! prefixes of the host's own interfaces (its LAN, which no instance reaches).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnet::IpNet;

/// The sysctls under a `/proc/sys` (another root in tests).
#[derive(Debug, Clone)]
pub struct Sysctls {
    root: PathBuf,
}

impl Default for Sysctls {
    fn default() -> Self {
        Sysctls { root: PathBuf::from("/proc/sys") }
    }
}

/// Forwarding is off and could not be switched on.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot enable {what} (`{key}`): {source}; instances need it to reach the internet, and other nodes to \
     reach them through the mesh. Enable it as root (`sysctl -w {key}=1`, and in /etc/sysctl.d/ to keep it \
     across boots; in a container, on its host), or start `vt server --no-egress` (and, on a node of several, \
     `--no-mesh`) for instances without either"
)]
pub struct ForwardingError {
    pub what: &'static str,
    pub key: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl Sysctls {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Sysctls { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key.replace('.', "/"))
    }

    /// A sysctl's value (`net.ipv4.ip_forward`); `None` when unreadable.
    pub fn get(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.path(key)).ok().map(|s| s.trim().to_owned())
    }

    pub fn set(&self, key: &str, value: &str) -> std::io::Result<()> {
        std::fs::write(self.path(key), value)
    }

    /// Switch IPv4 and IPv6 forwarding on where they are off; returns the keys it changed.
    /// They stay on after vt stops (as with any router; docs/network.md). IPv6 forwarding
    /// makes interfaces ignore router advertisements unless `accept_ra` is 2, so an uplink
    /// configured by SLAAC (a default route from an RA) gets `accept_ra=2` first.
    pub fn enable_forwarding(&self) -> Result<Vec<&'static str>, ForwardingError> {
        let mut changed = vec![];
        for (what, key) in
            [("IPv4 forwarding", "net.ipv4.ip_forward"), ("IPv6 forwarding", "net.ipv6.conf.all.forwarding")]
        {
            if self.get(key).as_deref() == Some("1") {
                continue;
            }
            if key.starts_with("net.ipv6") {
                for dev in slaac_uplinks() {
                    let ra = format!("net.ipv6.conf.{dev}.accept_ra");
                    if self.get(&ra).as_deref() == Some("1") {
                        let _ = self.set(&ra, "2");
                        tracing::info!(dev, "accept_ra=2 on an uplink configured by router advertisements, before IPv6 forwarding goes on");
                    }
                }
            }
            self.set(key, "1").map_err(|source| ForwardingError { what, key, source })?;
            changed.push(key);
        }
        Ok(changed)
    }
}

/// Interfaces whose default IPv6 route came from a router advertisement.
fn slaac_uplinks() -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Route {
        dev: Option<String>,
        protocol: Option<String>,
    }
    let routes: Vec<Route> = ip_json(&["-6", "route", "show", "default"]).unwrap_or_default();
    routes.into_iter().filter(|r| r.protocol.as_deref() == Some("ra")).filter_map(|r| r.dev).collect()
}

fn ip_json<T: serde::de::DeserializeOwned>(args: &[&str]) -> Option<T> {
    let out = Command::new("ip").arg("-j").args(args).stdin(Stdio::null()).output().ok()?;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// The prefixes of the host's interfaces (global and site scope), loopback and the
/// interfaces `skip` says are vt's (its taps) left out: the host's LAN.
pub fn host_lan(skip: impl Fn(&str) -> bool) -> Vec<IpNet> {
    #[derive(serde::Deserialize)]
    struct Link {
        ifname: String,
        #[serde(default)]
        addr_info: Vec<Addr>,
    }
    #[derive(serde::Deserialize)]
    struct Addr {
        local: Option<std::net::IpAddr>,
        prefixlen: Option<u8>,
        scope: Option<String>,
    }
    let links: Vec<Link> = ip_json(&["addr", "show"]).unwrap_or_default();
    let mut nets: Vec<IpNet> = links
        .into_iter()
        .filter(|l| l.ifname != "lo" && !skip(&l.ifname))
        .flat_map(|l| l.addr_info)
        .filter(|a| matches!(a.scope.as_deref(), Some("global") | Some("site")))
        .filter_map(|a| IpNet::new(a.local?, a.prefixlen?).ok().map(|n| n.trunc()))
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

/// Whether `name` is a tap vt made (`vt` and 12 hex digits: `vt_runtime::net`).
pub fn is_vt_tap(name: &str) -> bool {
    name.len() == 14 && name.starts_with("vt") && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_is_switched_on_or_refused_with_what_to_do() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("net/ipv4")).unwrap();
        std::fs::create_dir_all(dir.join("net/ipv6/conf/all")).unwrap();
        std::fs::write(dir.join("net/ipv4/ip_forward"), "0\n").unwrap();
        std::fs::write(dir.join("net/ipv6/conf/all/forwarding"), "1\n").unwrap();
        let s = Sysctls::at(&dir);
        assert_eq!(s.enable_forwarding().unwrap(), vec!["net.ipv4.ip_forward"]);
        assert_eq!(s.get("net.ipv4.ip_forward").as_deref(), Some("1"));
        assert!(s.enable_forwarding().unwrap().is_empty(), "nothing left to change");
        // A key that cannot be written: the error says what and how.
        std::fs::remove_dir_all(dir.join("net/ipv6")).unwrap();
        let e = s.enable_forwarding().unwrap_err().to_string();
        assert!(e.contains("cannot enable IPv6 forwarding (`net.ipv6.conf.all.forwarding`)"), "{e}");
        assert!(e.contains("sysctl -w net.ipv6.conf.all.forwarding=1") && e.contains("--no-egress"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn taps_are_told_apart() {
        assert!(is_vt_tap("vt0123456789ab"));
        assert!(!is_vt_tap("vtn-node-up"));
        assert!(!is_vt_tap("vt0123456789abc"));
        assert!(!is_vt_tap("eth0"));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("vt-firewall-sysctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
