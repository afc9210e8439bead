//! Volumes of an env (docs/volumes.md).

use axum::extract::{Path, State};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{
    Backup, CreateVolume, ErrorBody, ExtendVolume, List, ReportBackup, ReportSnapshot, RestoreBackup, RestoreSnapshot,
    Snapshot, Volume,
};

use super::{Cp, JsonBody, Out};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new()
        .routes(routes!(volume_create, volume_list))
        .routes(routes!(volume_get, volume_delete))
        .routes(routes!(volume_extend))
        .routes(routes!(snapshot_create, snapshot_list))
        .routes(routes!(snapshot_restore))
        .routes(routes!(snapshot_report))
        .routes(routes!(backup_create, backup_list))
        .routes(routes!(backup_restore))
        .routes(routes!(backup_report))
}

type EnvPath = Path<(String, String, String)>;
type VolumePath = Path<(String, String, String, String)>;

/// Create a volume of the env on a node (deployer).
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes", tag = "volumes", request_body = CreateVolume,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Volume), (status = "4XX", body = ErrorBody, description = "404 with `field` `node` when the node does not exist; 409 `conflict` when no node is ready")))]
async fn volume_create(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env)): EnvPath,
    JsonBody(req): JsonBody<CreateVolume>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.volume_create(&ctx, &scope, req).await
}

/// The env's volumes, by name, then id.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes", tag = "volumes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path)), responses((status = 200, body = List<Volume>), (status = "4XX", body = ErrorBody)))]
async fn volume_list(State(cp): Cp, ctx: Ctx, Path((org, app, env)): EnvPath) -> Out<List<Volume>> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(List { items: cp.volume_list(&ctx, &scope).await? }))
}

#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes/{volume}", tag = "volumes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("volume" = String, Path, description = "id, or a name one volume has")),
    responses((status = 200, body = Volume), (status = "4XX", body = ErrorBody, description = "409 `conflict` when several volumes have the name")))]
async fn volume_get(State(cp): Cp, ctx: Ctx, Path((org, app, env, volume)): VolumePath) -> Out<Volume> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(cp.volume_get(&ctx, &scope, &volume).await?))
}

/// Delete a volume no instance has (deployer).
#[utoipa::path(delete, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes/{volume}", tag = "volumes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("volume" = String, Path, description = "id, or a name one volume has"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Volume, description = "the deleted volume"), (status = "4XX", body = ErrorBody, description = "409 `conflict` while an instance has it")))]
async fn volume_delete(State(cp): Cp, ctx: Ctx, Path((org, app, env, volume)): VolumePath) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.volume_delete(&ctx, &scope, &volume).await
}

/// Grow a volume (deployer); an attached volume grows at its instance's next start.
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes/{volume}/extend", tag = "volumes", request_body = ExtendVolume,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("volume" = String, Path, description = "id, or a name one volume has"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Volume), (status = "4XX", body = ErrorBody, description = "422 `invalid_field` `size_gib` when it is not larger")))]
async fn volume_extend(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env, volume)): VolumePath,
    JsonBody(req): JsonBody<ExtendVolume>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.volume_extend(&ctx, &scope, &volume, req).await
}

/// Take a snapshot of a volume (deployer): its node copies the disk, pausing the VM that has
/// it for the copy (docs/volumes.md).
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes/{volume}/snapshots", tag = "volumes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("volume" = String, Path, description = "id, or a name one volume has"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Snapshot, description = "pending until its node reports it"), (status = "4XX", body = ErrorBody)))]
async fn snapshot_create(State(cp): Cp, ctx: Ctx, Path((org, app, env, volume)): VolumePath) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.snapshot_create(&ctx, &scope, &volume).await
}

/// The snapshots of a volume (by id), or of every volume of that name, deleted ones too; oldest first.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes/{volume}/snapshots", tag = "volumes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("volume" = String, Path, description = "id, or a volume name")),
    responses((status = 200, body = List<Snapshot>), (status = "4XX", body = ErrorBody)))]
async fn snapshot_list(State(cp): Cp, ctx: Ctx, Path((org, app, env, volume)): VolumePath) -> Out<List<Snapshot>> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(List { items: cp.snapshot_list(&ctx, &scope, &volume).await? }))
}

/// Restore a completed snapshot as a new volume on its node (deployer); never in place.
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/snapshots/{snapshot}/restore", tag = "volumes", request_body = RestoreSnapshot,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("snapshot" = String, Path, description = "id"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Volume, description = "the new volume"), (status = "4XX", body = ErrorBody, description = "409 `name_taken` with `field` `name` when a volume of the env has the name; 409 `conflict` when the snapshot is not completed")))]
async fn snapshot_restore(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env, snapshot)): Path<(String, String, String, String)>,
    JsonBody(req): JsonBody<RestoreSnapshot>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.snapshot_restore(&ctx, &scope, &snapshot, req).await
}

/// A node agent reports a snapshot it took, or could not take (its own node's only).
#[utoipa::path(post, path = "/nodes/{node}/snapshots/{snapshot}", tag = "volumes", request_body = ReportSnapshot,
    params(("node" = String, Path), ("snapshot" = String, Path, description = "id"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Snapshot), (status = "4XX", body = ErrorBody)))]
async fn snapshot_report(
    State(cp): Cp,
    ctx: Ctx,
    Path((node, snapshot)): Path<(String, String)>,
    JsonBody(req): JsonBody<ReportSnapshot>,
) -> ApiResult<Committed> {
    cp.snapshot_report(&ctx, &node, &snapshot, req).await
}

/// Back up a volume now (deployer): its node copies the disk and sends it to the server's
/// restic repository; the volume's `backups` says when it ends and how.
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes/{volume}/backups", tag = "volumes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("volume" = String, Path, description = "id, or a name one volume has"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Volume, description = "the volume, its backup pending"), (status = "4XX", body = ErrorBody, description = "409 `conflict` when the server has no backup repository or a backup of the volume is running")))]
async fn backup_create(State(cp): Cp, ctx: Ctx, Path((org, app, env, volume)): VolumePath) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.backup_create(&ctx, &scope, &volume).await
}

/// The backups in the repository of this env's volumes of a name (or of a volume, by id), oldest first.
#[utoipa::path(get, path = "/orgs/{org}/apps/{app}/envs/{env}/volumes/{volume}/backups", tag = "volumes",
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("volume" = String, Path, description = "a volume name, or a volume's id")),
    responses((status = 200, body = List<Backup>), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody, description = "503 when the repository is unreachable or refuses the password (the message says which)")))]
async fn backup_list(State(cp): Cp, ctx: Ctx, Path((org, app, env, volume)): VolumePath) -> Out<List<Backup>> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    Ok(Json(List { items: cp.backup_list(&ctx, &scope, &volume).await? }))
}

/// Restore a backup as a new volume (deployer); never in place.
#[utoipa::path(post, path = "/orgs/{org}/apps/{app}/envs/{env}/backups/{backup}/restore", tag = "volumes", request_body = RestoreBackup,
    params(("org" = String, Path), ("app" = String, Path), ("env" = String, Path), ("backup" = String, Path, description = "the restic snapshot id, or a unique prefix of 8 or more hex digits"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Volume, description = "the new volume"), (status = "4XX", body = ErrorBody, description = "409 `name_taken` with `field` `name` when a volume of the env has the name"), (status = "5XX", body = ErrorBody)))]
async fn backup_restore(
    State(cp): Cp,
    ctx: Ctx,
    Path((org, app, env, backup)): Path<(String, String, String, String)>,
    JsonBody(req): JsonBody<RestoreBackup>,
) -> ApiResult<Committed> {
    let scope = cp.lookup_env_scope(&ctx, &org, &app, &env).await?;
    cp.backup_restore(&ctx, &scope, &backup, req).await
}

/// A node agent reports a backup run of one of its volumes (its own node's only).
#[utoipa::path(post, path = "/nodes/{node}/volumes/{volume}/backup", tag = "volumes", request_body = ReportBackup,
    params(("node" = String, Path), ("volume" = String, Path, description = "id"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Volume), (status = "4XX", body = ErrorBody)))]
async fn backup_report(
    State(cp): Cp,
    ctx: Ctx,
    Path((node, volume)): Path<(String, String)>,
    JsonBody(req): JsonBody<ReportBackup>,
) -> ApiResult<Committed> {
    cp.backup_report(&ctx, &node, &volume, req).await
}
