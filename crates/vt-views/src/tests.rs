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
            occurred_at: chrono::DateTime::from_timestamp(1_700_000_000 + self.seq as i64, 0).unwrap(),
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
    let (org_id, app_id, env_id, release_id, deploy_id) = (OrgId::new(), AppId::new(), EnvId::new(), ReleaseId::new(), DeployId::new());
    log.push(Event::OrgCreated(OrgCreated { org_id, name: "acme".into() })).unwrap();
    log.push(Event::AppCreated(AppCreated { org_id, app_id, name: "web".into(), description: None })).unwrap();
    log.push(Event::EnvCreated(EnvCreated { org_id, app_id, env_id, name: "prod".into() })).unwrap();
    log.push(Event::DeployCreated(DeployCreated { org_id, app_id, env_id, deploy_id, release_id, previous_release_id: None, kind: DeployKind::Deploy })).unwrap();
    let env: EnvView = log.get(&env_id.to_string());
    assert_eq!(env.desired_release_id, Some(release_id));
    assert_eq!(env.current_deploy_id, Some(deploy_id));
    let dep: DeployView = log.get(&deploy_id.to_string());
    assert_eq!(dep.status, DeployStatus::Pending);
    log.push(Event::DeployStatusChanged(DeployStatusChanged { org_id, env_id, deploy_id, status: DeployStatus::Failed, reason: Some("instance exited 1".into()) })).unwrap();
    let dep: DeployView = log.get(&deploy_id.to_string());
    assert_eq!((dep.status, dep.reason.as_deref()), (DeployStatus::Failed, Some("instance exited 1")));
    let row = &log.views.rows[&(ViewKind::Deploy, deploy_id.to_string())];
    assert_eq!(row.seq, 5);
    assert_eq!(row.parent_id.as_deref(), Some(env_id.to_string().as_str()));
}

#[test]
fn instance_keeps_desired_and_current_apart() {
    let mut log = Log::new();
    let (org_id, app_id, env_id, instance_id, node_id) = (OrgId::new(), AppId::new(), EnvId::new(), InstanceId::new(), NodeId::new());
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
    }))
    .unwrap();
    log.push(Event::InstanceStatusReported(InstanceStatusReported { org_id, env_id, instance_id, node_id, status: InstanceStatus::Running, reason: None, exit_code: None, address: Some("10.0.0.9".into()), health: Some(Health::Passing), boot: None })).unwrap();
    log.push(Event::InstanceDesiredStateChanged(InstanceDesiredStateChanged { org_id, env_id, instance_id, desired: DesiredState::Stopped, reason: Some("scaled to 0".into()) })).unwrap();
    let v: InstanceView = log.get(&instance_id.to_string());
    assert_eq!((v.desired_state, v.status), (DesiredState::Stopped, InstanceStatus::Running));
    assert_eq!(v.reason.as_deref(), Some("scaled to 0"));
    assert_eq!(v.address.as_deref(), Some("10.0.0.9"));
    assert_eq!(v.health, Some(Health::Passing));
    assert!(!v.is_ready(), "desired stopped: no longer serving");
    // A later report without an address keeps the known one; leaving `running` clears the health.
    log.push(Event::InstanceStatusReported(InstanceStatusReported { org_id, env_id, instance_id, node_id, status: InstanceStatus::Stopping, reason: None, exit_code: None, address: None, health: None, boot: None })).unwrap();
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
        .push(Event::NodeStatusChanged(NodeStatusChanged { node_id: NodeId::new(), status: NodeStatus::Draining, reason: None }))
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
