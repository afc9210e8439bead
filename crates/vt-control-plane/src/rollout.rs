//! Deploy progress, pure: from a deploy, the desired instance counts of its
//! release's processes and the env's instances (as the scheduler is about to
//! leave them), the phases the deploy reached and whether it is done.
//!
//! - A deploy **fails** when one of its own instances (allocated for it, of
//!   its release) fails while meant to run: it exits, or stops without being
//!   asked, or its health check fails. The earliest such failure names it.
//! - Its **phases**, each reached when every process of the release has its
//!   desired count of live instances of the release at that stage:
//!   `scheduled` (allocated), `image_ready` (booting or later), `booted`
//!   (running), `healthy` (ready: running and passing its health check).
//! - It **succeeds** when it is healthy and no instance of another release
//!   is meant to run in the env any more. A release with no desired instance
//!   succeeds at once.
//!
//! The reconciler (`scheduler.rs`) turns this into events; `vt describe` uses
//! it to say how far a rolling deploy got.

use std::collections::BTreeMap;

use vt_events::{DeployPhase, InstanceStatus};
use vt_views::{DeployView, InstanceView};

/// How far one process of the release got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessProgress {
    pub desired: u32,
    /// Live instances of the release per stage reached (each counts in the
    /// stages before its own): scheduled, image ready, booted, healthy.
    pub at: [u32; 4],
}

impl ProcessProgress {
    pub fn ready(&self) -> u32 {
        self.at[3]
    }
}

/// Where a deploy stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The phases reached, in order (a later one implies the earlier ones).
    pub reached: Vec<DeployPhase>,
    /// Per process of the release, by name.
    pub processes: BTreeMap<String, ProcessProgress>,
    /// Healthy, and no instance of another release is meant to run.
    pub succeeded: bool,
}

/// The stage a live instance of the release reached, as an index into
/// [`DeployPhase::ALL`]; `None` when it is not live or has failed.
fn stage(i: &InstanceView) -> Option<usize> {
    if !i.is_live() || i.failure.is_some() {
        return None;
    }
    Some(match i.status {
        _ if i.is_ready() => 3,
        InstanceStatus::Running => 2,
        InstanceStatus::Booting => 1,
        _ => 0,
    })
}

/// The failure that fails `deploy`, if one of its instances failed: the
/// instance and why, in words (`instance inst_… (web) exited with code 1: …`).
pub fn failure<'a>(
    deploy: &DeployView,
    instances: impl IntoIterator<Item = &'a InstanceView>,
) -> Option<(&'a InstanceView, String)> {
    let (i, f) = instances
        .into_iter()
        .filter(|i| i.deploy_id == Some(deploy.id) && i.revision() == deploy.revision())
        .filter_map(|i| Some((i, i.failure.as_ref()?)))
        .min_by_key(|(i, f)| (f.at, i.id))?;
    Some((i, format!("instance {} ({}) {}", i.id, i.process, f.detail())))
}

/// How far `deploy` got, given the desired count of each process of its
/// release and the instances of its env.
pub fn progress<'a>(
    deploy: &DeployView,
    desired: &BTreeMap<String, u32>,
    instances: impl IntoIterator<Item = &'a InstanceView>,
) -> Progress {
    let mut processes: BTreeMap<String, ProcessProgress> =
        desired.iter().map(|(p, &n)| (p.clone(), ProcessProgress { desired: n, at: [0; 4] })).collect();
    let mut others_live = false;
    for i in instances {
        if i.env_id != deploy.env_id {
            continue;
        }
        if i.revision() != deploy.revision() {
            others_live |= i.is_live();
            continue;
        }
        if let (Some(s), Some(p)) = (stage(i), processes.get_mut(&i.process)) {
            for n in &mut p.at[..=s] {
                *n += 1;
            }
        }
    }
    let reached: Vec<DeployPhase> = DeployPhase::ALL
        .iter()
        .enumerate()
        .take_while(|(k, _)| processes.values().all(|p| p.at[*k] >= p.desired))
        .map(|(_, phase)| *phase)
        .collect();
    let succeeded = reached.contains(&DeployPhase::Healthy) && !others_live;
    Progress { reached, processes, succeeded }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use vt_events::{DeployKind, DeployStatus, DesiredState, Health, Resources};
    use vt_ids::{AppId, DeployId, EnvId, InstanceId, NodeId, OrgId, ReleaseId};
    use vt_views::{FailureKind, InstanceFailure};

    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    fn deploy(env_id: EnvId, release_id: ReleaseId) -> DeployView {
        DeployView {
            id: DeployId::new(),
            org_id: OrgId::new(),
            app_id: AppId::new(),
            env_id,
            release_id,
            previous_release_id: None,
            secrets_version: None,
            previous_secrets_version: None,
            kind: DeployKind::Deploy,
            status: DeployStatus::Rolling,
            reason: None,
            phases: vec![],
            failed_instance_id: None,
            reverted_to_release_id: None,
            created_at: at(0),
            updated_at: at(0),
        }
    }

    fn inst(d: &DeployView, process: &str, status: InstanceStatus, health: Option<Health>) -> InstanceView {
        InstanceView {
            id: InstanceId::new(),
            org_id: d.org_id,
            app_id: d.app_id,
            env_id: d.env_id,
            process: process.into(),
            release_id: d.release_id,
            deploy_id: Some(d.id),
            node_id: NodeId::new(),
            resources: Resources { cpu_millis: 100, memory_mib: 64 },
            secrets_version: None,
            desired_state: DesiredState::Running,
            status,
            reason: None,
            exit_code: None,
            address: None,
            health,
            boot: None,
            ready_at: None,
            failure: None,
            volumes: vec![],
            resuming: false,
            created_at: at(1),
            updated_at: at(1),
        }
    }

    fn old(d: &DeployView, process: &str) -> InstanceView {
        InstanceView {
            release_id: ReleaseId::new(),
            deploy_id: None,
            ..inst(d, process, InstanceStatus::Running, Some(Health::Passing))
        }
    }

    #[test]
    fn phases_are_reached_when_every_process_has_its_count() {
        use DeployPhase::*;
        use InstanceStatus::*;
        let d = deploy(EnvId::new(), ReleaseId::new());
        let desired: BTreeMap<String, u32> = [("web".to_owned(), 2), ("worker".to_owned(), 1)].into();
        struct Case {
            name: &'static str,
            instances: Vec<InstanceView>,
            reached: Vec<DeployPhase>,
            succeeded: bool,
        }
        let ready = |p| inst(&d, p, Running, Some(Health::Passing));
        let cases = vec![
            Case { name: "nothing allocated", instances: vec![], reached: vec![], succeeded: false },
            Case {
                name: "all allocated, one preparing",
                instances: vec![
                    inst(&d, "web", Allocated, None),
                    inst(&d, "web", Preparing, None),
                    inst(&d, "worker", Allocated, None),
                ],
                reached: vec![Scheduled],
                succeeded: false,
            },
            Case {
                name: "booting and later count as image ready",
                instances: vec![
                    inst(&d, "web", Booting, None),
                    ready("web"),
                    inst(&d, "worker", Running, Some(Health::Pending)),
                ],
                reached: vec![Scheduled, ImageReady],
                succeeded: false,
            },
            Case {
                name: "all running, a health check pending",
                instances: vec![ready("web"), ready("web"), inst(&d, "worker", Running, Some(Health::Pending))],
                reached: vec![Scheduled, ImageReady, Booted],
                succeeded: false,
            },
            Case {
                name: "all ready, an old one still meant to run",
                instances: vec![ready("web"), ready("web"), ready("worker"), old(&d, "web")],
                reached: DeployPhase::ALL.to_vec(),
                succeeded: false,
            },
            Case {
                name: "all ready, the old one asked to stop",
                instances: vec![
                    ready("web"),
                    ready("web"),
                    ready("worker"),
                    InstanceView { desired_state: DesiredState::Stopped, ..old(&d, "web") },
                ],
                reached: DeployPhase::ALL.to_vec(),
                succeeded: true,
            },
            Case {
                name: "a stopped instance of the release does not count",
                instances: vec![
                    ready("web"),
                    InstanceView { desired_state: DesiredState::Stopped, ..ready("web") },
                    ready("worker"),
                ],
                reached: vec![],
                succeeded: false,
            },
            Case {
                name: "another env's instances do not matter",
                instances: vec![
                    ready("web"),
                    ready("web"),
                    ready("worker"),
                    InstanceView { env_id: EnvId::new(), ..old(&d, "web") },
                ],
                reached: DeployPhase::ALL.to_vec(),
                succeeded: true,
            },
        ];
        for c in cases {
            let p = progress(&d, &desired, &c.instances);
            assert_eq!((p.reached, p.succeeded), (c.reached, c.succeeded), "{}", c.name);
        }
        let none = progress(&d, &BTreeMap::from([("web".to_owned(), 0)]), &[]);
        assert_eq!((none.reached, none.succeeded), (DeployPhase::ALL.to_vec(), true), "nothing desired: done at once");
    }

    #[test]
    fn the_earliest_failure_of_the_deploys_own_instances_fails_it() {
        let d = deploy(EnvId::new(), ReleaseId::new());
        let failed = |s: i64, kind, exit_code, reason: &str| InstanceView {
            status: InstanceStatus::Failed,
            failure: Some(InstanceFailure { kind, at: at(s), exit_code, reason: Some(reason.into()) }),
            ..inst(&d, "web", InstanceStatus::Running, None)
        };
        assert!(failure(&d, &[inst(&d, "web", InstanceStatus::Running, None)]).is_none());
        let late = failed(9, FailureKind::Failed, Some(1), "late");
        let first = failed(5, FailureKind::Failed, Some(1), "the entrypoint exited with code 1");
        let earlier_deploy = InstanceView {
            deploy_id: Some(DeployId::new()),
            ..failed(1, FailureKind::Failed, Some(2), "another deploy's")
        };
        let all = [late, first.clone(), earlier_deploy];
        let (i, reason) = failure(&d, &all).unwrap();
        assert_eq!(i.id, first.id);
        assert_eq!(
            reason,
            format!("instance {} (web) exited with code 1: the entrypoint exited with code 1", first.id)
        );
        let unhealthy = failed(
            3,
            FailureKind::Unhealthy,
            None,
            "health check failed 3 times: GET /healthz on port 8080: connection refused",
        );
        let (_, reason) = failure(&d, [&unhealthy]).unwrap();
        assert!(
            reason.ends_with("(web) health check failed 3 times: GET /healthz on port 8080: connection refused"),
            "{reason}"
        );
    }
}
