//! The scheduler reconciler: from views to allocation and deploy events.
//!
//! An activation takes no input but state (and the clock, for crash-loop
//! backoff). It marks nodes whose heartbeats stopped as unreachable, reads the
//! views (nodes, envs with a desired release and their current deploys,
//! scales, instances, the releases' manifests), then either
//!
//! - **fails a deploy fast** when one of its instances failed
//!   (`rollout::failure`): `deploy.status_changed` to `failed` naming the
//!   instance, `env.release_reverted` back to the previous release, and the
//!   release's live instances stopped, in one append; or
//! - runs [`vt_scheduler::plan`] and appends `instance.allocated` and
//!   `instance.desired_state_changed`, plus what the deploys reached with
//!   that plan (`rollout::progress`): `deploy.phase_reached` for each new
//!   phase, `deploy.status_changed` to `rolling` or `succeeded`.
//!
//! Each append's expectations pin the env, node, instance and deploy versions
//! it decided from: a concurrent change fails the append and the next
//! activation plans again, rather than allocating twice. With nothing
//! changed, an activation appends nothing.
//!
//! It runs every [`SchedulerSettings::interval`] and whenever the log grows.
//! Its status (last run, last error, what cannot be placed and why) is served
//! at `GET /v1/system/scheduler` and shown by `vt describe`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vt_api::{SchedulerStatus, UnplaceableProcess};
use vt_events::{
    Actor, AggregateType, DeployPhaseReached, DeployStatus, DeployStatusChanged, DesiredState, EnvReleaseReverted,
    Event, Health, InstanceAllocated, InstanceDesiredStateChanged, InstanceStatus, NewEvent, NodeStatus,
    NodeStatusChanged, Resources, VolumeAttached, VolumeAttachment, VolumeDetached,
};
use vt_ids::{DeployId, InstanceId, NodeId, ReleaseId, VolumeId};
use vt_store::{AppendRequest, Expectation, ExpectedVersion};
use vt_views::{DeployView, EnvView, InstanceView, NodeView, ReleaseView, Revision, ScaleView, ViewKind, VolumeView};

use crate::{rollout, ApiErr, ApiResult, ControlPlane};

/// How the scheduler reconciler runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerSettings {
    pub enabled: bool,
    /// Activation period (it also runs when the log grows).
    pub interval: Duration,
    /// A node whose last heartbeat is older than this becomes unreachable.
    pub heartbeat_timeout: Duration,
    pub cpu_oversubscription: f64,
    pub rollout: vt_scheduler::Rollout,
    /// Restart delays of crash loops.
    pub backoff: vt_scheduler::Backoff,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            enabled: true,
            interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(30),
            cpu_oversubscription: 4.0,
            rollout: Default::default(),
            backoff: Default::default(),
        }
    }
}

/// The reconciler's settings and published status.
pub struct Scheduler {
    settings: Mutex<SchedulerSettings>,
    status: Mutex<SchedulerStatus>,
    started: Instant,
    /// Releases never change: what their processes need is read once.
    resources: Mutex<HashMap<String, BTreeMap<String, Needs>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Default for Scheduler {
    fn default() -> Self {
        let s = SchedulerSettings::default();
        Scheduler {
            settings: Mutex::new(s),
            status: Mutex::new(SchedulerStatus {
                runs: 0,
                last_run_at: None,
                last_error: None,
                last_allocated: 0,
                last_stopped: 0,
                unplaceable: vec![],
                heartbeat_timeout_secs: s.heartbeat_timeout.as_secs(),
                cpu_oversubscription: s.cpu_oversubscription,
            }),
            started: Instant::now(),
            resources: Mutex::new(HashMap::new()),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

impl Scheduler {
    pub fn settings(&self) -> SchedulerSettings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn configure(&self, settings: SchedulerSettings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        self.wake.notify_one();
    }

    pub fn status(&self) -> SchedulerStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why a process of an env is not fully placed, if the last activation found so.
    pub fn unplaceable(&self, env_id: &str, process: &str) -> Option<UnplaceableProcess> {
        self.status().unplaceable.into_iter().find(|u| u.env_id == env_id && u.process == process)
    }
}

/// Run activations until the control plane is dropped.
pub async fn run(cp: Weak<ControlPlane>) {
    let Some(mut head) = cp.upgrade().map(|c| c.store.subscribe_head()) else { return };
    loop {
        let Some(c) = cp.upgrade() else { return };
        let settings = c.scheduler.settings();
        if settings.enabled && c.leader.leading() {
            let result = activate(&c, &settings).await;
            let mut st = c.scheduler.status.lock().unwrap_or_else(|e| e.into_inner());
            st.runs += 1;
            st.last_run_at = Some(Utc::now());
            st.heartbeat_timeout_secs = settings.heartbeat_timeout.as_secs();
            st.cpu_oversubscription = settings.cpu_oversubscription;
            match result {
                Ok(outcome) => {
                    st.last_error = None;
                    st.unplaceable = outcome.unplaceable;
                    if outcome.allocated + outcome.stopped > 0 {
                        (st.last_allocated, st.last_stopped) = (outcome.allocated, outcome.stopped);
                    }
                }
                Err(e) => {
                    let detail = e.internal.clone().unwrap_or(e.message);
                    tracing::warn!(error = %detail, "scheduler activation failed; retrying");
                    st.last_error = Some(detail);
                }
            }
        }
        let interval = settings.interval;
        let wake = c.scheduler.wake.clone();
        let mut leading = c.leader.subscribe();
        drop(c);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = head.changed() => if r.is_err() { return },
            _ = wake.notified() => {}
            _ = leading.changed() => {}
        }
        // Let a burst of appends settle into one activation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Outcome {
    allocated: u32,
    stopped: u32,
    unplaceable: Vec<UnplaceableProcess>,
}

fn system_event(event: Event) -> NewEvent {
    NewEvent::new(event, Actor::system("scheduler"), None)
}

fn exact(aggregate_type: AggregateType, id: String, version: u64) -> Expectation {
    Expectation { aggregate_type, aggregate_id: id, expected: ExpectedVersion::Exact(version) }
}

fn millis(t: DateTime<Utc>) -> vt_scheduler::Millis {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// What placement needs to know of an instance's state: a running instance
/// is `Ready` when it passes its health check (or has none), `Failing` once
/// it failed one (the control plane replaces it, even if it recovers).
fn status_of(i: &InstanceView) -> vt_scheduler::Status {
    use vt_scheduler::Status as S;
    match i.status {
        // Resumed from its snapshot: a scale to 0 meanwhile suspends it again.
        InstanceStatus::Preparing | InstanceStatus::Booting if i.resuming => S::Resuming,
        InstanceStatus::Allocated | InstanceStatus::Preparing | InstanceStatus::Booting => S::Starting,
        InstanceStatus::Running if i.failure.is_some() || i.health == Some(Health::Failing) => S::Failing,
        InstanceStatus::Running if i.health == Some(Health::Pending) => S::Running,
        InstanceStatus::Running => S::Ready,
        InstanceStatus::Stopping => S::Stopping,
        InstanceStatus::Stopped | InstanceStatus::Failed => S::Exited,
        InstanceStatus::Suspended => S::Suspended,
    }
}

/// An append being built: events with the versions they were decided from.
#[derive(Default)]
struct Writes {
    request: AppendRequest,
    /// Aggregates whose exact version is pinned.
    pinned: BTreeSet<(AggregateType, String)>,
    allocated: u32,
    stopped: u32,
    /// Deploys failed, with why (logged once appended).
    failed: Vec<(DeployId, String)>,
}

impl Writes {
    fn event(&mut self, event: Event) {
        self.request.events.push(system_event(event));
    }

    fn is_empty(&self) -> bool {
        self.request.events.is_empty()
    }

    /// Pin every aggregate the events decided from to the version it has now.
    async fn pin(&mut self, cp: &ControlPlane, aggregate_type: AggregateType, id: String) -> ApiResult<()> {
        if self.pinned.insert((aggregate_type, id.clone())) {
            let version = cp.store.aggregate_version(aggregate_type, &id).await?;
            self.request.expectations.push(exact(aggregate_type, id, version));
        }
        Ok(())
    }

    fn stop(&mut self, i: &InstanceView, reason: String) {
        self.stopped += 1;
        self.desire(i, DesiredState::Stopped, reason);
    }

    fn desire(&mut self, i: &InstanceView, desired: DesiredState, reason: String) {
        self.event(Event::InstanceDesiredStateChanged(InstanceDesiredStateChanged {
            org_id: i.org_id,
            env_id: i.env_id,
            instance_id: i.id,
            desired,
            reason: Some(reason),
        }));
    }
}

/// One activation. Conflicts (a concurrent change) are errors: the next activation plans again.
async fn activate(cp: &Arc<ControlPlane>, settings: &SchedulerSettings) -> ApiResult<Outcome> {
    let head = cp.store.head().await?;
    cp.projector.wait_for(head, Duration::from_secs(5)).await?;
    let nodes: Vec<NodeView> = cp.views(ControlPlane::kind_query(ViewKind::Node)).await?;

    // Nodes whose heartbeats stopped (not before the control plane has been up for a timeout).
    if cp.scheduler.started.elapsed() >= settings.heartbeat_timeout {
        let beats = cp.store.heartbeats().await?;
        let now = Utc::now();
        let timeout = chrono::Duration::from_std(settings.heartbeat_timeout).map_err(ApiErr::internal)?;
        let mut lost = AppendRequest::default();
        for n in nodes.iter().filter(|n| !matches!(n.status, NodeStatus::Unreachable | NodeStatus::Revoked)) {
            let last = beats.get(&n.id.to_string()).copied().unwrap_or(n.registered_at).max(n.registered_at);
            if now - last > timeout {
                let version = cp.store.aggregate_version(AggregateType::Node, &n.id.to_string()).await?;
                let secs = (now - last).num_seconds();
                lost.expectations.push(exact(AggregateType::Node, n.id.to_string(), version));
                lost.events.push(system_event(Event::NodeStatusChanged(NodeStatusChanged {
                    node_id: n.id,
                    status: NodeStatus::Unreachable,
                    reason: Some(format!(
                        "no heartbeat for {secs} s (timeout {} s)",
                        settings.heartbeat_timeout.as_secs()
                    )),
                })));
            }
        }
        if !lost.events.is_empty() {
            lost.fence = cp.leader.fence();
            let appended = cp.store.append(lost).await?;
            cp.projector.wait_for(appended.last_seq, Duration::from_secs(5)).await?;
            return Box::pin(activate(cp, settings)).await;
        }
    }

    let snap = Snapshot::read(cp).await?;
    let mut writes = fail_fast(cp, &snap).await?;
    if writes.is_empty() {
        writes = workspaces(cp, &snap).await?;
    }
    let mut unplaceable = vec![];
    if writes.is_empty() {
        // No deploy failed: plan, and record what the deploys reach with the plan.
        let plan = snap.plan(settings, Utc::now());
        unplaceable = snap.unplaceable(&plan);
        writes = apply_plan(cp, &snap, &plan).await?;
        scheduled_backups(cp, &snap, &mut writes).await?;
    }
    let outcome = Outcome { allocated: writes.allocated, stopped: writes.stopped, unplaceable };
    if writes.is_empty() {
        return Ok(outcome);
    }
    if cp.store.head().await? != head {
        // Something was appended while deciding: the pinned versions may be newer than the views.
        return Err(ApiErr::conflict("the log moved while planning; planning again"));
    }
    let mut request = writes.request;
    request.fence = cp.leader.fence();
    let appended = cp.store.append(request).await?;
    for (deploy, reason) in &writes.failed {
        tracing::warn!(%deploy, %reason, seq = appended.last_seq, "deploy failed");
    }
    tracing::info!(
        allocated = outcome.allocated,
        stopped = outcome.stopped,
        seq = appended.last_seq,
        "scheduler appended its plan"
    );
    Ok(outcome)
}

/// Current deploys one of whose instances failed: each fails, naming the
/// instance; its env goes back to the previous release (when it has one)
/// and the failed release's live instances are stopped.
async fn fail_fast(cp: &ControlPlane, snap: &Snapshot) -> ApiResult<Writes> {
    let mut w = Writes::default();
    for (env, d) in snap.rolling() {
        let Some((failed, reason)) = rollout::failure(d, snap.instances_of(env.id)) else { continue };
        let previous = d.previous_revision().filter(|p| *p != d.revision());
        let reason = match previous {
            Some(p) if p.release == d.release_id => {
                format!("{reason}; env back on secrets version {}", p.secrets.map_or("none".into(), |v| v.to_string()))
            }
            Some(p) => format!("{reason}; env back on release {}", p.release),
            None => format!("{reason}; no previous release to go back to: its instances restart with backoff"),
        };
        w.failed.push((d.id, reason.clone()));
        w.pin(cp, AggregateType::Deploy, d.id.to_string()).await?;
        w.event(Event::DeployStatusChanged(DeployStatusChanged {
            org_id: d.org_id,
            env_id: d.env_id,
            deploy_id: d.id,
            status: DeployStatus::Failed,
            reason: Some(reason.clone()),
            failed_instance_id: Some(failed.id),
        }));
        let Some(previous) = previous else { continue };
        w.pin(cp, AggregateType::Env, env.id.to_string()).await?;
        w.event(Event::EnvReleaseReverted(EnvReleaseReverted {
            org_id: d.org_id,
            env_id: d.env_id,
            deploy_id: d.id,
            release_id: previous.release,
            from_release_id: d.release_id,
            reason: reason.clone(),
            secrets_version: previous.secrets,
        }));
        for i in snap.instances_of(env.id).filter(|i| i.revision() == d.revision() && i.is_live()) {
            w.pin(cp, AggregateType::Instance, i.id.to_string()).await?;
            w.stop(i, format!("deploy {} failed; env back on {}", d.id, previous.words()));
        }
    }
    Ok(w)
}

/// Workspaces whose IDE failed are stopped, deleted ones whose VM ended lose their disk and
/// their name (`app::workspaces::reconcile`).
async fn workspaces(cp: &ControlPlane, snap: &Snapshot) -> ApiResult<Writes> {
    let mut w = Writes::default();
    for (event, release, pins) in crate::app::workspaces::reconcile(&snap.workspaces, &snap.instances, &snap.volumes) {
        for (aggregate_type, id) in pins {
            w.pin(cp, aggregate_type, id).await?;
        }
        w.event(event);
        w.request.releases.extend(release);
    }
    Ok(w)
}

/// The plan's allocations and stops, then what each current deploy reaches
/// with them: new phases, and `rolling` or `succeeded`.
async fn apply_plan(cp: &ControlPlane, snap: &Snapshot, plan: &vt_scheduler::Plan) -> ApiResult<Writes> {
    let mut w = Writes::default();
    let volumes: HashMap<String, &VolumeView> = snap.volumes.iter().map(|v| (v.id.to_string(), v)).collect();
    // Volumes of ended instances are free again (before any allocation takes them).
    for d in &plan.detaches {
        let v = volumes.get(&d.volume).ok_or_else(|| ApiErr::internal("detach of an unknown volume"))?;
        w.pin(cp, AggregateType::Volume, d.volume.clone()).await?;
        w.event(Event::VolumeDetached(VolumeDetached {
            org_id: v.org_id,
            env_id: v.env_id,
            volume_id: v.id,
            instance_id: InstanceId::parse(&d.instance).map_err(ApiErr::internal)?,
        }));
    }
    let by_instance: HashMap<String, &InstanceView> = snap.instances.iter().map(|i| (i.id.to_string(), i)).collect();
    let env_by_id: BTreeMap<String, &EnvView> = snap.envs.iter().map(|e| (e.id.to_string(), e)).collect();
    // The instances as the plan leaves them.
    let mut planned: Vec<InstanceView> = snap.instances.clone();
    for a in &plan.allocations {
        let env = env_by_id.get(&a.env).ok_or_else(|| ApiErr::internal("allocation for an unknown env"))?;
        w.pin(cp, AggregateType::Env, a.env.clone()).await?;
        w.pin(cp, AggregateType::Node, a.node.clone()).await?;
        let revision: Revision = a.release.parse().map_err(ApiErr::internal)?;
        // The instance belongs to the env's deploy when it is of that deploy's revision.
        let deploy_id = env.current_deploy_id.filter(|d| snap.deploys.get(d).is_some_and(|d| d.revision() == revision));
        let e = InstanceAllocated {
            org_id: env.org_id,
            app_id: env.app_id,
            env_id: env.id,
            instance_id: InstanceId::parse(&a.id).map_err(ApiErr::internal)?,
            process: a.process.clone(),
            release_id: revision.release,
            deploy_id,
            node_id: NodeId::parse(&a.node).map_err(ApiErr::internal)?,
            resources: Resources {
                cpu_millis: u32::try_from(a.resources.cpu_millis).unwrap_or(u32::MAX),
                memory_mib: u32::try_from(a.resources.memory_mib).unwrap_or(u32::MAX),
            },
            secrets_version: revision.secrets,
            volumes: a
                .volumes
                .iter()
                .map(|(name, id)| {
                    Ok(VolumeAttachment {
                        name: name.clone(),
                        volume_id: VolumeId::parse(id).map_err(ApiErr::internal)?,
                    })
                })
                .collect::<ApiResult<_>>()?,
        };
        w.request.expectations.push(Expectation {
            aggregate_type: AggregateType::Instance,
            aggregate_id: a.id.clone(),
            expected: ExpectedVersion::NoStream,
        });
        planned.push(allocated_view(&e));
        w.allocated += 1;
        let attached: Vec<VolumeAttachment> = e.volumes.clone();
        let (org_id, env_id, instance_id) = (e.org_id, e.env_id, e.instance_id);
        w.event(Event::InstanceAllocated(e));
        // Each volume is attached to one instance at a time: the pinned version makes a
        // concurrent attach of the same volume fail this append.
        for v in attached {
            w.pin(cp, AggregateType::Volume, v.volume_id.to_string()).await?;
            w.event(Event::VolumeAttached(VolumeAttached { org_id, env_id, volume_id: v.volume_id, instance_id }));
        }
    }
    let mut stopped = BTreeSet::new();
    for s in &plan.stops {
        let i = by_instance.get(&s.instance).ok_or_else(|| ApiErr::internal("stop of an unknown instance"))?;
        w.pin(cp, AggregateType::Env, i.env_id.to_string()).await?;
        w.pin(cp, AggregateType::Instance, s.instance.clone()).await?;
        w.stop(i, s.reason.clone());
        stopped.insert(i.id);
    }
    let mut desired: BTreeMap<InstanceId, DesiredState> = stopped.iter().map(|i| (*i, DesiredState::Stopped)).collect();
    // Scaled to 0 with `scaling.suspend` (or a suspended workspace): saved on their node.
    for (list, state, what) in
        [(&plan.suspends, DesiredState::Suspended, "suspended"), (&plan.resumes, DesiredState::Running, "resumed")]
    {
        for s in list {
            let i = by_instance
                .get(&s.instance)
                .ok_or_else(|| ApiErr::internal(format!("an unknown instance to be {what}")))?;
            w.pin(cp, AggregateType::Env, i.env_id.to_string()).await?;
            w.pin(cp, AggregateType::Instance, s.instance.clone()).await?;
            if state == DesiredState::Running {
                w.pin(cp, AggregateType::Node, i.node_id.to_string()).await?;
            }
            w.desire(i, state, format!("{what}: {}", s.reason));
            w.stopped += u32::from(state == DesiredState::Suspended);
            w.allocated += u32::from(state == DesiredState::Running);
            desired.insert(i.id, state);
        }
    }
    for p in planned.iter_mut() {
        if let Some(d) = desired.get(&p.id) {
            p.desired_state = *d;
        }
    }

    for (env, d) in snap.rolling() {
        let p = rollout::progress(d, &snap.desired(env, d.release_id), planned.iter().filter(|i| i.env_id == env.id));
        let new: Vec<_> = p.reached.iter().filter(|phase| d.phase(**phase).is_none()).collect();
        let started = planned.iter().any(|i| i.env_id == env.id && i.revision() == d.revision() && i.is_live());
        let status = if p.succeeded {
            let ready: u32 = p.processes.values().map(|p| p.ready()).sum();
            let reason = match ready {
                0 => format!("no instance of {} is desired", d.revision().words()),
                n => format!("{n} instance(s) of {} ready; nothing else runs", d.revision().words()),
            };
            Some((DeployStatus::Succeeded, reason))
        } else if d.status == DeployStatus::Pending && started {
            Some((DeployStatus::Rolling, "instances of the release are allocated".to_owned()))
        } else {
            None
        };
        if new.is_empty() && status.is_none() {
            continue;
        }
        w.pin(cp, AggregateType::Deploy, d.id.to_string()).await?;
        for phase in new {
            w.event(Event::DeployPhaseReached(DeployPhaseReached {
                org_id: d.org_id,
                env_id: d.env_id,
                deploy_id: d.id,
                phase: *phase,
            }));
        }
        if let Some((status, reason)) = status {
            w.event(Event::DeployStatusChanged(DeployStatusChanged {
                org_id: d.org_id,
                env_id: d.env_id,
                deploy_id: d.id,
                status,
                reason: Some(reason),
                failed_instance_id: None,
            }));
        }
    }
    Ok(w)
}

/// `backup.requested` (scheduled) for each volume whose backup is due (`--backup-every`),
/// pinning its version; tagged with its org's, app's and env's names.
async fn scheduled_backups(cp: &ControlPlane, snap: &Snapshot, w: &mut Writes) -> ApiResult<()> {
    let Some(every) = cp.backups.every() else { return Ok(()) };
    let now = Utc::now();
    for v in snap.volumes.iter().filter(|v| crate::app::backups::due(v, every, now)) {
        let (Some(org), Some(app), Some(env)) = (
            cp.view::<vt_views::OrgView>(&v.org_id.to_string()).await?,
            cp.view::<vt_views::AppView>(&v.app_id.to_string()).await?,
            cp.view::<EnvView>(&v.env_id.to_string()).await?,
        ) else {
            continue;
        };
        w.pin(cp, AggregateType::Volume, v.id.to_string()).await?;
        w.event(Event::BackupRequested(vt_events::BackupRequested {
            org_id: v.org_id,
            env_id: v.env_id,
            volume_id: v.id,
            backup_id: vt_ids::BackupId::new(),
            org: org.name,
            app: app.name,
            env: env.name,
            scheduled: true,
        }));
    }
    Ok(())
}

/// The view an allocation will project to (for deciding in the same activation).
fn allocated_view(e: &InstanceAllocated) -> InstanceView {
    InstanceView::allocated(e, Utc::now())
}

/// What the scheduler decides from, read from the views in one go.
struct Snapshot {
    nodes: Vec<NodeView>,
    /// Envs with a desired release.
    envs: Vec<EnvView>,
    /// Their current deploys.
    deploys: BTreeMap<DeployId, DeployView>,
    scales: Vec<ScaleView>,
    instances: Vec<InstanceView>,
    /// What each process of each desired release needs.
    releases: BTreeMap<ReleaseId, BTreeMap<String, Needs>>,
    volumes: Vec<VolumeView>,
    workspaces: Vec<vt_views::WorkspaceView>,
}

impl Snapshot {
    async fn read(cp: &ControlPlane) -> ApiResult<Snapshot> {
        let nodes: Vec<NodeView> = cp.views(ControlPlane::kind_query(ViewKind::Node)).await?;
        let envs: Vec<EnvView> = cp
            .views::<EnvView>(ControlPlane::kind_query(ViewKind::Env))
            .await?
            .into_iter()
            .filter(|e| e.desired_release_id.is_some())
            .collect();
        let scales: Vec<ScaleView> = cp.views(ControlPlane::kind_query(ViewKind::Scale)).await?;
        let instances: Vec<InstanceView> = cp.views(ControlPlane::kind_query(ViewKind::Instance)).await?;
        let volumes: Vec<VolumeView> = cp.views(ControlPlane::kind_query(ViewKind::Volume)).await?;
        let workspaces = cp.views(ControlPlane::kind_query(ViewKind::Workspace)).await?;
        let mut deploys = BTreeMap::new();
        let mut releases = BTreeMap::new();
        for env in &envs {
            if let Some(d) = env.current_deploy_id {
                if let Some(d) = cp.view::<DeployView>(&d.to_string()).await? {
                    deploys.insert(d.id, d);
                }
            }
            if let Some(r) = env.desired_release_id {
                releases.insert(r, release_resources(cp, &r.to_string()).await?);
            }
        }
        Ok(Snapshot { nodes, envs, deploys, scales, instances, releases, volumes, workspaces })
    }

    /// Whether `env` runs a workspace whose desired state is `suspended`.
    fn workspace_suspended(&self, env: vt_ids::EnvId) -> bool {
        self.workspaces.iter().any(|w| w.env_id == env && w.desired == vt_events::WorkspaceDesired::Suspended)
    }

    fn instances_of(&self, env: vt_ids::EnvId) -> impl Iterator<Item = &InstanceView> {
        self.instances.iter().filter(move |i| i.env_id == env)
    }

    /// Envs whose current deploy is still going, and that deploy.
    fn rolling(&self) -> impl Iterator<Item = (&EnvView, &DeployView)> {
        self.envs.iter().filter_map(|e| {
            let d = self.deploys.get(&e.current_deploy_id?)?;
            (!d.status.is_terminal() && e.desired_revision() == Some(d.revision())).then_some((e, d))
        })
    }

    /// The desired count of each process of `release` in `env`.
    fn desired(&self, env: &EnvView, release: ReleaseId) -> BTreeMap<String, u32> {
        let Some(processes) = self.releases.get(&release) else { return BTreeMap::new() };
        processes
            .keys()
            .map(|p| {
                (
                    p.clone(),
                    self.scales.iter().find(|s| s.env_id == env.id && &s.process == p).map_or(0, |s| s.instances),
                )
            })
            .collect()
    }

    fn plan(&self, settings: &SchedulerSettings, now: DateTime<Utc>) -> vt_scheduler::Plan {
        let env_by_id: BTreeMap<String, &EnvView> = self.envs.iter().map(|e| (e.id.to_string(), e)).collect();
        let mut groups = vec![];
        for s in &self.scales {
            let Some(env) = env_by_id.get(&s.env_id.to_string()) else { continue };
            let Some(revision) = env.desired_revision() else { continue };
            let Some(r) = self.releases.get(&revision.release).and_then(|r| r.get(&s.process)) else { continue }; // not in the release: stopped below
            groups.push(vt_scheduler::Group {
                env: s.env_id.to_string(),
                process: s.process.clone(),
                replicas: s.instances,
                // Opaque to the scheduler: instances of another revision are replaced.
                release: revision.to_string(),
                resources: vt_scheduler::Resources {
                    cpu_millis: r.resources.cpu_millis.into(),
                    memory_mib: r.resources.memory_mib.into(),
                },
                volumes: r.volumes.clone(),
                // A workspace stopped with `--suspend` suspends its IDE whatever its manifest says.
                suspend: r.suspend || self.workspace_suspended(s.env_id),
            });
        }
        // An env with a desired release is managed even when none of its scales apply.
        for env in &self.envs {
            if !groups.iter().any(|g| g.env == env.id.to_string()) {
                groups.push(vt_scheduler::Group {
                    env: env.id.to_string(),
                    process: String::new(),
                    replicas: 0,
                    release: env.desired_revision().map(|r| r.to_string()).unwrap_or_default(),
                    resources: Default::default(),
                    volumes: vec![],
                    suspend: false,
                });
            }
        }
        let input = vt_scheduler::Input {
            // An edge-only node runs no instances: the scheduler never sees it, so it places
            // nothing there and has nothing there to place elsewhere when it is lost.
            nodes: self
                .nodes
                .iter()
                .filter(|n| n.runs_instances)
                .map(|n| vt_scheduler::Node {
                    id: n.id.to_string(),
                    name: n.name.clone(),
                    status: match n.status {
                        NodeStatus::Ready => vt_scheduler::NodeStatus::Ready,
                        // A revoked node's instances are placed elsewhere, as an unreachable one's.
                        NodeStatus::Unreachable | NodeStatus::Revoked => vt_scheduler::NodeStatus::Unreachable,
                        NodeStatus::Draining => vt_scheduler::NodeStatus::Draining,
                    },
                    allocatable: vt_scheduler::Resources {
                        cpu_millis: n.allocatable.cpu_millis.into(),
                        memory_mib: n.allocatable.memory_mib.into(),
                    },
                })
                .collect(),
            instances: self
                .instances
                .iter()
                .map(|i| vt_scheduler::Instance {
                    id: i.id.to_string(),
                    node: i.node_id.to_string(),
                    env: i.env_id.to_string(),
                    process: i.process.clone(),
                    release: i.revision().to_string(),
                    resources: vt_scheduler::Resources {
                        cpu_millis: i.resources.cpu_millis.into(),
                        memory_mib: i.resources.memory_mib.into(),
                    },
                    desired: match i.desired_state {
                        DesiredState::Running => vt_scheduler::Desired::Running,
                        DesiredState::Stopped => vt_scheduler::Desired::Stopped,
                        DesiredState::Suspended => vt_scheduler::Desired::Suspended,
                    },
                    status: status_of(i),
                    ready_since: i.ready_at.map(millis),
                    failure: i
                        .failure
                        .as_ref()
                        .map(|f| vt_scheduler::Failure { at: millis(f.at), reason: f.summary() }),
                    order: i.created_at.timestamp_micros().max(0) as u64,
                })
                .collect(),
            groups,
            volumes: self
                .volumes
                .iter()
                .map(|v| vt_scheduler::Volume {
                    id: v.id.to_string(),
                    env: v.env_id.to_string(),
                    name: v.name.clone(),
                    node: v.node_id.to_string(),
                    attached_to: v.attached_to.map(|i| i.to_string()),
                })
                .collect(),
            now: millis(now),
        };
        let config = vt_scheduler::Config {
            cpu_oversubscription: settings.cpu_oversubscription,
            rollout: settings.rollout,
            backoff: settings.backoff,
        };
        vt_scheduler::plan(&input, &config, &mut || InstanceId::new().to_string())
    }

    fn unplaceable(&self, plan: &vt_scheduler::Plan) -> Vec<UnplaceableProcess> {
        // The scheduler never sees edge-only nodes: where they are all there is, say so rather
        // than that no node is registered.
        let edges = self.nodes.iter().filter(|n| !n.runs_instances && n.status != NodeStatus::Revoked).count();
        let only_edges = edges > 0 && !self.nodes.iter().any(|n| n.runs_instances);
        plan.unplaceable
            .iter()
            .map(|u| UnplaceableProcess {
                org_id: self
                    .envs
                    .iter()
                    .find(|e| e.id.to_string() == u.env)
                    .map(|e| e.org_id.to_string())
                    .unwrap_or_default(),
                env_id: u.env.clone(),
                process: u.process.clone(),
                wanted: u.wanted,
                placed: u.placed,
                reason: match only_edges {
                    true => format!("no node runs instances: the {edges} node(s) registered are edge-only"),
                    false => u.reason.clone(),
                },
                hint: match only_edges {
                    true => "join a node that runs the agent (`vt server --role agent --join URL`)".into(),
                    false => u.hint.clone(),
                },
            })
            .collect()
    }
}

/// What the scheduler would do now, planned from the current views without
/// writing (for `vt describe`).
pub struct Preview {
    pub now: DateTime<Utc>,
    pub unplaceable: Vec<UnplaceableProcess>,
    pub crash_loops: Vec<vt_scheduler::CrashLoop>,
}

impl ControlPlane {
    pub async fn scheduler_preview(&self) -> ApiResult<Preview> {
        let snap = Snapshot::read(self).await?;
        let now = Utc::now();
        let plan = snap.plan(&self.scheduler.settings(), now);
        Ok(Preview { now, unplaceable: snap.unplaceable(&plan), crash_loops: plan.crash_loops })
    }
}

/// What one process of a release needs: resources, and the volume names it mounts.
#[derive(Debug, Clone)]
struct Needs {
    resources: Resources,
    volumes: Vec<String>,
    /// `scaling.suspend`: a scale to 0 suspends.
    suspend: bool,
}

/// What each process of a release needs, from its manifest (`cpu` vCPUs → millis).
async fn release_resources(cp: &ControlPlane, release: &str) -> ApiResult<BTreeMap<String, Needs>> {
    if let Some(r) = cp.scheduler.resources.lock().unwrap_or_else(|e| e.into_inner()).get(release) {
        return Ok(r.clone());
    }
    let view: ReleaseView =
        cp.view(release).await?.ok_or_else(|| ApiErr::internal(format!("release {release} has no view")))?;
    let manifest = vt_manifest::from_normalized_json(&view.manifest)
        .map_err(|e| ApiErr::internal(format!("stored manifest of {release} does not decode: {e}")))?;
    let r: BTreeMap<String, Needs> = manifest
        .processes
        .iter()
        .map(|(name, p)| {
            let mut volumes: Vec<String> = manifest.volumes_for(name).map(|v| v.name.clone()).collect();
            volumes.sort();
            volumes.dedup();
            let resources =
                Resources { cpu_millis: (p.resources.cpu * 1000.0).round() as u32, memory_mib: p.resources.memory_mib };
            (name.clone(), Needs { resources, volumes, suspend: p.scaling.suspend })
        })
        .collect();
    cp.scheduler.resources.lock().unwrap_or_else(|e| e.into_inner()).insert(release.to_owned(), r.clone());
    Ok(r)
}
