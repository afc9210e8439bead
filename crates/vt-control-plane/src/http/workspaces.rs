//! `/v1/workspaces` (docs/workspaces.md): browser IDEs, named platform-wide, owned by an org.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{AddWorkspacePort, CreateWorkspace, ErrorBody, List, Workspace, WorkspaceDesired, WorkspacePort};

use super::{Cp, JsonBody, Out, QueryParams};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(workspace_create, workspace_list))
        .routes(routes!(workspace_get, workspace_delete))
        .routes(routes!(workspace_start))
        .routes(routes!(workspace_stop))
        .routes(routes!(workspace_port_add, workspace_port_list))
        .routes(routes!(workspace_port_remove))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WorkspaceQuery {
    /// Only this org's workspaces (name or id).
    #[param(max_length = 63)]
    org: Option<String>,
}

/// Create a workspace and start it (deployer of its org). Its name is unique on the platform.
#[utoipa::path(post, path = "/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Workspace), (status = "4XX", body = ErrorBody, description = "409 `name_taken` on `name`; 409 `capacity_exhausted` when no node has the memory, naming the workspace to stop")))]
async fn workspace_create(State(cp): Cp, ctx: Ctx, JsonBody(req): JsonBody<CreateWorkspace>) -> ApiResult<Committed> {
    cp.workspace_create(&ctx, req).await
}

/// The workspaces the caller may see, by name.
#[utoipa::path(get, path = "/workspaces", tag = "workspaces", params(WorkspaceQuery),
    responses((status = 200, body = List<Workspace>), (status = "4XX", body = ErrorBody)))]
async fn workspace_list(State(cp): Cp, ctx: Ctx, QueryParams(q): QueryParams<WorkspaceQuery>) -> Out<List<Workspace>> {
    Ok(Json(List { items: cp.workspace_list(&ctx, q.org.as_deref()).await? }))
}

#[utoipa::path(get, path = "/workspaces/{workspace}", tag = "workspaces",
    params(("workspace" = String, Path, description = "name or id")),
    responses((status = 200, body = Workspace), (status = "4XX", body = ErrorBody)))]
async fn workspace_get(State(cp): Cp, ctx: Ctx, Path(workspace): Path<String>) -> Out<Workspace> {
    Ok(Json(cp.workspace_get(&ctx, &workspace).await?))
}

/// Delete a workspace (deployer): irreversible. Its VM stops, then its disk is removed and its
/// name freed.
#[utoipa::path(delete, path = "/workspaces/{workspace}", tag = "workspaces",
    params(("workspace" = String, Path, description = "name or id"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 202, body = Workspace, description = "the workspace, `deleting`"), (status = "4XX", body = ErrorBody, description = "409 `conflict` when it is already being deleted")))]
async fn workspace_delete(State(cp): Cp, ctx: Ctx, Path(workspace): Path<String>) -> ApiResult<Committed> {
    cp.workspace_delete(&ctx, &workspace).await
}

/// Start a stopped (or failed) workspace on the node that holds its disk, or resume a suspended
/// one there (deployer).
#[utoipa::path(post, path = "/workspaces/{workspace}/start", tag = "workspaces",
    params(("workspace" = String, Path, description = "name or id"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Workspace), (status = "4XX", body = ErrorBody, description = "409 `capacity_exhausted` when its node lacks the memory, naming the workspace to stop")))]
async fn workspace_start(State(cp): Cp, ctx: Ctx, Path(workspace): Path<String>) -> ApiResult<Committed> {
    cp.workspace_set(&ctx, &workspace, WorkspaceDesired::Running).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StopQuery {
    /// Suspend instead: save the VM (its memory: processes, /tmp) to a snapshot on its node; a
    /// start resumes it as it was. A stopped workspace stays stopped.
    #[serde(default)]
    suspend: bool,
}

/// Stop a workspace (deployer); its disk stays. With `suspend=true`, suspend it.
#[utoipa::path(post, path = "/workspaces/{workspace}/stop", tag = "workspaces",
    params(("workspace" = String, Path, description = "name or id"), StopQuery, ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Workspace), (status = "4XX", body = ErrorBody)))]
async fn workspace_stop(
    State(cp): Cp,
    ctx: Ctx,
    Path(workspace): Path<String>,
    QueryParams(q): QueryParams<StopQuery>,
) -> ApiResult<Committed> {
    let desired = if q.suspend { WorkspaceDesired::Suspended } else { WorkspaceDesired::Stopped };
    cp.workspace_set(&ctx, &workspace, desired).await
}

/// The workspace's registered ports, ascending.
#[utoipa::path(get, path = "/workspaces/{workspace}/ports", tag = "workspaces",
    params(("workspace" = String, Path, description = "name or id")),
    responses((status = 200, body = List<WorkspacePort>), (status = "4XX", body = ErrorBody)))]
async fn workspace_port_list(State(cp): Cp, ctx: Ctx, Path(workspace): Path<String>) -> Out<List<WorkspacePort>> {
    Ok(Json(List { items: cp.workspace_port_list(&ctx, &workspace).await? }))
}

/// Register a port (deployer; at most 5): served at `/workspace/{name}/port/{port}/`, 502 until
/// something listens on it.
#[utoipa::path(post, path = "/workspaces/{workspace}/ports", tag = "workspaces", request_body = AddWorkspacePort,
    params(("workspace" = String, Path, description = "name or id"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = List<WorkspacePort>, description = "every port after the change"), (status = "4XX", body = ErrorBody, description = "422 `invalid_field` `port` for a sixth port")))]
async fn workspace_port_add(
    State(cp): Cp,
    ctx: Ctx,
    Path(workspace): Path<String>,
    JsonBody(req): JsonBody<AddWorkspacePort>,
) -> ApiResult<Committed> {
    cp.workspace_port(&ctx, &workspace, req.port, true).await
}

/// Unregister a port (deployer).
#[utoipa::path(delete, path = "/workspaces/{workspace}/ports/{port}", tag = "workspaces",
    params(("workspace" = String, Path, description = "name or id"), ("port" = u16, Path, minimum = 1, maximum = 65535), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = List<WorkspacePort>, description = "every port after the change"), (status = "4XX", body = ErrorBody)))]
async fn workspace_port_remove(
    State(cp): Cp,
    ctx: Ctx,
    Path((workspace, port)): Path<(String, String)>,
) -> ApiResult<Committed> {
    let port = port.parse::<u16>().map_err(|_| {
        crate::ApiErr::invalid("port", format!("port must be 1-65535, got {}", crate::lookup::shown(&port)))
    })?;
    cp.workspace_port(&ctx, &workspace, port, false).await
}
