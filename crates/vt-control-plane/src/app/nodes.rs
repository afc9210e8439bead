//! Nodes (register, heartbeat, capacity) and the node-facing instance API.

use axum::http::StatusCode;
use std::net::Ipv6Addr;
use vt_api::{Heartbeat, NodeInfo, RegisterNode, ReportInstanceStatus};

use vt_events::{
    AggregateType, Capacity, Event, InstanceStatus, InstanceStatusReported, NodeCapacityChanged, NodeRegistered,
    NodeStatus, NodeStatusChanged, NodeSubnetAssigned,
};
use vt_ids::NodeId;
use vt_store::Claim;
use vt_views::{InstanceView, NodeView, ViewKind};

use super::exists;
use crate::{validate, ApiErr, ApiResult, ControlPlane, Ctx, Plan};

fn check_capacity(field: &str, c: &Capacity) -> ApiResult<()> {
    if c.cpu_millis == 0 || c.memory_mib == 0 {
        return Err(ApiErr::invalid(field, format!("`{field}` must have cpu_millis > 0 and memory_mib > 0")));
    }
    Ok(())
}

impl ControlPlane {
    pub async fn node(&self, r: &str) -> ApiResult<NodeView> {
        let found = if r.starts_with("node_") {
            self.view::<NodeView>(r).await?
        } else {
            self.views::<NodeView>(Self::kind_query(ViewKind::Node).name(r)).await?.into_iter().next()
        };
        found.ok_or_else(|| ApiErr::not_found(format!("node `{r}` not found; `vt node list` shows the nodes")))
    }

    /// Register a node, or update the one registered under that name: a node
    /// agent calls this at every start, so it must be repeatable.
    pub async fn register_node(&self, ctx: &Ctx, req: RegisterNode) -> ApiResult<Plan<NodeView>> {
        validate::node_name("name", &req.name)?;
        check_capacity("capacity", &req.capacity)?;
        let allocatable = req.allocatable.unwrap_or(req.capacity);
        check_capacity("allocatable", &allocatable)?;
        if allocatable.cpu_millis > req.capacity.cpu_millis || allocatable.memory_mib > req.capacity.memory_mib {
            return Err(ApiErr::invalid("allocatable", "`allocatable` cannot exceed `capacity`"));
        }
        for (k, v) in &req.labels {
            validate::text(&format!("labels.{k}"), v, 256)?;
            if k.is_empty() || k.len() > 63 || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b)) {
                return Err(ApiErr::invalid(
                    format!("labels.{k}"),
                    "label keys are 1-63 characters of letters, digits and `-_./`",
                ));
            }
        }
        if let Some(a) = &req.address {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(ApiErr::invalid(
                    "address",
                    format!("`address` must be an IPv6 or IPv4 address; got {a:?}"),
                ));
            }
        }
        self.fresh().await?;
        let now = ctx.now();
        let nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        if let Some(mut existing) = nodes.iter().find(|n| n.name == req.name).cloned() {
            let mut plan = Plan::new(StatusCode::OK, existing.clone()).expect(exists(AggregateType::Node, existing.id));
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
            // Nodes registered before subnets existed get theirs now.
            if existing.subnet.is_none() {
                let subnet = next_subnet(&nodes)?;
                plan = plan
                    .event(Event::NodeSubnetAssigned(NodeSubnetAssigned {
                        node_id: existing.id,
                        subnet: subnet.clone(),
                    }))
                    .claim(Claim { scope: "subnet".into(), name: subnet.clone(), owner: existing.id.to_string() });
                existing.subnet = Some(subnet);
            }
            plan.response = existing;
            return Ok(plan);
        }
        let id = NodeId::new();
        let subnet = next_subnet(&nodes)?;
        let view = NodeView {
            id,
            name: req.name.clone(),
            status: NodeStatus::Ready,
            status_reason: None,
            capacity: req.capacity,
            allocatable,
            labels: req.labels.clone(),
            address: req.address.clone(),
            subnet: Some(subnet.clone()),
            registered_at: now,
            updated_at: now,
        };
        Ok(Plan::new(StatusCode::CREATED, view)
            .event(Event::NodeRegistered(NodeRegistered {
                node_id: id,
                name: req.name.clone(),
                capacity: req.capacity,
                allocatable,
                labels: req.labels,
                address: req.address,
            }))
            .event(Event::NodeSubnetAssigned(NodeSubnetAssigned { node_id: id, subnet: subnet.clone() }))
            .claim(Claim { scope: "node".into(), name: req.name, owner: id.to_string() })
            // Two registrations racing for one subnet: the second fails and its agent retries.
            .claim(Claim { scope: "subnet".into(), name: subnet, owner: id.to_string() }))
    }

    /// Record liveness (not an event) and, when it changes state, the events:
    /// capacity changes, and an unreachable node coming back.
    pub async fn heartbeat(&self, ctx: &Ctx, node: &NodeView, req: Heartbeat) -> ApiResult<Plan<NodeInfo>> {
        let now = ctx.now();
        self.store.heartbeat(&node.id.to_string(), now).await?;
        let mut view = node.clone();
        let mut plan = Plan::new(StatusCode::OK, ()).expect(exists(AggregateType::Node, node.id));
        let capacity = req.capacity.unwrap_or(node.capacity);
        let allocatable = req.allocatable.unwrap_or(if req.capacity.is_some() { capacity } else { node.allocatable });
        check_capacity("capacity", &capacity)?;
        check_capacity("allocatable", &allocatable)?;
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
        Ok(plan.respond(NodeInfo { node: view, last_heartbeat_at: Some(now) }))
    }

    /// Nodes by name, with their last heartbeat.
    pub async fn list_nodes(&self) -> ApiResult<Vec<NodeInfo>> {
        let beats = self.store.heartbeats().await?;
        let mut nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes
            .into_iter()
            .map(|n| NodeInfo { last_heartbeat_at: beats.get(&n.id.to_string()).copied(), node: n })
            .collect())
    }

    pub async fn node_info(&self, node: NodeView) -> ApiResult<NodeInfo> {
        let beats = self.store.heartbeats().await?;
        Ok(NodeInfo { last_heartbeat_at: beats.get(&node.id.to_string()).copied(), node })
    }

    pub async fn instance(&self, r: &str) -> ApiResult<InstanceView> {
        self.view::<InstanceView>(r).await?.ok_or_else(|| ApiErr::not_found(format!("instance `{r}` not found")))
    }

    /// A node agent reports an instance's current status. Only the admin or the
    /// instance's own node may; terminal statuses are final.
    pub async fn report_status(
        &self,
        ctx: &Ctx,
        instance: &InstanceView,
        req: ReportInstanceStatus,
    ) -> ApiResult<Plan<InstanceView>> {
        if let Some(reason) = &req.reason {
            validate::text("reason", reason, 2048)?;
        }
        if let Some(a) = &req.address {
            if a.parse::<std::net::IpAddr>().is_err() {
                return Err(ApiErr::invalid(
                    "address",
                    format!("`address` must be an IPv6 or IPv4 address; got {a:?}"),
                ));
            }
        }
        if req.health.is_some() && req.status != InstanceStatus::Running {
            return Err(ApiErr::invalid("health", "`health` is only reported with status `running`"));
        }
        if instance.status.is_terminal() && instance.status != req.status {
            return Err(ApiErr::conflict(format!(
                "instance {} is {} (final); a restarted instance gets a new id",
                instance.id,
                instance.status.as_str()
            )));
        }
        if !ctx.caller.is_admin() && ctx.caller.role != vt_events::TokenRole::Node {
            return Err(ApiErr::forbidden("only node agents report instance status"));
        }
        let mut view = instance.clone();
        let mut plan = Plan::new(StatusCode::OK, ()).expect(exists(AggregateType::Instance, instance.id));
        let address_changed = req.address.is_some() && req.address != instance.address;
        let health_changed = req.health.is_some() && req.health != instance.health;
        let boot_changed = req.boot.is_some() && req.boot != instance.boot;
        if address_changed
            || health_changed
            || boot_changed
            || (instance.status, &instance.reason, instance.exit_code) != (req.status, &req.reason, req.exit_code)
        {
            let e = InstanceStatusReported {
                org_id: instance.org_id,
                env_id: instance.env_id,
                instance_id: instance.id,
                node_id: instance.node_id,
                status: req.status,
                reason: req.reason,
                exit_code: req.exit_code,
                address: req.address,
                health: req.health,
                boot: req.boot,
            };
            // The answer is what the projection will make of it.
            view.apply_report(&e, ctx.now());
            plan = plan.event(Event::InstanceStatusReported(e));
        }
        Ok(plan.respond(view))
    }
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
    let used: std::collections::BTreeSet<u16> = taken.iter().map(|a| a.segments()[3]).collect();
    let id = (1..=u16::MAX)
        .find(|i| !used.contains(i))
        .ok_or_else(|| ApiErr::conflict("the cluster's /48 has no free /64 left"))?;
    let net = Ipv6Addr::new(prefix[0], prefix[1], prefix[2], id, 0, 0, 0, 0);
    Ok(format!("{net}/64"))
}
