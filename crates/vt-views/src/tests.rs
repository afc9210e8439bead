use super::*;

struct Log {
    seq: u64,
    views: MemoryViews,
}

impl Log {
    fn new() -> Self {
        Log { seq: 0, views: MemoryViews::default() }
    }
    fn push(&mut self, event: Event) -> Result<(), ProjectionError> {
        self.seq += 1;
        let (aggregate_type, aggregate_id) = event.aggregate();
        let env = Envelope {
            seq: self.seq,
            event_id: EventId::new(),
            event_type: event.event_type().into(),
            schema_version: event.schema_version(),
            aggregate_type,
            aggregate_id,
            aggregate_version: 1,
            org_id: event.org_id(),
            request_id: None,
            correlation_id: None,
            actor: "test".into(),
            occurred_at: DateTime::from_timestamp(1_700_000_000 + self.seq as i64, 0).unwrap(),
            payload: event.payload(),
        };
        self.views.apply(&env)
    }
    fn get<T: View>(&self, id: &str) -> T {
        self.views.rows[&(T::KIND, id.to_string())].decode().unwrap()
    }
}

#[test]
fn deploy_sets_the_envs_desired_release_and_status_changes_apply() {
    let mut log = Log::new();
    let (org_id, app_id, env_id, release_id, deploy_id) =
        (OrgId::new(), AppId::new(), EnvId::new(), ReleaseId::new(), DeployId::new());
    log.push(Event::OrgCreated(OrgCreated { org_id, name: "acme".into() })).unwrap();
    log.push(Event::AppCreated(AppCreated {
        org_id,
        app_id,
        name: "web".into(),
        description: None,
        workspace_id: None,
    }))
    .unwrap();
    log.push(Event::EnvCreated(EnvCreated { org_id, app_id, env_id, name: "prod".into() })).unwrap();
    log.push(Event::DeployCreated(DeployCreated {
        org_id,
        app_id,
        env_id,
        deploy_id,
        release_id,
        previous_release_id: None,
        kind: DeployKind::Deploy,
        secrets_version: None,
        previous_secrets_version: None,
    }))
    .unwrap();
    let env: EnvView = log.get(&env_id.to_string());
    assert_eq!(env.desired_release_id, Some(release_id));
    assert_eq!(env.current_deploy_id, Some(deploy_id));
    let dep: DeployView = log.get(&deploy_id.to_string());
    assert_eq!(dep.status, DeployStatus::Pending);
    log.push(Event::DeployPhaseReached(DeployPhaseReached { org_id, env_id, deploy_id, phase: DeployPhase::Booted }))
        .unwrap();
    log.push(Event::DeployPhaseReached(DeployPhaseReached {
        org_id,
        env_id,
        deploy_id,
        phase: DeployPhase::Scheduled,
    }))
    .unwrap();
    log.push(Event::DeployPhaseReached(DeployPhaseReached {
        org_id,
        env_id,
        deploy_id,
        phase: DeployPhase::Scheduled,
    }))
    .unwrap();
    let dep: DeployView = log.get(&deploy_id.to_string());
    let phases: Vec<(DeployPhase, u64)> = dep.phases.iter().map(|p| (p.phase, p.after_ms)).collect();
    assert_eq!(
        phases,
        vec![(DeployPhase::Scheduled, 2000), (DeployPhase::Booted, 1000)],
        "in phase order, each once, timed from acceptance"
    );
    let instance_id = InstanceId::new();
    log.push(Event::DeployStatusChanged(DeployStatusChanged {
        org_id,
        env_id,
        deploy_id,
        status: DeployStatus::Failed,
        reason: Some("instance exited 1".into()),
        failed_instance_id: Some(instance_id),
    }))
    .unwrap();
    let dep: DeployView = log.get(&deploy_id.to_string());
    assert_eq!(
        (dep.status, dep.reason.as_deref(), dep.failed_instance_id),
        (DeployStatus::Failed, Some("instance exited 1"), Some(instance_id))
    );
    let row = &log.views.rows[&(ViewKind::Deploy, deploy_id.to_string())];
    assert_eq!(row.seq, 8);
    assert_eq!(row.parent_id.as_deref(), Some(env_id.to_string().as_str()));
}

#[test]
fn a_reverted_release_is_desired_again_and_the_deploy_says_so() {
    let mut log = Log::new();
    let (org_id, app_id, env_id) = (OrgId::new(), AppId::new(), EnvId::new());
    let (r1, r2, d1, d2) = (ReleaseId::new(), ReleaseId::new(), DeployId::new(), DeployId::new());
    log.push(Event::EnvCreated(EnvCreated { org_id, app_id, env_id, name: "prod".into() })).unwrap();
    log.push(Event::DeployCreated(DeployCreated {
        org_id,
        app_id,
        env_id,
        deploy_id: d1,
        release_id: r1,
        previous_release_id: None,
        kind: DeployKind::Deploy,
        secrets_version: None,
        previous_secrets_version: None,
    }))
    .unwrap();
    log.push(Event::DeployCreated(DeployCreated {
        org_id,
        app_id,
        env_id,
        deploy_id: d2,
        release_id: r2,
        previous_release_id: Some(r1),
        kind: DeployKind::Deploy,
        secrets_version: None,
        previous_secrets_version: None,
    }))
    .unwrap();
    log.push(Event::EnvReleaseReverted(EnvReleaseReverted {
        org_id,
        env_id,
        deploy_id: d2,
        release_id: r1,
        from_release_id: r2,
        reason: "failed".into(),
        secrets_version: None,
    }))
    .unwrap();
    let env: EnvView = log.get(&env_id.to_string());
    assert_eq!(
        (env.desired_release_id, env.current_deploy_id),
        (Some(r1), Some(d2)),
        "back on r1; the failed deploy stays current"
    );
    let dep: DeployView = log.get(&d2.to_string());
    assert_eq!(dep.reverted_to_release_id, Some(r1));
}

/// A status report's status, health, exit code and reason.
type Report = (InstanceStatus, Option<Health>, Option<i32>, Option<&'static str>);

#[test]
fn an_instance_records_when_it_became_ready_and_how_it_failed() {
    let (org_id, app_id, env_id, node_id) = (OrgId::new(), AppId::new(), EnvId::new(), NodeId::new());
    let allocated = |instance_id| {
        Event::InstanceAllocated(InstanceAllocated {
            org_id,
            app_id,
            env_id,
            instance_id,
            process: "web".into(),
            release_id: ReleaseId::new(),
            deploy_id: None,
            node_id,
            resources: Resources { cpu_millis: 250, memory_mib: 128 },
            secrets_version: None,
            volumes: vec![],
        })
    };
    let report = |instance_id, (status, health, exit_code, reason): Report| {
        Event::InstanceStatusReported(InstanceStatusReported {
            org_id,
            env_id,
            instance_id,
            node_id,
            status,
            reason: reason.map(Into::into),
            exit_code,
            address: None,
            health,
            boot: None,
        })
    };
    use InstanceStatus::*;
    struct Case {
        name: &'static str,
        reports: Vec<Report>,
        stop_first: bool,
        ready_at: Option<u64>,
        failure: Option<(FailureKind, u64, &'static str)>,
    }
    let cases = vec![
        Case {
            name: "pending then passing",
            reports: vec![(Running, Some(Health::Pending), None, None), (Running, Some(Health::Passing), None, None)],
            stop_first: false,
            ready_at: Some(3),
            failure: None,
        },
        Case {
            name: "no health check: ready when running",
            reports: vec![(Booting, None, None, None), (Running, None, None, None)],
            stop_first: false,
            ready_at: Some(3),
            failure: None,
        },
        Case {
            name: "exits non-zero",
            reports: vec![
                (Running, Some(Health::Passing), None, None),
                (Failed, None, Some(1), Some("the entrypoint exited with code 1")),
            ],
            stop_first: false,
            ready_at: Some(2),
            failure: Some((FailureKind::Failed, 3, "exited with code 1")),
        },
        Case {
            name: "health fails, then it is stopped: the first failure stays",
            reports: vec![
                (
                    Running,
                    Some(Health::Failing),
                    None,
                    Some("health check failed 3 times: GET / on port 8080: connection refused"),
                ),
                (Stopped, None, Some(0), None),
            ],
            stop_first: false,
            ready_at: None,
            failure: Some((
                FailureKind::Unhealthy,
                2,
                "health check failed 3 times: GET / on port 8080: connection refused",
            )),
        },
        Case {
            name: "exits 0 unasked",
            reports: vec![(Stopped, None, Some(0), None)],
            stop_first: false,
            ready_at: None,
            failure: Some((FailureKind::Exited, 2, "exited with code 0")),
        },
        Case {
            name: "killed by a signal",
            reports: vec![(Failed, None, Some(137), None)],
            stop_first: false,
            ready_at: None,
            failure: Some((FailureKind::Failed, 2, "exited with code 137 (signal 9)")),
        },
        Case {
            name: "asked to stop: no failure",
            reports: vec![(Stopped, None, Some(0), None)],
            stop_first: true,
            ready_at: None,
            failure: None,
        },
    ];
    for c in cases {
        let mut log = Log::new();
        let instance_id = InstanceId::new();
        log.push(allocated(instance_id)).unwrap();
        if c.stop_first {
            log.push(Event::InstanceDesiredStateChanged(InstanceDesiredStateChanged {
                org_id,
                env_id,
                instance_id,
                desired: DesiredState::Stopped,
                reason: None,
            }))
            .unwrap();
        }
        for r in &c.reports {
            log.push(report(instance_id, *r)).unwrap();
        }
        let v: InstanceView = log.get(&instance_id.to_string());
        let at = |seq: u64| {
            DateTime::from_timestamp(1_700_000_000 + seq as i64 + u64::from(c.stop_first) as i64, 0).unwrap()
        };
        assert_eq!(v.ready_at, c.ready_at.map(at), "{}", c.name);
        let got = v.failure.as_ref().map(|f| (f.kind, f.at, f.summary()));
        assert_eq!(got, c.failure.map(|(k, seq, s)| (k, at(seq), s.to_owned())), "{}", c.name);
    }
}

#[test]
fn instance_keeps_desired_and_current_apart() {
    let mut log = Log::new();
    let (org_id, app_id, env_id, instance_id, node_id) =
        (OrgId::new(), AppId::new(), EnvId::new(), InstanceId::new(), NodeId::new());
    log.push(Event::InstanceAllocated(InstanceAllocated {
        org_id,
        app_id,
        env_id,
        instance_id,
        process: "web".into(),
        release_id: ReleaseId::new(),
        deploy_id: None,
        node_id,
        resources: Resources { cpu_millis: 250, memory_mib: 128 },
        secrets_version: None,
        volumes: vec![],
    }))
    .unwrap();
    log.push(Event::InstanceStatusReported(InstanceStatusReported {
        org_id,
        env_id,
        instance_id,
        node_id,
        status: InstanceStatus::Running,
        reason: None,
        exit_code: None,
        address: Some("10.0.0.9".into()),
        health: Some(Health::Passing),
        boot: None,
    }))
    .unwrap();
    log.push(Event::InstanceDesiredStateChanged(InstanceDesiredStateChanged {
        org_id,
        env_id,
        instance_id,
        desired: DesiredState::Stopped,
        reason: Some("scaled to 0".into()),
    }))
    .unwrap();
    let v: InstanceView = log.get(&instance_id.to_string());
    assert_eq!((v.desired_state, v.status), (DesiredState::Stopped, InstanceStatus::Running));
    assert_eq!(v.reason.as_deref(), Some("scaled to 0"));
    assert_eq!(v.address.as_deref(), Some("10.0.0.9"));
    assert_eq!(v.health, Some(Health::Passing));
    assert!(!v.is_ready(), "desired stopped: no longer serving");
    // A later report without an address keeps the known one; leaving `running` clears the health.
    log.push(Event::InstanceStatusReported(InstanceStatusReported {
        org_id,
        env_id,
        instance_id,
        node_id,
        status: InstanceStatus::Stopping,
        reason: None,
        exit_code: None,
        address: None,
        health: None,
        boot: None,
    }))
    .unwrap();
    let v: InstanceView = log.get(&instance_id.to_string());
    assert_eq!(v.address.as_deref(), Some("10.0.0.9"));
    assert_eq!(v.health, None);
}

#[test]
fn routes_appear_and_disappear() {
    let mut log = Log::new();
    let (org_id, app_id, env_id, route_id) = (OrgId::new(), AppId::new(), EnvId::new(), RouteId::new());
    log.push(Event::RouteCreated(RouteCreated {
        org_id,
        app_id,
        env_id,
        route_id,
        protocol: RouteProtocol::Tls,
        hostname: Some("a.example".into()),
        port: 443,
        process: "web".into(),
        backend_port: 8443,
        proxy_protocol: false,
    }))
    .unwrap();
    let v: RouteView = log.get(&route_id.to_string());
    assert_eq!((v.hostname.as_deref(), v.port, v.backend_port), (Some("a.example"), 443, 8443));
    let row = &log.views.rows[&(ViewKind::Route, route_id.to_string())];
    assert_eq!((row.parent_id.clone(), row.name.as_deref()), (Some(env_id.to_string()), Some("a.example")));
    log.push(Event::RouteDeleted(RouteDeleted { org_id, env_id, route_id })).unwrap();
    assert!(log.views.rows.is_empty());
}

#[test]
fn an_event_for_a_missing_row_is_an_error_not_a_silent_skip() {
    let mut log = Log::new();
    let err = log
        .push(Event::NodeStatusChanged(NodeStatusChanged {
            node_id: NodeId::new(),
            status: NodeStatus::Draining,
            reason: None,
        }))
        .unwrap_err();
    assert!(err.0.contains("unknown node"), "{err}");
}

#[test]
fn scale_rows_are_keyed_by_env_and_process() {
    let mut log = Log::new();
    let (org_id, app_id, env_id) = (OrgId::new(), AppId::new(), EnvId::new());
    for n in [3, 1] {
        log.push(Event::ScaleSet(ScaleSet { org_id, app_id, env_id, process: "web".into(), instances: n })).unwrap();
    }
    log.push(Event::ScaleSet(ScaleSet { org_id, app_id, env_id, process: "worker".into(), instances: 2 })).unwrap();
    let web: ScaleView = log.get(&ScaleView::key(&env_id, "web"));
    assert_eq!(web.instances, 1);
    assert_eq!(log.views.rows.len(), 2);
}

#[test]
fn names_and_kinds_are_unique() {
    let ps = projections();
    let mut names: Vec<_> = ps.iter().map(|p| p.name()).collect();
    let mut kinds: Vec<_> = ps.iter().map(|p| p.kind()).collect();
    names.sort();
    names.dedup();
    kinds.sort();
    kinds.dedup();
    assert_eq!((names.len(), kinds.len()), (ViewKind::ALL.len(), ViewKind::ALL.len()));
}

#[test]
fn a_volume_is_attached_to_one_instance_then_freed_grown_and_deleted() {
    let mut log = Log::new();
    let (org_id, app_id, env_id, node_id, volume_id) =
        (OrgId::new(), AppId::new(), EnvId::new(), NodeId::new(), VolumeId::new());
    let (a, b) = (InstanceId::new(), InstanceId::new());
    let id = volume_id.to_string();
    log.push(Event::VolumeCreated(VolumeCreated {
        org_id,
        app_id,
        env_id,
        volume_id,
        name: "data".into(),
        size_gib: 1,
        node_id,
        from_snapshot: None,
        from_backup: None,
    }))
    .unwrap();
    let v: VolumeView = log.get(&id);
    assert_eq!((v.name.as_str(), v.size_gib, v.node_id, v.attached_to), ("data", 1, node_id, None));
    log.push(Event::VolumeAttached(VolumeAttached { org_id, env_id, volume_id, instance_id: a })).unwrap();
    assert_eq!(log.get::<VolumeView>(&id).attached_to, Some(a));
    // A late detach of another instance changes nothing.
    log.push(Event::VolumeDetached(VolumeDetached { org_id, env_id, volume_id, instance_id: b })).unwrap();
    assert_eq!(log.get::<VolumeView>(&id).attached_to, Some(a));
    log.push(Event::VolumeDetached(VolumeDetached { org_id, env_id, volume_id, instance_id: a })).unwrap();
    assert_eq!(log.get::<VolumeView>(&id).attached_to, None);
    log.push(Event::VolumeExtended(VolumeExtended { org_id, env_id, volume_id, size_gib: 4 })).unwrap();
    assert_eq!(log.get::<VolumeView>(&id).size_gib, 4);
    log.push(Event::VolumeDeleted(VolumeDeleted { org_id, env_id, volume_id, node_id })).unwrap();
    assert!(!log.views.rows.contains_key(&(ViewKind::Volume, id.clone())));
    // Nothing attaches to a volume that is gone.
    assert!(log.push(Event::VolumeAttached(VolumeAttached { org_id, env_id, volume_id, instance_id: b })).is_err());
}

#[test]
fn an_instance_reported_preparing_after_suspended_is_resuming_until_it_runs() {
    let (org_id, env_id, instance_id, node_id) = (OrgId::new(), EnvId::new(), InstanceId::new(), NodeId::new());
    let mut v = InstanceView::allocated(
        &InstanceAllocated {
            org_id,
            app_id: AppId::new(),
            env_id,
            instance_id,
            process: "web".into(),
            release_id: ReleaseId::new(),
            deploy_id: None,
            node_id,
            resources: Resources { cpu_millis: 250, memory_mib: 128 },
            secrets_version: None,
            volumes: vec![],
        },
        Utc::now(),
    );
    let report = |v: &mut InstanceView, status| {
        let e = InstanceStatusReported {
            org_id,
            env_id,
            instance_id,
            node_id,
            status,
            reason: None,
            exit_code: None,
            address: None,
            health: None,
            boot: None,
        };
        v.apply_report(&e, Utc::now());
        v.resuming
    };
    use InstanceStatus as S;
    // A first boot is no resume.
    assert_eq!([S::Preparing, S::Booting, S::Running].map(|s| report(&mut v, s)), [false; 3]);
    // Suspended, then preparing and booting again: resuming until it runs (or ends).
    assert!(!report(&mut v, S::Suspended));
    assert_eq!(
        [S::Preparing, S::Preparing, S::Booting, S::Running].map(|s| report(&mut v, s)),
        [true, true, true, false]
    );
    assert!(!report(&mut v, S::Suspended));
    assert_eq!([S::Preparing, S::Stopped, S::Preparing].map(|s| report(&mut v, s)), [true, false, false]);
}
