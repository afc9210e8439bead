//! Node identity: enrollment with a single-use token, and revocation (docs/nodes.md).
//!
//! An operator makes an enrollment token (`enroll` role, 15 minutes by default, with the labels
//! the node will have). A new host presents it once to `POST /v1/nodes/enroll` with the name it
//! takes: in one append the enrollment token is revoked (pinned on its version, so two hosts
//! racing with one token enroll one node) and a `node` token bound to a new node id and that
//! name is issued. The host keeps that token in its data directory and registers with it, its
//! WireGuard public key included; it never needs the enrollment token again.
//!
//! Revoking a node (`vt node revoke`) marks it `revoked` (the scheduler places its instances
//! elsewhere, as for an unreachable node), revokes every token bound to it and frees its name.

use axum::http::StatusCode;
use vt_api::{CreateEnrollToken, EnrollNode, EnrolledNode, IssuedToken, Node};
use vt_events::{AggregateType, Event, NodeStatus, NodeStatusChanged, TokenRole};
use vt_ids::{Name, NodeId};
use vt_store::{Claim, ClaimScope, Expectation, ExpectedVersion};
use vt_views::{NodeView, TokenView, ViewKind};

use crate::auth::{self, TokenSpec};
use crate::authz::{Action, Caller, Resource};
use crate::lookup::shown;
use crate::{wire, ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

/// An enrollment token's default and longest lives.
pub const DEFAULT_ENROLL_TTL_SECS: u64 = 15 * 60;
pub const MIN_ENROLL_TTL_SECS: u64 = 60;
pub const MAX_ENROLL_TTL_SECS: u64 = 7 * 24 * 3600;

impl ControlPlane {
    /// Make a single-use enrollment token (admin). The answer carries its secret, once.
    pub async fn enroll_token_create(&self, ctx: &Ctx, req: CreateEnrollToken) -> ApiResult<(StatusCode, IssuedToken)> {
        ctx.authorize_cluster(Action::Operate)?;
        ctx.refuse_replay("an enrollment token's creation")?;
        let ttl = req.ttl_secs.unwrap_or(DEFAULT_ENROLL_TTL_SECS);
        if !(MIN_ENROLL_TTL_SECS..=MAX_ENROLL_TTL_SECS).contains(&ttl) {
            return Err(ApiErr::invalid(
                "ttl_secs",
                format!("`ttl_secs` must be {MIN_ENROLL_TTL_SECS} to {MAX_ENROLL_TTL_SECS} (7 days); got {ttl}"),
            ));
        }
        let spec = TokenSpec {
            name: Name::parse("enroll").map_err(ApiErr::internal)?,
            role: TokenRole::Enroll,
            org: None,
            node: None,
            expires_at: Some(ctx.now() + chrono::Duration::seconds(ttl as i64)),
            labels: req.labels,
        };
        self.issue_token(ctx, Plan::new(StatusCode::CREATED, ()), spec).await
    }

    /// Exchange the caller's enrollment token for a new node's own token, once.
    pub async fn node_enroll(&self, ctx: &Ctx, req: EnrollNode) -> ApiResult<(StatusCode, EnrolledNode)> {
        ctx.authorize(Action::Enroll, Resource::Cluster, || ApiErr::not_found("not found"))?;
        ctx.refuse_replay("an enrollment")?;
        let Caller::Enroll { token } = ctx.caller else {
            return Err(ApiErr::internal("an enrollment by a caller that is no enrollment token"));
        };
        self.fresh().await?;
        let enroll: TokenView =
            self.view(&token.to_string()).await?.ok_or_else(|| ApiErr::internal("the enrollment token has no view"))?;
        let name = req.name.to_string();
        let nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node).name(name.clone())).await?;
        if nodes.iter().any(|n| n.status != NodeStatus::Revoked) {
            return Err(ApiErr::new(
                StatusCode::CONFLICT,
                vt_api::ErrorCode::NameTaken,
                format!("a node named `{name}` is registered; enroll this host under another name"),
            )
            .field("name"));
        }
        let node_id = NodeId::new();
        let spec = TokenSpec {
            name: Name::parse("node").map_err(ApiErr::internal)?,
            role: TokenRole::Node,
            org: None,
            node: Some((node_id, req.name.clone())),
            expires_at: None,
            labels: Default::default(),
        };
        let issued = auth::issue(spec, ctx.now()).map_err(ApiErr::internal)?;
        let (used, revocation) = auth::revoke(token, TokenRole::Enroll, None, ctx.now());
        let mut plan = Plan::new(StatusCode::CREATED, ())
            .event(used)
            .event(issued.event)
            // Pinned on the enrollment token's version: two hosts racing with it enroll one node.
            .expect(Expectation {
                aggregate_type: AggregateType::Token,
                aggregate_id: token.to_string(),
                expected: ExpectedVersion::Exact(1),
            });
        plan.revocations.push(revocation);
        plan.tokens.push(issued.record);
        let committed = self.commit(ctx, plan).await?;
        let enrolled = EnrolledNode { node_id, name, labels: enroll.labels, secret: issued.secret };
        Ok((committed.status, enrolled))
    }

    /// Revoke a node (admin): `revoked`, every token bound to it revoked, its name free. Its
    /// instances are placed elsewhere by the scheduler. Revoking a revoked node changes nothing.
    pub async fn node_revoke(&self, ctx: &Ctx, r: &str) -> ApiResult<Committed> {
        ctx.authorize_cluster(Action::Operate)?;
        self.fresh().await?;
        let id = self.lookup_node(r).await?.id;
        let (node, pin) = self.fresh_pinned::<NodeView>(AggregateType::Node, id, "node").await?;
        let beat = self.store.heartbeats().await?.get(&node.id.to_string()).copied();
        let disk = self.node_disk(node.id).await?;
        if node.status == NodeStatus::Revoked {
            return self.commit(ctx, Plan::new(StatusCode::OK, wire::node(node, beat, disk))).await;
        }
        let reason = format!("revoked by {}", ctx.actor().0);
        let mut plan = Plan::new(StatusCode::OK, ())
            .event(Event::NodeStatusChanged(NodeStatusChanged {
                node_id: node.id,
                status: NodeStatus::Revoked,
                reason: Some(reason.clone()),
            }))
            .expect(pin)
            .release(Claim { scope: ClaimScope::Node, name: node.name.clone(), owner: node.id.to_string() });
        let tokens: Vec<TokenView> = self.views(Self::kind_query(ViewKind::Token)).await?;
        for t in tokens.iter().filter(|t| t.node_id == Some(node.id) && t.revoked_at.is_none()) {
            let (event, revocation) = auth::revoke(t.id, t.role, None, ctx.now());
            plan = plan.event(event);
            plan.revocations.push(revocation);
        }
        let mut revoked = node.clone();
        revoked.status = NodeStatus::Revoked;
        revoked.status_reason = Some(reason);
        revoked.updated_at = ctx.now();
        let plan: Plan<Node> = plan.respond(wire::node(revoked, beat, disk));
        self.commit(ctx, plan).await.map_err(|e| {
            if e.code == vt_api::ErrorCode::Conflict {
                ApiErr::conflict(format!("node {} changed while it was revoked; retry", shown(r)))
            } else {
                e
            }
        })
    }
}
