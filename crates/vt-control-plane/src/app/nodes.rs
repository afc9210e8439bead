//! Nodes: registration, heartbeats, and what a node's agent follows.
//!
//! A node token is bound to one node id (and the name it was issued for): it
//! registers that node only, under that name, heartbeats only as it, and
//! follows only the instances placed on it. Admins may register any node.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use axum::http::StatusCode;
use vt_api::{
    DiskReport, GuestNetwork, Heartbeat, MeshPeer, Node, NodeInstances, NodeRouting, Peer, RegisterNode,
    RouteListenerReport, RoutedInstance,
};
use vt_events::{
    AggregateType, Capacity, Event, ListenerState, NodeCapacityChanged, NodeEndpointChanged, NodeIpv4RangeAssigned,
    NodeRegistered, NodeStatus, NodeStatusChanged, NodeSubnetAssigned, RouteListenerChanged,
};
use vt_ids::{NodeId, OrgId, ReleaseId};
use vt_store::{Claim, ClaimScope};
use vt_views::{AppView, EnvView, InstanceView, NodeView, ReleaseView, RouteView, TokenView, ViewKind};

use super::exists;
use crate::authz::{Action, Caller, Resource};
use crate::lookup::shown;
use crate::wire::{self, all};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

/// Longest wait of a node's follow request (below the client's 30 s request timeout).
const MAX_FOLLOW_WAIT: Duration = Duration::from_secs(20);
/// Most listener reports in one request (an ingress reports the routes whose listener changed).
const MAX_LISTENER_REPORTS: usize = 1000;

/// What a registration's schema cannot say. Its ranges (capacities of at least 1) and the
/// labels' count and key and value syntax are `RegisterNode`'s schema (`vt_api::limits`),
/// checked where the request is decoded.
fn check_registration(req: &RegisterNode) -> ApiResult<Capacity> {
    let allocatable = req.allocatable.unwrap_or(req.capacity);
    if allocatable.cpu_millis > req.capacity.cpu_millis || allocatable.memory_mib > req.capacity.memory_mib {
        return Err(ApiErr::invalid("allocatable", "`allocatable` cannot exceed `capacity`"));
    }
    if let Some(a) = &req.address {
        if a.parse::<std::net::IpAddr>().is_err() {
            return Err(ApiErr::invalid(
                "address",
                format!("`address` must be an IPv6 or IPv4 address; got {}", shown(a)),
            ));
        }
    }
    Ok(allocatable)
}

impl ControlPlane {
    /// Register a node, or update the one registered under that name: a node
    /// agent calls this at every start, so it must be repeatable.
    pub async fn node_register(&self, ctx: &Ctx, req: RegisterNode) -> ApiResult<Committed> {
        // A node token registers its own node; any other registration is the operator's.
        let bound = match ctx.caller {
            Caller::Node { node, .. } => Some(node),
            Caller::Admin { .. } | Caller::Member { .. } | Caller::Enroll { .. } => None,
        };
        match bound {
            Some(node) => ctx.authorize(Action::Agent, Resource::Node(node), || ApiErr::not_found("node not found"))?,
            None => ctx.authorize_cluster(Action::Operate)?,
        }
        let allocatable = check_registration(&req)?;
        self.fresh().await?;
        let name = req.name.to_string();
        let nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        let existing = match bound {
            None => nodes.iter().find(|n| n.name == name && n.status != NodeStatus::Revoked).cloned(),
            Some(node) => match nodes.iter().find(|n| n.id == node) {
                Some(mine) if mine.name != name => {
                    return Err(ApiErr::forbidden(format!(
                        "this token belongs to node `{}`; it cannot register a node named `{name}`",
                        mine.name
                    ))
                    .field("name"))
                }
                Some(mine) => Some(mine.clone()),
                None => {
                    // The first registration: under the name the token was issued for.
                    let token: Option<TokenView> = self.view(&ctx.caller.token().to_string()).await?;
                    let issued_for = token.and_then(|t| t.node_name).unwrap_or_default();
                    if issued_for != name {
                        return Err(ApiErr::forbidden(format!(
                            "this token was issued for node `{issued_for}`; it cannot register a node named `{name}`"
                        ))
                        .field("name"));
                    }
                    None
                }
            },
        };
        let now = ctx.now();
        if let Some(mut existing) = existing {
            if existing.status == NodeStatus::Revoked {
                return Err(ApiErr::conflict(format!(
                    "node `{name}` was revoked; enroll the host again as a new node (`vt node enroll-token create`)"
                )));
            }
            if req.wireguard_public_key.is_some() && req.wireguard_public_key != existing.wireguard_public_key {
                return Err(ApiErr::conflict(format!(
                    "node `{name}` registered with another WireGuard key; a node keeps its key (revoke it and enroll the host again to change it)"
                ))
                .field("wireguard_public_key"));
            }
            if req.runs_instances != existing.runs_instances {
                let (was, now) = match existing.runs_instances {
                    true => ("runs instances", "an edge-only node"),
                    false => ("is edge-only (it runs no instances)", "a node that runs instances"),
                };
                return Err(ApiErr::conflict(format!(
                    "node `{name}` {was}; a node keeps what it runs: to make the host {now}, revoke it (`vt node revoke {name}`) and enroll it again"
                ))
                .field("runs_instances"));
            }
            let mut plan = Plan::new(StatusCode::OK, ()).expect(exists(AggregateType::Node, existing.id));
            if existing.capacity != req.capacity || existing.allocatable != allocatable {
                plan = plan.event(Event::NodeCapacityChanged(NodeCapacityChanged {
                    node_id: existing.id,
                    capacity: req.capacity,
                    allocatable,
                }));
                existing.capacity = req.capacity;
                existing.allocatable = allocatable;
                existing.updated_at = now;
            }
            // Where its mesh peers reach it: the latest registration's.
            if existing.address != req.address || existing.wireguard_port != req.wireguard_port {
                plan = plan.event(Event::NodeEndpointChanged(NodeEndpointChanged {
                    node_id: existing.id,
                    address: req.address.clone(),
                    wireguard_port: req.wireguard_port,
                }));
                existing.address = req.address.clone();
                existing.wireguard_port = req.wireguard_port;
                existing.updated_at = now;
            }
            // Nodes registered before subnets existed get theirs now.
            if existing.subnet.is_none() {
                let subnet = next_subnet(&nodes)?;
                plan = plan
                    .event(Event::NodeSubnetAssigned(NodeSubnetAssigned {
                        node_id: existing.id,
                        subnet: subnet.clone(),
                    }))
                    .claim(Claim { scope: ClaimScope::Subnet, name: subnet.clone(), owner: existing.id.to_string() });
                existing.subnet = Some(subnet);
            }
            // And those registered before IPv4 ranges existed, theirs.
            if existing.ipv4_range.is_none() {
                let range = next_ipv4_range(&nodes, self.network.ipv4_block)?;
                plan = plan
                    .event(Event::NodeIpv4RangeAssigned(NodeIpv4RangeAssigned {
                        node_id: existing.id,
                        range: range.clone(),
                    }))
                    .claim(Claim { scope: ClaimScope::Ipv4Range, name: range.clone(), owner: existing.id.to_string() });
                existing.ipv4_range = Some(range);
            }
            let beat = self.store.heartbeats().await?.get(&existing.id.to_string()).copied();
            let disk = self.node_disk(existing.id).await?;
            return self.commit(ctx, plan.respond(wire::node(existing, beat, disk))).await;
        }
        let id = bound.unwrap_or_default();
        let subnet = next_subnet(&nodes)?;
        let ipv4_range = next_ipv4_range(&nodes, self.network.ipv4_block)?;
        let view = NodeView {
            id,
            name: name.clone(),
            status: NodeStatus::Ready,
            status_reason: None,
            capacity: req.capacity,
            allocatable,
            labels: req.labels.clone(),
            address: req.address.clone(),
            subnet: Some(subnet.clone()),
            ipv4_range: Some(ipv4_range.clone()),
            wireguard_public_key: req.wireguard_public_key.clone(),
            wireguard_port: req.wireguard_port,
            runs_instances: req.runs_instances,
            registered_at: now,
            updated_at: now,
        };
        let plan = Plan::new(StatusCode::CREATED, wire::node(view, None, None))
            .event(Event::NodeRegistered(NodeRegistered {
                wireguard_public_key: req.wireguard_public_key.clone(),
                node_id: id,
                name: name.clone(),
                capacity: req.capacity,
                allocatable,
                labels: req.labels,
                address: req.address,
                wireguard_port: req.wireguard_port,
                runs_instances: req.runs_instances,
            }))
            .event(Event::NodeSubnetAssigned(NodeSubnetAssigned { node_id: id, subnet: subnet.clone() }))
            .event(Event::NodeIpv4RangeAssigned(NodeIpv4RangeAssigned { node_id: id, range: ipv4_range.clone() }))
            .claim(Claim { scope: ClaimScope::Node, name, owner: id.to_string() })
            // Two registrations racing for one subnet (or range): the second fails and its agent retries.
            .claim(Claim { scope: ClaimScope::Subnet, name: subnet, owner: id.to_string() })
            .claim(Claim { scope: ClaimScope::Ipv4Range, name: ipv4_range, owner: id.to_string() });
        self.commit(ctx, plan).await
    }

    /// A node the caller may `action`: admins any, a node itself.
    pub(crate) async fn authorized_node(&self, ctx: &Ctx, node: &str, action: Action) -> ApiResult<NodeView> {
        let node = self.lookup_node(node).await?;
        ctx.authorize(action, Resource::Node(node.id), || {
            ApiErr::not_found(format!("node {} not found", shown(&node.name)))
        })?;
        Ok(node)
    }

    /// Record liveness and the node's disk report (current state beside the heartbeat, not
    /// events) and, when it changes state, the events: capacity changes, and an unreachable
    /// node coming back.
    pub async fn node_heartbeat(&self, ctx: &Ctx, node: &str, req: Heartbeat) -> ApiResult<Committed> {
        let node = self.authorized_node(ctx, node, Action::Agent).await?;
        let now = ctx.now();
        let capacity = req.capacity.unwrap_or(node.capacity);
        let allocatable = req.allocatable.unwrap_or(if req.capacity.is_some() { capacity } else { node.allocatable });
        // A report no filesystem could give is refused whole: nothing of the heartbeat is kept.
        if let Some((field, why)) = req.disk.as_ref().and_then(|d| d.inconsistency()) {
            return Err(ApiErr::invalid(field, format!("`{field}` does not fit the rest of the report: {why}")));
        }
        let report = req.disk.map(|d| serde_json::to_string(&d)).transpose().map_err(ApiErr::internal)?;
        self.store.heartbeat(&node.id.to_string(), now, report.as_deref()).await?;
        let disk = match req.disk {
            Some(d) => Some((now, d)),
            None => self.node_disk(node.id).await?,
        };
        let mut view = node.clone();
        let mut plan = Plan::new(StatusCode::OK, ()).expect(exists(AggregateType::Node, node.id));
        if capacity != node.capacity || allocatable != node.allocatable {
            plan =
                plan.event(Event::NodeCapacityChanged(NodeCapacityChanged { node_id: node.id, capacity, allocatable }));
            view.capacity = capacity;
            view.allocatable = allocatable;
            view.updated_at = now;
        }
        if node.status == NodeStatus::Unreachable {
            plan = plan.event(Event::NodeStatusChanged(NodeStatusChanged {
                node_id: node.id,
                status: NodeStatus::Ready,
                reason: Some("heartbeats resumed".into()),
            }));
            view.status = NodeStatus::Ready;
            view.status_reason = Some("heartbeats resumed".into());
            view.updated_at = now;
        }
        self.commit(ctx, plan.respond(wire::node(view, Some(now), disk))).await
    }

    /// Nodes by name, with their last heartbeat.
    pub async fn node_list(&self, ctx: &Ctx) -> ApiResult<Vec<Node>> {
        ctx.authorize_cluster(Action::Read)?;
        let beats = self.store.heartbeats().await?;
        let mut disks = self.node_disks().await?;
        let mut nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes
            .into_iter()
            .map(|n| {
                let beat = beats.get(&n.id.to_string()).copied();
                let disk = disks.remove(&n.id.to_string());
                wire::node(n, beat, disk)
            })
            .collect())
    }

    pub async fn node_get(&self, ctx: &Ctx, node: &str) -> ApiResult<Node> {
        let node = self.authorized_node(ctx, node, Action::Read).await?;
        let beat = self.store.heartbeats().await?.get(&node.id.to_string()).copied();
        let disk = self.node_disk(node.id).await?;
        Ok(wire::node(node, beat, disk))
    }

    /// Each node's last disk report and when it came (see [`stored_disk`]).
    async fn node_disks(&self) -> ApiResult<std::collections::BTreeMap<String, StoredDisk>> {
        let stored = self.store.node_disks().await?;
        Ok(stored.into_iter().filter_map(|(node, report)| Some((node.clone(), stored_disk(&node, report)?))).collect())
    }

    /// One node's last disk report and when it came (see [`stored_disk`]).
    pub(crate) async fn node_disk(&self, node: NodeId) -> ApiResult<Option<StoredDisk>> {
        let node = node.to_string();
        Ok(self.store.node_disk(&node).await?.and_then(|report| stored_disk(&node, report)))
    }

    /// Every instance placed on the node, with the releases they run. With
    /// `after`: answered once the views move past that position (or after `wait`).
    pub async fn node_instances(
        &self,
        ctx: &Ctx,
        node: &str,
        after: Option<u64>,
        wait: Option<Duration>,
    ) -> ApiResult<NodeInstances> {
        let node = self.authorized_node(ctx, node, Action::Agent).await?;
        if let Some(after) = after {
            self.views_past(after, wait).await;
        }
        let seq = self.projector.progress();
        let instances: Vec<InstanceView> = self.views::<InstanceView>(Self::kind_query(ViewKind::Instance)).await?;
        let mut items: Vec<InstanceView> = instances.iter().filter(|i| i.node_id == node.id).cloned().collect();
        items.sort_by_key(|i| i.id);
        let releases = self.releases_of(items.iter()).await?;
        let peers = self.peers_of(&items, &instances).await?;
        let volumes = self.volumes_on(&node).await?;
        let snapshots = self.snapshots_pending_on(&node).await?;
        let nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        Ok(NodeInstances {
            items: all(items),
            releases: all(releases),
            volumes,
            snapshots,
            seq,
            network: GuestNetwork { mtu: self.network.mtu },
            peers,
            mesh: mesh_peers(node.id, &nodes),
        })
    }

    /// What the node's ingress serves: every route and the ready instances behind them. With
    /// `after`: answered once the views move past that position (or after `wait`).
    pub async fn node_routing(
        &self,
        ctx: &Ctx,
        node: &str,
        after: Option<u64>,
        wait: Option<Duration>,
    ) -> ApiResult<NodeRouting> {
        self.authorized_node(ctx, node, Action::Agent).await?;
        if let Some(after) = after {
            self.views_past(after, wait).await;
        }
        let seq = self.projector.progress();
        let mut routes: Vec<RouteView> = self.views(Self::kind_query(ViewKind::Route)).await?;
        routes.sort_by_key(|r| r.id);
        let served: BTreeSet<(vt_ids::EnvId, &str)> = routes.iter().map(|r| (r.env_id, r.process.as_str())).collect();
        let instances: Vec<InstanceView> = self.views(Self::kind_query(ViewKind::Instance)).await?;
        let mut routed: Vec<RoutedInstance> = instances
            .iter()
            .filter(|i| i.is_ready() && served.contains(&(i.env_id, i.process.as_str())))
            .filter_map(|i| {
                Some(RoutedInstance { env_id: i.env_id, process: i.process.clone(), address: i.address.clone()? })
            })
            .collect();
        routed.sort();
        Ok(NodeRouting { routes: all(routes), instances: routed, seq })
    }

    /// The node's ingress reports its listeners (`route.listener_changed`, under the node's
    /// name). A report of a route that is gone is dropped.
    pub async fn node_route_listeners(
        &self,
        ctx: &Ctx,
        node: &str,
        reports: Vec<RouteListenerReport>,
    ) -> ApiResult<Committed> {
        let node = self.authorized_node(ctx, node, Action::Agent).await?;
        if reports.len() > MAX_LISTENER_REPORTS {
            return Err(ApiErr::invalid(
                "body",
                format!("at most {MAX_LISTENER_REPORTS} listener reports per request; send the rest in another"),
            ));
        }
        let mut plan = Plan::new(StatusCode::OK, ());
        for (i, r) in reports.into_iter().enumerate() {
            if r.state == ListenerState::Listening && r.reason.is_some() {
                return Err(ApiErr::invalid(
                    format!("[{i}].reason"),
                    "a listening listener has no reason; leave `reason` out",
                ));
            }
            let Some(route) = self.view::<RouteView>(&r.route_id.to_string()).await? else {
                continue;
            };
            plan = plan.event(Event::RouteListenerChanged(RouteListenerChanged {
                org_id: route.org_id,
                env_id: route.env_id,
                route_id: route.id,
                node: node.name.clone(),
                state: r.state,
                reason: r.reason,
            }));
        }
        let n = plan.events.len();
        self.commit(ctx, plan.respond(serde_json::json!({ "recorded": n }))).await
    }

    /// Wait until the views move past `after` (at most `wait`, 10 s by default, capped), or
    /// the server stops: a node follows by cursor, one request per change of the views.
    async fn views_past(&self, after: u64, wait: Option<Duration>) {
        let limit = wait.unwrap_or(Duration::from_secs(10)).min(MAX_FOLLOW_WAIT);
        let mut progress = self.projector.subscribe();
        // A server that stops answers now: its drain does not wait for a long poll.
        tokio::select! {
            _ = tokio::time::timeout(limit, progress.wait_for(|seq| *seq > after)) => {}
            () = self.closed() => {}
        }
    }

    /// The private-network peers a node needs: the live instances with an address of every
    /// org that has an instance on it, whose process is not `network = "isolated"`, with
    /// their app's and env's names (for `<process>.<env>.<app>.internal`). A node learns no
    /// org's names but those of the orgs it runs instances of.
    async fn peers_of(&self, local: &[InstanceView], all: &[InstanceView]) -> ApiResult<Vec<Peer>> {
        let orgs: BTreeSet<OrgId> = local.iter().map(|i| i.org_id).collect();
        let mut live: Vec<&InstanceView> = all
            .iter()
            .filter(|i| orgs.contains(&i.org_id) && i.is_live() && i.address.as_deref().is_some_and(is_ipv6))
            .collect();
        live.sort_by_key(|i| i.id);
        let releases: HashMap<ReleaseId, ReleaseView> =
            self.releases_of(live.iter().copied()).await?.into_iter().map(|r| (r.id, r)).collect();
        let isolated = |i: &InstanceView| {
            releases.get(&i.release_id).is_some_and(|r| {
                vt_manifest::from_normalized_json(&r.manifest).is_ok_and(|m| {
                    m.processes.get(&i.process).is_some_and(|p| p.network == vt_manifest::NetworkClass::Isolated)
                })
            })
        };
        live.retain(|i| !isolated(i));
        let mut keys: Vec<(ViewKind, String)> = vec![];
        for i in &live {
            keys.push((ViewKind::App, i.app_id.to_string()));
            keys.push((ViewKind::Env, i.env_id.to_string()));
        }
        keys.sort();
        keys.dedup();
        let mut apps: HashMap<String, String> = HashMap::new();
        let mut envs: HashMap<String, String> = HashMap::new();
        for row in self.store.views_get_many(&keys).await? {
            match row.kind {
                ViewKind::App => {
                    let a: AppView = row.decode().map_err(ApiErr::internal)?;
                    apps.insert(a.id.to_string(), a.name);
                }
                ViewKind::Env => {
                    let e: EnvView = row.decode().map_err(ApiErr::internal)?;
                    envs.insert(e.id.to_string(), e.name);
                }
                _ => {}
            }
        }
        Ok(live
            .into_iter()
            .filter_map(|i| {
                Some(Peer {
                    instance_id: i.id,
                    org_id: i.org_id,
                    app: apps.get(&i.app_id.to_string())?.clone(),
                    env: envs.get(&i.env_id.to_string())?.clone(),
                    process: i.process.clone(),
                    address: i.address.clone()?,
                    ready: i.is_ready(),
                })
            })
            .collect())
    }

    /// Whether `node` runs (or is to run) an instance of an image in `repository`:
    /// the images a node token may pull.
    pub async fn node_runs_repository(&self, node: NodeId, repository: &str) -> ApiResult<bool> {
        let instances: Vec<InstanceView> = self.views(Self::kind_query(ViewKind::Instance)).await?;
        let running =
            instances.iter().filter(|i| i.node_id == node && i.desired_state == vt_events::DesiredState::Running);
        let releases = self.releases_of(running).await?;
        Ok(releases.iter().any(|r| vt_image::ImageRef::parse(&r.image_ref).is_ok_and(|r| r.repository() == repository)))
    }

    /// The releases these instances run, each once, by id.
    async fn releases_of(&self, instances: impl Iterator<Item = &InstanceView>) -> ApiResult<Vec<ReleaseView>> {
        let mut ids: Vec<ReleaseId> = instances.map(|i| i.release_id).collect();
        ids.sort();
        ids.dedup();
        let keys: Vec<(ViewKind, String)> = ids.iter().map(|r| (ViewKind::Release, r.to_string())).collect();
        let mut releases: Vec<ReleaseView> = self
            .store
            .views_get_many(&keys)
            .await?
            .iter()
            .map(|r| r.decode().map_err(ApiErr::internal))
            .collect::<ApiResult<_>>()?;
        releases.sort_by_key(|r| r.id);
        Ok(releases)
    }
}

/// The WireGuard peers of node `me`: every other node that is not revoked and has a key, an
/// endpoint (address and port) and a subnet, by name then id. A peer's allowed IPs are its
/// instances' /64 alone: its overlay address, `<subnet>::1` (the gateway address it already
/// has on its taps), is in it. A revoked node is in no list, so no node accepts its packets.
pub(crate) fn mesh_peers(me: NodeId, nodes: &[NodeView]) -> Vec<MeshPeer> {
    let mut peers: Vec<(&NodeView, MeshPeer)> = nodes
        .iter()
        .filter(|n| n.id != me && n.status != NodeStatus::Revoked)
        .filter_map(|n| {
            let ip: std::net::IpAddr = n.address.as_deref()?.parse().ok()?;
            let endpoint = std::net::SocketAddr::new(ip, n.wireguard_port?);
            let subnet: ipnet::Ipv6Net = n.subnet.as_deref()?.parse().ok()?;
            Some((
                n,
                MeshPeer {
                    node_id: n.id,
                    name: n.name.clone(),
                    public_key: n.wireguard_public_key.clone()?,
                    endpoint: endpoint.to_string(),
                    allowed_ips: vec![subnet.trunc().to_string()],
                },
            ))
        })
        .collect();
    peers.sort_by(|(a, _), (b, _)| (&a.name, a.id).cmp(&(&b.name, b.id)));
    peers.into_iter().map(|(_, p)| p).collect()
}

fn is_ipv6(a: &str) -> bool {
    a.parse::<Ipv6Addr>().is_ok()
}

/// The first free /24 of the cluster's IPv4 block, in address order.
fn next_ipv4_range(nodes: &[NodeView], block: ipnet::Ipv4Net) -> ApiResult<String> {
    let taken: BTreeSet<Ipv4Addr> = nodes
        .iter()
        .filter_map(|n| n.ipv4_range.as_deref()?.parse::<ipnet::Ipv4Net>().ok())
        .map(|r| r.network())
        .collect();
    let range = block
        .subnets(crate::NODE_IPV4_PREFIX)
        .map_err(|e| ApiErr::internal(format!("the IPv4 block {block}: {e}")))?
        .find(|r| !taken.contains(&r.network()))
        .ok_or_else(|| {
            ApiErr::conflict(format!("the cluster's IPv4 block {block} has no free range left (`--guest-ipv4-block`)"))
        })?;
    Ok(range.to_string())
}

/// The first free /64 of the cluster's ULA /48 (subnet ids from 1). The /48
/// is the one the nodes already have; the first node draws a random one
/// (RFC 4193: `fd` + 40 random bits).
fn next_subnet(nodes: &[NodeView]) -> ApiResult<String> {
    let taken: Vec<Ipv6Addr> =
        nodes.iter().filter_map(|n| n.subnet.as_deref()).filter_map(|s| s.strip_suffix("/64")?.parse().ok()).collect();
    let prefix: [u16; 3] = match taken.first() {
        Some(a) => {
            let s = a.segments();
            [s[0], s[1], s[2]]
        }
        None => {
            let mut b = [0u8; 5];
            getrandom::fill(&mut b)
                .map_err(|e| ApiErr::internal(format!("no randomness for the cluster prefix: {e}")))?;
            [0xfd00 | u16::from(b[0]), u16::from_be_bytes([b[1], b[2]]), u16::from_be_bytes([b[3], b[4]])]
        }
    };
    let used: BTreeSet<u16> = taken.iter().map(|a| a.segments()[3]).collect();
    let id = (1..=u16::MAX)
        .find(|i| !used.contains(i))
        .ok_or_else(|| ApiErr::conflict("the cluster's /48 has no free /64 left"))?;
    let net = Ipv6Addr::new(prefix[0], prefix[1], prefix[2], id, 0, 0, 0, 0);
    Ok(format!("{net}/64"))
}

/// A node's disk report as the store keeps it: when it came, and the report.
type StoredDisk = (chrono::DateTime<chrono::Utc>, DiskReport);

/// A stored report, parsed; one that no longer parses (written by a newer control plane, say)
/// is left out, and logged.
fn stored_disk(node: &str, (at, json): (chrono::DateTime<chrono::Utc>, String)) -> Option<StoredDisk> {
    match serde_json::from_str::<DiskReport>(&json) {
        Ok(d) => Some((at, d)),
        Err(e) => {
            tracing::warn!(%node, error = %e, "a stored disk report does not parse; not shown");
            None
        }
    }
}
