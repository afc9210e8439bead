//! Authorization, end to end: every operation of the OpenAPI document (the
//! same list the server routes) called by every kind of caller, against a real
//! control plane over HTTP. The expectations are this file's own table, keyed
//! by operation id: an operation the document has and the table lacks fails
//! the test, so no endpoint lands without an authorization rule.

mod common;

use std::sync::Arc;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vt_control_plane::logs::{Ended, LogFuture, LogSource, LogStream};

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    Admin,
    Owner,
    Deployer,
    Viewer,
    /// The owner of another org.
    Stranger,
    /// The node the fixture's instance is placed on.
    Node1,
    /// Another node.
    Node2,
}

const EVERYONE: [Who; 8] =
    [Who::Nobody, Who::Admin, Who::Owner, Who::Deployer, Who::Viewer, Who::Stranger, Who::Node1, Who::Node2];

/// Who may do an operation; the others get 401 (nobody), 404 (a resource they
/// may not see) or 403 (one they see, with a role that does not allow it).
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Every token; lists are filtered to what it may see.
    Anyone,
    /// An enrollment token only (none of the matrix's callers: 403); `tests/enrollment.rs` enrolls.
    EnrollOnly,
    /// Admin tokens only.
    Admin,
    /// Admins and nodes: cluster-wide listings.
    ClusterRead,
    /// Admins and the org's members; not other orgs (404), not nodes (404).
    OrgRead,
    /// Admins, the org's owners and deployers.
    OrgDeploy,
    /// Admins and the org's owners.
    OrgOwner,
    /// Admins and the node itself; other nodes and org tokens 403.
    NodeSelf,
    /// Admins, the instance's org's members, and the node it is placed on.
    InstanceRead,
    /// Admins and the node the instance is placed on.
    InstanceAgent,
    /// Admins and org members (each reads its org's events); nodes 403.
    Members,
    /// The node the instance is placed on, and nobody else (admins 403).
    InstanceUnseal,
    /// Admins, the instance's org's owners and deployers; not its node (403), not viewers (403).
    InstanceExec,
    /// The node itself and nobody else (admins 403): its channel and streams.
    NodeServe,
}

fn expected(rule: Rule, who: Who, ok: StatusCode) -> StatusCode {
    use StatusCode as S;
    use Who::*;
    if who == Nobody {
        return S::UNAUTHORIZED;
    }
    if who == Admin {
        return if matches!(rule, Rule::InstanceUnseal | Rule::EnrollOnly | Rule::NodeServe) {
            S::FORBIDDEN
        } else {
            ok
        };
    }
    let member = matches!(who, Owner | Deployer | Viewer);
    match rule {
        Rule::Anyone => ok,
        Rule::EnrollOnly => S::FORBIDDEN,
        Rule::Admin => S::FORBIDDEN,
        Rule::ClusterRead => match who {
            Node1 | Node2 => ok,
            _ => S::FORBIDDEN,
        },
        Rule::OrgRead => match who {
            _ if member => ok,
            _ => S::NOT_FOUND,
        },
        Rule::OrgDeploy => match who {
            Owner | Deployer => ok,
            Viewer => S::FORBIDDEN,
            _ => S::NOT_FOUND,
        },
        Rule::OrgOwner => match who {
            Owner => ok,
            Deployer | Viewer => S::FORBIDDEN,
            _ => S::NOT_FOUND,
        },
        Rule::NodeServe => match who {
            Node1 => ok,
            _ => S::FORBIDDEN,
        },
        Rule::NodeSelf => match who {
            Node1 => ok,
            _ => S::FORBIDDEN,
        },
        Rule::InstanceRead => match who {
            Node1 => ok,
            _ if member => ok,
            Stranger => S::NOT_FOUND,
            _ => S::FORBIDDEN,
        },
        Rule::InstanceAgent => match who {
            Node1 => ok,
            Stranger => S::NOT_FOUND,
            _ => S::FORBIDDEN,
        },
        Rule::Members => match who {
            Node1 | Node2 => S::FORBIDDEN,
            _ => ok,
        },
        Rule::InstanceUnseal => match who {
            Node1 => ok,
            Stranger => S::NOT_FOUND,
            _ => S::FORBIDDEN,
        },
        Rule::InstanceExec => match who {
            Owner | Deployer => ok,
            Stranger => S::NOT_FOUND,
            _ => S::FORBIDDEN,
        },
    }
}

/// The rule and the success status of each operation, by operation id.
fn rule_of(operation: &str) -> Option<(Rule, StatusCode)> {
    use StatusCode as S;
    Some(match operation {
        "org_create" => (Rule::Admin, S::CREATED),
        "org_list" => (Rule::Anyone, S::OK),
        "org_get" => (Rule::OrgRead, S::OK),
        "app_create" => (Rule::OrgOwner, S::CREATED),
        "app_list" | "app_get" => (Rule::OrgRead, S::OK),
        "env_create" => (Rule::OrgOwner, S::CREATED),
        "env_list" | "env_get" | "env_describe" => (Rule::OrgRead, S::OK),
        "release_create" => (Rule::OrgDeploy, S::CREATED),
        "release_list" | "release_get" => (Rule::OrgRead, S::OK),
        "deploy_create" | "env_rollback" => (Rule::OrgDeploy, S::CREATED),
        "deploy_list" | "deploy_get" | "scale_get" | "instance_list" => (Rule::OrgRead, S::OK),
        "scale_set" => (Rule::OrgDeploy, S::OK),
        "route_create" => (Rule::OrgDeploy, S::CREATED),
        "route_list" | "route_get" => (Rule::OrgRead, S::OK),
        "route_delete" => (Rule::OrgDeploy, S::OK),
        "volume_create" => (Rule::OrgDeploy, S::CREATED),
        "volume_list" | "volume_get" => (Rule::OrgRead, S::OK),
        "volume_extend" | "volume_delete" => (Rule::OrgDeploy, S::OK),
        "snapshot_create" => (Rule::OrgDeploy, S::CREATED),
        "snapshot_list" => (Rule::OrgRead, S::OK),
        "snapshot_restore" => (Rule::OrgDeploy, S::CREATED),
        "snapshot_report" => (Rule::NodeSelf, S::OK),
        "backup_create" | "backup_restore" => (Rule::OrgDeploy, S::CREATED),
        "backup_list" => (Rule::OrgRead, S::OK),
        "backup_report" => (Rule::NodeSelf, S::OK),
        "route_list_all" | "node_list" | "system_status" | "system_scheduler" | "system_tasks" => {
            (Rule::ClusterRead, S::OK)
        }
        "node_register"
        | "node_get"
        | "node_heartbeat"
        | "node_instances"
        | "node_routing"
        | "node_route_listeners" => (Rule::NodeSelf, S::OK),
        "instance_get" | "instance_logs" => (Rule::InstanceRead, S::OK),
        "instance_report_status" => (Rule::InstanceAgent, S::OK),
        "token_create" => (Rule::OrgOwner, S::CREATED),
        "token_list" | "token_revoke" => (Rule::OrgOwner, S::OK),
        "event_list" => (Rule::Members, S::OK),
        "system_boot_timings" => (Rule::Anyone, S::OK),
        "system_rebuild_views" | "system_gc" => (Rule::Admin, S::OK),
        "secrets_list" => (Rule::OrgRead, S::OK),
        "secrets_change" | "secrets_deploy" => (Rule::OrgDeploy, S::OK),
        "instance_secrets" => (Rule::InstanceUnseal, S::OK),
        // The fixture's instance is placed, not running: a caller allowed to exec is told so.
        "exec_create" => (Rule::InstanceExec, S::CONFLICT),
        // Any token may present a grant (the grant says whose it is); a plain GET is no upgrade.
        "exec_connect" => (Rule::Anyone, S::BAD_REQUEST),
        // WebSockets: a plain GET is no upgrade.
        "node_channel" | "node_stream" => (Rule::NodeServe, S::BAD_REQUEST),
        "workspace_create" | "workspace_port_add" => (Rule::OrgDeploy, S::CREATED),
        // Everyone's list: what their token may see.
        "workspace_list" => (Rule::Anyone, S::OK),
        "workspace_get" | "workspace_port_list" => (Rule::OrgRead, S::OK),
        "workspace_start" | "workspace_stop" | "workspace_port_remove" => (Rule::OrgDeploy, S::OK),
        "workspace_delete" => (Rule::OrgDeploy, S::ACCEPTED),
        "enroll_token_create" => (Rule::Admin, S::CREATED),
        "node_enroll" => (Rule::EnrollOnly, S::CREATED),
        "node_revoke" => (Rule::Admin, S::OK),
        _ => return None,
    })
}

/// Instance logs for the matrix: one line, whatever the instance.
struct OneLine;
impl LogSource for OneLine {
    fn read(&self, _: vt_ids::InstanceId, _: vt_ids::NodeId, _: Option<usize>, _: bool, _: Ended) -> LogFuture {
        let stream: LogStream = Box::pin(futures_util::stream::once(async {
            Ok(bytes::Bytes::from_static(b"2026-01-01T00:00:00Z stdout hi\n"))
        }));
        Box::pin(async move { Ok(stream) })
    }
}

struct World {
    s: TestServer,
    /// The server's backup repository (a real restic repository in the test's directory).
    restic: vt_backup::Restic,
    tokens: Vec<(Who, Option<String>)>,
    instance: String,
    release: String,
    deploy: String,
}

impl World {
    fn token(&self, who: Who) -> Option<&str> {
        self.tokens.iter().find(|(w, _)| *w == who).and_then(|(_, t)| t.as_deref())
    }
}

fn manifest_with_memory() -> String {
    manifest().replace(
        "scaling = { min = 1, max = 3 }",
        "scaling = { min = 1, max = 3 }\nresources = { cpu = 0.5, memory_mib = 256 }",
    )
}

/// Org `acme` (app `web`, env `prod`) with two releases deployed in turn and an
/// instance placed on node `n1`; org `other`; a token of each kind.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), None).await;
    let admin = admin_token(store.as_ref()).await;
    let s = TestServer::serve_with_logs(dir, store, admin.clone(), Some(Arc::new(OneLine))).await;
    let (repo, password_file) = (s.dir.path().join("backups"), s.dir.path().join("backup-password"));
    std::fs::write(&password_file, "test\n").unwrap();
    let init = std::process::Command::new("restic")
        .arg("--repo")
        .arg(&repo)
        .arg("--password-file")
        .arg(&password_file)
        .arg("init")
        .output()
        .expect("restic (apt-get install restic)");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let target = vt_backup::Target { repo: repo.to_str().unwrap().into(), password_file, keep: vec![] };
    s.cp.backups.set(Some(target.clone()));
    let restic = vt_backup::Restic::new(target);
    for (path, name) in [
        ("/v1/orgs", "acme"),
        ("/v1/orgs", "other"),
        ("/v1/orgs/acme/apps", "web"),
        ("/v1/orgs/acme/apps/web/envs", "prod"),
    ] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let mut tokens = vec![(Who::Nobody, None), (Who::Admin, Some(admin))];
    for (who, role, org) in [
        (Who::Owner, "owner", "acme"),
        (Who::Deployer, "deployer", "acme"),
        (Who::Viewer, "viewer", "acme"),
        (Who::Stranger, "owner", "other"),
    ] {
        tokens.push((who, Some(s.issue(json!({"name": "t", "role": role, "org": org})).await)));
    }
    // Two nodes, each registered with its own token; only n1 has room for the instances.
    for (who, node, memory) in [(Who::Node1, "n1", 8192), (Who::Node2, "n2", 128)] {
        let token = s.issue(json!({"name": "agent", "role": "node", "node": node})).await;
        let body = json!({"name": node, "capacity": {"cpu_millis": 4000, "memory_mib": memory}}).to_string();
        let r = s.call_as(Some(&token), Method::POST, "/v1/nodes", Some(&body), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        tokens.push((who, Some(token)));
    }
    let body = json!({"name": "ws-fixture", "org": "acme", "image": format!("acme/web@{}", digest('c')), "cpus": 1, "memory_mib": 256, "disk_gib": 1});
    let r = s.post("/v1/workspaces", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // A secret, so that the instances run a secrets version.
    let r = s.post("/v1/orgs/acme/apps/web/envs/prod/secrets", json!({"set": {"API_KEY": "c2VjcmV0"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut releases = vec![];
    for c in ['a', 'b'] {
        let r = s
            .post(
                "/v1/orgs/acme/apps/web/releases",
                json!({"image": format!("acme/web@{}", digest(c)), "manifest": manifest_with_memory()}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        releases.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let mut deploy = String::new();
    for r in &releases {
        let d = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": r})).await;
        assert_eq!(d.status, StatusCode::CREATED, "{}", d.body);
        deploy = d.body["id"].as_str().unwrap().to_owned();
    }
    let list = until(&s, "/v1/orgs/acme/apps/web/envs/prod/instances", "an instance", |b| {
        !b["items"].as_array().unwrap().is_empty()
    })
    .await;
    let instance = list["items"][0]["id"].as_str().unwrap().to_owned();
    let node1 = s.get("/v1/nodes/n1").await.body["id"].as_str().unwrap().to_owned();
    assert_eq!(list["items"][0]["node_id"], node1.as_str(), "the instance is on n1");
    assert_eq!(
        s.post(
            "/v1/orgs/acme/apps/web/envs/prod/routes",
            json!({"hostname": "r.example", "process": "web", "backend_port": 8080})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    World { s, restic, tokens, instance, release: releases[0].clone(), deploy }
}

/// A request of operation `op` for caller number `i`: its path (parameters
/// filled from the fixture, or made for this caller) and body.
async fn request(w: &World, op: &str, template: &str, i: usize) -> (String, Option<Value>) {
    let s = &w.s;
    // What this caller's call may consume, made fresh by the admin.
    let route = format!("del{i}.example");
    let mut token_id = String::new();
    if op == "token_revoke" {
        let victim =
            s.post("/v1/tokens", json!({"name": format!("victim-{i}"), "role": "viewer", "org": "acme"})).await;
        assert_eq!(victim.status, StatusCode::CREATED, "{}", victim.body);
        token_id = victim.body["id"].as_str().unwrap().to_owned();
    }
    if op == "secrets_deploy" {
        let r = s
            .post(
                "/v1/orgs/acme/apps/web/envs/prod/secrets",
                json!({"set": {format!("STAGED_{i}"): "eA=="}, "stage": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    if op == "route_delete" {
        let r = s
            .post(
                "/v1/orgs/acme/apps/web/envs/prod/routes",
                json!({"hostname": route, "process": "web", "backend_port": 8080}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // A volume of its own for each call that names one.
    let mut volume = format!("{}-{i}", op.replace('_', "-"));
    let mut snapshot = String::new();
    if matches!(
        op,
        "volume_get"
            | "volume_extend"
            | "volume_delete"
            | "snapshot_create"
            | "snapshot_list"
            | "snapshot_restore"
            | "snapshot_report"
            | "backup_create"
            | "backup_list"
            | "backup_report"
    ) {
        let r = s
            .post("/v1/orgs/acme/apps/web/envs/prod/volumes", json!({"name": volume, "size_gib": 1, "node": "n1"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    if matches!(op, "snapshot_restore" | "snapshot_report") {
        let path = format!("/v1/orgs/acme/apps/web/envs/prod/volumes/{volume}/snapshots");
        let r = s.call(Method::POST, &path, None, &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        snapshot = r.body["id"].as_str().unwrap().to_owned();
        if op == "snapshot_restore" {
            // Taken by its node (as n1's agent would report it).
            let token = w.token(Who::Node1).unwrap();
            let body = json!({"status": "completed", "bytes": 4096}).to_string();
            let path = format!("/v1/nodes/n1/snapshots/{snapshot}");
            let r = s.call_as(Some(token), Method::POST, &path, Some(&body), &[]).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    }
    // Workspaces (256 MiB each, on n1): one shared for reads; one per operation for start, stop
    // and port add (repeating them is allowed); one per call for delete and port remove.
    let mut workspace = "ws-fixture".to_owned();
    let create_workspace = |name: String| async move {
        let body = json!({"name": name, "org": "acme", "image": format!("acme/web@{}", digest('c')), "cpus": 1, "memory_mib": 256, "disk_gib": 1});
        let r = s.post("/v1/workspaces", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    };
    if matches!(op, "workspace_start" | "workspace_stop" | "workspace_port_add") {
        workspace = op.replace('_', "-");
        if i == 0 {
            create_workspace(workspace.clone()).await;
        }
    }
    if matches!(op, "workspace_delete" | "workspace_port_remove") {
        workspace = format!("{}-{i}", op.replace('_', "-"));
        create_workspace(workspace.clone()).await;
        if op == "workspace_port_remove" {
            let r = s.post(&format!("/v1/workspaces/{workspace}/ports"), json!({"port": 3000})).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
    }
    // A node of its own for each revocation.
    let mut node = "n1".to_owned();
    if op == "node_revoke" {
        node = format!("rv-{i}");
        let body = json!({"name": node, "capacity": {"cpu_millis": 1000, "memory_mib": 1024}});
        let r = s.post("/v1/nodes", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let mut backup = String::new();
    let mut backup_id = String::new();
    if op == "backup_restore" {
        // A backup of this env in the repository, as a node would have made it.
        let image = s.dir.path().join(format!("image-{i}"));
        std::fs::write(&image, b"a volume").unwrap();
        let origin = vt_backup::Origin {
            org: "acme".into(),
            app: "web".into(),
            env: "prod".into(),
            volume: "data".into(),
            volume_id: "vol_x".into(),
            size_gib: 1,
            node: "n1".into(),
        };
        backup = w.restic.backup(&image, &origin).await.unwrap().0;
    }
    if op == "backup_report" {
        let r = s
            .call(Method::POST, &format!("/v1/orgs/acme/apps/web/envs/prod/volumes/{volume}/backups"), None, &[])
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        backup_id = r.body["backups"]["pending"]["id"].as_str().unwrap().to_owned();
        let v = s.get(&format!("/v1/orgs/acme/apps/web/envs/prod/volumes/{volume}")).await;
        volume = v.body["id"].as_str().unwrap().to_owned();
    }
    let path = template
        .replace("{backup}", &backup)
        .replace("{volume}", &volume)
        .replace("{snapshot}", &snapshot)
        .replace("{org}", "acme")
        .replace("{app}", "web")
        .replace("{env}", "prod")
        .replace("{release}", &w.release)
        .replace("{deploy}", &w.deploy)
        .replace("{instance}", &w.instance)
        .replace("{node}", &node)
        .replace("{token}", &token_id)
        .replace("{route}", if op == "route_delete" { &route } else { "r.example" })
        .replace("{workspace}", &workspace)
        .replace("{port}", "3000")
        .replace("{request}", &format!("vtq_{}", "0".repeat(64)));
    let path = match op {
        "token_list" => format!("{path}?org=acme"),
        _ => path,
    };
    let body = match op {
        "org_create" => Some(json!({"name": format!("org-{i}")})),
        "app_create" => Some(json!({"name": format!("app-{i}")})),
        "env_create" => Some(json!({"name": format!("env-{i}")})),
        "release_create" => {
            Some(json!({"image": format!("acme/web@{}", digest('c')), "manifest": manifest_with_memory()}))
        }
        "deploy_create" => Some(json!({"release_id": w.release})),
        "scale_set" => Some(json!({"processes": {"web": 1}})),
        "route_create" => Some(json!({"hostname": format!("r{i}.example"), "process": "web", "backend_port": 8080})),
        "volume_create" => Some(json!({"name": format!("data-{i}"), "size_gib": 1})),
        "volume_extend" => Some(json!({"size_gib": 2})),
        "snapshot_restore" => Some(json!({"name": format!("restored-{i}")})),
        "snapshot_report" => Some(json!({"status": "completed"})),
        "backup_restore" => Some(json!({"name": format!("from-backup-{i}")})),
        "backup_report" => Some(json!({"backup_id": backup_id, "status": "failed", "reason": "test"})),
        "node_register" => Some(json!({"name": "n1", "capacity": {"cpu_millis": 4000, "memory_mib": 8192}})),
        "node_heartbeat" => Some(json!({})),
        "node_route_listeners" => Some(json!([])),
        "instance_report_status" => Some(json!({"status": "booting"})),
        "token_create" => Some(json!({"name": format!("new-{i}"), "role": "viewer", "org": "acme"})),
        "secrets_change" => Some(json!({"set": {format!("K_{i}"): "eA=="}, "stage": true})),
        "exec_create" => Some(json!({"argv": ["sh"]})),
        "workspace_create" => Some(
            json!({"name": format!("new-ws-{i}"), "org": "acme", "image": format!("acme/web@{}", digest('c')), "cpus": 1, "memory_mib": 256, "disk_gib": 1}),
        ),
        "workspace_port_add" => Some(json!({"port": 3000 + i})),
        "enroll_token_create" => Some(json!({"ttl_secs": 600, "labels": {"zone": "a"}})),
        "node_enroll" => Some(json!({"name": format!("enrolled-{i}")})),
        _ => None,
    };
    (path, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_with_every_caller() {
    let w = world().await;
    let doc = vt_control_plane::http::api();
    let mut operations = vec![];
    for (template, item) in &doc.paths.paths {
        for (method, op) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
        ] {
            if let Some(op) = op {
                let id = op.operation_id.clone().expect("every operation has an id");
                let (rule, ok) = rule_of(&id).unwrap_or_else(|| {
                    panic!("operation `{id}` ({method} {template}) has no authorization rule in tests/authz.rs: add it")
                });
                operations.push((id, method.clone(), template.clone(), rule, ok));
            }
        }
    }
    // The repair that rebuilds every view runs last.
    operations.sort_by_key(|(id, ..)| id == "system_rebuild_views");
    assert!(operations.len() >= 40, "{} operations", operations.len());
    let mut failures = vec![];
    let mut calls = 0;
    for (id, method, template, rule, ok) in &operations {
        for (i, who) in EVERYONE.iter().enumerate() {
            let (path, body) = request(&w, id, template, i).await;
            let body = body.map(|b| b.to_string());
            let r = w.s.call_as(w.token(*who), method.clone(), &path, body.as_deref(), &[]).await;
            calls += 1;
            let want = expected(*rule, *who, *ok);
            if r.status != want {
                failures.push(format!("{id} as {who:?}: {method} {path} → {} (want {want}): {}", r.status, r.body));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {calls} calls answered wrong:\n{}", failures.len(), failures.join("\n"));
    // Every rule in the table is of an operation that exists.
    let ids: Vec<&str> = operations.iter().map(|o| o.0.as_str()).collect();
    for id in ids.iter().copied() {
        assert!(rule_of(id).is_some());
    }
}

/// The first hole: the in-process node's token could register a new node (it
/// became `ready`, got a /64 and capacity) and list every org.
#[tokio::test]
async fn a_node_token_registers_only_its_own_node_and_sees_no_org() {
    let s = TestServer::start().await;
    s.post("/v1/orgs", json!({"name": "acme"})).await;
    let node = s.issue(json!({"name": "local-node", "role": "node", "node": "host-1"})).await;
    let register = |name: &str| json!({"name": name, "capacity": {"cpu_millis": 2000, "memory_mib": 2048}}).to_string();
    let r = s.call_as(Some(&node), Method::POST, "/v1/nodes", Some(&register("evil")), &[]).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::FORBIDDEN, "name"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("issued for node `host-1`"), "{}", r.body);
    assert!(s.get("/v1/nodes").await.body["items"].as_array().unwrap().is_empty(), "no node was registered");
    let r = s.call_as(Some(&node), Method::POST, "/v1/nodes", Some(&register("host-1")), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Registered, it still cannot register another node nor rename itself.
    let r = s.call_as(Some(&node), Method::POST, "/v1/nodes", Some(&register("evil")), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = s.call_as(Some(&node), Method::GET, "/v1/orgs", None, &[]).await;
    assert_eq!((r.status, &r.body["items"]), (StatusCode::OK, &json!([])), "a node sees no org");
    let r = s.call_as(Some(&node), Method::GET, "/v1/orgs/acme", None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// The second hole: any node token could heartbeat as, follow, or report
/// instance status for any other node.
#[tokio::test]
async fn a_node_acts_only_as_itself() {
    let w = world().await;
    let s = &w.s;
    let node2 = w.token(Who::Node2);
    for (method, path, body) in [
        (Method::POST, "/v1/nodes/n1/heartbeat", Some("{}")),
        (Method::GET, "/v1/nodes/n1/instances", None),
        (Method::GET, "/v1/nodes/n1/instances?after=0&wait_ms=10", None),
        (Method::GET, "/v1/nodes/n1/routing", None),
        (Method::POST, "/v1/nodes/n1/route-listeners", Some("[]")),
        (Method::POST, &*format!("/v1/instances/{}/status", w.instance), Some("{\"status\": \"running\"}")),
    ] {
        let r = s.call_as(node2, method.clone(), path, body, &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("acts only for that node"), "{}", r.body);
    }
    // Its own node answers, with only its own instances (none) and no release.
    let r = s.call_as(node2, Method::GET, "/v1/nodes/n2/instances", None, &[]).await;
    assert_eq!((r.status, &r.body["items"], &r.body["releases"]), (StatusCode::OK, &json!([]), &json!([])));
    // n1 follows its instance and gets the release it runs with it.
    let r = s.call_as(w.token(Who::Node1), Method::GET, "/v1/nodes/n1/instances", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.body["items"].as_array().unwrap();
    let n1 = s.get("/v1/nodes/n1").await.body["id"].clone();
    assert!(!items.is_empty() && items.iter().all(|i| i["node_id"] == n1));
    let releases: Vec<&str> =
        r.body["releases"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    for i in items {
        assert!(releases.contains(&i["release_id"].as_str().unwrap()), "{}", r.body);
    }
}

/// A token of another org learns nothing, not even whether a name exists: the
/// answers for another org's resources equal those for missing ones.
#[tokio::test]
async fn other_orgs_are_invisible() {
    let w = world().await;
    let s = &w.s;
    let stranger = w.token(Who::Stranger);
    for (hidden, missing) in [
        ("/v1/orgs/acme", "/v1/orgs/nope"),
        ("/v1/orgs/acme/apps", "/v1/orgs/nope/apps"),
        ("/v1/orgs/acme/apps/web/envs/prod/describe", "/v1/orgs/nope/apps/web/envs/prod/describe"),
    ] {
        let a = s.call_as(stranger, Method::GET, hidden, None, &[]).await;
        let b = s.call_as(stranger, Method::GET, missing, None, &[]).await;
        let text = |r: &Resp, name: &str| r.body["error"]["message"].as_str().unwrap().replace(name, "X");
        assert_eq!((a.status, a.error_code()), (StatusCode::NOT_FOUND, "not_found"));
        assert_eq!((a.status, text(&a, "acme")), (b.status, text(&b, "nope")), "{hidden} vs {missing}");
    }
    let hidden = s.call_as(stranger, Method::GET, &format!("/v1/instances/{}", w.instance), None, &[]).await;
    let missing = s.call_as(stranger, Method::GET, "/v1/instances/inst_01jd8x6k3v9q4m2t7r5w0y1zcg", None, &[]).await;
    assert_eq!(hidden.status, missing.status);
    // Lists and the event stream hold its own org only.
    let orgs = s.call_as(stranger, Method::GET, "/v1/orgs", None, &[]).await.body;
    let names: Vec<&str> = orgs["items"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["other"]);
    let other_id = orgs["items"][0]["id"].as_str().unwrap().to_owned();
    let events = s.call_as(stranger, Method::GET, "/v1/events?limit=1000", None, &[]).await.body;
    let events = events["events"].as_array().unwrap();
    assert!(!events.is_empty() && events.iter().all(|e| e["org_id"] == other_id.as_str()), "{events:?}");
    let all = s.get("/v1/events?limit=1000").await.body;
    assert!(all["events"].as_array().unwrap().len() > events.len());
    // Followed, too: the stream carries the org's new events and nothing else.
    let mut follow = s.http.get(s.url("/v1/events?follow=true")).bearer_auth(stranger.unwrap()).send().await.unwrap();
    s.post("/v1/orgs/acme/apps", json!({"name": "secret-plans"})).await;
    s.post("/v1/orgs/other/apps", json!({"name": "visible"})).await;
    let mut seen = String::new();
    while !seen.contains("visible") {
        let chunk =
            tokio::time::timeout(std::time::Duration::from_secs(10), follow.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("secret-plans"), "{seen}");
}

#[tokio::test]
async fn tokens_expire_and_are_revoked_from_the_next_request_on() {
    let s = TestServer::start().await;
    s.post("/v1/orgs", json!({"name": "acme"})).await;
    let r = s.post("/v1/tokens", json!({"name": "ci", "role": "deployer", "org": "acme", "expires_in_secs": 1})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let (short, id) = (r.body["secret"].as_str().unwrap().to_owned(), r.body["id"].as_str().unwrap().to_owned());
    assert_eq!((r.body["role"].as_str(), r.body["state"].as_str()), (Some("deployer"), Some("active")));
    assert_eq!(s.call_as(Some(&short), Method::GET, "/v1/orgs/acme", None, &[]).await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = s.call_as(Some(&short), Method::GET, "/v1/orgs/acme", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("the token `ci` ({id}) expired at")), "{message}");

    let owner = s.issue(json!({"name": "boss", "role": "owner", "org": "acme"})).await;
    let viewer = s.issue(json!({"name": "eyes", "role": "viewer", "org": "acme"})).await;
    let list = s.call_as(Some(&owner), Method::GET, "/v1/tokens", None, &[]).await;
    let listed = list.body.to_string();
    assert!(!listed.contains(&owner[3..]) && !listed.contains(&viewer[3..]), "no secret is listed: {listed}");
    let names: Vec<&str> = list.body["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["boss", "eyes"], "active tokens of the org, oldest first");
    let eyes = list.body["items"][1]["id"].as_str().unwrap().to_owned();
    let r = s.call_as(Some(&owner), Method::DELETE, &format!("/v1/tokens/{eyes}"), None, &[]).await;
    assert_eq!((r.status, r.body["state"].as_str()), (StatusCode::OK, Some("revoked")), "{}", r.body);
    let r = s.call_as(Some(&viewer), Method::GET, "/v1/orgs/acme", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("was revoked at"), "{}", r.body);
    // Revoking again changes nothing; `all` lists revoked and expired tokens too.
    let head = s.head().await;
    let r = s.call_as(Some(&owner), Method::DELETE, &format!("/v1/tokens/{eyes}"), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.head().await, head);
    let all = s.get("/v1/tokens?org=acme&all=true").await.body;
    let states: Vec<(&str, &str)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("ci", "expired"), ("boss", "active"), ("eyes", "revoked")]);
    // An org's owner cannot make admin or node tokens, nor tokens of another org.
    for body in [json!({"name": "x", "role": "admin"}), json!({"name": "x", "role": "node", "node": "n1"})] {
        let r = s.call_as(Some(&owner), Method::POST, "/v1/tokens", Some(&body.to_string()), &[]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}: {}", r.body);
    }
    let r = s.post("/v1/orgs", json!({"name": "other"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let body = json!({"name": "x", "role": "owner", "org": "other"}).to_string();
    assert_eq!(
        s.call_as(Some(&owner), Method::POST, "/v1/tokens", Some(&body), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // Bad requests name the field.
    for (body, field) in [
        (json!({"name": "x", "role": "viewer"}), "org"),
        (json!({"name": "x", "role": "admin", "org": "acme"}), "org"),
        (json!({"name": "x", "role": "node"}), "node"),
        (json!({"name": "x", "role": "viewer", "org": "acme", "node": "n1"}), "node"),
        (json!({"name": "x", "role": "viewer", "org": "acme", "expires_in_secs": 0}), "expires_in_secs"),
        (json!({"name": "X", "role": "viewer", "org": "acme"}), "name"),
        (json!({"name": "x", "role": "root", "org": "acme"}), "role"),
    ] {
        let r = s.post("/v1/tokens", body.clone()).await;
        assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, field), "{body}: {}", r.body);
    }
    let r = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&json!({"name": "x", "role": "admin"}).to_string()),
            &[("idempotency-key", "k")],
        )
        .await;
    assert_eq!(r.error_field(), "Idempotency-Key", "a secret is never stored for a replay");
    // The events and views carry ids and names, never a secret.
    let events = s.get("/v1/events?limit=1000").await.body.to_string();
    for secret in [&owner, &viewer, &short, &s.token] {
        assert!(!events.contains(&secret[3..]));
    }
}

#[tokio::test]
async fn the_last_admin_token_cannot_be_revoked() {
    let s = TestServer::start().await;
    let list = s.get("/v1/tokens").await.body;
    let admin = list["items"][0]["id"].as_str().unwrap().to_owned();
    let r = s.call(Method::DELETE, &format!("/v1/tokens/{admin}"), None, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let second = s.issue(json!({"name": "ops", "role": "admin"})).await;
    let r = s.call_as(Some(&second), Method::DELETE, &format!("/v1/tokens/{admin}"), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(s.get("/v1/orgs").await.status, StatusCode::UNAUTHORIZED);

    // Two admins revoking each other at once: one stays (the store decides, not a view read before).
    let body = json!({"name": "ops2", "role": "admin"}).to_string();
    let r = s.call_as(Some(&second), Method::POST, "/v1/tokens", Some(&body), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let third = r.body["secret"].as_str().unwrap().to_owned();
    let tokens = s.call_as(Some(&second), Method::GET, "/v1/tokens", None, &[]).await.body;
    let id_of = |name: &str| {
        let items = tokens["items"].as_array().unwrap();
        items.iter().find(|t| t["name"] == name).unwrap()["id"].as_str().unwrap().to_owned()
    };
    let (ops, ops2) = (format!("/v1/tokens/{}", id_of("ops")), format!("/v1/tokens/{}", id_of("ops2")));
    let (a, b) = tokio::join!(
        s.call_as(Some(&second), Method::DELETE, &ops2, None, &[]),
        s.call_as(Some(&third), Method::DELETE, &ops, None, &[]),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    // The loser is refused as the last admin (409) or, revoked a moment before, as unauthorized (401).
    assert_eq!(statuses[0], StatusCode::OK, "{} / {}", a.body, b.body);
    assert!(matches!(statuses[1], StatusCode::CONFLICT | StatusCode::UNAUTHORIZED), "{} / {}", a.body, b.body);
    let mut admins = 0;
    for t in [&second, &third] {
        let r = s.call_as(Some(t), Method::GET, "/v1/orgs", None, &[]).await;
        admins += usize::from(r.status == StatusCode::OK);
    }
    assert_eq!(admins, 1, "exactly one admin token is left");
}

/// A host name belongs to the first org that routes it: another org's claim
/// is a 409 on `hostname` that does not name the owner, on any port, until the
/// owner's last route with it is deleted.
#[tokio::test]
async fn hostnames_belong_to_one_org() {
    let s = TestServer::start().await;
    for (path, name) in [
        ("/v1/orgs", "acme"),
        ("/v1/orgs", "other"),
        ("/v1/orgs/acme/apps", "web"),
        ("/v1/orgs/acme/apps/web/envs", "prod"),
        ("/v1/orgs/other/apps", "web"),
        ("/v1/orgs/other/apps/web/envs", "prod"),
    ] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let acme = "/v1/orgs/acme/apps/web/envs/prod/routes";
    let other = "/v1/orgs/other/apps/web/envs/prod/routes";
    let route = |host: &str, port: u16| json!({"hostname": host, "port": port, "process": "web", "backend_port": 8080});
    assert_eq!(s.post(acme, route("shop.example", 443)).await.status, StatusCode::CREATED);
    assert_eq!(
        s.post(acme, route("shop.example", 8443)).await.status,
        StatusCode::CREATED,
        "the owner uses it on another port"
    );
    for port in [443, 9443] {
        let r = s.post(other, route("SHOP.example", port)).await;
        assert_eq!(
            (r.status, r.error_code(), r.error_field()),
            (StatusCode::CONFLICT, "name_taken", "hostname"),
            "{}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("acme") && !message.contains("org_"), "{message}");
    }
    // The owner deletes one route: it keeps the name; then its last: the name is free.
    assert_eq!(s.call(Method::DELETE, &format!("{acme}/route_x"), None, &[]).await.status, StatusCode::NOT_FOUND);
    let routes = s.get(acme).await.body;
    let ids: Vec<String> =
        routes["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(s.call(Method::DELETE, &format!("{acme}/{}", ids[0]), None, &[]).await.status, StatusCode::OK);
    assert_eq!(s.post(other, route("shop.example", 9443)).await.status, StatusCode::CONFLICT);
    assert_eq!(s.call(Method::DELETE, &format!("{acme}/{}", ids[1]), None, &[]).await.status, StatusCode::OK);
    assert_eq!(s.post(other, route("shop.example", 9443)).await.status, StatusCode::CREATED);
}
