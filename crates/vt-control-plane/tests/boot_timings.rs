//! `GET /v1/system/boot-timings` end to end: instances placed on two nodes report their
//! boot timings the way a node agent does (`POST /v1/instances/{id}/status`), and the
//! summary's nearest-rank percentiles follow, per filter.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use vt_control_plane::scheduler::SchedulerSettings;
use vt_events::{Actor, Event, InstanceAllocated, NewEvent, Resources};
use vt_ids::*;

/// Place an instance of `process` in `env` on `node` as the scheduler would.
async fn allocate(s: &TestServer, env: &Value, process: &str, node: &str) -> String {
    let id = |k: &str| env[k].as_str().unwrap().to_owned();
    let instance_id = InstanceId::new();
    let allocated = Event::InstanceAllocated(InstanceAllocated {
        org_id: OrgId::parse(&id("org_id")).unwrap(),
        app_id: AppId::parse(&id("app_id")).unwrap(),
        env_id: EnvId::parse(&id("id")).unwrap(),
        instance_id,
        process: process.into(),
        release_id: ReleaseId::new(),
        deploy_id: None,
        node_id: NodeId::parse(node).unwrap(),
        resources: Resources { cpu_millis: 500, memory_mib: 128 },
        secrets_version: None,
        volumes: vec![],
    });
    s.cp.store
        .append(vt_store::AppendRequest {
            events: vec![NewEvent::new(allocated, Actor::system("test"), None)],
            ..Default::default()
        })
        .await
        .unwrap();
    instance_id.to_string()
}

fn phase<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == name)
        .unwrap_or_else(|| panic!("no phase {name}: {summary}"))
}

/// (count, p50, p95, p99, max) of one phase; percentiles as -1 when absent.
fn stats(summary: &Value, name: &str) -> (u64, i64, i64, i64, i64) {
    let p = phase(summary, name);
    let v = |k: &str| p[k].as_i64().unwrap_or(-1);
    (p["count"].as_u64().unwrap(), v("p50_ms"), v("p95_ms"), v("p99_ms"), v("max_ms"))
}

#[tokio::test]
async fn percentiles_per_phase_and_filter() {
    let s = TestServer::start().await;
    s.cp.scheduler.configure(SchedulerSettings { enabled: false, ..Default::default() });
    for (path, name) in [
        ("/v1/orgs", "acme"),
        ("/v1/orgs/acme/apps", "web"),
        ("/v1/orgs/acme/apps/web/envs", "prod"),
        ("/v1/orgs/acme/apps/web/envs", "staging"),
    ] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let mut nodes = vec![];
    for name in ["n1", "n2"] {
        let r = s.post("/v1/nodes", json!({"name": name, "capacity": {"cpu_millis": 4000, "memory_mib": 4096}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        nodes.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let prod = s.get("/v1/orgs/acme/apps/web/envs/prod").await.body;
    let staging = s.get("/v1/orgs/acme/apps/web/envs/staging").await.body;

    // n1: four `web` instances of prod; n2: two `worker` instances of staging, one of which
    // never reports timings (still booting).
    let mut reports = vec![];
    for (i, running) in [4000u64, 1000, 3000, 2000].into_iter().enumerate() {
        let id = allocate(&s, &prod, "web", &nodes[0]).await;
        let healthy = (i < 2).then_some(running + 500);
        reports.push((id, json!({"root_disk_ms": 10 * (i as u64 + 1), "vmm_spawned_ms": 3, "kernel_to_init_ms": 1400 + i as u64, "init_to_entrypoint_ms": 60, "running_ms": running, "healthy_ms": healthy})));
    }
    let worker = allocate(&s, &staging, "worker", &nodes[1]).await;
    reports.push((worker, json!({"root_disk_ms": 900, "running_ms": 9000})));
    let booting = allocate(&s, &staging, "worker", &nodes[1]).await;
    s.cp.fresh().await.unwrap();

    // Nothing reported yet: every phase is there, empty.
    let empty = s.get("/v1/system/boot-timings").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert_eq!((empty.body["instances"].as_u64(), empty.body["with_timings"].as_u64()), (Some(6), Some(0)));
    let names: Vec<&str> =
        empty.body["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    assert_eq!(names, ["root_disk", "vmm_spawned", "kernel_to_init", "init_to_entrypoint", "running", "healthy"]);
    assert_eq!(stats(&empty.body, "running"), (0, -1, -1, -1, -1));

    // The agent's `running` reports carry the timings (`null` fields are left out by the agent).
    for (id, boot) in &reports {
        let boot: serde_json::Map<String, Value> = boot
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let r = s.post(&format!("/v1/instances/{id}/status"), json!({"status": "running", "boot": boot})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = s.post(&format!("/v1/instances/{booting}/status"), json!({"status": "booting"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let all = s.get("/v1/system/boot-timings").await.body;
    assert_eq!((all["instances"].as_u64(), all["with_timings"].as_u64()), (Some(6), Some(5)), "{all}");
    // running: 1000 2000 3000 4000 9000 → p50 is rank 3, p95 and p99 rank 5.
    assert_eq!(stats(&all, "running"), (5, 3000, 9000, 9000, 9000));
    assert_eq!(stats(&all, "root_disk"), (5, 30, 900, 900, 900));
    assert_eq!(stats(&all, "vmm_spawned"), (4, 3, 3, 3, 3));
    assert_eq!(stats(&all, "kernel_to_init"), (4, 1401, 1403, 1403, 1403));
    assert_eq!(stats(&all, "healthy"), (2, 1500, 4500, 4500, 4500));

    // By node (name or id), env id, process.
    let n1 = s.get("/v1/system/boot-timings?node=n1").await.body;
    assert_eq!((n1["instances"].as_u64(), stats(&n1, "running")), (Some(4), (4, 2000, 4000, 4000, 4000)), "{n1}");
    let n2 = s.get(&format!("/v1/system/boot-timings?node={}", nodes[1])).await.body;
    assert_eq!(
        (n2["instances"].as_u64(), n2["with_timings"].as_u64(), stats(&n2, "running")),
        (Some(2), Some(1), (1, 9000, 9000, 9000, 9000)),
        "{n2}"
    );
    let env = s.get(&format!("/v1/system/boot-timings?env={}", prod["id"].as_str().unwrap())).await.body;
    assert_eq!(env["instances"].as_u64(), Some(4), "{env}");
    let both = s.get(&format!("/v1/system/boot-timings?node=n1&env={}", staging["id"].as_str().unwrap())).await.body;
    assert_eq!((both["instances"].as_u64(), stats(&both, "running").0), (Some(0), 0), "{both}");
    let workers = s.get("/v1/system/boot-timings?process=worker").await.body;
    assert_eq!((workers["instances"].as_u64(), workers["with_timings"].as_u64()), (Some(2), Some(1)), "{workers}");

    // Bad filters name themselves.
    let r = s.get("/v1/system/boot-timings?node=nope").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{}", r.body);
    let r = s.get("/v1/system/boot-timings?env=prod").await;
    assert_eq!((r.error_code(), r.error_field()), ("invalid_field", "env"), "{}", r.body);
    let r = s.get("/v1/system/boot-timings?env=env_00000000000000000000000000").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = s.get("/v1/system/boot-timings?nodes=n1").await;
    assert_eq!((r.error_code(), r.error_field()), ("unknown_field", "nodes"), "{}", r.body);
}
