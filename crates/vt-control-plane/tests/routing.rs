//! What a joined node's edge follows (docs/nodes.md, "Edges"): `GET /v1/nodes/{node}/routing`
//! (every route and the ready instances behind them, by cursor) and `POST
//! /v1/nodes/{node}/route-listeners` (its listeners, recorded under its name).

mod common;

use common::{digest, manifest, until, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn routing(s: &TestServer, token: &str, after: Option<u64>) -> Value {
    let path = match after {
        Some(a) => format!("/v1/nodes/n1/routing?after={a}&wait_ms=10000"),
        None => "/v1/nodes/n1/routing".to_owned(),
    };
    let r = s.call_as(Some(token), Method::GET, &path, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_follows_routes_and_ready_instances_and_reports_its_listeners() {
    let s = TestServer::start().await;
    let token = s.issue(json!({"name": "agent", "role": "node", "node": "n1"})).await;
    let body = json!({"name": "n1", "capacity": {"cpu_millis": 4000, "memory_mib": 8192}}).to_string();
    let r = s.call_as(Some(&token), Method::POST, "/v1/nodes", Some(&body), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    for (path, name) in [("/v1/orgs", "acme"), ("/v1/orgs/acme/apps", "web"), ("/v1/orgs/acme/apps/web/envs", "prod")] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let release = s
        .post(
            "/v1/orgs/acme/apps/web/releases",
            json!({"image": format!("acme/web@{}", digest('a')), "manifest": manifest()}),
        )
        .await;
    assert_eq!(release.status, StatusCode::CREATED, "{}", release.body);
    let d = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": release.body["id"]})).await;
    assert_eq!(d.status, StatusCode::CREATED, "{}", d.body);
    let list = until(&s, "/v1/orgs/acme/apps/web/envs/prod/instances", "an instance", |b| {
        !b["items"].as_array().unwrap().is_empty()
    })
    .await;
    let instance = list["items"][0]["id"].as_str().unwrap().to_owned();
    let route = s
        .post(
            "/v1/orgs/acme/apps/web/envs/prod/routes",
            json!({"hostname": "r.example", "process": "web", "backend_port": 8080}),
        )
        .await;
    assert_eq!(route.status, StatusCode::CREATED, "{}", route.body);

    // The route is there; the instance, not ready yet, is not.
    let first = routing(&s, &token, None).await;
    assert_eq!(first["routes"][0]["id"], route.body["id"], "{first}");
    assert_eq!(first["instances"], json!([]), "{first}");

    // Running with an address: it is followed by cursor.
    let status = json!({"status": "running", "address": "fd00:1::5"}).to_string();
    let path = format!("/v1/instances/{instance}/status");
    let r = s.call_as(Some(&token), Method::POST, &path, Some(&status), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut seq = first["seq"].as_u64().unwrap();
    let ready = loop {
        let next = routing(&s, &token, Some(seq)).await;
        if next["instances"] != json!([]) {
            break next;
        }
        seq = next["seq"].as_u64().unwrap();
    };
    let env = list["items"][0]["env_id"].clone();
    assert_eq!(ready["instances"], json!([{"env_id": env, "process": "web", "address": "fd00:1::5"}]));

    // Listener reports are recorded under the node's name; a gone route's is dropped.
    let route_id = route.body["id"].as_str().unwrap();
    let gone = s
        .post(
            "/v1/orgs/acme/apps/web/envs/prod/routes",
            json!({"hostname": "gone.example", "process": "web", "backend_port": 8080}),
        )
        .await;
    let gone = gone.body["id"].as_str().unwrap();
    let r = s.call(Method::DELETE, &format!("/v1/orgs/acme/apps/web/envs/prod/routes/{gone}"), None, &[]).await;
    assert!(r.status.is_success(), "{}", r.body);
    let reports = json!([
        {"route_id": route_id, "state": "failed", "reason": "Address already in use"},
        {"route_id": gone, "state": "listening"},
    ]);
    let r =
        s.call_as(Some(&token), Method::POST, "/v1/nodes/n1/route-listeners", Some(&reports.to_string()), &[]).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({"recorded": 1})));
    let listeners = until(&s, &format!("/v1/orgs/acme/apps/web/envs/prod/routes/{route_id}"), "the listener", |b| {
        b["listeners"] != json!([])
    })
    .await;
    assert_eq!(listeners["listeners"][0]["node"], "n1");
    assert_eq!(listeners["listeners"][0]["reason"], "Address already in use");

    // Bad input names the field.
    let bad = json!([{"route_id": route_id, "state": "listening", "reason": "why"}]).to_string();
    let r = s.call_as(Some(&token), Method::POST, "/v1/nodes/n1/route-listeners", Some(&bad), &[]).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "[0].reason"), "{}", r.body);
    let bad = json!([{"route_id": route_id, "state": "sleeping"}]).to_string();
    let r = s.call_as(Some(&token), Method::POST, "/v1/nodes/n1/route-listeners", Some(&bad), &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
}
