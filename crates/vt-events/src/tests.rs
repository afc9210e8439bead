use super::*;

fn samples() -> Vec<Event> {
    let org_id = OrgId::parse("org_01jd8x6k3v9q4m2t7r5w0y1zcb").unwrap();
    let app_id = AppId::parse("app_01jd8x6k3v9q4m2t7r5w0y1zcc").unwrap();
    let env_id = EnvId::parse("env_01jd8x6k3v9q4m2t7r5w0y1zcd").unwrap();
    let release_id = ReleaseId::parse("rel_01jd8x6k3v9q4m2t7r5w0y1zce").unwrap();
    let deploy_id = DeployId::parse("dep_01jd8x6k3v9q4m2t7r5w0y1zcf").unwrap();
    let instance_id = InstanceId::parse("inst_01jd8x6k3v9q4m2t7r5w0y1zcg").unwrap();
    let node_id = NodeId::parse("node_01jd8x6k3v9q4m2t7r5w0y1zch").unwrap();
    let token_id = TokenId::parse("tok_01jd8x6k3v9q4m2t7r5w0y1zcj").unwrap();
    let route_id = RouteId::parse("route_01jd8x6k3v9q4m2t7r5w0y1zck").unwrap();
    let volume_id = VolumeId::parse("vol_01jd8x6k3v9q4m2t7r5w0y1zcm").unwrap();
    let snapshot_id = SnapshotId::parse("snap_01jd8x6k3v9q4m2t7r5w0y1zcn").unwrap();
    let backup_id = BackupId::parse("bak_01jd8x6k3v9q4m2t7r5w0y1zcp").unwrap();
    let workspace_id = WorkspaceId::parse("ws_01jd8x6k3v9q4m2t7r5w0y1zcq").unwrap();
    let cap = Capacity { cpu_millis: 2000, memory_mib: 4096 };
    vec![
        Event::OrgCreated(OrgCreated { org_id, name: "acme".into() }),
        Event::AppCreated(AppCreated { org_id, app_id, name: "web".into(), description: None, workspace_id: None }),
        Event::EnvCreated(EnvCreated { org_id, app_id, env_id, name: "prod".into() }),
        Event::ScaleSet(ScaleSet { org_id, app_id, env_id, process: "web".into(), instances: 2 }),
        Event::ReleaseCreated(ReleaseCreated {
            org_id,
            app_id,
            release_id,
            image_ref: format!("registry.local/acme/web@sha256:{}", "a".repeat(64)),
            image_digest: format!("sha256:{}", "a".repeat(64)),
            resolved_from: Some("registry.local/acme/web:v1".into()),
            manifest_hash: format!("sha256:{}", "b".repeat(64)),
            manifest: serde_json::json!({"schema_version": 1}),
        }),
        Event::DeployCreated(DeployCreated {
            org_id,
            app_id,
            env_id,
            deploy_id,
            release_id,
            previous_release_id: None,
            kind: DeployKind::Deploy,
            secrets_version: None,
            previous_secrets_version: None,
        }),
        Event::DeployStatusChanged(DeployStatusChanged {
            org_id,
            env_id,
            deploy_id,
            status: DeployStatus::Failed,
            reason: Some("instance inst_01jd8x6k3v9q4m2t7r5w0y1zcg (web) exited with code 3".into()),
            failed_instance_id: Some(instance_id),
        }),
        Event::InstanceAllocated(InstanceAllocated {
            org_id,
            app_id,
            env_id,
            instance_id,
            process: "web".into(),
            release_id,
            deploy_id: Some(deploy_id),
            node_id,
            resources: Resources { cpu_millis: 500, memory_mib: 256 },
            secrets_version: None,
            volumes: vec![VolumeAttachment { name: "data".into(), volume_id }],
        }),
        Event::InstanceDesiredStateChanged(InstanceDesiredStateChanged {
            org_id,
            env_id,
            instance_id,
            desired: DesiredState::Stopped,
            reason: Some("scaled down".into()),
        }),
        Event::InstanceStatusReported(InstanceStatusReported {
            org_id,
            env_id,
            instance_id,
            node_id,
            status: InstanceStatus::Failed,
            reason: Some("exited".into()),
            exit_code: Some(3),
            address: Some("fd00:1:2:1::9".into()),
            health: None,
            boot: Some(BootTimings {
                root_disk_ms: Some(12),
                vmm_spawned_ms: Some(3),
                kernel_to_init_ms: Some(1400),
                init_to_entrypoint_ms: Some(60),
                running_ms: Some(1500),
                healthy_ms: None,
            }),
        }),
        Event::NodeRegistered(NodeRegistered { wireguard_public_key: None,
            node_id,
            name: "n1".into(),
            capacity: cap,
            allocatable: cap,
            labels: Default::default(),
            address: None,
            wireguard_port: None,
            runs_instances: true,
        }),
        Event::NodeCapacityChanged(NodeCapacityChanged { node_id, capacity: cap, allocatable: cap }),
        Event::NodeStatusChanged(NodeStatusChanged { node_id, status: NodeStatus::Unreachable, reason: None }),
        Event::TokenCreated(TokenCreated { labels: Default::default(),
            token_id,
            name: "admin".into(),
            role: TokenRole::Admin,
            org_id: None,
            node_id: None,
            node_name: None,
            expires_at: None,
        }),
        Event::RouteCreated(RouteCreated {
            org_id,
            app_id,
            env_id,
            route_id,
            protocol: RouteProtocol::Tls,
            hostname: Some("www.example.com".into()),
            port: 443,
            process: "web".into(),
            backend_port: 8080,
            proxy_protocol: true,
        }),
        Event::RouteDeleted(RouteDeleted { org_id, env_id, route_id }),
        Event::NodeSubnetAssigned(NodeSubnetAssigned { node_id, subnet: "fd12:3456:789a:1::/64".into() }),
        Event::DeployPhaseReached(DeployPhaseReached { org_id, env_id, deploy_id, phase: DeployPhase::ImageReady }),
        Event::EnvReleaseReverted(EnvReleaseReverted {
            org_id,
            env_id,
            deploy_id,
            release_id: ReleaseId::parse("rel_01jd8x6k3v9q4m2t7r5w0y1zcm").unwrap(),
            from_release_id: release_id,
            reason: "deploy dep_01jd8x6k3v9q4m2t7r5w0y1zcf failed".into(),
            secrets_version: None,
        }),
        Event::TokenRevoked(TokenRevoked { token_id, org_id: Some(org_id) }),
        Event::SecretsStaged(SecretsStaged {
            org_id,
            app_id,
            env_id,
            set: vec!["DATABASE_URL".into()],
            unset: vec!["OLD".into()],
        }),
        Event::SecretsVersionCreated(SecretsVersionCreated {
            org_id,
            app_id,
            env_id,
            version: 2,
            names: vec!["API_KEY".into(), "DATABASE_URL".into()],
            set: vec!["DATABASE_URL".into()],
            unset: vec!["OLD".into()],
            from_staged: true,
        }),
        Event::NodeIpv4RangeAssigned(NodeIpv4RangeAssigned { node_id, range: "100.64.1.0/24".into() }),
        Event::RouteListenerChanged(RouteListenerChanged {
            org_id,
            env_id,
            route_id,
            node: "n1".into(),
            state: ListenerState::Failed,
            reason: Some("cannot listen on port 20000: Address already in use (os error 98)".into()),
        }),
        Event::InstanceExecGranted(InstanceExecGranted {
            exec_id: ExecId::parse("exec_01jd8x6k3v9q4m2t7r5w0y1zcn").unwrap(),
            org_id,
            env_id,
            instance_id,
            token_id,
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env_names: vec!["DEBUG".into()],
            cwd: Some("/srv".into()),
            user: Some("app".into()),
            tty: true,
            expires_at: DateTime::parse_from_rfc3339("2025-01-02T03:05:05Z").unwrap().into(),
        }),
        Event::InstanceExecEnded(InstanceExecEnded {
            exec_id: ExecId::parse("exec_01jd8x6k3v9q4m2t7r5w0y1zcn").unwrap(),
            org_id,
            instance_id,
            end: ExecEnd::Exited,
            exit_code: Some(7),
            signal: None,
            reason: None,
        }),
        Event::VolumeCreated(VolumeCreated {
            org_id,
            app_id,
            env_id,
            volume_id,
            name: "data".into(),
            size_gib: 10,
            node_id,
            from_snapshot: Some(snapshot_id),
            from_backup: None,
        }),
        Event::VolumeExtended(VolumeExtended { org_id, env_id, volume_id, size_gib: 20 }),
        Event::VolumeAttached(VolumeAttached { org_id, env_id, volume_id, instance_id }),
        Event::VolumeDetached(VolumeDetached { org_id, env_id, volume_id, instance_id }),
        Event::VolumeDeleted(VolumeDeleted { org_id, env_id, volume_id, node_id }),
        Event::SnapshotCreated(SnapshotCreated {
            org_id,
            app_id,
            env_id,
            snapshot_id,
            volume_id,
            volume_name: "data".into(),
            size_gib: 10,
            node_id,
        }),
        Event::SnapshotReported(SnapshotReported {
            org_id,
            env_id,
            snapshot_id,
            status: SnapshotStatus::Completed,
            bytes: Some(104_857_600),
            took_ms: Some(412),
            paused_ms: Some(398),
            reason: None,
        }),
        Event::BackupRequested(BackupRequested {
            org_id,
            env_id,
            volume_id,
            backup_id,
            org: "acme".into(),
            app: "web".into(),
            env: "prod".into(),
            scheduled: true,
        }),
        Event::BackupReported(BackupReported {
            org_id,
            env_id,
            volume_id,
            backup_id,
            status: SnapshotStatus::Failed,
            restic_id: None,
            bytes_added: None,
            bytes_processed: None,
            took_ms: Some(1200),
            reason: Some("the backup repository /srv/backups refused the password in /etc/vt/restic-password: wrong password (or no key)".into()),
        }),
        Event::WorkspaceCreated(WorkspaceCreated {
            org_id,
            workspace_id,
            name: "alice-dev".into(),
            app_id,
            env_id,
            release_id,
            volume_id,
            node_id,
            image_ref: format!("registry.local/acme/ide@sha256:{}", "c".repeat(64)),
            image_digest: format!("sha256:{}", "c".repeat(64)),
            cpus: 2,
            memory_mib: 2048,
            disk_gib: 10,
        }),
        Event::WorkspaceDesiredStateChanged(WorkspaceDesiredStateChanged {
            org_id,
            workspace_id,
            desired: WorkspaceDesired::Stopped,
        }),
        Event::WorkspaceFailed(WorkspaceFailed {
            org_id,
            workspace_id,
            instance_id,
            reason: "the IDE exited with status 1".into(),
        }),
        Event::WorkspacePortAdded(WorkspacePortAdded { org_id, workspace_id, port: 3000 }),
        Event::WorkspacePortRemoved(WorkspacePortRemoved { org_id, workspace_id, port: 3000 }),
        Event::WorkspaceAccessed(WorkspaceAccessed {
            org_id,
            workspace_id,
            at: DateTime::parse_from_rfc3339("2024-11-26T10:00:00Z").unwrap().with_timezone(&Utc),
        }),
        Event::WorkspaceDeleted(WorkspaceDeleted { org_id, workspace_id }),
        Event::NodeEndpointChanged(NodeEndpointChanged {
            node_id,
            address: Some("192.0.2.7".into()),
            wireguard_port: Some(51820),
        }),
    ]
}

#[test]
fn every_type_is_listed_once_and_round_trips() {
    let samples = samples();
    assert_eq!(samples.len(), Event::TYPES.len(), "a sample per event type");
    for (event, (ty, version)) in samples.iter().zip(Event::TYPES) {
        assert_eq!(event.event_type(), *ty);
        assert_eq!(event.schema_version(), *version);
        let back = Event::decode(ty, *version, event.payload()).unwrap();
        assert_eq!(&back, event);
    }
}

#[test]
fn payloads_are_stable() {
    // The stored form is a contract with every past log: changing it breaks replay.
    let stored: Vec<_> = samples()
        .iter()
        .map(|e| serde_json::json!({"type": e.event_type(), "v": e.schema_version(), "payload": e.payload()}))
        .collect();
    insta::assert_json_snapshot!(stored);
}

#[test]
fn decode_refuses_unknown_and_newer() {
    assert!(matches!(Event::decode("org.exploded", 1, serde_json::json!({})), Err(DecodeError::UnknownType(_))));
    assert!(matches!(
        Event::decode("org.created", 2, serde_json::json!({})),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    let err = Event::decode(
        "org.created",
        1,
        serde_json::json!({"org_id": "org_01jd8x6k3v9q4m2t7r5w0y1zcb", "name": "a", "extra": 1}),
    )
    .unwrap_err();
    assert!(matches!(err, DecodeError::Payload { .. }), "{err}");
}

#[test]
fn aggregates_are_assigned() {
    for e in samples() {
        let (_, id) = e.aggregate();
        assert!(!id.is_empty());
    }
    assert_eq!(samples()[5].aggregate().0, AggregateType::Env, "deploys serialize on their env");
}

#[test]
fn a_deploy_status_change_without_failed_instance_still_decodes() {
    // Logs written before deploys named their failed instance.
    let old = serde_json::json!({"org_id": "org_01jd8x6k3v9q4m2t7r5w0y1zcb", "env_id": "env_01jd8x6k3v9q4m2t7r5w0y1zcd", "deploy_id": "dep_01jd8x6k3v9q4m2t7r5w0y1zcf", "status": "rolling", "reason": null});
    let Event::DeployStatusChanged(e) = Event::decode("deploy.status_changed", 1, old).unwrap() else {
        panic!("wrong variant")
    };
    assert_eq!(e.failed_instance_id, None);
}

#[test]
fn a_status_report_without_address_still_decodes() {
    // Logs written before instances carried an address.
    let old = serde_json::json!({"org_id": "org_01jd8x6k3v9q4m2t7r5w0y1zcb", "env_id": "env_01jd8x6k3v9q4m2t7r5w0y1zcd", "instance_id": "inst_01jd8x6k3v9q4m2t7r5w0y1zcg", "node_id": "node_01jd8x6k3v9q4m2t7r5w0y1zch", "status": "running"});
    let Event::InstanceStatusReported(e) = Event::decode("instance.status_reported", 1, old).unwrap() else {
        panic!("wrong variant")
    };
    assert_eq!((e.address, e.health, e.boot), (None, None, None));
}

#[test]
fn tokens_of_org_roles_and_nodes_carry_their_binding() {
    let org_id = OrgId::parse("org_01jd8x6k3v9q4m2t7r5w0y1zcb").unwrap();
    let node_id = NodeId::parse("node_01jd8x6k3v9q4m2t7r5w0y1zch").unwrap();
    let expires_at = DateTime::parse_from_rfc3339("2026-12-25T00:00:00Z").unwrap().with_timezone(&Utc);
    let deployer = Event::TokenCreated(TokenCreated {
        labels: Default::default(),
        token_id: TokenId::parse("tok_01jd8x6k3v9q4m2t7r5w0y1zcj").unwrap(),
        name: "ci".into(),
        role: TokenRole::Deployer,
        org_id: Some(org_id),
        node_id: None,
        node_name: None,
        expires_at: Some(expires_at),
    });
    let node = Event::TokenCreated(TokenCreated {
        labels: Default::default(),
        token_id: TokenId::parse("tok_01jd8x6k3v9q4m2t7r5w0y1zck").unwrap(),
        name: "node-n1".into(),
        role: TokenRole::Node,
        org_id: None,
        node_id: Some(node_id),
        node_name: Some("n1".into()),
        expires_at: None,
    });
    for e in [&deployer, &node] {
        assert_eq!(&Event::decode(e.event_type(), 1, e.payload()).unwrap(), e);
    }
    assert_eq!(deployer.org_id(), Some(org_id), "an org's tokens are in its event stream");
    assert_eq!(node.org_id(), None);
    assert_eq!(deployer.payload()["expires_at"], "2026-12-25T00:00:00Z");
    // Tokens created before roles were bound decode with no binding.
    let old = serde_json::json!({"token_id": "tok_01jd8x6k3v9q4m2t7r5w0y1zcj", "name": "local-node", "role": "node"});
    let Event::TokenCreated(t) = Event::decode("token.created", 1, old).unwrap() else { panic!("wrong variant") };
    assert_eq!((t.org_id, t.node_id, t.expires_at), (None, None, None));
    for r in TokenRole::ALL {
        assert_eq!(TokenRole::parse(r.as_str()), Some(r));
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
}
