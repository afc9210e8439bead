//! Placement: which instances should exist on which node.
//!
//! [`plan`] is a pure function of its [`Input`]: nodes with their allocatable
//! capacity, the instances that exist, and the desired count of each
//! `(env, process)` [`Group`] with its release and resources. It returns a
//! [`Plan`]: new instances and the node each goes to, instances to stop (with a
//! reason), and for every group that cannot be fully placed a reason that says
//! what is short and where, with a hint of what could be stopped.
//!
//! Rules:
//! - Memory is a hard cap: the memory of the instances that occupy a node
//!   (every instance not yet stopped or failed, whatever its desired state)
//!   never exceeds its allocatable memory because of a placement.
//! - CPU is soft: a node takes instances up to `allocatable cpu ×`
//!   [`Config::cpu_oversubscription`].
//! - Replicas of a group spread: each goes to the node with the fewest replicas
//!   of that group, then the most free memory, then the lowest name.
//! - Only `ready` nodes receive instances. Instances on `unreachable` (or
//!   unknown) nodes are stopped and replaced elsewhere; `draining` nodes keep
//!   theirs.
//! - Scale-down stops the newest instances first.
//! - When the desired release changes, new-release instances are started and
//!   old-release instances are stopped as new ones become [`Status::Ready`]
//!   (running and passing their health check), within [`Rollout`] limits.
//! - A running instance whose health check fails is stopped and replaced.
//! - Volumes are local: an instance of a process that mounts volume names goes only to a node
//!   holding a free volume (of its env) for each name, and takes them; a volume serves at most
//!   one instance. A volume whose instance has ended is free again ([`Plan::detaches`]). A
//!   release change of such a process stops an old instance before starting its replacement
//!   (no surge: the replacement needs the volume the old one holds).
//! - Crash loops back off: after `n` consecutive failures of a group's
//!   release, its replacements wait [`Backoff::delay`]`(n)` after the last
//!   failure (1 s, 2 s, 4 s, ... up to 5 min); the count is forgotten once an
//!   instance of the release has stayed ready for [`Backoff::reset_after_ms`].
//!
//! - Suspend (a group with [`Group::suspend`]: `scaling.suspend`, a suspended workspace): a
//!   scale to 0 suspends its running instances ([`Plan::suspends`]: saved to a snapshot on
//!   their node) instead of stopping them; a scale up resumes suspended instances of the
//!   group's release first ([`Plan::resumes`]: desired `running` again, the same instance on
//!   the same node, oldest first), when their node is ready and has room, and places new ones
//!   only for the rest. A suspended instance keeps its node and its volumes (its snapshot and
//!   disks are there) but no memory or CPU: nothing runs; its resume needs them again, so it
//!   is placed like a new instance but on that node alone. A suspended instance that cannot
//!   be resumed any more (another release, a group that no longer suspends at 0, an
//!   unreachable node) is stopped, its snapshot discarded.
//!
//! Deterministic: the plan does not depend on the order of the input; ids of
//! new instances come from the caller's generator, called in plan order. Time
//! is an input ([`Input::now`]): there is no clock here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Resources of an instance, or a node's allocatable capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Ready,
    Unreachable,
    Draining,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub status: NodeStatus,
    pub allocatable: Resources,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Running,
    Stopped,
    /// Saved to a snapshot on its node (resumed when desired `running` again).
    Suspended,
}

/// What the node last reported, reduced to what placement needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Allocated, preparing or booting.
    Starting,
    /// The entrypoint runs; its health check has not passed yet.
    Running,
    /// Running and passing its health check (or it has none): serving. Only
    /// these count when a rollout decides to stop an old-release instance.
    Ready,
    /// Running, but its health check failed: to be stopped and replaced.
    Failing,
    /// Going down: still occupies its node, no longer counts as a replica.
    Stopping,
    /// Stopped or failed: occupies nothing.
    Exited,
    /// Saved to a snapshot on its node, no VMM: holds its node and volumes, no memory or CPU
    /// (until desired `running` again: resuming).
    Suspended,
    /// Being resumed from its snapshot (preparing or booting a restored VM): starts like
    /// [`Status::Starting`], but a scale to 0 suspends it again (its snapshot, or the VM
    /// restored from it, holds its memory) instead of stopping it.
    Resuming,
}

impl Status {
    /// Holds its node and its volumes.
    fn occupies(self) -> bool {
        self != Status::Exited
    }
}

impl Instance {
    /// Counts against its node's memory and CPU: not ended, and not suspended (a suspended
    /// instance desired `running` again is resuming: it does).
    fn uses_resources(&self) -> bool {
        match self.status {
            Status::Exited => false,
            Status::Suspended => self.desired == Desired::Running,
            _ => true,
        }
    }

    /// Suspended and meant to stay so (until a resume).
    fn suspended(&self) -> bool {
        self.desired == Desired::Suspended && self.status != Status::Exited
    }
}

/// Milliseconds on the caller's clock (for example since the Unix epoch).
pub type Millis = u64;

/// How an instance failed while meant to run: it exited without being asked
/// to stop, or its health check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub at: Millis,
    /// A few words for people: `exited with code 1`.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub node: String,
    pub env: String,
    pub process: String,
    pub release: String,
    pub resources: Resources,
    pub desired: Desired,
    pub status: Status,
    /// When it first became ready, if it did.
    pub ready_since: Option<Millis>,
    /// Its failure, if it failed (kept after it ended: the failure history).
    pub failure: Option<Failure>,
    /// Allocation order (for example the log position of its allocation):
    /// higher is newer. Ties are broken by id.
    pub order: u64,
}

impl Instance {
    fn live(&self) -> bool {
        self.desired == Desired::Running
            && matches!(
                self.status,
                Status::Starting
                    | Status::Resuming
                    | Status::Running
                    | Status::Ready
                    | Status::Failing
                    | Status::Suspended
            )
    }
}

/// The desired state of one process type of one env.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub env: String,
    pub process: String,
    pub replicas: u32,
    pub release: String,
    pub resources: Resources,
    /// The volume names each instance mounts (sorted, each once).
    pub volumes: Vec<String>,
    /// A scale to 0 suspends its running instances instead of stopping them.
    pub suspend: bool,
}

/// A volume of an env, on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    pub env: String,
    pub name: String,
    pub node: String,
    /// The instance it is attached to, if any.
    pub attached_to: Option<String>,
}

/// Limits of a release change. Defaults: start every new-release instance at
/// once (`max_surge: None`), stop an old one only when a new one runs
/// (`max_unavailable: 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rollout {
    /// How many instances above `replicas` may exist during a release change;
    /// `None`: up to `replicas` more.
    pub max_surge: Option<u32>,
    /// How many old-release instances may be stopped before their replacements run.
    pub max_unavailable: u32,
}

/// Restart delays of a crash loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure; it doubles with each further one.
    pub base_ms: Millis,
    pub max_ms: Millis,
    /// An instance of the release that stays ready this long ends the crash
    /// loop: failures before that point are forgotten.
    pub reset_after_ms: Millis,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base_ms: 1_000, max_ms: 300_000, reset_after_ms: 60_000 }
    }
}

impl Backoff {
    /// The wait before a replacement after `failures` consecutive failures:
    /// `base × 2^(failures-1)`, at most `max` (none before any failure).
    pub fn delay(&self, failures: u32) -> Millis {
        match failures {
            0 => 0,
            n => self.base_ms.saturating_mul(1u64.checked_shl(n - 1).unwrap_or(u64::MAX)).min(self.max_ms),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// A node takes instances up to `allocatable cpu × this`. Default 4.0.
    pub cpu_oversubscription: f64,
    pub rollout: Rollout,
    pub backoff: Backoff,
}

impl Default for Config {
    fn default() -> Self {
        Config { cpu_oversubscription: 4.0, rollout: Rollout::default(), backoff: Backoff::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Input {
    pub nodes: Vec<Node>,
    pub instances: Vec<Instance>,
    /// One entry per `(env, process)`. An instance of a pair not listed is
    /// stopped when its env has other groups; envs with no group are not
    /// managed (their instances only occupy their nodes).
    pub groups: Vec<Group>,
    pub volumes: Vec<Volume>,
    /// The current time, on the clock of [`Instance::ready_since`] and [`Failure::at`].
    pub now: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub id: String,
    pub node: String,
    pub env: String,
    pub process: String,
    pub release: String,
    pub resources: Resources,
    /// Per volume name of its group, the volume it takes: `(name, volume id)`.
    pub volumes: Vec<(String, String)>,
}

/// A volume whose instance has ended: free again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detach {
    pub volume: String,
    pub instance: String,
}

/// An instance whose desired state becomes `stopped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub instance: String,
    pub reason: String,
}

/// An instance whose desired state becomes `suspended`, or `running` again (a resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspend {
    pub instance: String,
    pub reason: String,
}

/// A group that could not be fully placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaceable {
    pub env: String,
    pub process: String,
    /// Instances of the desired release wanted, and how many exist or were placed.
    pub wanted: u32,
    pub placed: u32,
    /// What is short and where.
    pub reason: String,
    /// What could be stopped (or added) to make room.
    pub hint: String,
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} instance(s) placed: {}; {}", self.placed, self.wanted, self.reason, self.hint)
    }
}

/// A group whose instances of the desired release keep failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashLoop {
    pub env: String,
    pub process: String,
    /// Failures since an instance of the release last stayed ready for
    /// [`Backoff::reset_after_ms`] (at least 1).
    pub failures: u32,
    /// The latest failure.
    pub last: Failure,
    /// When a replacement may start: `last.at + delay(failures)`.
    pub restart_at: Millis,
    /// Replacements this plan holds back until `restart_at`.
    pub held: u32,
}

impl fmt::Display for CrashLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.failures == 1 { "" } else { "s" };
        write!(f, "{} consecutive failure{s}, last: {}", self.failures, self.last.reason)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// In placement order (groups by env then process).
    pub allocations: Vec<Allocation>,
    /// By instance id.
    pub stops: Vec<Stop>,
    /// Instances to suspend (scaled to 0 with [`Group::suspend`]), by instance id.
    pub suspends: Vec<Suspend>,
    /// Suspended instances to resume on their node, in placement order.
    pub resumes: Vec<Suspend>,
    /// By env then process.
    pub unplaceable: Vec<Unplaceable>,
    /// Groups with consecutive failures of their release, by env then process.
    pub crash_loops: Vec<CrashLoop>,
    /// Volumes attached to instances that have ended (or are unknown), by volume id.
    pub detaches: Vec<Detach>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
            && self.stops.is_empty()
            && self.detaches.is_empty()
            && self.suspends.is_empty()
            && self.resumes.is_empty()
    }
}

struct NodeState<'a> {
    node: &'a Node,
    used: Resources,
    cpu_limit: u64,
}

impl NodeState<'_> {
    fn free_memory(&self) -> u64 {
        self.node.allocatable.memory_mib.saturating_sub(self.used.memory_mib)
    }
    fn free_cpu(&self) -> u64 {
        self.cpu_limit.saturating_sub(self.used.cpu_millis)
    }
    fn fits(&self, r: Resources) -> bool {
        self.free_memory() >= r.memory_mib && self.free_cpu() >= r.cpu_millis
    }
}

/// Compute the placement plan. `new_id` names each new instance.
pub fn plan(input: &Input, config: &Config, new_id: &mut dyn FnMut() -> String) -> Plan {
    let ratio = if config.cpu_oversubscription.is_finite() && config.cpu_oversubscription > 0.0 {
        config.cpu_oversubscription
    } else {
        1.0
    };
    let mut nodes: Vec<&Node> = input.nodes.iter().collect();
    nodes.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    nodes.dedup_by(|a, b| a.id == b.id);
    let mut state: Vec<NodeState<'_>> = nodes
        .iter()
        .map(|n| NodeState {
            node: n,
            used: Resources::default(),
            cpu_limit: (n.allocatable.cpu_millis as f64 * ratio).floor() as u64,
        })
        .collect();
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();

    let mut instances: Vec<&Instance> = input.instances.iter().collect();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    instances.dedup_by(|a, b| a.id == b.id);
    // What occupies each node, whatever its desired state.
    let mut on_node: Vec<Vec<&Instance>> = vec![vec![]; nodes.len()];
    for i in &instances {
        if let (true, Some(&n)) = (i.uses_resources(), index.get(i.node.as_str())) {
            state[n].used.cpu_millis += i.resources.cpu_millis;
            state[n].used.memory_mib += i.resources.memory_mib;
            on_node[n].push(i);
        }
    }

    // Volumes: those attached to an ended (or unknown) instance are free again.
    let by_id: HashMap<&str, &Instance> = instances.iter().map(|i| (i.id.as_str(), *i)).collect();
    let mut volumes: Vec<&Volume> = input.volumes.iter().collect();
    volumes.sort_by(|a, b| (&a.env, &a.name, &a.id).cmp(&(&b.env, &b.name, &b.id)));
    volumes.dedup_by(|a, b| a.id == b.id);
    let mut detaches = vec![];
    let mut free: Vec<bool> = volumes
        .iter()
        .map(|v| match &v.attached_to {
            None => true,
            Some(i) if by_id.get(i.as_str()).is_none_or(|i| !i.status.occupies()) => {
                detaches.push(Detach { volume: v.id.clone(), instance: i.clone() });
                true
            }
            Some(_) => false,
        })
        .collect();

    let mut groups: Vec<&Group> = input.groups.iter().collect();
    groups.sort_by(|a, b| (&a.env, &a.process).cmp(&(&b.env, &b.process)));
    groups.dedup_by(|a, b| (&a.env, &a.process) == (&b.env, &b.process));
    let by_key: BTreeMap<(&str, &str), usize> =
        groups.iter().enumerate().map(|(i, g)| ((g.env.as_str(), g.process.as_str()), i)).collect();

    let managed: std::collections::BTreeSet<&str> = groups.iter().map(|g| g.env.as_str()).collect();
    let mut out = Plan { detaches, ..Plan::default() };
    // Live instances per group, after stopping those on lost nodes and of undesired groups.
    let mut buckets: Vec<Vec<&Instance>> = vec![vec![]; groups.len()];
    for i in instances.iter().filter(|i| i.live()) {
        match index.get(i.node.as_str()).map(|&n| nodes[n]) {
            None => out.stops.push(Stop {
                instance: i.id.clone(),
                reason: format!("its node {} is not registered; replaced elsewhere", i.node),
            }),
            Some(n) if n.status == NodeStatus::Unreachable => out.stops.push(Stop {
                instance: i.id.clone(),
                reason: format!("node {} is unreachable; replaced elsewhere", n.name),
            }),
            Some(_) => match by_key.get(&(i.env.as_str(), i.process.as_str())) {
                // Its health check failed: stop it; a replacement is planned below.
                _ if i.status == Status::Failing && managed.contains(i.env.as_str()) => out.stops.push(Stop {
                    instance: i.id.clone(),
                    reason: format!(
                        "health check failing: {}",
                        i.failure.as_ref().map_or("no reason reported", |f| f.reason.as_str())
                    ),
                }),
                Some(&g) if groups[g].replicas > 0 => buckets[g].push(i),
                // Suspended rather than stopped: what runs (or resumes, from its snapshot or
                // before it was reported) is saved; what only starts has nothing worth keeping.
                Some(&g)
                    if groups[g].suspend
                        && matches!(
                            i.status,
                            Status::Running | Status::Ready | Status::Suspended | Status::Resuming
                        ) =>
                {
                    out.suspends.push(Suspend { instance: i.id.clone(), reason: "scaled to 0".into() })
                }
                Some(_) => out.stops.push(Stop { instance: i.id.clone(), reason: "scaled to 0".into() }),
                None if managed.contains(i.env.as_str()) => out.stops.push(Stop {
                    instance: i.id.clone(),
                    reason: format!("process `{}` is not desired in this env", i.process),
                }),
                // An env with no group at all is not managed here: its instances only occupy.
                None => {}
            },
        }
    }

    // Suspended instances per group, oldest first; those that can never be resumed are stopped.
    let mut asleep: Vec<Vec<&Instance>> = vec![vec![]; groups.len()];
    for i in instances.iter().filter(|i| i.suspended()) {
        let node = index.get(i.node.as_str()).map(|&n| nodes[n]);
        let group = by_key.get(&(i.env.as_str(), i.process.as_str())).copied();
        let why = match (node, group) {
            (None, _) => Some(format!("its node {} is not registered; its snapshot is lost", i.node)),
            (Some(n), _) if n.status == NodeStatus::Unreachable => {
                Some(format!("node {} is unreachable; its snapshot is lost", n.name))
            }
            (_, None) if managed.contains(i.env.as_str()) => {
                Some(format!("process `{}` is not desired in this env", i.process))
            }
            (_, None) => None,
            (_, Some(g)) if groups[g].release != i.release => {
                Some(format!("release {} replaces it; its snapshot is discarded", groups[g].release))
            }
            (_, Some(g)) if !groups[g].suspend && groups[g].replicas == 0 => {
                Some("scaled to 0 without suspend; its snapshot is discarded".to_owned())
            }
            (_, Some(g)) => {
                asleep[g].push(i);
                None
            }
        };
        if let Some(reason) = why {
            out.stops.push(Stop { instance: i.id.clone(), reason });
        }
    }
    for a in &mut asleep {
        a.sort_by(|a, b| (a.order, &a.id).cmp(&(b.order, &b.id)));
    }

    // Each group's history: its instances of the desired release, live or not.
    let mut history: Vec<Vec<&Instance>> = vec![vec![]; groups.len()];
    for i in &instances {
        if let Some(&g) = by_key.get(&(i.env.as_str(), i.process.as_str())) {
            if i.release == groups[g].release {
                history[g].push(i);
            }
        }
    }

    let ready: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].status == NodeStatus::Ready).collect();
    let mut count = vec![0u32; nodes.len()];
    for (g, group) in groups.iter().enumerate() {
        let mut new: Vec<&Instance> = vec![];
        let mut old: Vec<&Instance> = vec![];
        for i in &buckets[g] {
            if i.release == group.release {
                new.push(i)
            } else {
                old.push(i)
            }
        }
        // Newest first.
        new.sort_by(|a, b| (b.order, &b.id).cmp(&(a.order, &a.id)));
        old.sort_by(|a, b| (b.order, &b.id).cmp(&(a.order, &a.id)));
        let replicas = group.replicas as usize;
        let keep_new = new.len().min(replicas);
        for i in &new[..new.len() - keep_new] {
            out.stops.push(Stop { instance: i.id.clone(), reason: format!("scaled down to {replicas}") });
        }
        let new = &new[new.len() - keep_new..];
        let new_ready = new.iter().filter(|i| i.status == Status::Ready).count();
        // A process with volumes: its replacement needs the volume the old instance holds, so
        // the old one stops first (one at a time) and nothing surges.
        let with_volumes = !group.volumes.is_empty();
        let unavailable = match with_volumes {
            true => config.rollout.max_unavailable.max(1),
            false => config.rollout.max_unavailable,
        };
        let keep_old = replicas.saturating_sub(new_ready + unavailable as usize).min(old.len());
        for i in &old[..old.len() - keep_old] {
            out.stops.push(Stop { instance: i.id.clone(), reason: format!("replaced by release {}", group.release) });
        }
        let old = &old[old.len() - keep_old..];
        let surge = if with_volumes { 0 } else { config.rollout.max_surge.map_or(replicas, |s| s as usize) };
        let room = (replicas + surge).saturating_sub(keep_new + keep_old);
        let mut wanted = (replicas - keep_new).min(room);
        if let Some(mut cl) = crash_loop(group, &history[g], &config.backoff, input.now) {
            if cl.restart_at > input.now {
                cl.held = wanted as u32;
                wanted = 0;
            }
            out.crash_loops.push(cl);
        }

        let mut touched = vec![];
        for i in new.iter().chain(old) {
            if let Some(&n) = index.get(i.node.as_str()) {
                if count[n] == 0 {
                    touched.push(n);
                }
                count[n] += 1;
            }
        }
        let need = group.resources;
        // Resume suspended instances first, each on its own node when that is ready and has room.
        let mut resumed = 0;
        let mut kept_asleep = vec![];
        for i in &asleep[g] {
            let n = index[i.node.as_str()];
            if resumed < wanted && nodes[n].status == NodeStatus::Ready && state[n].fits(i.resources) {
                state[n].used.cpu_millis += i.resources.cpu_millis;
                state[n].used.memory_mib += i.resources.memory_mib;
                if count[n] == 0 {
                    touched.push(n);
                }
                count[n] += 1;
                resumed += 1;
                out.resumes.push(Suspend { instance: i.id.clone(), reason: format!("scaled up to {replicas}") });
            } else {
                kept_asleep.push(*i);
            }
        }
        // A group that no longer suspends keeps no snapshot beyond what it resumed.
        if !group.suspend {
            for i in kept_asleep {
                out.stops.push(Stop {
                    instance: i.id.clone(),
                    reason: "cannot be resumed on its node; its snapshot is discarded".to_owned(),
                });
            }
        }
        let wanted = wanted - resumed;
        let mut placed = resumed;
        for _ in 0..wanted {
            let mut best: Option<usize> = None;
            for &n in &ready {
                let s = &state[n];
                if !s.fits(need) || free_volumes(group, &nodes[n].id, &volumes, &free).is_none() {
                    continue;
                }
                best = match best {
                    Some(b) if (count[b], Reverse(state[b].free_memory())) <= (count[n], Reverse(s.free_memory())) => {
                        Some(b)
                    }
                    _ => Some(n),
                };
            }
            let Some(n) = best else { break };
            let mut taken = vec![];
            for (name, v) in free_volumes(group, &nodes[n].id, &volumes, &free).unwrap_or_default() {
                free[v] = false;
                taken.push((name, volumes[v].id.clone()));
            }
            state[n].used.cpu_millis += need.cpu_millis;
            state[n].used.memory_mib += need.memory_mib;
            if count[n] == 0 {
                touched.push(n);
            }
            count[n] += 1;
            placed += 1;
            out.allocations.push(Allocation {
                id: new_id(),
                node: nodes[n].id.clone(),
                env: group.env.clone(),
                process: group.process.clone(),
                release: group.release.clone(),
                resources: need,
                volumes: taken,
            });
        }
        for n in touched {
            count[n] = 0;
        }
        if placed < wanted + resumed {
            let (reason, hint) = explain_volumes(group, &nodes, &volumes, &free, &by_id)
                .unwrap_or_else(|| explain(need, &nodes, &state, &on_node, ratio));
            out.unplaceable.push(Unplaceable {
                env: group.env.clone(),
                process: group.process.clone(),
                wanted: group.replicas,
                placed: (keep_new + placed) as u32,
                reason,
                hint,
            });
        }
    }
    out.stops.sort_by(|a, b| a.instance.cmp(&b.instance));
    out.suspends.sort_by(|a, b| a.instance.cmp(&b.instance));
    out
}

/// For each volume name of the group, a free volume of its env on `node` (the oldest id
/// first): `None` when one name has none there.
fn free_volumes(group: &Group, node: &str, volumes: &[&Volume], free: &[bool]) -> Option<Vec<(String, usize)>> {
    group
        .volumes
        .iter()
        .map(|name| {
            (0..volumes.len())
                .find(|&v| {
                    free[v] && volumes[v].env == group.env && &volumes[v].name == name && volumes[v].node == node
                })
                .map(|v| (name.clone(), v))
        })
        .collect()
}

/// Why no ready node holds a free volume for each of the group's names, if that is why it
/// cannot be placed: the first name that lacks one, how many volumes of that name exist and
/// what holds them.
fn explain_volumes(
    group: &Group,
    nodes: &[&Node],
    volumes: &[&Volume],
    free: &[bool],
    instances: &HashMap<&str, &Instance>,
) -> Option<(String, String)> {
    let ready = |id: &str| nodes.iter().any(|n| n.id == id && n.status == NodeStatus::Ready);
    // With no ready node at all, that is the reason.
    if !nodes.iter().any(|n| n.status == NodeStatus::Ready) {
        return None;
    }
    if nodes.iter().any(|n| n.status == NodeStatus::Ready && free_volumes(group, &n.id, volumes, free).is_some()) {
        return None;
    }
    let node_name = |id: &str| nodes.iter().find(|n| n.id == id).map_or_else(|| id.to_owned(), |n| n.name.clone());
    for name in &group.volumes {
        let of: Vec<usize> =
            (0..volumes.len()).filter(|&v| volumes[v].env == group.env && &volumes[v].name == name).collect();
        let head = format!("process {} needs a free volume `{name}`", group.process);
        let create = format!("create one on a ready node: `vt volume create {name} --size-gib N [--node NODE]`");
        if of.is_empty() {
            return Some((format!("{head}; none exists in its env"), create));
        }
        if of.iter().any(|&v| free[v] && ready(&volumes[v].node)) {
            continue;
        }
        let n = of.len();
        let (exist, all) = match n {
            1 => ("1 exists".to_owned(), "it is".to_owned()),
            2 => ("2 exist".to_owned(), "both".to_owned()),
            n => (format!("{n} exist"), "all".to_owned()),
        };
        let attached: Vec<&usize> = of.iter().filter(|&&v| !free[v]).collect();
        if attached.len() == n {
            let holders: Vec<String> = attached
                .iter()
                .take(5)
                .filter_map(|&&v| volumes[v].attached_to.as_deref())
                .map(|i| match instances.get(i) {
                    Some(i) if i.desired == Desired::Stopped => {
                        format!("{} (stopping: it frees the volume when it ends)", i.id)
                    }
                    _ => i.to_owned(),
                })
                .collect();
            return Some((
                format!("{head}; {exist}, {all} attached"),
                format!("held by {}; or {create}", holders.join(", ")),
            ));
        }
        let elsewhere: Vec<String> = of
            .iter()
            .filter(|&&v| free[v])
            .map(|&v| volumes[v].node.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|n| {
                let status = nodes.iter().find(|x| x.id == n).map_or("not registered", |x| match x.status {
                    NodeStatus::Ready => "ready",
                    NodeStatus::Unreachable => "unreachable",
                    NodeStatus::Draining => "draining",
                });
                format!("{} ({status})", node_name(n))
            })
            .collect();
        return Some((
            format!("{head}; {exist}, the free one(s) on nodes that are not ready: {}", elsewhere.join(", ")),
            format!("bring the node back, or {create}"),
        ));
    }
    None
}

/// The group's consecutive failures, from its instances of the desired
/// release: those failed after the last point where an instance had stayed
/// ready for `reset_after` (while live, or until it failed).
fn crash_loop(group: &Group, history: &[&Instance], backoff: &Backoff, now: Millis) -> Option<CrashLoop> {
    let reset = history
        .iter()
        .filter_map(|i| {
            let since = i.ready_since?;
            let until = match (&i.failure, i.status) {
                (Some(f), _) => f.at,
                (None, Status::Ready) => now,
                // Ended or stopped on request: how long it stayed ready is not known.
                (None, _) => return None,
            };
            let proven = since.saturating_add(backoff.reset_after_ms);
            (proven <= until).then_some(proven)
        })
        .max();
    let mut failures: Vec<&Failure> =
        history.iter().filter_map(|i| i.failure.as_ref()).filter(|f| reset.is_none_or(|r| f.at >= r)).collect();
    failures.sort_by(|a, b| (a.at, &a.reason).cmp(&(b.at, &b.reason)));
    let last = (*failures.last()?).clone();
    let n = u32::try_from(failures.len()).unwrap_or(u32::MAX);
    Some(CrashLoop {
        env: group.env.clone(),
        process: group.process.clone(),
        failures: n,
        restart_at: last.at.saturating_add(backoff.delay(n)),
        last,
        held: 0,
    })
}

/// Why `need` fits on no ready node, and what could make room.
fn explain(
    need: Resources,
    nodes: &[&Node],
    state: &[NodeState<'_>],
    on_node: &[Vec<&Instance>],
    ratio: f64,
) -> (String, String) {
    let add = format!(
        "add a node with at least {} MiB allocatable memory, or lower the process's `resources`",
        need.memory_mib
    );
    if nodes.is_empty() {
        return ("no node is registered".into(), "start a node agent (`vt node list` shows the nodes)".into());
    }
    let ready: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].status == NodeStatus::Ready).collect();
    if ready.is_empty() {
        let unreachable = nodes.iter().filter(|n| n.status == NodeStatus::Unreachable).count();
        let draining = nodes.len() - unreachable;
        return (
            format!("no node is ready ({unreachable} unreachable, {draining} draining)"),
            "bring a node back or register a new one".into(),
        );
    }
    let by_memory = ready.iter().copied().max_by_key(|&n| (state[n].free_memory(), Reverse(n))).unwrap_or(ready[0]);
    let reason = if state[by_memory].free_memory() < need.memory_mib {
        format!(
            "needs {} MiB memory; largest free is {} MiB on {} ({} ready node(s))",
            need.memory_mib,
            state[by_memory].free_memory(),
            nodes[by_memory].name,
            ready.len()
        )
    } else {
        let by_cpu = ready
            .iter()
            .copied()
            .filter(|&n| state[n].free_memory() >= need.memory_mib)
            .max_by_key(|&n| (state[n].free_cpu(), Reverse(n)))
            .unwrap_or(by_memory);
        format!(
            "needs {} CPU millis; most free is {} on {} (CPU is oversubscribed up to {ratio}x)",
            need.cpu_millis,
            state[by_cpu].free_cpu(),
            nodes[by_cpu].name
        )
    };
    // The ready node where stopping the fewest instances (largest first) makes room.
    let mut best: Option<(usize, usize, Vec<&Instance>)> = None;
    for &n in &ready {
        if need.memory_mib > nodes[n].allocatable.memory_mib || need.cpu_millis > state[n].cpu_limit {
            continue;
        }
        let mut candidates: Vec<&Instance> =
            on_node[n].iter().copied().filter(|i| i.desired == Desired::Running).collect();
        candidates
            .sort_by(|a, b| (Reverse(a.resources.memory_mib), &a.id).cmp(&(Reverse(b.resources.memory_mib), &b.id)));
        let (mut mem, mut cpu) = (state[n].free_memory(), state[n].free_cpu());
        let mut chosen = vec![];
        for i in candidates {
            if mem >= need.memory_mib && cpu >= need.cpu_millis {
                break;
            }
            mem += i.resources.memory_mib;
            cpu += i.resources.cpu_millis;
            chosen.push(i);
        }
        if mem >= need.memory_mib && cpu >= need.cpu_millis && best.as_ref().is_none_or(|b| chosen.len() < b.1) {
            best = Some((n, chosen.len(), chosen));
        }
    }
    let hint = match best {
        Some((n, k, chosen)) if k > 0 => {
            let list: Vec<String> = chosen
                .iter()
                .take(5)
                .map(|i| format!("{} ({}/{}, {} MiB)", i.id, i.env, i.process, i.resources.memory_mib))
                .collect();
            let more = if k > 5 { format!(" and {} more", k - 5) } else { String::new() };
            format!(
                "stopping {k} instance(s) on {} would make room: {}{more}; or {add}",
                nodes[n].name,
                list.join(", ")
            )
        }
        _ => add,
    };
    (reason, hint)
}

/// Check a plan against its input: allocations only on ready nodes, no node's
/// memory pushed over its allocatable by placements, CPU within the
/// oversubscription, every stop names a live instance once. Used by the
/// tests and the benchmark.
pub fn check(input: &Input, config: &Config, plan: &Plan) -> Result<(), String> {
    let nodes: HashMap<&str, &Node> = input.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut used: HashMap<&str, Resources> = HashMap::new();
    for i in input.instances.iter().filter(|i| i.uses_resources()) {
        let u = used.entry(i.node.as_str()).or_default();
        u.memory_mib += i.resources.memory_mib;
        u.cpu_millis += i.resources.cpu_millis;
    }
    let mut added: HashMap<&str, Resources> = HashMap::new();
    for a in &plan.allocations {
        let n = nodes.get(a.node.as_str()).ok_or_else(|| format!("{} placed on unknown node {}", a.id, a.node))?;
        if n.status != NodeStatus::Ready {
            return Err(format!("{} placed on {} which is {:?}", a.id, n.name, n.status));
        }
        let u = added.entry(a.node.as_str()).or_default();
        u.memory_mib += a.resources.memory_mib;
        u.cpu_millis += a.resources.cpu_millis;
    }
    for (node, add) in &added {
        let n = nodes[node];
        let before = used.get(node).copied().unwrap_or_default();
        if before.memory_mib + add.memory_mib > n.allocatable.memory_mib {
            return Err(format!(
                "{}: {} + {} MiB placed > {} MiB allocatable",
                n.name, before.memory_mib, add.memory_mib, n.allocatable.memory_mib
            ));
        }
        let limit = (n.allocatable.cpu_millis as f64 * config.cpu_oversubscription).floor() as u64;
        if before.cpu_millis + add.cpu_millis > limit {
            return Err(format!("{}: {} + {} CPU millis placed > {limit}", n.name, before.cpu_millis, add.cpu_millis));
        }
    }
    let by_id: HashMap<&str, &Instance> = input.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    for r in &plan.resumes {
        let i = by_id.get(r.instance.as_str()).filter(|i| i.suspended());
        let i = i.ok_or_else(|| format!("resume of {} which is not suspended", r.instance))?;
        let n = nodes.get(i.node.as_str()).ok_or_else(|| format!("{} resumed on unknown node {}", i.id, i.node))?;
        if n.status != NodeStatus::Ready {
            return Err(format!("{} resumed on {} which is {:?}", i.id, n.name, n.status));
        }
        let u = added.entry(i.node.as_str()).or_default();
        u.memory_mib += i.resources.memory_mib;
        u.cpu_millis += i.resources.cpu_millis;
    }
    let vols: HashMap<&str, &Volume> = input.volumes.iter().map(|v| (v.id.as_str(), v)).collect();
    let detached: std::collections::HashSet<&str> = plan.detaches.iter().map(|d| d.volume.as_str()).collect();
    let mut attached = std::collections::HashSet::new();
    for a in &plan.allocations {
        for (name, id) in &a.volumes {
            let v = vols.get(id.as_str()).ok_or_else(|| format!("{} takes unknown volume {id}", a.id))?;
            if v.node != a.node || &v.name != name || v.env != a.env {
                return Err(format!("{} on {} takes volume {id} ({} on {})", a.id, a.node, v.name, v.node));
            }
            if (v.attached_to.is_some() && !detached.contains(id.as_str())) || !attached.insert(id.as_str()) {
                return Err(format!("{} takes volume {id}, which is not free", a.id));
            }
        }
    }
    let live: HashMap<&str, &Instance> =
        input.instances.iter().filter(|i| i.live()).map(|i| (i.id.as_str(), i)).collect();
    let mut seen = std::collections::HashSet::new();
    for s in &plan.stops {
        let asleep = by_id.get(s.instance.as_str()).is_some_and(|i| i.suspended());
        if !(live.contains_key(s.instance.as_str()) || asleep) || !seen.insert(s.instance.as_str()) {
            return Err(format!("stop of {} which is not live or suspended, or stopped twice", s.instance));
        }
    }
    for s in &plan.suspends {
        if !live.contains_key(s.instance.as_str()) || !seen.insert(s.instance.as_str()) {
            return Err(format!("suspend of {} which is not live, or also stopped", s.instance));
        }
    }
    for r in &plan.resumes {
        if !seen.insert(r.instance.as_str()) {
            return Err(format!("resume of {} which is also stopped or suspended", r.instance));
        }
    }
    Ok(())
}

/// A generator of ids `prefix0`, `prefix1`, ... for tests and the benchmark.
pub fn counter(prefix: &str) -> impl FnMut() -> String + '_ {
    let mut n = 0u64;
    move || {
        n += 1;
        format!("{prefix}{:06}", n - 1)
    }
}

#[cfg(test)]
mod tests;
