//! Nodes, and what a node's agent follows.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{ErrorBody, Heartbeat, List, Node, NodeInstances, RegisterNode};

use super::{Cp, JsonBody, Out, QueryParams};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(node_register, node_list))
        .routes(routes!(node_get))
        .routes(routes!(node_heartbeat))
        .routes(routes!(node_instances))
}

/// Register a node, or update it (admin; a node token registers its own node, under its name).
#[utoipa::path(post, path = "/nodes", tag = "nodes", request_body = RegisterNode, params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Node), (status = 200, body = Node), (status = "4XX", body = ErrorBody)))]
async fn node_register(State(cp): Cp, ctx: Ctx, JsonBody(req): JsonBody<RegisterNode>) -> ApiResult<Committed> {
    cp.node_register(&ctx, req).await
}

/// Nodes by name, with their last heartbeat (admin and nodes).
#[utoipa::path(get, path = "/nodes", tag = "nodes", responses((status = 200, body = List<Node>), (status = "4XX", body = ErrorBody)))]
async fn node_list(State(cp): Cp, ctx: Ctx) -> Out<List<Node>> {
    Ok(Json(List { items: cp.node_list(&ctx).await? }))
}

#[utoipa::path(get, path = "/nodes/{node}", tag = "nodes", params(("node" = String, Path, description = "id or name")),
    responses((status = 200, body = Node), (status = "4XX", body = ErrorBody)))]
async fn node_get(State(cp): Cp, ctx: Ctx, Path(node): Path<String>) -> Out<Node> {
    Ok(Json(cp.node_get(&ctx, &node).await?))
}

/// The node's agent is alive (the node itself).
#[utoipa::path(post, path = "/nodes/{node}/heartbeat", tag = "nodes", request_body = Heartbeat,
    params(("node" = String, Path, description = "id or name"), ("Idempotency-Key" = Option<String>, Header)), responses((status = 200, body = Node), (status = "4XX", body = ErrorBody)))]
async fn node_heartbeat(
    State(cp): Cp,
    ctx: Ctx,
    Path(node): Path<String>,
    JsonBody(req): JsonBody<Heartbeat>,
) -> ApiResult<Committed> {
    cp.node_heartbeat(&ctx, &node, req).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct NodeInstancesQuery {
    /// A `seq` from an earlier answer: wait until the views move past it (or `wait_ms` ends).
    #[param(maximum = 9223372036854775807i64)]
    after: Option<u64>,
    /// How long to wait with `after`, in ms (default 10000, at most 20000).
    #[param(maximum = 20000)]
    wait_ms: Option<u64>,
}

/// Every instance placed on the node and the releases they run (the node itself).
#[utoipa::path(get, path = "/nodes/{node}/instances", tag = "nodes", params(("node" = String, Path, description = "id or name"), NodeInstancesQuery),
    responses((status = 200, body = NodeInstances, description = "every instance placed on the node (desired and current state) by id, the releases they run, and the view position they reflect; with `after`, answered once the views move past it"), (status = "4XX", body = ErrorBody)))]
async fn node_instances(
    State(cp): Cp,
    ctx: Ctx,
    Path(node): Path<String>,
    QueryParams(q): QueryParams<NodeInstancesQuery>,
) -> Out<NodeInstances> {
    Ok(Json(cp.node_instances(&ctx, &node, q.after, q.wait_ms.map(Duration::from_millis)).await?))
}
