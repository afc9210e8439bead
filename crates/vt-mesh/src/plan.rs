//! What to change, from what the interface holds (`wg show IFACE dump`, `ip -j route`) and
//! the list it should hold. Pure: the device code reads the state, this decides, the device
//! code applies.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ipnet::IpNet;

use crate::{Peer, KEEPALIVE_SECS};

/// A peer as the interface holds it, with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentPeer {
    pub public_key: String,
    /// `None` until set or learned.
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpNet>,
    pub keepalive_secs: Option<u16>,
    /// Unix seconds of the last handshake (0: none yet).
    pub latest_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What the interface holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Current {
    /// Base64; `None` when no key is set.
    pub private_key: Option<String>,
    pub listen_port: u16,
    pub peers: Vec<CurrentPeer>,
    /// The routes over the interface that the mesh made (protocol `static`).
    pub routes: BTreeSet<IpNet>,
    /// The endpoint each peer was last given by this process. WireGuard replaces a peer's
    /// endpoint with where its packets come from (roaming, NAT): the list's endpoint is set
    /// again only when the list changes it, not whenever the peer has roamed.
    pub configured: BTreeMap<String, SocketAddr>,
}

impl Current {
    /// `wg show IFACE dump`: the interface's line (private key, public key, port, fwmark),
    /// then one line per peer (key, preshared key, endpoint, allowed IPs, latest handshake,
    /// received, sent, keepalive), tab-separated.
    pub fn parse_dump(text: &str) -> Result<Current, String> {
        let mut lines = text.lines().filter(|l| !l.is_empty());
        let first: Vec<&str> = lines.next().ok_or("no interface line")?.split('\t').collect();
        if first.len() != 4 {
            return Err(format!("the interface line has {} fields, not 4", first.len()));
        }
        let private_key = (first[0] != "(none)").then(|| first[0].to_owned());
        let listen_port = first[2].parse().map_err(|_| format!("listen port `{}`", first[2]))?;
        let mut peers = vec![];
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 8 {
                return Err(format!("a peer line has {} fields, not 8", f.len()));
            }
            let endpoint = match f[2] {
                "(none)" => None,
                e => Some(e.parse().map_err(|_| format!("endpoint `{e}`"))?),
            };
            let mut allowed_ips = match f[3] {
                "(none)" | "" => vec![],
                a => a
                    .split(',')
                    .map(|n| n.trim().parse::<IpNet>().map(|n| n.trunc()).map_err(|_| format!("allowed IP `{n}`")))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            allowed_ips.sort();
            let number = |s: &str, what: &str| s.parse::<u64>().map_err(|_| format!("{what} `{s}`"));
            peers.push(CurrentPeer {
                public_key: f[0].to_owned(),
                endpoint,
                allowed_ips,
                keepalive_secs: match f[7] {
                    "off" | "0" => None,
                    k => Some(k.parse().map_err(|_| format!("keepalive `{k}`"))?),
                },
                latest_handshake: number(f[4], "latest handshake")?,
                rx_bytes: number(f[5], "received bytes")?,
                tx_bytes: number(f[6], "sent bytes")?,
            });
        }
        Ok(Current { private_key, listen_port, peers, routes: BTreeSet::new(), configured: BTreeMap::new() })
    }

    /// The destinations of `ip -j route show dev IFACE proto static` (either family).
    pub fn parse_routes(json: &str) -> Result<BTreeSet<IpNet>, String> {
        #[derive(serde::Deserialize)]
        struct Route {
            dst: String,
        }
        let json = if json.trim().is_empty() { "[]" } else { json };
        let routes: Vec<Route> = serde_json::from_str(json).map_err(|e| e.to_string())?;
        routes
            .into_iter()
            .map(|r| {
                let dst = if r.dst.contains('/') {
                    r.dst.clone()
                } else if r.dst.contains(':') {
                    format!("{}/128", r.dst)
                } else {
                    format!("{}/32", r.dst)
                };
                dst.parse::<IpNet>().map_err(|_| format!("route `{}`", r.dst))
            })
            .collect()
    }
}

/// One change of the peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// A peer the interface does not have.
    Add(Peer),
    /// A peer it has with another endpoint, allowed IPs or keepalive.
    Update(Peer),
    /// A peer not in the list any more (its public key).
    Remove(String),
}

/// Everything [`plan`] decided; empty when the interface already holds the list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    pub peers: Vec<PeerChange>,
    pub routes_added: Vec<IpNet>,
    pub routes_removed: Vec<IpNet>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.routes_added.is_empty() && self.routes_removed.is_empty()
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mut added, mut updated, mut removed) = (0, 0, 0);
        for c in &self.peers {
            match c {
                PeerChange::Add(_) => added += 1,
                PeerChange::Update(_) => updated += 1,
                PeerChange::Remove(_) => removed += 1,
            }
        }
        write!(
            f,
            "peers: {added} added, {updated} updated, {removed} removed; routes: {} added, {} removed",
            self.routes_added.len(),
            self.routes_removed.len()
        )
    }
}

/// The changes that make `current` hold exactly `desired` (the first of two peers with one
/// key wins). Removals come first, so an allowed IP moving between peers is never held twice.
pub fn plan(current: &Current, desired: &[Peer]) -> Changes {
    let mut want: BTreeMap<&str, &Peer> = BTreeMap::new();
    for p in desired {
        want.entry(p.public_key.as_str()).or_insert(p);
    }
    let have: BTreeMap<&str, &CurrentPeer> = current.peers.iter().map(|p| (p.public_key.as_str(), p)).collect();
    let mut changes = Changes::default();
    for key in have.keys().filter(|k| !want.contains_key(*k)) {
        changes.peers.push(PeerChange::Remove((*key).to_owned()));
    }
    for (key, p) in &want {
        match have.get(key) {
            None => changes.peers.push(PeerChange::Add((*p).clone())),
            Some(h) => {
                let mut ips = p.allowed_ips.clone();
                ips.sort();
                let moved = match current.configured.get(*key) {
                    Some(set) => *set != p.endpoint,
                    None => h.endpoint != Some(p.endpoint),
                };
                if moved || h.allowed_ips != ips || h.keepalive_secs != Some(KEEPALIVE_SECS) {
                    changes.peers.push(PeerChange::Update((*p).clone()));
                }
            }
        }
    }
    let routes: BTreeSet<IpNet> = want.values().flat_map(|p| p.allowed_ips.iter().copied()).collect();
    changes.routes_removed = current.routes.difference(&routes).copied().collect();
    changes.routes_added = routes.difference(&current.routes).copied().collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";
    const C: &str = "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA=";

    fn peer(key: &str, endpoint: &str, ips: &[&str]) -> Peer {
        Peer::parse(key, endpoint, &ips.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn dump() -> String {
        [
            format!("{A}\t{B}\t51820\toff"),
            format!("{B}\t(none)\t10.0.0.2:51820\tfd00:1:2:2::/64\t1700000000\t1024\t2048\t25"),
            format!("{C}\t(none)\t(none)\tfd00:1:2:3::/64,10.9.0.0/24\t0\t0\t0\toff"),
        ]
        .join("\n")
    }

    #[test]
    fn a_dump_is_read_whole() {
        let c = Current::parse_dump(&dump()).unwrap();
        assert_eq!((c.private_key.as_deref(), c.listen_port, c.peers.len()), (Some(A), 51820, 2));
        assert_eq!(c.peers[0].endpoint, Some("10.0.0.2:51820".parse().unwrap()));
        assert_eq!((c.peers[0].rx_bytes, c.peers[0].tx_bytes, c.peers[0].keepalive_secs), (1024, 2048, Some(25)));
        assert_eq!(c.peers[1].endpoint, None);
        assert_eq!(c.peers[1].allowed_ips, vec!["10.9.0.0/24".parse().unwrap(), "fd00:1:2:3::/64".parse().unwrap()]);
        // Truncated or foreign output is an error, never an empty interface.
        for bad in ["", "x\ty", &dump().replace("\t51820\toff", "\tport\toff"), &dump().replace("\t25", "")] {
            assert!(Current::parse_dump(bad).is_err(), "{bad:?}");
        }
        let fresh = Current::parse_dump("(none)\t(none)\t0\toff\n").unwrap();
        assert_eq!((fresh.private_key, fresh.peers.len()), (None, 0));
    }

    #[test]
    fn routes_are_read_in_either_family() {
        let r = Current::parse_routes(r#"[{"dst":"fd00:1:2:2::/64","dev":"vtmesh"},{"dst":"10.1.2.3"}]"#).unwrap();
        assert_eq!(r, ["10.1.2.3/32".parse().unwrap(), "fd00:1:2:2::/64".parse().unwrap()].into());
        assert!(Current::parse_routes("").unwrap().is_empty());
        assert!(Current::parse_routes("[{\"dst\":\"default\"}]").is_err());
    }

    #[test]
    fn the_same_list_changes_nothing() {
        let mut c = Current::parse_dump(&dump()).unwrap();
        c.peers.pop();
        c.routes = ["fd00:1:2:2::/64".parse().unwrap()].into();
        let changes = plan(&c, &[peer(B, "10.0.0.2:51820", &["fd00:1:2:2::/64"])]);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_changed_list_changes_only_what_differs() {
        let mut c = Current::parse_dump(&dump()).unwrap();
        c.routes = ["fd00:1:2:2::/64".parse().unwrap(), "fd00:1:2:3::/64".parse().unwrap()].into();
        // B moves to another port, C goes, A comes.
        let desired = [
            peer(B, "10.0.0.2:51999", &["fd00:1:2:2::/64"]),
            peer(A, "[fd00::1]:51820", &["fd00:1:2:1::/64"]),
            peer(A, "10.0.0.9:1", &["fd00:1:2:9::/64"]),
        ];
        let changes = plan(&c, &desired);
        assert_eq!(
            changes.peers,
            vec![
                PeerChange::Remove(C.into()),
                PeerChange::Add(desired[1].clone()),
                PeerChange::Update(desired[0].clone())
            ]
        );
        assert_eq!(changes.routes_added, vec!["fd00:1:2:1::/64".parse::<IpNet>().unwrap()]);
        assert_eq!(changes.routes_removed, vec!["fd00:1:2:3::/64".parse::<IpNet>().unwrap()]);
        assert_eq!(changes.to_string(), "peers: 1 added, 1 updated, 1 removed; routes: 1 added, 1 removed");
        // An empty list removes everything.
        let all = plan(&c, &[]);
        assert_eq!((all.peers.len(), all.routes_removed.len(), all.routes_added.len()), (2, 2, 0));
    }

    #[test]
    fn a_peer_that_roamed_is_left_where_it_is() {
        let mut c = Current::parse_dump(&dump()).unwrap();
        c.peers.pop();
        c.routes = ["fd00:1:2:2::/64".parse().unwrap()].into();
        // We gave B 10.0.0.2:51820; its packets now come from 203.0.113.9:40000 (NAT).
        c.peers[0].endpoint = Some("203.0.113.9:40000".parse().unwrap());
        c.configured.insert(B.into(), "10.0.0.2:51820".parse().unwrap());
        assert!(plan(&c, &[peer(B, "10.0.0.2:51820", &["fd00:1:2:2::/64"])]).is_empty());
        // The list moves it: set again.
        let moved = peer(B, "10.0.0.3:51820", &["fd00:1:2:2::/64"]);
        assert_eq!(plan(&c, std::slice::from_ref(&moved)).peers, vec![PeerChange::Update(moved)]);
        // A process that did not set it (adopted device) compares with what the interface holds.
        c.configured.clear();
        assert_eq!(plan(&c, &[peer(B, "10.0.0.2:51820", &["fd00:1:2:2::/64"])]).peers.len(), 1);
    }

    #[test]
    fn peers_from_the_control_plane_are_checked() {
        assert!(Peer::parse("short=", "10.0.0.1:1", &[]).is_err());
        assert!(Peer::parse(A, "10.0.0.1", &[]).is_err());
        assert!(Peer::parse(A, "10.0.0.1:1", &["fd00::/129".into()]).is_err());
        let p = peer(A, "[fd00::1]:51820", &["fd00:1:2:2::5/64", "10.0.0.0/8"]);
        assert_eq!(p.allowed_ips, vec!["10.0.0.0/8".parse().unwrap(), "fd00:1:2:2::/64".parse().unwrap()]);
    }
}
