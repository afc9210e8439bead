//! Edge-only nodes (docs/nodes.md, "Edges"): a node registered with `runs_instances: false` is
//! recorded so (event, view, API), is in the mesh like any node, and holds nothing: the
//! scheduler never places an instance on it, volumes are never made there, and a registration
//! may not change what a node runs.

mod common;

use std::time::Duration;

use common::env::{deploy, items, release, setup, INSTANCES, SCALE};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const VOLUMES: &str = "/v1/orgs/acme/apps/web/envs/prod/volumes";

/// Node `edge` with far more room than `n1`: the scheduler would pick it if it could.
fn edge(runs_instances: Value) -> Value {
    json!({
        "name": "edge",
        "capacity": {"cpu_millis": 64000, "memory_mib": 65536},
        "address": "10.99.0.9",
        "wireguard_public_key": "EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEA=",
        "wireguard_port": 51820,
        "runs_instances": runs_instances,
    })
}

fn registered(events: &Value, name: &str) -> Value {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "node.registered" && e["payload"]["name"] == name)
        .unwrap_or_else(|| panic!("no node.registered of {name}: {events}"))["payload"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_only_node_is_recorded_meshed_and_never_scheduled() {
    // Org acme, app web, env prod and node `n1` (8 CPUs, 8 GiB), which runs instances.
    let s = setup(Default::default()).await;
    let r = s.post("/v1/nodes", edge(json!(false))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["runs_instances"], false, "{}", r.body);
    let edge_id = r.body["id"].as_str().unwrap().to_owned();

    // The API, the view and the event carry it; a node registered without it runs instances,
    // and its event reads as it always did (no new key).
    assert_eq!(s.get("/v1/nodes/edge").await.body["runs_instances"], false);
    assert_eq!(s.get("/v1/nodes/n1").await.body["runs_instances"], true);
    let list = s.get("/v1/nodes").await.body;
    let runs: Vec<(&str, &Value)> =
        list["items"].as_array().unwrap().iter().map(|n| (n["name"].as_str().unwrap(), &n["runs_instances"])).collect();
    assert_eq!(runs, vec![("edge", &json!(false)), ("n1", &json!(true))], "{list}");
    let events = s.get("/v1/events?limit=1000").await.body;
    assert_eq!(registered(&events, "edge")["runs_instances"], false);
    assert!(registered(&events, "n1").get("runs_instances").is_none(), "{events}");

    // It is a mesh peer like any node: n1 follows it (the ingress on it reaches n1's instances).
    let mesh = s.get("/v1/nodes/n1/instances").await.body["mesh"].clone();
    assert_eq!(mesh.as_array().map(|m| m.len()), Some(1), "{mesh}");
    assert_eq!((&mesh[0]["name"], &mesh[0]["endpoint"]), (&json!("edge"), &json!("10.99.0.9:51820")), "{mesh}");

    // A registration is repeatable, but may not change what the node runs.
    let r = s.post("/v1/nodes", edge(json!(false))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.post("/v1/nodes", edge(json!(true))).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::CONFLICT, "runs_instances"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("vt node revoke edge"), "{}", r.body);
    let r = s.post("/v1/nodes", edge(json!("no"))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.to_string().contains("runs_instances"), "the bad field is named: {}", r.body);
    assert_eq!(s.get("/v1/nodes/edge").await.body["runs_instances"], false);

    // Three instances: all on n1, though the edge node has eight times its room.
    let rel = release(&s, 'a').await;
    deploy(&s, &rel).await;
    let r = s.put(SCALE, json!({"processes": {"web": 3}})).await;
    assert!(r.status.is_success(), "{}", r.body);
    let n1 = s.get("/v1/nodes/n1").await.body["id"].as_str().unwrap().to_owned();
    let body = until(&s, INSTANCES, "three instances placed", |b| items(b).len() >= 3).await;
    let placed: Vec<String> = items(&body).iter().map(|i| i["node_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(placed, vec![n1.clone(); 3], "{body}");

    // Volumes: never made there, and naming it is refused, naming the field.
    let r = s.post(VOLUMES, json!({"name": "data", "size_gib": 1, "node": "edge"})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "node"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("edge-only"), "{}", r.body);
    let r = s.post(VOLUMES, json!({"name": "data", "size_gib": 1})).await;
    assert_eq!((r.status, r.body["node"].as_str()), (StatusCode::CREATED, Some("n1")), "{}", r.body);

    // The only node that runs instances is lost (revoked: placed elsewhere, as an unreachable
    // node's): its instances have nowhere to go, and nothing lands on the edge node.
    let r = s.call(Method::POST, "/v1/nodes/n1/revoke", None, &[]).await;
    assert!(r.status.is_success(), "{}", r.body);
    let st = until(&s, "/v1/system/scheduler", "the process is unplaceable", |b| {
        b["unplaceable"].as_array().is_some_and(|u| !u.is_empty())
    })
    .await;
    assert_eq!(st["unplaceable"][0]["process"], "web", "{st}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = s.get(INSTANCES).await.body;
    assert!(items(&body).iter().all(|i| i["node_id"] != edge_id.as_str()), "an instance on the edge node: {body}");
    assert_eq!(s.get("/v1/nodes/edge").await.body["status"], "ready");
}

/// Edge-only nodes alone: nothing is placed, and the scheduler says why in those words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_only_nodes_alone_place_nothing_and_say_so() {
    let s = TestServer::start().await;
    s.cp.scheduler.configure(vt_control_plane::scheduler::SchedulerSettings {
        interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_secs(3600),
        ..Default::default()
    });
    for (path, name) in [("/v1/orgs", "acme"), ("/v1/orgs/acme/apps", "web"), ("/v1/orgs/acme/apps/web/envs", "prod")] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    assert_eq!(s.post("/v1/nodes", edge(json!(false))).await.status, StatusCode::CREATED);
    let rel = release(&s, 'b').await;
    deploy(&s, &rel).await;
    let st = until(&s, "/v1/system/scheduler", "the process is unplaceable", |b| {
        b["unplaceable"].as_array().is_some_and(|u| !u.is_empty())
    })
    .await;
    let u = &st["unplaceable"][0];
    assert_eq!(u["reason"], "no node runs instances: the 1 node(s) registered are edge-only", "{st}");
    assert!(u["hint"].as_str().unwrap().contains("--role agent"), "{st}");
    assert!(items(&s.get(INSTANCES).await.body).is_empty());
}
