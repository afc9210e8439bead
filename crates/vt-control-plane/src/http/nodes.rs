//! Nodes, and what a node's agent follows.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{
    CreateEnrollToken, EnrollNode, EnrolledNode, ErrorBody, Heartbeat, IssuedToken, List, Node, NodeInstances,
    NodeRouting, RegisterNode, RouteListenerReport,
};

use super::{Cp, JsonBody, Out, QueryParams};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(node_register, node_list))
        .routes(routes!(node_get))
        .routes(routes!(node_heartbeat))
        .routes(routes!(node_instances))
        .routes(routes!(node_routing))
        .routes(routes!(node_route_listeners))
        .routes(routes!(enroll_token_create))
        .routes(routes!(node_enroll))
        .routes(routes!(node_revoke))
}

/// Make a single-use enrollment token (admin); the answer carries its secret, once.
#[utoipa::path(post, path = "/nodes/enroll-tokens", tag = "nodes", request_body = CreateEnrollToken,
    responses((status = 201, body = IssuedToken), (status = "4XX", body = ErrorBody, description = "422 with `field` `Idempotency-Key` when one is sent: the secret is never stored")))]
async fn enroll_token_create(
    State(cp): Cp,
    ctx: Ctx,
    JsonBody(req): JsonBody<CreateEnrollToken>,
) -> ApiResult<Response> {
    let (status, issued) = cp.enroll_token_create(&ctx, req).await?;
    Ok((status, Json(issued)).into_response())
}

/// Enroll a new node with an enrollment token (its bearer token), once: the answer carries the
/// node's own token.
#[utoipa::path(post, path = "/nodes/enroll", tag = "nodes", request_body = EnrollNode,
    responses((status = 201, body = EnrolledNode), (status = "4XX", body = ErrorBody, description = "401 for a used or expired enrollment token; 409 `name_taken` on `name`")))]
async fn node_enroll(State(cp): Cp, ctx: Ctx, JsonBody(req): JsonBody<EnrollNode>) -> ApiResult<Response> {
    let (status, enrolled) = cp.node_enroll(&ctx, req).await?;
    Ok((status, Json(enrolled)).into_response())
}

/// Revoke a node (admin): its tokens die, its instances are placed elsewhere, its name is free.
#[utoipa::path(post, path = "/nodes/{node}/revoke", tag = "nodes",
    params(("node" = String, Path, description = "id or name"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Node, description = "the node, revoked"), (status = "4XX", body = ErrorBody)))]
async fn node_revoke(State(cp): Cp, ctx: Ctx, Path(node): Path<String>) -> ApiResult<Committed> {
    cp.node_revoke(&ctx, &node).await
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

/// What the node's ingress serves: every route and the ready instances behind them (the node
/// itself; an edge on a joined node follows it by cursor).
#[utoipa::path(get, path = "/nodes/{node}/routing", tag = "nodes", params(("node" = String, Path, description = "id or name"), NodeInstancesQuery),
    responses((status = 200, body = NodeRouting, description = "every route by id, the ready instances behind them, and the view position they reflect; with `after`, answered once the views move past it"), (status = "4XX", body = ErrorBody)))]
async fn node_routing(
    State(cp): Cp,
    ctx: Ctx,
    Path(node): Path<String>,
    QueryParams(q): QueryParams<NodeInstancesQuery>,
) -> Out<NodeRouting> {
    Ok(Json(cp.node_routing(&ctx, &node, q.after, q.wait_ms.map(Duration::from_millis)).await?))
}

/// The node's ingress reports its route listeners (the node itself): recorded as
/// `route.listener_changed` under the node's name; reports of routes that are gone are dropped.
#[utoipa::path(post, path = "/nodes/{node}/route-listeners", tag = "nodes", request_body = Vec<RouteListenerReport>,
    params(("node" = String, Path, description = "id or name"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, description = "`{\"recorded\": N}`: the reports recorded"), (status = "4XX", body = ErrorBody)))]
async fn node_route_listeners(
    State(cp): Cp,
    ctx: Ctx,
    Path(node): Path<String>,
    JsonBody(reports): JsonBody<Vec<RouteListenerReport>>,
) -> ApiResult<Committed> {
    cp.node_route_listeners(&ctx, &node, reports).await
}
