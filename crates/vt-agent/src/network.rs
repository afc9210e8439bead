//! The node's guest network (docs/network.md): the nftables table it owns, the IPv4 leases
//! of its instances and the guests' resolver, all following one state.
//!
//! * **Members** are this node's instances that have (or are about to have) a tap. An
//!   instance is admitted — its rules applied — before its VM's tap exists, and released
//!   after the tap is gone; a restarted agent re-admits the instances whose VMs survived
//!   (from their records) in its first activation, before it starts anything.
//! * **Peers** are the private-network instances of the members' orgs, on any node, from
//!   the control plane's answer for this node (`NodeInstances::peers`).
//! * **Mesh nodes** (a node in a WireGuard mesh) are the other nodes' overlay addresses, from
//!   the same answer's peer list (`NodeInstances::mesh`): they reach the instances through the
//!   node's WireGuard interface, as this host does (another node's ingress).
//! * Every change rebuilds the whole ruleset (`vt_firewall::Policy::render`) and replaces the
//!   table in one transaction, and swaps the resolver's directory. The table exists while the
//!   node has members: a node that runs no instance leaves the host's ruleset (and its
//!   forwarding sysctls) as it found them, and the last member's release removes it.
//! * A host that cannot isolate instances (no nftables, no forwarding for egress) makes
//!   [`Network::admit`] fail with a reason that says what to install or enable: no instance
//!   ever runs unisolated.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use vt_api::{NodeInstances, Peer};
use vt_firewall::{Class, Egress, Firewall, IpNet, Ipv4Net, Ipv6Net, Member, Mesh, NodeNet, Policy};

/// How the node's guest network is set up (the node-side flags of `vt server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The nftables table (family `inet`) this agent owns: `vt`, one per host.
    pub table: String,
    /// Whether (and how) instances reach the internet.
    pub egress: Egress,
    /// `--egress-allow`: destinations instances reach although private or on the host's LAN.
    pub allow: Vec<IpNet>,
    /// `--egress-deny`: destinations instances never reach.
    pub deny: Vec<IpNet>,
    /// Where the resolver sends names that are not private.
    pub dns_upstream: vt_dns::Upstream,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            table: vt_firewall::DEFAULT_TABLE.into(),
            egress: Egress::On { ipv6: vt_firewall::Ipv6Egress::Nat },
            allow: vec![],
            deny: vec![],
            dns_upstream: vt_dns::Upstream::System,
        }
    }
}

/// The mesh peers' overlay addresses: `<subnet>::1` of each IPv6 prefix they are allowed
/// (their instance /64, docs/nodes.md), sorted.
fn overlay_addresses(peers: &[vt_api::MeshPeer]) -> Vec<Ipv6Addr> {
    let mut nodes: Vec<Ipv6Addr> = peers
        .iter()
        .flat_map(|p| &p.allowed_ips)
        .filter_map(|a| a.parse::<Ipv6Net>().ok())
        .map(|net| Ipv6Addr::from(u128::from(net.network()) | 1))
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

/// What an admitted instance gets: its IPv4 lease, the node's gateways, its name servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub ipv4: Option<vt_runtime::net::Ipv4Net>,
    pub gateway6: Ipv6Addr,
    pub dns: Vec<IpAddr>,
    pub mtu: u16,
}

#[derive(Default)]
struct State {
    node: Option<NodeNet>,
    members: BTreeMap<String, Member>,
    peers: Vec<Peer>,
    /// The node's WireGuard interface and the other nodes' overlay addresses (`None`: no mesh).
    mesh: Option<Mesh>,
    mtu: u16,
    /// The script the kernel holds (as this agent last applied it). Empty at start: a
    /// previous agent's table may be there, so the first activation replaces or removes it.
    applied: Option<String>,
    /// Whether the records' surviving instances were admitted (once, in the first activation).
    restored: bool,
}

/// The guest network of one node.
pub struct Network {
    cfg: NetworkConfig,
    /// The firewall, or why instances cannot be isolated on this host.
    firewall: Result<Arc<dyn Firewall>, String>,
    state: Mutex<State>,
    resolver: tokio::sync::Mutex<Option<vt_dns::Resolver>>,
    /// Where IP forwarding is switched on (with egress, or in a mesh) when the first instance
    /// is admitted: a node that runs no instance changes nothing on its host.
    forwarding: Option<vt_firewall::host::Sysctls>,
}

impl Network {
    /// Check the host: nftables usable, forwarding on (switched on when egress needs it).
    /// A host that fails either still runs the agent, but [`Network::admit`] refuses every
    /// instance with the reason.
    pub fn new(cfg: NetworkConfig) -> Network {
        let firewall =
            vt_firewall::Nft::probe().map(|nft| Arc::new(nft) as Arc<dyn Firewall>).map_err(|e| e.to_string());
        let mut net = Self::with_firewall(cfg, firewall);
        if matches!(net.cfg.egress, Egress::On { .. }) {
            net.forwarding = Some(vt_firewall::host::Sysctls::default());
        }
        net
    }

    /// With a given firewall (tests: a fake behind the same trait; `Err`: a host that cannot).
    pub fn with_firewall(cfg: NetworkConfig, firewall: Result<Arc<dyn Firewall>, String>) -> Network {
        if let Err(why) = &firewall {
            tracing::error!(%why, "instances will not start on this node: they cannot be isolated");
        }
        Network {
            cfg,
            firewall,
            state: Mutex::new(State { mtu: 1500, applied: Some(String::new()), ..Default::default() }),
            resolver: Default::default(),
            forwarding: None,
        }
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// Why instances cannot start here, if they cannot.
    pub fn refusal(&self) -> Option<String> {
        self.firewall.as_ref().err().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node's networks, from its registration (`subnet`, `ipv4_range`).
    pub fn set_node(&self, subnet: Option<&str>, ipv4_range: Option<&str>) -> Result<(), String> {
        let Some(subnet) = subnet else { return Ok(()) };
        let subnet: Ipv6Net = subnet.parse().map_err(|e| format!("the node's subnet `{subnet}`: {e}"))?;
        let cluster = Ipv6Net::new(subnet.network(), 48).map_err(|e| e.to_string())?.trunc();
        let ipv4_range = match (self.cfg.egress, ipv4_range) {
            (Egress::On { .. }, Some(r)) => {
                Some(r.parse::<Ipv4Net>().map_err(|e| format!("the node's IPv4 range `{r}`: {e}"))?)
            }
            _ => None,
        };
        self.lock().node = Some(NodeNet { cluster, subnet, ipv4_range });
        Ok(())
    }

    /// The node is in a WireGuard mesh on `interface`: the other nodes (from each
    /// activation's peer list) reach its instances through it, which takes forwarding.
    pub fn set_mesh_interface(&mut self, interface: &str) {
        self.lock().mesh = Some(Mesh { interface: interface.to_owned(), nodes: vec![] });
        self.forwarding.get_or_insert_with(Default::default);
    }

    /// An activation's view: the org peers, the mesh's nodes and the guests' MTU; on the first one, the
    /// instances whose VMs survived a previous agent (`survivors`: id → member). Applies the
    /// ruleset when it changed. Returns whether the rules are in place (`Err`: why not).
    pub async fn observe(
        &self,
        list: &NodeInstances,
        survivors: impl FnOnce() -> Vec<(String, Member)>,
    ) -> Result<(), String> {
        {
            let mut st = self.lock();
            st.peers = list.peers.clone();
            st.peers.sort_by_key(|p| p.instance_id);
            if let Some(mesh) = &mut st.mesh {
                mesh.nodes = overlay_addresses(&list.mesh);
            }
            st.mtu = list.network.mtu;
            if !st.restored {
                st.restored = true;
                for (id, m) in survivors() {
                    st.members.insert(id, m);
                }
            }
        }
        // The resolver starts with the first member (a node without instances binds nothing).
        if !self.lock().members.is_empty() {
            self.ensure_resolver().await;
        }
        self.apply().await
    }

    /// Admit instance `id` before its VM starts: lease its IPv4 (with egress; `keep` when it is
    /// in the range and free: a resumed VM keeps the address its memory holds), add its rules
    /// and apply them. `Err`: it must not start (the reason says why).
    pub async fn admit(
        &self,
        id: &str,
        tap: &str,
        ipv6: Ipv6Addr,
        org: &str,
        class: Class,
        keep: Option<Ipv4Addr>,
    ) -> Result<Admission, String> {
        if let Err(why) = &self.firewall {
            return Err(format!("this node cannot isolate instances, so it starts none: {why}"));
        }
        if let Some(sysctls) = &self.forwarding {
            let changed = sysctls
                .enable_forwarding()
                .map_err(|e| format!("this node cannot forward its instances' traffic: {e}"))?;
            if !changed.is_empty() {
                tracing::info!(?changed, "switched IP forwarding on for the instances' traffic");
            }
        }
        let admission = {
            let mut st = self.lock();
            let node = st.node.clone().ok_or("the node has no subnet yet")?;
            let ipv4 = match node.ipv4_range {
                Some(range) => {
                    let taken = || st.members.iter().filter(|(k, _)| *k != id).filter_map(|(_, m)| m.ipv4);
                    let leasable = |k: &Ipv4Addr| {
                        let k = u32::from(*k);
                        k >= u32::from(range.network()) + 2 && k < u32::from(range.broadcast())
                    };
                    match keep.filter(|k| leasable(k) && !taken().any(|t| t == *k)) {
                        Some(address) => Some(vt_runtime::net::Ipv4Net {
                            address,
                            gateway: Ipv4Addr::from(u32::from(range.network()) | 1),
                            prefix_len: range.prefix_len(),
                        }),
                        None => Some(lease(range, taken())?),
                    }
                }
                None => None,
            };
            st.members.insert(
                id.to_owned(),
                Member { tap: tap.to_owned(), ipv6, ipv4: ipv4.map(|v| v.address), org: org.to_owned(), class },
            );
            let gateway6 = node.gateway6();
            let mut dns = vec![IpAddr::V6(gateway6)];
            dns.extend(ipv4.map(|v| IpAddr::V4(v.gateway)));
            Admission { ipv4, gateway6, dns, mtu: st.mtu }
        };
        self.ensure_resolver().await;
        if let Err(e) = self.apply().await {
            self.lock().members.remove(id);
            return Err(e);
        }
        Ok(admission)
    }

    /// Release instance `id` once its tap is gone.
    pub async fn release(&self, id: &str) {
        if self.lock().members.remove(id).is_some() {
            if let Err(e) = self.apply().await {
                tracing::warn!(instance = id, error = %e, "ruleset not updated after the instance ended");
            }
        }
    }

    /// [`Network::release`] from a destructor (an aborted supervisor): blocking, after
    /// removing the tap itself so that the rules never go before the tap.
    pub fn release_now(&self, id: &str, tap: &str) {
        if !self.lock().members.contains_key(id) {
            return;
        }
        drop(vt_runtime::net::TapGuard(tap.to_owned()));
        self.lock().members.remove(id);
        if let Err(e) = self.apply_blocking() {
            tracing::warn!(instance = id, error = %e, "ruleset not updated after the instance ended");
        }
    }

    /// Forget every instance without applying (a stop after which no VM runs: the table goes next).
    pub fn forget_all(&self) {
        self.lock().members.clear();
    }

    /// Forget instance `id` without applying (a shutdown that removes the table next).
    pub fn forget(&self, id: &str) {
        self.lock().members.remove(id);
    }

    /// A clean shutdown (every VM killed, every tap removed): the table goes, the resolver stops.
    pub async fn shutdown(&self) {
        if let Some(r) = self.resolver.lock().await.take() {
            r.shutdown().await;
        }
        let Ok(fw) = self.firewall.clone() else { return };
        let table = self.cfg.table.clone();
        let left = self.lock().members.len();
        if left > 0 {
            tracing::warn!(instances = left, "instances still admitted at shutdown; keeping their rules");
            return;
        }
        // `None`: the last release removed it already (or this agent never had one).
        let Some(was) = self.lock().applied.take() else { return };
        match tokio::task::spawn_blocking(move || fw.remove(&table)).await {
            Ok(Ok(())) if was.is_empty() => tracing::debug!(table = %self.cfg.table, "no ruleset kept from before"),
            Ok(Ok(())) => tracing::info!(table = %self.cfg.table, "ruleset removed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "ruleset not removed"),
            Err(e) => tracing::warn!(error = %e, "ruleset removal task failed"),
        }
    }

    /// The policy of the current state (`None` before the node's networks are known).
    fn policy(&self) -> Option<Policy> {
        let st = self.lock();
        let node = st.node.clone()?;
        let skip = |name: &str| vt_firewall::host::is_vt_tap(name) || st.members.values().any(|m| m.tap == name);
        let host_lan = vt_firewall::host::host_lan(skip);
        Some(Policy {
            table: self.cfg.table.clone(),
            node,
            egress: self.cfg.egress,
            allow: self.cfg.allow.clone(),
            deny: self.cfg.deny.clone(),
            host_lan,
            members: st.members.values().cloned().collect(),
            peers: st
                .peers
                .iter()
                .filter_map(|p| Some(vt_firewall::Peer { org: p.org_id.to_string(), address: p.address.parse().ok()? }))
                .collect(),
            mesh: st.mesh.clone(),
        })
    }

    fn directory(&self) -> vt_dns::Directory {
        let st = self.lock();
        let mut callers = vec![];
        for m in st.members.values() {
            let caller = vt_dns::Caller { org: m.org.clone(), isolated: m.class == Class::Isolated };
            callers.push((IpAddr::V6(m.ipv6), caller.clone()));
            if let Some(v4) = m.ipv4 {
                callers.push((IpAddr::V4(v4), caller));
            }
        }
        let entries = st
            .peers
            .iter()
            .filter_map(|p| {
                Some(vt_dns::Entry {
                    org: p.org_id.to_string(),
                    instance_id: p.instance_id.to_string(),
                    app: p.app.clone(),
                    env: p.env.clone(),
                    process: p.process.clone(),
                    address: p.address.parse().ok()?,
                    ready: p.ready,
                })
            })
            .collect();
        vt_dns::Directory::new(callers, entries)
    }

    async fn apply(&self) -> Result<(), String> {
        let Ok(fw) = self.firewall.clone() else { return Err(self.refusal().unwrap_or_default()) };
        let Some(policy) = self.policy() else { return Ok(()) };
        let script = policy.render();
        let directory = self.directory();
        if let Some(r) = self.resolver.lock().await.as_ref() {
            r.update(directory);
        }
        if self.lock().applied.as_deref() == Some(script.as_str()) {
            return Ok(());
        }
        let table = policy.table.clone();
        if policy.members.is_empty() {
            // No tap to guard: no table (a node without instances leaves the host's ruleset as it found it).
            let was = self.lock().applied.take();
            if let Some(was) = was {
                tokio::task::spawn_blocking(move || fw.remove(&table))
                    .await
                    .map_err(|e| format!("ruleset task: {e}"))?
                    .map_err(|e| e.to_string())?;
                // The first activation clears what a previous agent may have left: quietly.
                if was.is_empty() {
                    tracing::debug!(table = %policy.table, "no ruleset kept from before: none left");
                } else {
                    tracing::info!(table = %policy.table, "ruleset removed: no instance left");
                }
            }
            return Ok(());
        }
        let s = script.clone();
        tokio::task::spawn_blocking(move || fw.apply(&table, &s))
            .await
            .map_err(|e| format!("ruleset task: {e}"))?
            .map_err(|e| e.to_string())?;
        tracing::info!(table = %policy.table, members = policy.members.len(), peers = policy.peers.len(), "ruleset applied");
        self.lock().applied = Some(script);
        Ok(())
    }

    fn apply_blocking(&self) -> Result<(), String> {
        let Ok(fw) = self.firewall.clone() else { return Ok(()) };
        let Some(policy) = self.policy() else { return Ok(()) };
        if policy.members.is_empty() {
            if self.lock().applied.take().is_some() {
                fw.remove(&policy.table).map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let script = policy.render();
        fw.apply(&policy.table, &script).map_err(|e| e.to_string())?;
        self.lock().applied = Some(script);
        Ok(())
    }

    /// Start the resolver on the node's gateway addresses once they are known.
    async fn ensure_resolver(&self) {
        if self.firewall.is_err() {
            return;
        }
        let mut slot = self.resolver.lock().await;
        if slot.is_some() {
            return;
        }
        let Some(node) = self.lock().node.clone() else { return };
        let mut ips = vec![IpAddr::V6(node.gateway6())];
        ips.extend(node.gateway4().map(IpAddr::V4));
        let addrs = vt_dns::on_port_53(ips);
        match vt_dns::Resolver::start(&addrs, self.cfg.dns_upstream.clone(), self.directory()).await {
            Ok(r) => *slot = Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "the guests' resolver is not running; names will not resolve in guests")
            }
        }
    }
}

/// The lowest free address of `range` past its `.1` (the gateway), before its broadcast.
fn lease(range: Ipv4Net, taken: impl Iterator<Item = Ipv4Addr>) -> Result<vt_runtime::net::Ipv4Net, String> {
    let taken: std::collections::BTreeSet<Ipv4Addr> = taken.collect();
    let gateway = Ipv4Addr::from(u32::from(range.network()) | 1);
    let first = u32::from(range.network()) + 2;
    let last = u32::from(range.broadcast()).saturating_sub(1);
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|a| !taken.contains(a))
        .map(|address| vt_runtime::net::Ipv4Net { address, gateway, prefix_len: range.prefix_len() })
        .ok_or_else(|| {
            format!("the node's IPv4 range {range} has no free address: too many instances with egress on this node")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_skip_the_gateway_and_taken_addresses() {
        let r: Ipv4Net = "100.64.3.0/24".parse().unwrap();
        let a = lease(r, std::iter::empty()).unwrap();
        assert_eq!(
            (a.address, a.gateway, a.prefix_len),
            (Ipv4Addr::new(100, 64, 3, 2), Ipv4Addr::new(100, 64, 3, 1), 24)
        );
        let b = lease(r, [Ipv4Addr::new(100, 64, 3, 2), Ipv4Addr::new(100, 64, 3, 4)].into_iter()).unwrap();
        assert_eq!(b.address, Ipv4Addr::new(100, 64, 3, 3));
        let full = lease(r, (2..=254).map(|i| Ipv4Addr::new(100, 64, 3, i)));
        assert!(full.unwrap_err().contains("no free address"));
    }

    /// A host that cannot isolate instances (no nftables, no permission) starts none, and
    /// says what to install or enable: never an unisolated instance.
    #[tokio::test]
    async fn a_host_without_nftables_admits_no_instance_and_says_why() {
        let why = vt_firewall::FirewallError::Missing.to_string();
        let net = Network::with_firewall(NetworkConfig::default(), Err(why.clone()));
        assert_eq!(net.refusal().as_deref(), Some(why.as_str()));
        net.set_node(Some("fd00:1:2:3::/64"), Some("100.64.3.0/24")).unwrap();
        let err = net
            .admit("inst_x", "vtx", "fd00:1:2:3::5".parse().unwrap(), "org_1", Class::Private, None)
            .await
            .unwrap_err();
        assert!(err.contains("this node cannot isolate instances, so it starts none") && err.contains(&why), "{err}");
        assert!(why.contains("nftables"), "{why}");
    }

    #[test]
    fn the_mesh_nodes_are_the_peers_overlay_addresses() {
        let peer = |name: &str, allowed: &[&str]| vt_api::MeshPeer {
            node_id: vt_ids::NodeId::new(),
            name: name.into(),
            public_key: "k".into(),
            endpoint: "10.0.0.1:51820".into(),
            allowed_ips: allowed.iter().map(|a| a.to_string()).collect(),
        };
        let peers = [
            peer("c", &["fd12:3456:789a:3::/64"]),
            peer("b", &["fd12:3456:789a:2::/64", "not a prefix", "10.1.0.0/24"]),
            peer("b-again", &["fd12:3456:789a:2::/64"]),
        ];
        let want: Vec<Ipv6Addr> = ["fd12:3456:789a:2::1", "fd12:3456:789a:3::1"].map(|a| a.parse().unwrap()).to_vec();
        assert_eq!(overlay_addresses(&peers), want);
    }
}
