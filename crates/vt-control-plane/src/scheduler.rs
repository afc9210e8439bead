//! The scheduler reconciler: from views to allocation events.
//!
//! An activation takes no input but state. It marks nodes whose heartbeats
//! stopped as unreachable, reads the views (nodes, envs with a desired
//! release, scales, instances, the desired releases' manifests), runs
//! [`vt_scheduler::plan`], and appends `instance.allocated` and
//! `instance.desired_state_changed` events (and `deploy.status_changed` to
//! `rolling`) in one append whose expectations pin the env, node, instance and
//! deploy versions it decided from: a concurrent change fails the append and
//! the next activation plans again, rather than allocating twice.
//!
//! It runs every [`SchedulerSettings::interval`] and whenever the log grows.
//! Its status (last run, last error, what cannot be placed and why) is served
//! at `GET /v1/system/scheduler` and shown by `vt describe`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use vt_api::{SchedulerStatus, UnplaceableProcess};
use vt_events::{
    Actor, AggregateType, DeployStatus, DeployStatusChanged, DesiredState, Event, InstanceAllocated, InstanceDesiredStateChanged, InstanceStatus, NewEvent,
    NodeStatus, NodeStatusChanged, Resources,
};
use vt_ids::{InstanceId, NodeId};
use vt_store::{AppendRequest, ExpectedVersion, Expectation};
use vt_views::{DeployView, EnvView, InstanceView, NodeView, ReleaseView, ScaleView, ViewKind};

use crate::{ApiErr, ApiResult, ControlPlane};

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
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            enabled: true,
            interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(30),
            cpu_oversubscription: 4.0,
            rollout: Default::default(),
        }
    }
}

/// The reconciler's settings and published status.
pub struct Scheduler {
    settings: Mutex<SchedulerSettings>,
    status: Mutex<SchedulerStatus>,
    started: Instant,
    /// Releases never change: their resources are read once.
    resources: Mutex<HashMap<String, BTreeMap<String, Resources>>>,
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
        if settings.enabled {
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
        drop(c);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = head.changed() => if r.is_err() { return },
            _ = wake.notified() => {}
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

fn status_of(s: InstanceStatus) -> vt_scheduler::Status {
    use vt_scheduler::Status as S;
    match s {
        InstanceStatus::Allocated | InstanceStatus::Preparing | InstanceStatus::Booting => S::Starting,
        InstanceStatus::Running => S::Running,
        InstanceStatus::Stopping => S::Stopping,
        InstanceStatus::Stopped | InstanceStatus::Failed => S::Exited,
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
        for n in nodes.iter().filter(|n| n.status != NodeStatus::Unreachable) {
            let last = beats.get(&n.id.to_string()).copied().unwrap_or(n.registered_at).max(n.registered_at);
            if now - last > timeout {
                let version = cp.store.aggregate_version(AggregateType::Node, &n.id.to_string()).await?;
                let secs = (now - last).num_seconds();
                lost.expectations.push(exact(AggregateType::Node, n.id.to_string(), version));
                lost.events.push(system_event(Event::NodeStatusChanged(NodeStatusChanged {
                    node_id: n.id,
                    status: NodeStatus::Unreachable,
                    reason: Some(format!("no heartbeat for {secs} s (timeout {} s)", settings.heartbeat_timeout.as_secs())),
                })));
            }
        }
        if !lost.events.is_empty() {
            let appended = cp.store.append(lost).await?;
            cp.projector.wait_for(appended.last_seq, Duration::from_secs(5)).await?;
            return Box::pin(activate(cp, settings)).await;
        }
    }

    let Computed { envs, instances, plan, unplaceable } = compute(cp, settings).await?;
    let env_by_id: BTreeMap<String, &EnvView> = envs.iter().map(|e| (e.id.to_string(), e)).collect();
    let mut outcome = Outcome { allocated: plan.allocations.len() as u32, stopped: plan.stops.len() as u32, unplaceable };

    // Deploys that now have instances of their release become `rolling`.
    let mut rolling: Vec<DeployView> = vec![];
    for env in &envs {
        let Some(d) = env.current_deploy_id else { continue };
        let release = env.desired_release_id.map(|r| r.to_string());
        let env_id = env.id.to_string();
        let has = instances.iter().any(|i| i.env_id == env.id && Some(i.release_id.to_string()) == release && i.desired_state == DesiredState::Running)
            || plan.allocations.iter().any(|a| a.env == env_id);
        if has {
            if let Some(d) = cp.view::<DeployView>(&d.to_string()).await? {
                if d.status == DeployStatus::Pending {
                    rolling.push(d);
                }
            }
        }
    }
    if plan.is_empty() && rolling.is_empty() {
        return Ok(outcome);
    }

    // Pin what the plan decided from, then check nothing was appended since the views were read.
    let mut request = AppendRequest::default();
    let by_instance: HashMap<String, &InstanceView> = instances.iter().map(|i| (i.id.to_string(), i)).collect();
    let mut envs_touched: BTreeSet<String> = BTreeSet::new();
    let mut nodes_touched: BTreeSet<String> = BTreeSet::new();
    for a in &plan.allocations {
        let env = env_by_id.get(&a.env).ok_or_else(|| ApiErr::internal("allocation for an unknown env"))?;
        envs_touched.insert(a.env.clone());
        nodes_touched.insert(a.node.clone());
        let node_id = NodeId::parse(&a.node).map_err(ApiErr::internal)?;
        let release_id = vt_ids::ReleaseId::parse(&a.release).map_err(ApiErr::internal)?;
        request.expectations.push(Expectation { aggregate_type: AggregateType::Instance, aggregate_id: a.id.clone(), expected: ExpectedVersion::NoStream });
        request.events.push(system_event(Event::InstanceAllocated(InstanceAllocated {
            org_id: env.org_id,
            app_id: env.app_id,
            env_id: env.id,
            instance_id: InstanceId::parse(&a.id).map_err(ApiErr::internal)?,
            process: a.process.clone(),
            release_id,
            deploy_id: env.current_deploy_id,
            node_id,
            resources: Resources {
                cpu_millis: u32::try_from(a.resources.cpu_millis).unwrap_or(u32::MAX),
                memory_mib: u32::try_from(a.resources.memory_mib).unwrap_or(u32::MAX),
            },
        })));
    }
    for s in &plan.stops {
        let i = by_instance.get(&s.instance).ok_or_else(|| ApiErr::internal("stop of an unknown instance"))?;
        envs_touched.insert(i.env_id.to_string());
        let version = cp.store.aggregate_version(AggregateType::Instance, &s.instance).await?;
        request.expectations.push(exact(AggregateType::Instance, s.instance.clone(), version));
        request.events.push(system_event(Event::InstanceDesiredStateChanged(InstanceDesiredStateChanged {
            org_id: i.org_id,
            env_id: i.env_id,
            instance_id: i.id,
            desired: DesiredState::Stopped,
            reason: Some(s.reason.clone()),
        })));
    }
    for d in &rolling {
        let version = cp.store.aggregate_version(AggregateType::Deploy, &d.id.to_string()).await?;
        request.expectations.push(exact(AggregateType::Deploy, d.id.to_string(), version));
        request.events.push(system_event(Event::DeployStatusChanged(DeployStatusChanged {
            org_id: d.org_id,
            env_id: d.env_id,
            deploy_id: d.id,
            status: DeployStatus::Rolling,
            reason: Some("instances of the release are allocated".into()),
        })));
    }
    for e in &envs_touched {
        let version = cp.store.aggregate_version(AggregateType::Env, e).await?;
        request.expectations.push(exact(AggregateType::Env, e.clone(), version));
    }
    for n in &nodes_touched {
        let version = cp.store.aggregate_version(AggregateType::Node, n).await?;
        request.expectations.push(exact(AggregateType::Node, n.clone(), version));
    }
    if cp.store.head().await? != head {
        // Something was appended while planning: the pinned versions may be newer than the views.
        outcome.allocated = 0;
        outcome.stopped = 0;
        return Err(ApiErr::conflict("the log moved while planning; planning again"));
    }
    let appended = cp.store.append(request).await?;
    tracing::info!(allocated = outcome.allocated, stopped = outcome.stopped, seq = appended.last_seq, "scheduler appended its plan");
    Ok(outcome)
}

struct Computed {
    envs: Vec<EnvView>,
    instances: Vec<InstanceView>,
    plan: vt_scheduler::Plan,
    unplaceable: Vec<UnplaceableProcess>,
}

/// Read the views and plan (no writes).
async fn compute(cp: &ControlPlane, settings: &SchedulerSettings) -> ApiResult<Computed> {
    let nodes: Vec<NodeView> = cp.views(ControlPlane::kind_query(ViewKind::Node)).await?;
    let envs: Vec<EnvView> = cp.views::<EnvView>(ControlPlane::kind_query(ViewKind::Env)).await?.into_iter().filter(|e| e.desired_release_id.is_some()).collect();
    let scales: Vec<ScaleView> = cp.views(ControlPlane::kind_query(ViewKind::Scale)).await?;
    let instances: Vec<InstanceView> = cp.views(ControlPlane::kind_query(ViewKind::Instance)).await?;
    let env_by_id: BTreeMap<String, &EnvView> = envs.iter().map(|e| (e.id.to_string(), e)).collect();

    let mut groups = vec![];
    for s in &scales {
        let Some(env) = env_by_id.get(&s.env_id.to_string()) else { continue };
        let Some(release) = env.desired_release_id else { continue };
        let resources = release_resources(cp, &release.to_string()).await?;
        let Some(r) = resources.get(&s.process) else { continue }; // not in the release: stopped below
        groups.push(vt_scheduler::Group {
            env: s.env_id.to_string(),
            process: s.process.clone(),
            replicas: s.instances,
            release: release.to_string(),
            resources: vt_scheduler::Resources { cpu_millis: r.cpu_millis.into(), memory_mib: r.memory_mib.into() },
        });
    }
    // An env with a desired release is managed even when none of its scales apply.
    for env in &envs {
        if !groups.iter().any(|g| g.env == env.id.to_string()) {
            groups.push(vt_scheduler::Group {
                env: env.id.to_string(),
                process: String::new(),
                replicas: 0,
                release: env.desired_release_id.map(|r| r.to_string()).unwrap_or_default(),
                resources: Default::default(),
            });
        }
    }
    let input = vt_scheduler::Input {
        nodes: nodes
            .iter()
            .map(|n| vt_scheduler::Node {
                id: n.id.to_string(),
                name: n.name.clone(),
                status: match n.status {
                    NodeStatus::Ready => vt_scheduler::NodeStatus::Ready,
                    NodeStatus::Unreachable => vt_scheduler::NodeStatus::Unreachable,
                    NodeStatus::Draining => vt_scheduler::NodeStatus::Draining,
                },
                allocatable: vt_scheduler::Resources { cpu_millis: n.allocatable.cpu_millis.into(), memory_mib: n.allocatable.memory_mib.into() },
            })
            .collect(),
        instances: instances
            .iter()
            .map(|i| vt_scheduler::Instance {
                id: i.id.to_string(),
                node: i.node_id.to_string(),
                env: i.env_id.to_string(),
                process: i.process.clone(),
                release: i.release_id.to_string(),
                resources: vt_scheduler::Resources { cpu_millis: i.resources.cpu_millis.into(), memory_mib: i.resources.memory_mib.into() },
                desired: match i.desired_state {
                    DesiredState::Running => vt_scheduler::Desired::Running,
                    DesiredState::Stopped => vt_scheduler::Desired::Stopped,
                },
                status: status_of(i.status),
                order: i.created_at.timestamp_micros().max(0) as u64,
            })
            .collect(),
        groups,
    };
    let config = vt_scheduler::Config { cpu_oversubscription: settings.cpu_oversubscription, rollout: settings.rollout };
    let plan = vt_scheduler::plan(&input, &config, &mut || InstanceId::new().to_string());

    let unplaceable = plan
        .unplaceable
        .iter()
        .map(|u| UnplaceableProcess {
            org_id: env_by_id.get(&u.env).map(|e| e.org_id.to_string()).unwrap_or_default(),
            env_id: u.env.clone(),
            process: u.process.clone(),
            wanted: u.wanted,
            placed: u.placed,
            reason: u.reason.clone(),
            hint: u.hint.clone(),
        })
        .collect();
    Ok(Computed { envs, instances, plan, unplaceable })
}

impl ControlPlane {
    /// What the scheduler cannot place right now, planned from the current
    /// views without writing (for `vt describe`).
    pub async fn unplaceable_now(&self) -> ApiResult<Vec<UnplaceableProcess>> {
        Ok(compute(self, &self.scheduler.settings()).await?.unplaceable)
    }
}

/// Resources per process of a release, from its manifest (`cpu` vCPUs → millis).
async fn release_resources(cp: &ControlPlane, release: &str) -> ApiResult<BTreeMap<String, Resources>> {
    if let Some(r) = cp.scheduler.resources.lock().unwrap_or_else(|e| e.into_inner()).get(release) {
        return Ok(r.clone());
    }
    let view: ReleaseView = cp.view(release).await?.ok_or_else(|| ApiErr::internal(format!("release {release} has no view")))?;
    let manifest = vt_manifest::from_normalized_json(&view.manifest).map_err(|e| ApiErr::internal(format!("stored manifest of {release} does not decode: {e}")))?;
    let r: BTreeMap<String, Resources> = manifest
        .processes
        .iter()
        .map(|(name, p)| (name.clone(), Resources { cpu_millis: (p.resources.cpu * 1000.0).round() as u32, memory_mib: p.resources.memory_mib }))
        .collect();
    cp.scheduler.resources.lock().unwrap_or_else(|e| e.into_inner()).insert(release.to_owned(), r.clone());
    Ok(r)
}
