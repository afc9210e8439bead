//! The node's side of the mesh (docs/nodes.md, "The mesh"): the peer list the control plane
//! sends with the node's instances (`NodeInstances.mesh`), applied to the node's WireGuard
//! interface through [`vt_mesh::Wireguard`].
//!
//! [`NodeMesh::run`] applies the latest list at every change and every few seconds: each pass
//! makes sure the interface exists (a boringtun that died is started again, and its peers set
//! again) and sets the peers exactly to the list. A pass that changes nothing runs `wg show`
//! and `ip` and nothing else.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vt_mesh::{Changes, Ensured, Interface, MeshError, Peer, Wireguard};

/// The mesh of a node that joined a control plane (`vt server --role agent --join`, or an
/// edge-only node's, `--role edge --join`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// The WireGuard interface's name.
    pub interface: String,
    /// The node's private key (`<data-dir>/wireguard.key`).
    pub private_key: PathBuf,
    /// The UDP port it listens on (registered as the node's `wireguard_port`).
    pub listen_port: u16,
    /// Where the other nodes reach it (registered as the node's `address`).
    pub address: IpAddr,
    /// Where boringtun's output goes, when it runs (else it is discarded).
    pub log: Option<PathBuf>,
}

/// The default interface name.
pub const INTERFACE: &str = "vtmesh";

/// How often the interface is checked (and its device started again) without a change.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub ensured: Ensured,
    pub changes: Changes,
}

/// A node's mesh: the interface, the latest peer list, and the pass that applies one to the other.
pub struct NodeMesh {
    wg: Arc<dyn Wireguard>,
    iface: Mutex<Interface>,
    /// The latest list from the control plane (`None` until the first one).
    desired: watch::Sender<Option<Vec<Peer>>>,
    last_error: Mutex<Option<String>>,
}

impl NodeMesh {
    pub fn new(wg: Arc<dyn Wireguard>, cfg: &MeshConfig) -> Arc<NodeMesh> {
        Arc::new(NodeMesh {
            wg,
            iface: Mutex::new(Interface {
                name: cfg.interface.clone(),
                private_key: cfg.private_key.clone(),
                listen_port: cfg.listen_port,
                address: None,
            }),
            desired: watch::Sender::new(None),
            last_error: Mutex::new(None),
        })
    }

    /// The mesh of `cfg` through the host's tools (`wg`, and the kernel's WireGuard or
    /// boringtun), checked now: a node meant to mesh that cannot does not start, and the
    /// error says what to install. The agent's and an edge-only node's (`vt server --role
    /// edge --join`) alike.
    pub fn with_tools(cfg: &MeshConfig) -> Result<Arc<NodeMesh>, String> {
        vt_mesh::check_name(&cfg.interface).map_err(|e| e.to_string())?;
        let mut wg = vt_mesh::WgTools::probe()
            .and_then(|wg| wg.check().map(|_| wg))
            .map_err(|e| format!("the node cannot join the mesh: {e}"))?;
        if let Some(log) = &cfg.log {
            wg = wg.log_to(log.clone());
        }
        Ok(NodeMesh::new(Arc::new(wg), cfg))
    }

    /// The node's /64: its overlay address is `<subnet>::1/128` (the gateway address its taps
    /// have too), inside the prefix every peer routes to it.
    pub fn set_subnet(&self, subnet: Option<&str>) {
        let address = subnet.and_then(|s| s.parse::<ipnet::Ipv6Net>().ok()).map(|n| {
            let mut seg = n.network().segments();
            seg[7] = 1;
            ipnet::Ipv6Net::from(std::net::Ipv6Addr::from(seg))
        });
        let mut iface = self.iface.lock().unwrap_or_else(|p| p.into_inner());
        if iface.address != address {
            iface.address = address;
            // The next pass sets it.
            self.desired.send_modify(|_| {});
        }
    }

    /// The control plane's list, as sent. A peer that does not parse is left out (and said so);
    /// the others are applied.
    pub fn follow(&self, peers: &[vt_api::MeshPeer]) {
        let mut list = vec![];
        for p in peers {
            match Peer::parse(&p.public_key, &p.endpoint, &p.allowed_ips) {
                Ok(peer) => list.push(peer),
                Err(e) => tracing::warn!(node = %p.name, error = %e, "a mesh peer is left out"),
            }
        }
        self.desired.send_if_modified(|d| {
            let changed = d.as_ref() != Some(&list);
            *d = Some(list);
            changed
        });
    }

    /// One pass: the interface exists as configured, its peers are the latest list. Before the
    /// first list, nothing is done (`None`). Blocking: it runs `wg` and `ip`.
    pub fn apply_once(&self) -> Result<Option<Applied>, MeshError> {
        let Some(peers) = self.desired.borrow().clone() else { return Ok(None) };
        let iface = self.iface.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let result = self.wg.ensure(&iface).and_then(|ensured| {
            let changes = self.wg.set_peers(&iface, &peers)?;
            Ok(Applied { ensured, changes })
        });
        let error = result.as_ref().err().map(ToString::to_string);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if error != *last {
            match &error {
                Some(e) => tracing::warn!(interface = %iface.name, error = %e, "the mesh is not configured"),
                None if last.is_some() => tracing::info!(interface = %iface.name, "the mesh is configured again"),
                None => {}
            }
            *last = error;
        }
        result.map(Some)
    }

    /// The last pass's error, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Apply at every change of the list and every `interval`, until dropped.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut changed = self.desired.subscribe();
        loop {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.apply_once()).await {
                Ok(Ok(Some(applied))) if applied.ensured != Ensured::Unchanged || !applied.changes.is_empty() => {
                    tracing::info!(ensured = ?applied.ensured, changes = %applied.changes, "mesh applied");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the mesh pass ended abnormally"),
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Remove the interface (a clean shutdown of the node). Blocking.
    pub fn remove(&self) -> Result<(), MeshError> {
        let iface = self.iface.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.wg.remove(&iface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vt_mesh::testing::{Call, Recorder};
    use vt_mesh::PeerChange;

    fn peer(name: &str, key_char: char, port: u16) -> vt_api::MeshPeer {
        vt_api::MeshPeer {
            node_id: vt_ids::NodeId::new(),
            name: name.into(),
            public_key: format!("{}=", key_char.to_string().repeat(43)),
            endpoint: format!("10.0.0.1:{port}"),
            allowed_ips: vec![format!("fd00:1:2:{port}::/64")],
        }
    }

    fn mesh() -> (Arc<Recorder>, Arc<NodeMesh>) {
        let rec = Arc::new(Recorder::default());
        let cfg = MeshConfig {
            interface: "vtmesh".into(),
            private_key: "/nonexistent".into(),
            listen_port: 51820,
            address: "10.0.0.9".parse().unwrap(),
            log: None,
        };
        (rec.clone(), NodeMesh::new(rec, &cfg))
    }

    #[test]
    fn nothing_happens_before_the_first_list() {
        let (rec, mesh) = mesh();
        assert_eq!(mesh.apply_once().unwrap(), None);
        assert!(rec.calls().is_empty());
        mesh.follow(&[]);
        assert_eq!(mesh.apply_once().unwrap().unwrap().ensured, Ensured::Created);
    }

    #[test]
    fn a_list_is_applied_once_and_a_dead_device_gets_its_peers_back() {
        let (rec, mesh) = mesh();
        let (b, c) = (peer("b", 'B', 2), peer("c", 'C', 3));
        mesh.follow(&[b.clone(), c.clone()]);
        let first = mesh.apply_once().unwrap().unwrap();
        assert_eq!(first.ensured, Ensured::Created);
        assert_eq!(first.changes.peers.len(), 2);
        // The same list: nothing changes.
        let again = mesh.apply_once().unwrap().unwrap();
        assert_eq!((again.ensured, again.changes.is_empty()), (Ensured::Unchanged, true));
        // C leaves: only C is removed.
        mesh.follow(std::slice::from_ref(&b));
        let changes = mesh.apply_once().unwrap().unwrap().changes;
        assert_eq!(changes.peers, vec![PeerChange::Remove(c.public_key.clone())]);
        // The device dies: the next pass makes it again with its peers.
        rec.kill();
        let back = mesh.apply_once().unwrap().unwrap();
        assert_eq!((back.ensured, back.changes.peers.len()), (Ensured::Created, 1));
        assert_eq!(rec.peers(), Some(vec![b.public_key.clone()]));
        // A peer that does not parse is left out; the rest still applies.
        let mut bad = peer("x", 'X', 4);
        bad.endpoint = "nowhere".into();
        mesh.follow(&[b, bad]);
        assert!(mesh.apply_once().unwrap().unwrap().changes.is_empty());
        mesh.remove().unwrap();
        assert_eq!(rec.calls().last(), Some(&Call::Remove));
        assert_eq!(rec.peers(), None);
    }

    #[test]
    fn the_overlay_address_is_the_subnets_first() {
        let (_, mesh) = mesh();
        mesh.set_subnet(Some("fd12:3456:789a:3::/64"));
        let addr = mesh.iface.lock().unwrap().address;
        assert_eq!(addr, Some("fd12:3456:789a:3::1/128".parse().unwrap()));
        mesh.set_subnet(Some("not a subnet"));
        assert_eq!(mesh.iface.lock().unwrap().address, None);
    }
}
