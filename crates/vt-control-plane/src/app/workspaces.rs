//! Workspaces (docs/workspaces.md): a browser IDE in one microVM with a home disk that persists.
//!
//! A workspace runs on what services run on. Its create appends, in one transaction, a hidden
//! app (`AppCreated.workspace_id`: not one of the org's apps) with one env, a release of the
//! IDE image with a generated manifest (process `ide`, port 8080, `scaling` 0..1, the home
//! volume at `/home/vt`, `network = "isolated"`: the internet only, no other instance), the home volume on the chosen node, a deploy and `ide=1`, and the
//! `workspace.created` that ties them together and claims the name platform-wide. Start and
//! stop are `ide=1`/`ide=0` with the workspace's desired state, pinned on the env's version, so
//! racing requests cannot produce two VMs; the scheduler places the instance where the volume
//! is. The scheduler also finishes what a workspace cannot do in one request
//! ([`reconcile`]): a workspace whose IDE failed is stopped (no restart loop), and a deleted
//! workspace's disk goes once its VM has ended.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::StreamExt;
use vt_api::workspaces as api;
use vt_api::{
    CreateWorkspace, ErrorCode, Workspace, WorkspaceActivity, WorkspaceDesired, WorkspacePort, WorkspaceStatus,
};
use vt_events::{
    AggregateType, AppCreated, DeployCreated, DeployKind, EnvCreated, Event, InstanceStatus, NodeStatus, ScaleSet,
    VolumeCreated, VolumeDeleted, WorkspaceAccessed, WorkspaceCreated, WorkspaceDeleted, WorkspaceDesiredStateChanged,
    WorkspaceFailed, WorkspacePortAdded, WorkspacePortRemoved,
};
use vt_ids::{AppId, DeployId, EnvId, VolumeId, WorkspaceId};
use vt_store::{Claim, ClaimScope, Expectation};
use vt_views::{AppView, InstanceView, NodeView, ViewKind, WorkspaceView};

use super::exists;
use super::releases::{parse_image, plan_release, resolve_image, ResolvedImage};
use crate::authz::{Action, Resource};
use crate::lookup::{authorize_in, shown};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

/// The env that runs a workspace's IDE, in its hidden app.
const ENV: &str = "workspace";
/// The home volume's name in that env.
const HOME_VOLUME: &str = "home";
/// The repository of an org that the server's workspace template is imported into, and its tag.
const TEMPLATE_REPO: &str = "workspace";
const TEMPLATE_TAG: &str = "template";
/// How many times a start or stop plans again after losing a race on the env.
const RETRIES: usize = 3;

/// The release manifest of a workspace's IDE. Its health check is TCP (any IDE on the port),
/// every second (the workspace is `running` as soon as it listens), with a two-minute grace:
/// code-server takes tens of seconds to listen under software emulation, and an IDE that
/// exits fails at once anyway.
fn manifest(cpus: u32, memory_mib: u32) -> String {
    format!(
        r#"schema_version = 1

[processes.{ide}]
network = "isolated"
ports = [{{ name = "ide", port = {port} }}]
resources = {{ cpu = {cpus}, memory_mib = {memory_mib} }}
scaling = {{ min = 0, max = 1 }}

[processes.{ide}.healthcheck]
type = "tcp"
port = "ide"
interval = "1s"
timeout = "500ms"
grace = "120s"

[[volumes]]
name = "{HOME_VOLUME}"
path = "{home}"
process = "{ide}"
"#,
        ide = api::IDE_PROCESS,
        port = api::IDE_PORT,
        home = api::HOME,
    )
}

/// Where a workspace is, from its desired state and its IDE's newest instance that has not ended.
pub(crate) fn status(w: &WorkspaceView, live: Option<&InstanceView>) -> (WorkspaceStatus, Option<String>) {
    match (w.desired, live) {
        (WorkspaceDesired::Deleted, _) => {
            (WorkspaceStatus::Deleting, Some("deleted: its VM stops, then its disk is removed".to_owned()))
        }
        (WorkspaceDesired::Stopped, Some(i)) => {
            (WorkspaceStatus::Stopping, Some(format!("instance {} is {}", i.id, i.status.as_str())))
        }
        (WorkspaceDesired::Suspended, Some(i)) if i.status == InstanceStatus::Suspended => (
            WorkspaceStatus::Suspended,
            Some(format!("instance {} is saved to a snapshot on its node; `vt workspace start` resumes it", i.id)),
        ),
        (WorkspaceDesired::Suspended, Some(i)) => {
            (WorkspaceStatus::Suspending, Some(format!("instance {} is {}", i.id, i.status.as_str())))
        }
        (WorkspaceDesired::Suspended, None) => (
            WorkspaceStatus::Suspended,
            Some("no VM was running to save: `vt workspace start` boots it afresh".to_owned()),
        ),
        (WorkspaceDesired::Stopped, None) => match &w.failure {
            Some(f) => (WorkspaceStatus::Failed, Some(f.reason.clone())),
            None => (WorkspaceStatus::Stopped, None),
        },
        (WorkspaceDesired::Running, Some(i)) if i.is_ready() => (WorkspaceStatus::Running, None),
        (WorkspaceDesired::Running, live) => {
            let first = w.last_started_at == Some(w.created_at);
            let status = if first { WorkspaceStatus::Creating } else { WorkspaceStatus::Starting };
            let why = match live {
                None => "waiting for the scheduler to place its VM".to_owned(),
                Some(i) if i.status == InstanceStatus::Suspended => {
                    format!("instance {} is resuming from its snapshot", i.id)
                }
                Some(i) if i.status == InstanceStatus::Running => {
                    format!("instance {} is up; waiting for the IDE to listen on port {}", i.id, api::IDE_PORT)
                }
                Some(i) => format!("instance {} is {}", i.id, i.status.as_str()),
            };
            (status, Some(why))
        }
    }
}

/// The instance of a workspace's IDE that has not ended, newest first.
fn live_instance(instances: &[InstanceView]) -> Option<&InstanceView> {
    instances.iter().filter(|i| !i.status.is_terminal()).max_by_key(|i| i.id)
}

impl ControlPlane {
    /// A workspace the caller may `action`, by id or name (names are platform-wide).
    pub async fn lookup_workspace(&self, ctx: &Ctx, r: &str, action: Action) -> ApiResult<WorkspaceView> {
        let not_found =
            || ApiErr::not_found(format!("workspace {} not found; `vt workspace list` shows the workspaces", shown(r)));
        let w = self.find::<WorkspaceView>(None, r).await?.into_iter().next().ok_or_else(not_found)?;
        ctx.authorize(action, Resource::Org(w.org_id), not_found)?;
        Ok(w)
    }

    /// The workspace as the API shows it: its view next to its IDE's instance.
    async fn workspace_out(&self, w: WorkspaceView) -> ApiResult<Workspace> {
        let instances: Vec<InstanceView> = self.views(Self::kind_query(ViewKind::Instance).parent(w.env_id)).await?;
        let live = live_instance(&instances);
        let (status, reason) = status(&w, live);
        let last_log_lines = match (&w.failure, status) {
            (Some(f), WorkspaceStatus::Failed) => self.last_log_lines(f.instance_id, w.node_id, 10).await,
            _ => vec![],
        };
        let node = self.view::<NodeView>(&w.node_id.to_string()).await?.map(|n| n.name).unwrap_or_default();
        let path = Workspace::path_of(&w.name);
        let ports =
            w.ports.iter().map(|p| WorkspacePort { port: *p, path: format!("{path}port/{p}/") }).collect::<Vec<_>>();
        Ok(Workspace {
            id: w.id,
            name: w.name,
            org_id: w.org_id,
            desired: w.desired,
            status,
            reason,
            last_log_lines,
            cpus: w.cpus,
            memory_mib: w.memory_mib,
            disk_gib: w.disk_gib,
            image_ref: w.image_ref,
            image_digest: w.image_digest,
            node_id: w.node_id,
            node,
            instance_id: live.map(|i| i.id),
            address: live.and_then(|i| i.address.clone()),
            url: self.workspaces.origin.as_ref().map(|o| format!("{}{path}", o.trim_end_matches('/'))),
            path,
            ports,
            created_at: w.created_at,
            last_started_at: w.last_started_at,
            last_accessed_at: w.last_accessed_at,
            activity: w
                .activity
                .into_iter()
                .map(|a| WorkspaceActivity { at: a.at, event: a.event, detail: a.detail })
                .collect(),
        })
    }

    /// The last `n` lines an instance printed (nothing when no node agent serves its logs).
    async fn last_log_lines(&self, instance: vt_ids::InstanceId, node: vt_ids::NodeId, n: usize) -> Vec<String> {
        let ended: crate::logs::Ended = Box::new(|| Box::pin(async { true }));
        let read = crate::logs::LogSource::read(self.dispatch.as_ref(), instance, node, Some(n), false, ended);
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), read).await else { return vec![] };
        let mut bytes = vec![];
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                bytes.extend_from_slice(&chunk);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
        String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
    }

    /// Commit `plan` (changes of `w`), answering `status` with the workspace as the plan's
    /// events leave it. The answer is decided before the commit and stored with the
    /// idempotency record, so a replay answers the same.
    async fn commit_workspace(
        &self,
        ctx: &Ctx,
        status: StatusCode,
        w: WorkspaceView,
        plan: Plan<()>,
    ) -> ApiResult<Committed> {
        let mut after = w;
        for e in &plan.events {
            after.apply(e, ctx.now());
        }
        let mut plan = plan.respond(self.workspace_out(after).await?);
        plan.status = status;
        self.commit(ctx, plan).await
    }

    /// A response of `status` with `value` for a request that found nothing to change.
    fn as_is<T: serde::Serialize>(status: StatusCode, value: &T) -> ApiResult<Committed> {
        let body = serde_json::to_string(value).map_err(ApiErr::internal)?;
        Ok(Committed { status, body, seq: 0, replayed: false })
    }

    /// The image a new workspace runs: `image` (of the org, in the built-in registry), or the
    /// server's template imported into the org's `workspace` repository.
    async fn workspace_image(&self, org: &vt_views::OrgView, image: Option<&str>) -> ApiResult<ResolvedImage> {
        if let Some(image) = image {
            let r = parse_image(org, image)?;
            return resolve_image(self.registry.storage(), &r);
        }
        let no_template = || {
            ApiErr::invalid(
                "image",
                "this server has no workspace template (`vt server --workspace-template DIR`, which scripts/up.sh \
                 passes): give an image that serves an IDE on port 8080 with `--image`",
            )
        };
        let layout = self.workspaces.template.clone().ok_or_else(no_template)?;
        let storage = self.registry.storage().ok_or_else(no_template)?.clone();
        let repo = format!("{}/{TEMPLATE_REPO}", org.name);
        let imported = {
            let repo = repo.clone();
            tokio::task::spawn_blocking(move || storage.import_layout(&layout, &repo, TEMPLATE_TAG))
                .await
                .map_err(ApiErr::internal)?
        };
        let digest = imported.map_err(|e| ApiErr::internal(format!("the workspace template does not import: {e}")))?;
        Ok(ResolvedImage {
            image_ref: format!("{repo}@{digest}"),
            image_digest: digest,
            resolved_from: Some(format!("{repo}:{TEMPLATE_TAG}")),
        })
    }

    /// What holds the nodes' memory: every instance and every workspace, read once per decision.
    async fn load(&self) -> ApiResult<Load> {
        Ok(Load {
            instances: self.views(Self::kind_query(ViewKind::Instance)).await?,
            workspaces: self.views(Self::kind_query(ViewKind::Workspace)).await?,
        })
    }

    pub async fn workspace_create(&self, ctx: &Ctx, req: CreateWorkspace) -> ApiResult<Committed> {
        let org = self.lookup_org(ctx, &req.org).await.map_err(|e| e.field("org"))?;
        authorize_in(ctx, Action::Deploy, &org)?;
        let cpus = checked("cpus", req.cpus.unwrap_or(api::DEFAULT_CPUS), 1, api::MAX_CPUS)?;
        let memory_mib = checked(
            "memory_mib",
            req.memory_mib.unwrap_or(api::DEFAULT_MEMORY_MIB),
            api::MIN_MEMORY_MIB,
            api::MAX_MEMORY_MIB,
        )?;
        let disk_gib = checked("disk_gib", req.disk_gib.unwrap_or(api::DEFAULT_DISK_GIB), 1, api::MAX_DISK_GIB)?;
        let name = req.name.into_string();
        let image = self.workspace_image(&org, req.image.as_deref()).await?;
        self.fresh().await?;
        let load = self.load().await?;
        let node = self.roomiest_node(&load).await?;
        load.check_fits(&node, memory_mib, None)?;

        let (id, app_id, env_id, volume_id, deploy_id) =
            (WorkspaceId::new(), AppId::new(), EnvId::new(), VolumeId::new(), DeployId::new());
        let now = ctx.now();
        let app = AppView {
            id: app_id,
            org_id: org.id,
            name: name.clone(),
            description: Some(format!("workspace {name}")),
            workspace_id: Some(id),
            created_at: now,
            updated_at: now,
        };
        let release = plan_release(ctx, &app, &manifest(cpus, memory_mib), image.clone())?;
        let release_id = match release.events.first() {
            Some(Event::ReleaseCreated(r)) => r.release_id,
            _ => return Err(ApiErr::internal("a release plan without its release")),
        };
        let created = WorkspaceCreated {
            org_id: org.id,
            workspace_id: id,
            name: name.clone(),
            app_id,
            env_id,
            release_id,
            volume_id,
            node_id: node.id,
            image_ref: image.image_ref,
            image_digest: image.image_digest.to_string(),
            cpus,
            memory_mib,
            disk_gib,
        };
        let mut plan = Plan::new(StatusCode::CREATED, ())
            .event(Event::AppCreated(AppCreated {
                org_id: org.id,
                app_id,
                name: name.clone(),
                description: app.description.clone(),
                workspace_id: Some(id),
            }))
            .event(Event::EnvCreated(EnvCreated { org_id: org.id, app_id, env_id, name: ENV.to_owned() }));
        plan.events.extend(release.events);
        let plan = plan
            .event(Event::VolumeCreated(VolumeCreated {
                org_id: org.id,
                app_id,
                env_id,
                volume_id,
                name: HOME_VOLUME.to_owned(),
                size_gib: disk_gib,
                node_id: node.id,
                from_snapshot: None,
                from_backup: None,
            }))
            .event(Event::DeployCreated(DeployCreated {
                org_id: org.id,
                app_id,
                env_id,
                deploy_id,
                release_id,
                previous_release_id: None,
                kind: DeployKind::Deploy,
                secrets_version: None,
                previous_secrets_version: None,
            }))
            .event(Event::ScaleSet(ScaleSet {
                org_id: org.id,
                app_id,
                env_id,
                process: api::IDE_PROCESS.to_owned(),
                instances: 1,
            }))
            .event(Event::WorkspaceCreated(created.clone()))
            .expect(exists(AggregateType::Org, org.id))
            .expect(exists(AggregateType::Node, node.id))
            .claim(Claim { scope: ClaimScope::Workspace, name, owner: id.to_string() });
        self.commit_workspace(ctx, StatusCode::CREATED, WorkspaceView::created(&created, now), plan).await
    }

    /// The ready node that runs instances with the most memory free (then the lowest name).
    async fn roomiest_node(&self, load: &Load) -> ApiResult<NodeView> {
        let nodes: Vec<NodeView> = self.views(Self::kind_query(ViewKind::Node)).await?;
        nodes
            .into_iter()
            .filter(|n| n.status == NodeStatus::Ready && n.runs_instances)
            .max_by(|a, b| {
                let free = |n: &NodeView| load.free_memory(n, None);
                free(a).cmp(&free(b)).then_with(|| b.name.cmp(&a.name))
            })
            .ok_or_else(|| {
                ApiErr::conflict("no node is ready to run the workspace; start a node agent (`vt node list`)")
            })
    }

    /// Workspaces the caller may see (of `org` when given), by name.
    pub async fn workspace_list(&self, ctx: &Ctx, org: Option<&str>) -> ApiResult<Vec<Workspace>> {
        let mut query = Self::kind_query(ViewKind::Workspace);
        if let Some(org) = org {
            query = query.parent(self.lookup_org(ctx, org).await?.id);
        }
        let mut items: Vec<WorkspaceView> = self.views(query).await?;
        items.retain(|w| ctx.caller.sees_org(w.org_id));
        items.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::with_capacity(items.len());
        for w in items {
            out.push(self.workspace_out(w).await?);
        }
        Ok(out)
    }

    pub async fn workspace_get(&self, ctx: &Ctx, r: &str) -> ApiResult<Workspace> {
        let w = self.lookup_workspace(ctx, r, Action::Read).await?;
        self.workspace_out(w).await
    }

    /// Start (`running`), stop (`stopped`) or suspend (`suspended`: the scheduler suspends its IDE
    /// instead of stopping it; a start resumes it) a workspace: its desired state and its IDE's count,
    /// pinned on its env, planned again when a concurrent change wins the race.
    pub async fn workspace_set(&self, ctx: &Ctx, r: &str, desired: WorkspaceDesired) -> ApiResult<Committed> {
        let mut tries = 0;
        loop {
            tries += 1;
            let (w, pins) = self.lookup_pinned(ctx, r).await?;
            let plan = match self.plan_set(&w, desired, pins).await? {
                Some(plan) => plan,
                // Already so: nothing to record, the workspace as it is.
                None => return Self::as_is(StatusCode::OK, &self.workspace_out(w).await?),
            };
            match self.commit_workspace(ctx, StatusCode::OK, w, plan).await {
                Err(e) if e.code == ErrorCode::Conflict && tries < RETRIES => continue,
                other => return other,
            }
        }
    }

    async fn plan_set(&self, w: &WorkspaceView, desired: WorkspaceDesired, pins: Pins) -> ApiResult<Option<Plan<()>>> {
        match (w.desired, desired) {
            (WorkspaceDesired::Deleted, _) => {
                return Err(ApiErr::conflict(format!(
                    "workspace `{}` is being deleted; it cannot be started or stopped",
                    w.name
                )))
            }
            (from, to) if from == to => return Ok(None),
            // Nothing runs to be saved: it stays stopped.
            (WorkspaceDesired::Stopped, WorkspaceDesired::Suspended) => return Ok(None),
            _ => {}
        }
        if desired == WorkspaceDesired::Running {
            let node = self
                .view::<NodeView>(&w.node_id.to_string())
                .await?
                .ok_or_else(|| ApiErr::internal("the workspace's node vanished"))?;
            if node.status != NodeStatus::Ready {
                return Err(ApiErr::conflict(format!(
                    "node `{}`, which holds the workspace's disk, is not ready ({}); start the workspace once it is back",
                    node.name,
                    node.status_reason.as_deref().unwrap_or("no reason reported")
                )));
            }
            self.load().await?.check_fits(&node, w.memory_mib, Some(w.id))?;
        }
        let instances = u32::from(desired == WorkspaceDesired::Running);
        Ok(Some(plan_desired(w, desired, instances, pins)))
    }

    /// A workspace the caller may change, by id or name, with the versions of it and its env
    /// that the view shows (or older). The versions are read before the view: a change
    /// committed in between makes the view newer than the pins and the commit a conflict, never
    /// a plan made on a view older than its pins (two racing starts both recording a start).
    async fn lookup_pinned(&self, ctx: &Ctx, r: &str) -> ApiResult<(WorkspaceView, Pins)> {
        self.fresh().await?;
        let first = self.lookup_workspace(ctx, r, Action::Deploy).await?;
        let pins = Pins {
            workspace: self.pin(AggregateType::Workspace, first.id.to_string()).await?,
            env: self.pin(AggregateType::Env, first.env_id.to_string()).await?,
        };
        self.fresh().await?;
        let w = self.lookup_workspace(ctx, r, Action::Deploy).await?;
        if w.id != first.id {
            return Err(ApiErr::conflict(format!("workspace `{}` was deleted and created again meanwhile", w.name)));
        }
        Ok((w, pins))
    }

    /// Delete a workspace: irreversible. Its VM stops; the scheduler removes its disk once the
    /// VM has ended (`workspace.deleted` frees the name). 202 with the workspace `deleting`.
    pub async fn workspace_delete(&self, ctx: &Ctx, r: &str) -> ApiResult<Committed> {
        let (w, pins) = self.lookup_pinned(ctx, r).await?;
        if w.desired == WorkspaceDesired::Deleted {
            return Err(ApiErr::conflict(format!("workspace `{}` is already being deleted", w.name)));
        }
        let plan = plan_desired(&w, WorkspaceDesired::Deleted, 0, pins);
        self.commit_workspace(ctx, StatusCode::ACCEPTED, w, plan).await
    }

    pub async fn workspace_port_list(&self, ctx: &Ctx, r: &str) -> ApiResult<Vec<WorkspacePort>> {
        let w = self.lookup_workspace(ctx, r, Action::Read).await?;
        Ok(self.workspace_out(w).await?.ports)
    }

    /// Register (`add`) or unregister a port. Registering is allowed before anything listens
    /// on it (the front answers 502 until something does).
    pub async fn workspace_port(&self, ctx: &Ctx, r: &str, port: u16, add: bool) -> ApiResult<Committed> {
        let (w, pins) = self.lookup_pinned(ctx, r).await?;
        if w.desired == WorkspaceDesired::Deleted {
            return Err(ApiErr::conflict(format!("workspace `{}` is being deleted; its ports cannot change", w.name)));
        }
        if port == 0 {
            return Err(ApiErr::invalid("port", "port must be 1-65535, got 0"));
        }
        let has = w.ports.contains(&port);
        let event = match (add, has) {
            (true, false) => {
                if port == api::IDE_PORT {
                    return Err(ApiErr::invalid(
                        "port",
                        format!("port {port} is the IDE's own, served at `/workspace/{}/`", w.name),
                    ));
                }
                if w.ports.len() >= api::MAX_PORTS {
                    return Err(ApiErr::invalid(
                        "port",
                        format!(
                            "workspace `{}` has {} ports registered, the most it may have ({}); remove one first (`vt workspace port remove {} PORT`)",
                            w.name,
                            w.ports.len(),
                            api::MAX_PORTS,
                            w.name
                        ),
                    ));
                }
                Event::WorkspacePortAdded(WorkspacePortAdded { org_id: w.org_id, workspace_id: w.id, port })
            }
            (false, true) => {
                Event::WorkspacePortRemoved(WorkspacePortRemoved { org_id: w.org_id, workspace_id: w.id, port })
            }
            (false, false) => {
                return Err(ApiErr::not_found(format!(
                    "workspace `{}` has no port {port} registered; `vt workspace port list {}` shows its ports",
                    w.name, w.name
                ))
                .field("port"))
            }
            // Already registered: nothing to record.
            (true, true) => {
                return Self::as_is(StatusCode::OK, &vt_api::List { items: self.workspace_out(w).await?.ports })
            }
        };
        let status = if add { StatusCode::CREATED } else { StatusCode::OK };
        let mut after = w;
        after.apply(&event, ctx.now());
        let ports = vt_api::List { items: self.workspace_out(after).await?.ports };
        let plan = Plan::new(status, ports).expect(pins.workspace).event(event);
        self.commit(ctx, plan).await
    }

    /// Record the HTTP front's last access of workspaces (by name; names it no longer knows are
    /// skipped): one `workspace.accessed` per workspace whose time moved.
    pub async fn workspaces_accessed(
        &self,
        accesses: BTreeMap<String, chrono::DateTime<chrono::Utc>>,
    ) -> ApiResult<u64> {
        let workspaces: Vec<WorkspaceView> = self.views(Self::kind_query(ViewKind::Workspace)).await?;
        let mut request = vt_store::AppendRequest::default();
        for w in workspaces {
            let Some(at) = accesses.get(&w.name) else { continue };
            if w.last_accessed_at.is_some_and(|last| last >= *at) {
                continue;
            }
            let event = Event::WorkspaceAccessed(WorkspaceAccessed { org_id: w.org_id, workspace_id: w.id, at: *at });
            request.events.push(vt_events::NewEvent::new(event, vt_events::Actor::system("front"), None));
        }
        if request.events.is_empty() {
            return Ok(0);
        }
        let appended = self.store.append(request).await?;
        Ok(appended.last_seq)
    }

    /// Every workspace with where the HTTP front reaches it: for the front's table.
    pub async fn workspace_routes(&self) -> ApiResult<Vec<WorkspaceRoute>> {
        let mut workspaces: Vec<WorkspaceView> = self.views(Self::kind_query(ViewKind::Workspace)).await?;
        workspaces.sort_by(|a, b| a.name.cmp(&b.name));
        // Their instances in a query per 500 workspaces, not one each: this runs at every
        // append (the workspace origin's table follows the log).
        let mut by_env: BTreeMap<EnvId, Vec<InstanceView>> = BTreeMap::new();
        for chunk in workspaces.chunks(vt_store::ViewQuery::MAX_PARENTS) {
            let query = Self::kind_query(ViewKind::Instance).parents(chunk.iter().map(|w| w.env_id));
            for i in self.views::<InstanceView>(query).await? {
                by_env.entry(i.env_id).or_default().push(i);
            }
        }
        let mut out = vec![];
        for w in workspaces {
            let instances = by_env.remove(&w.env_id).unwrap_or_default();
            let live = live_instance(&instances);
            let (status, reason) = status(&w, live);
            let address = live.filter(|_| status == WorkspaceStatus::Running).and_then(|i| i.address.clone());
            out.push(WorkspaceRoute { name: w.name, status, reason, address, ports: w.ports });
        }
        Ok(out)
    }
}

/// An instance holds its node's memory until it ends, but not while suspended (unless it is
/// resuming: desired `running` again).
fn holds_memory(i: &InstanceView) -> bool {
    match i.status {
        InstanceStatus::Suspended => i.desired_state == vt_events::DesiredState::Running,
        s => !s.is_terminal(),
    }
}

/// What holds the nodes' memory, as the views show it at one moment.
struct Load {
    instances: Vec<InstanceView>,
    workspaces: Vec<WorkspaceView>,
}

impl Load {
    /// Memory (MiB) a node has left: its allocatable memory less what its instances that have
    /// not ended hold and what workspaces meant to run there and not placed yet will take
    /// (but `starting`, which is the one asking).
    fn free_memory(&self, node: &NodeView, starting: Option<WorkspaceId>) -> i64 {
        let held: i64 = self
            .instances
            .iter()
            .filter(|i| i.node_id == node.id && holds_memory(i))
            .map(|i| i64::from(i.resources.memory_mib))
            .sum();
        let pending: i64 = self
            .running_on(node, starting)
            .filter(|w| !self.instances.iter().any(|i| i.env_id == w.env_id && holds_memory(i)))
            .map(|w| i64::from(w.memory_mib))
            .sum();
        i64::from(node.allocatable.memory_mib) - held - pending
    }

    /// The workspaces meant to run on `node`, but `starting`.
    fn running_on<'a>(
        &'a self,
        node: &'a NodeView,
        starting: Option<WorkspaceId>,
    ) -> impl Iterator<Item = &'a WorkspaceView> + 'a {
        self.workspaces
            .iter()
            .filter(move |w| Some(w.id) != starting && w.node_id == node.id && w.desired == WorkspaceDesired::Running)
    }

    /// 409 `capacity_exhausted` when `memory_mib` does not fit on `node`, naming the running
    /// workspace there that was accessed least recently.
    fn check_fits(&self, node: &NodeView, memory_mib: u32, starting: Option<WorkspaceId>) -> ApiResult<()> {
        let free = self.free_memory(node, starting);
        if free >= i64::from(memory_mib) {
            return Ok(());
        }
        let lru =
            self.running_on(node, starting).min_by_key(|w| (w.last_accessed_at.or(w.last_started_at), w.name.clone()));
        let hint = match lru {
            Some(w) => {
                format!("stop the least recently accessed running workspace there: `vt workspace stop {}`", w.name)
            }
            None => "stop or scale down what runs there (`vt node list`, `vt instances`)".to_owned(),
        };
        Err(ApiErr::new(
            StatusCode::CONFLICT,
            ErrorCode::CapacityExhausted,
            format!(
                "node `{}` has {} MiB of memory free, the workspace needs {memory_mib} MiB; {hint}",
                node.name,
                free.max(0)
            ),
        ))
    }
}

/// A workspace as the HTTP front routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRoute {
    pub name: String,
    pub status: WorkspaceStatus,
    pub reason: Option<String>,
    /// Its IDE instance's address, while it runs.
    pub address: Option<String>,
    pub ports: Vec<u16>,
}

/// The versions a change of a workspace is pinned on: the workspace's and its env's.
struct Pins {
    workspace: Expectation,
    env: Expectation,
}

/// The workspace's new desired state and its IDE's count, pinned on the workspace and the env.
fn plan_desired(w: &WorkspaceView, desired: WorkspaceDesired, instances: u32, pins: Pins) -> Plan<()> {
    Plan::new(StatusCode::OK, ())
        .expect(pins.workspace)
        .expect(pins.env)
        .event(Event::WorkspaceDesiredStateChanged(WorkspaceDesiredStateChanged {
            org_id: w.org_id,
            workspace_id: w.id,
            desired,
        }))
        .event(Event::ScaleSet(ScaleSet {
            org_id: w.org_id,
            app_id: w.app_id,
            env_id: w.env_id,
            process: api::IDE_PROCESS.to_owned(),
            instances,
        }))
}

fn checked(field: &str, v: u32, min: u32, max: u32) -> ApiResult<u32> {
    if v < min || v > max {
        return Err(ApiErr::invalid(field, format!("{field} must be {min}-{max}, got {v}")));
    }
    Ok(v)
}

/// An event [`reconcile`] appends, with the name it releases and the aggregates it is pinned on.
pub(crate) type Reconciled = (Event, Option<Claim>, Vec<(AggregateType, String)>);

/// What the scheduler appends for workspaces in an activation (`scheduler.rs`): a workspace
/// meant to run whose IDE failed in this run is stopped with the failure recorded; a deleted
/// workspace whose VM has ended and whose disk no instance holds loses its disk and its name.
pub(crate) fn reconcile(
    workspaces: &[WorkspaceView],
    instances: &[InstanceView],
    volumes: &[vt_views::VolumeView],
) -> Vec<Reconciled> {
    let mut out = vec![];
    for w in workspaces {
        let mine: Vec<&InstanceView> = instances.iter().filter(|i| i.env_id == w.env_id).collect();
        match w.desired {
            WorkspaceDesired::Running => {
                let since = w.last_started_at.unwrap_or(w.created_at);
                let failed = mine
                    .iter()
                    .filter(|i| i.created_at >= since)
                    .filter_map(|i| Some((i, i.failure.as_ref()?)))
                    .min_by_key(|(i, _)| i.id);
                let Some((i, f)) = failed else { continue };
                let pins =
                    vec![(AggregateType::Workspace, w.id.to_string()), (AggregateType::Env, w.env_id.to_string())];
                out.push((
                    Event::WorkspaceFailed(WorkspaceFailed {
                        org_id: w.org_id,
                        workspace_id: w.id,
                        instance_id: i.id,
                        reason: format!("its IDE (instance {}) failed: {}", i.id, f.summary()),
                    }),
                    None,
                    pins.clone(),
                ));
                out.push((
                    Event::ScaleSet(ScaleSet {
                        org_id: w.org_id,
                        app_id: w.app_id,
                        env_id: w.env_id,
                        process: api::IDE_PROCESS.to_owned(),
                        instances: 0,
                    }),
                    None,
                    pins,
                ));
            }
            WorkspaceDesired::Deleted => {
                if mine.iter().any(|i| !i.status.is_terminal()) {
                    continue;
                }
                let volume = volumes.iter().find(|v| v.id == w.volume_id);
                if volume.is_some_and(|v| v.attached_to.is_some()) {
                    continue;
                }
                let mut pins = vec![(AggregateType::Workspace, w.id.to_string())];
                if let Some(v) = volume {
                    pins.push((AggregateType::Volume, v.id.to_string()));
                    out.push((
                        Event::VolumeDeleted(VolumeDeleted {
                            org_id: w.org_id,
                            env_id: w.env_id,
                            volume_id: v.id,
                            node_id: v.node_id,
                        }),
                        None,
                        pins.clone(),
                    ));
                }
                out.push((
                    Event::WorkspaceDeleted(WorkspaceDeleted { org_id: w.org_id, workspace_id: w.id }),
                    Some(Claim { scope: ClaimScope::Workspace, name: w.name.clone(), owner: w.id.to_string() }),
                    pins,
                ));
            }
            WorkspaceDesired::Stopped | WorkspaceDesired::Suspended => {}
        }
    }
    out
}

/// The settings of workspaces a server gives its control plane.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceSettings {
    /// The OCI image layout of the default template (scripts/workspace-template.sh).
    pub template: Option<std::path::PathBuf>,
    /// The workspace origin's base URL (`http://127.0.0.1:7412`), for the `url` of workspaces.
    pub origin: Option<String>,
}

#[cfg(test)]
mod tests {
    use chrono::{Duration as Span, Utc};
    use vt_events::{DesiredState, InstanceAllocated, Resources};
    use vt_ids::{InstanceId, NodeId, OrgId, ReleaseId};
    use vt_views::{FailureKind, InstanceFailure, VolumeView, WorkspaceFailure};

    use super::*;

    fn workspace(desired: WorkspaceDesired) -> WorkspaceView {
        let at = Utc::now() - Span::seconds(60);
        WorkspaceView {
            id: WorkspaceId::new(),
            org_id: OrgId::new(),
            name: "dev".into(),
            app_id: AppId::new(),
            env_id: EnvId::new(),
            release_id: ReleaseId::new(),
            volume_id: VolumeId::new(),
            node_id: NodeId::new(),
            image_ref: "acme/workspace@sha256:00".into(),
            image_digest: "sha256:00".into(),
            cpus: 2,
            memory_mib: 4096,
            disk_gib: 10,
            desired,
            ports: vec![],
            failure: None,
            last_started_at: Some(at),
            last_accessed_at: None,
            activity: vec![],
            created_at: at,
            updated_at: at,
        }
    }

    fn instance(w: &WorkspaceView, status: InstanceStatus) -> InstanceView {
        let mut i = InstanceView::allocated(
            &InstanceAllocated {
                org_id: w.org_id,
                app_id: w.app_id,
                env_id: w.env_id,
                instance_id: InstanceId::new(),
                process: api::IDE_PROCESS.into(),
                release_id: w.release_id,
                deploy_id: None,
                node_id: w.node_id,
                resources: Resources { cpu_millis: 2000, memory_mib: w.memory_mib },
                secrets_version: None,
                volumes: vec![],
            },
            Utc::now(),
        );
        i.status = status;
        i
    }

    #[test]
    fn the_generated_manifest_parses() {
        let m = vt_manifest::parse(&manifest(2, 4096)).unwrap();
        let ide = &m.processes[api::IDE_PROCESS];
        assert_eq!(ide.network, vt_manifest::NetworkClass::Isolated, "a workspace reaches no other instance");
        assert_eq!((ide.scaling.min, ide.scaling.max), (0, 1));
    }

    #[test]
    fn status_follows_the_desired_state_and_the_instance() {
        use WorkspaceStatus as S;
        let mut w = workspace(WorkspaceDesired::Running);
        assert_eq!(status(&w, None).0, S::Creating);
        let booting = instance(&w, InstanceStatus::Booting);
        assert_eq!(status(&w, Some(&booting)), (S::Creating, Some(format!("instance {} is booting", booting.id))));
        let mut up = instance(&w, InstanceStatus::Running);
        up.health = Some(vt_events::Health::Passing);
        assert_eq!(status(&w, Some(&up)).0, S::Running);
        w.last_started_at = Some(Utc::now());
        assert_eq!(status(&w, None).0, S::Starting, "a later start is no creation");
        w.desired = WorkspaceDesired::Stopped;
        assert_eq!(status(&w, Some(&up)).0, S::Stopping);
        assert_eq!(status(&w, None), (S::Stopped, None));
        w.failure = Some(WorkspaceFailure { instance_id: up.id, reason: "boom".into(), at: Utc::now() });
        assert_eq!(status(&w, None), (S::Failed, Some("boom".into())));
        w.desired = WorkspaceDesired::Deleted;
        assert_eq!(status(&w, Some(&up)).0, S::Deleting);
    }

    #[test]
    fn a_suspended_workspace_and_its_memory() {
        use WorkspaceStatus as S;
        let mut w = workspace(WorkspaceDesired::Suspended);
        let mut up = instance(&w, InstanceStatus::Running);
        up.desired_state = DesiredState::Suspended;
        assert_eq!(status(&w, Some(&up)), (S::Suspending, Some(format!("instance {} is running", up.id))));
        let mut asleep = up.clone();
        asleep.status = InstanceStatus::Suspended;
        let (st, why) = status(&w, Some(&asleep));
        assert_eq!(st, S::Suspended);
        assert!(why.unwrap().contains("saved to a snapshot"));
        assert_eq!(status(&w, None).0, S::Suspended, "nothing ran to save: still what was asked");
        // A suspended instance holds no memory; resuming (desired running again) it does.
        assert!(!holds_memory(&asleep));
        w.desired = WorkspaceDesired::Running;
        asleep.desired_state = DesiredState::Running;
        assert!(holds_memory(&asleep));
        let (st, why) = status(&w, Some(&asleep));
        assert_eq!(st, S::Creating);
        assert!(why.unwrap().contains("resuming from its snapshot"));
    }

    #[test]
    fn a_failed_ide_stops_the_workspace_once() {
        let w = workspace(WorkspaceDesired::Running);
        let mut failed = instance(&w, InstanceStatus::Failed);
        failed.failure = Some(InstanceFailure {
            kind: FailureKind::Exited,
            at: Utc::now(),
            exit_code: Some(1),
            reason: Some("exited with code 1".into()),
        });
        let out = reconcile(std::slice::from_ref(&w), std::slice::from_ref(&failed), &[]);
        let events: Vec<&str> = out.iter().map(|(e, ..)| e.event_type()).collect();
        assert_eq!(events, ["workspace.failed", "env.scale_set"]);
        // An instance that failed before this start does not count.
        let mut later = w.clone();
        later.last_started_at = Some(Utc::now() + Span::seconds(1));
        assert!(reconcile(&[later], &[failed], &[]).is_empty());
    }

    #[test]
    fn a_deleted_workspace_loses_its_disk_only_after_its_vm() {
        let w = workspace(WorkspaceDesired::Deleted);
        let running = instance(&w, InstanceStatus::Running);
        let mut volume = VolumeView {
            id: w.volume_id,
            org_id: w.org_id,
            app_id: w.app_id,
            env_id: w.env_id,
            name: HOME_VOLUME.into(),
            size_gib: 10,
            node_id: w.node_id,
            attached_to: Some(running.id),
            from_snapshot: None,
            from_backup: None,
            backups: Default::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert!(reconcile(std::slice::from_ref(&w), std::slice::from_ref(&running), std::slice::from_ref(&volume))
            .is_empty());
        let mut ended = running.clone();
        ended.status = InstanceStatus::Stopped;
        ended.desired_state = DesiredState::Stopped;
        assert!(
            reconcile(std::slice::from_ref(&w), std::slice::from_ref(&ended), std::slice::from_ref(&volume)).is_empty(),
            "still attached"
        );
        volume.attached_to = None;
        let out = reconcile(&[w], &[ended], &[volume]);
        let events: Vec<&str> = out.iter().map(|(e, ..)| e.event_type()).collect();
        assert_eq!(events, ["volume.deleted", "workspace.deleted"]);
        assert_eq!(out[1].1.as_ref().map(|c| c.scope), Some(ClaimScope::Workspace), "the name is freed");
    }
}
