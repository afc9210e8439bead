//! The scheduler reconciler and `rollback` end to end: real server, real SQLite, real HTTP.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vt_control_plane::scheduler::SchedulerSettings;

fn manifest(memory_mib: u32) -> String {
    format!(
        "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/httpd\", \"-f\"]\nports = [{{ name = \"http\", port = 8080 }}]\nscaling = {{ min = 1, max = 3 }}\nresources = {{ cpu = 0.5, memory_mib = {memory_mib} }}\n"
    )
}

async fn release(s: &TestServer, app: &str, c: char, memory_mib: u32) -> String {
    let r = s
        .post(
            &format!("/v1/orgs/acme/apps/{app}/releases"),
            json!({"image": format!("acme/{app}@{}", digest(c)), "manifest": manifest(memory_mib)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

fn live(instances: &Value) -> Vec<&Value> {
    instances["items"].as_array().unwrap().iter().filter(|i| i["desired_state"] == "running").collect()
}

fn nodes_of(items: &[&Value]) -> Vec<String> {
    let mut n: Vec<String> = items.iter().map(|i| i["node_id"].as_str().unwrap().to_owned()).collect();
    n.sort();
    n
}

#[tokio::test]
async fn places_scales_replaces_and_explains() {
    let s = TestServer::start().await;
    s.cp.scheduler.configure(SchedulerSettings {
        interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(2),
        ..Default::default()
    });
    for (path, name) in [
        ("/v1/orgs", "acme"),
        ("/v1/orgs/acme/apps", "web"),
        ("/v1/orgs/acme/apps/web/envs", "prod"),
        ("/v1/orgs/acme/apps/web/envs", "big"),
    ] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let mut node_ids = vec![];
    for name in ["n1", "n2"] {
        let r = s.post("/v1/nodes", json!({"name": name, "capacity": {"cpu_millis": 2000, "memory_mib": 1024}})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        node_ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    // Both nodes heartbeat, except the one named in `silent`.
    let silent: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let (http, base, token, silent, ids) =
            (s.http.clone(), s.url(""), s.token.clone(), silent.clone(), node_ids.clone());
        tokio::spawn(async move {
            loop {
                for id in &ids {
                    if silent.lock().unwrap().as_deref() != Some(id.as_str()) {
                        let _ = http
                            .post(format!("{base}/v1/nodes/{id}/heartbeat"))
                            .bearer_auth(&token)
                            .json(&json!({}))
                            .send()
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
    }

    // Two instances desired, deployed: allocated on two different nodes.
    let rel1 = release(&s, "web", 'a', 256).await;
    assert_eq!(
        s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {"web": 2}})).await.status,
        StatusCode::OK
    );
    let dep = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": rel1})).await;
    assert_eq!(dep.status, StatusCode::CREATED, "{}", dep.body);
    const INSTANCES: &str = "/v1/orgs/acme/apps/web/envs/prod/instances";
    let body = until(&s, INSTANCES, "2 instances", |b| live(b).len() == 2).await;
    let placed = live(&body);
    assert_eq!(
        nodes_of(&placed),
        {
            let mut n = node_ids.clone();
            n.sort();
            n
        },
        "spread over both nodes: {body}"
    );
    assert!(placed.iter().all(|i| i["release_id"] == rel1.as_str()
        && i["resources"]["memory_mib"] == 256
        && i["resources"]["cpu_millis"] == 500));
    let events = s.get("/v1/events?limit=1000").await.body;
    let allocated =
        events["events"].as_array().unwrap().iter().filter(|e| e["event_type"] == "instance.allocated").count();
    assert_eq!(allocated, 2, "exactly two allocations, never doubled");
    let d = until(
        &s,
        &format!("/v1/orgs/acme/apps/web/envs/prod/deploys/{}", dep.body["id"].as_str().unwrap()),
        "rolling",
        |b| b["status"] == "rolling",
    )
    .await;
    assert_eq!(d["kind"], "deploy");

    // Scale up to 3, then down to 1: the two newest are desired stopped.
    assert_eq!(
        s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {"web": 3}})).await.status,
        StatusCode::OK
    );
    until(&s, INSTANCES, "3 instances", |b| live(b).len() == 3).await;
    assert_eq!(
        s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {"web": 1}})).await.status,
        StatusCode::OK
    );
    let body = until(&s, INSTANCES, "1 instance", |b| live(b).len() == 1).await;
    let all = body["items"].as_array().unwrap();
    let stopped: Vec<&Value> = all.iter().filter(|i| i["desired_state"] == "stopped").collect();
    assert_eq!(stopped.len(), 2, "{body}");
    let survivor = live(&body)[0].clone();
    let oldest = all.iter().min_by_key(|i| i["created_at"].as_str().unwrap().to_owned()).unwrap();
    assert_eq!(survivor["id"], oldest["id"], "scale-down stops the newest first");

    // The survivor's node stops heartbeating: it becomes unreachable and the instance is replaced on the other.
    let lost = survivor["node_id"].as_str().unwrap().to_owned();
    *silent.lock().unwrap() = Some(lost.clone());
    let body =
        until(&s, INSTANCES, "a replacement", |b| live(b).len() == 1 && live(b)[0]["id"] != survivor["id"]).await;
    assert_ne!(live(&body)[0]["node_id"].as_str().unwrap(), lost, "{body}");
    let node = s.get(&format!("/v1/nodes/{lost}")).await.body;
    assert_eq!(node["status"], "unreachable", "{node}");
    let old = body["items"].as_array().unwrap().iter().find(|i| i["id"] == survivor["id"]).unwrap();
    assert_eq!(old["desired_state"], "stopped");

    // More memory than any node has: describe and the scheduler's status say what is short and where.
    let big = release(&s, "web", 'b', 4096).await;
    assert_eq!(
        s.post("/v1/orgs/acme/apps/web/envs/big/deploys", json!({"release_id": big})).await.status,
        StatusCode::CREATED
    );
    let d = s.get("/v1/orgs/acme/apps/web/envs/big/describe").await.body;
    let diffs = d["processes"][0]["differences"].as_array().unwrap();
    assert!(
        diffs.iter().any(|x| x.as_str().unwrap().contains("needs 4096 MiB memory; largest free is")
            && x.as_str().unwrap().contains("MiB on n")),
        "{d}"
    );
    let st = until(&s, "/v1/system/scheduler", "unplaceable", |b| {
        b["unplaceable"].as_array().is_some_and(|u| !u.is_empty())
    })
    .await;
    assert_eq!(st["unplaceable"][0]["process"], "web", "{st}");
    assert!(st["unplaceable"][0]["reason"].as_str().unwrap().starts_with("needs 4096 MiB memory"), "{st}");
    assert_eq!(st["last_error"], Value::Null, "{st}");
}

#[tokio::test]
async fn rollback_returns_to_the_previous_release() {
    let s = TestServer::start().await;
    s.cp.scheduler.configure(SchedulerSettings { enabled: false, ..Default::default() });
    for (path, name) in [("/v1/orgs", "acme"), ("/v1/orgs/acme/apps", "web"), ("/v1/orgs/acme/apps/web/envs", "prod")] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    const ROLLBACK: &str = "/v1/orgs/acme/apps/web/envs/prod/rollback";
    const DEPLOYS: &str = "/v1/orgs/acme/apps/web/envs/prod/deploys";
    let r = s.call(Method::POST, ROLLBACK, None, &[]).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::CONFLICT, "conflict"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("has no deploy yet"), "{}", r.body);
    let (r1, r2) = (release(&s, "web", 'a', 256).await, release(&s, "web", 'b', 256).await);
    assert_eq!(s.post(DEPLOYS, json!({"release_id": r1})).await.status, StatusCode::CREATED);
    let r = s.call(Method::POST, ROLLBACK, None, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("no previous release"), "{}", r.body);
    assert_eq!(s.post(DEPLOYS, json!({"release_id": r2})).await.status, StatusCode::CREATED);
    let r = s.call(Method::POST, ROLLBACK, None, &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        (r.body["kind"].as_str(), r.body["release_id"].as_str(), r.body["previous_release_id"].as_str()),
        (Some("rollback"), Some(r1.as_str()), Some(r2.as_str()))
    );
    let env = s.get("/v1/orgs/acme/apps/web/envs/prod").await.body;
    assert_eq!(env["desired_release_id"], r1.as_str());
    // Rolling back again goes to the release before the desired one: r2.
    let r = s.call(Method::POST, ROLLBACK, None, &[]).await;
    assert_eq!(r.body["release_id"], r2.as_str(), "{}", r.body);
}

async fn scale(s: &TestServer, env: &str, n: u32) -> StatusCode {
    s.put(&format!("/v1/orgs/acme/apps/web/envs/{env}/scale"), json!({"processes": {"web": n}})).await.status
}

/// `scaling.suspend` through the scheduler's activations (no VMs: the node's reports are made
/// here): a scale to 0 marks the running instance desired `suspended`; reported `suspended`, it
/// holds no memory (a 768 MiB instance of another env fits on the 1024 MiB node beside its 512);
/// a scale to 1 makes the same instance desired `running` again, on its node, allocating nothing.
#[tokio::test]
async fn a_process_that_suspends_at_zero_is_resumed_in_place() {
    let s = TestServer::start().await;
    s.cp.scheduler.configure(SchedulerSettings { interval: Duration::from_millis(200), ..Default::default() });
    for (path, name) in [
        ("/v1/orgs", "acme"),
        ("/v1/orgs/acme/apps", "web"),
        ("/v1/orgs/acme/apps/web/envs", "prod"),
        ("/v1/orgs/acme/apps/web/envs", "other"),
    ] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let r = s.post("/v1/nodes", json!({"name": "n1", "capacity": {"cpu_millis": 2000, "memory_mib": 1024}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let release_of = |memory: u32, suspend: bool| {
        json!({"image": format!("acme/web@{}", digest('a')), "manifest": format!(
            "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/httpd\", \"-f\"]\n\
             scaling = {{ min = 0, max = 1, suspend = {suspend} }}\nresources = {{ cpu = 0.5, memory_mib = {memory} }}\n"
        )})
    };
    let rel = s.post("/v1/orgs/acme/apps/web/releases", release_of(512, true)).await;
    assert_eq!(rel.status, StatusCode::CREATED, "{}", rel.body);
    let dep = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": rel.body["id"]})).await;
    assert_eq!(dep.status, StatusCode::CREATED, "{}", dep.body);
    assert_eq!(scale(&s, "prod", 1).await, StatusCode::OK);
    const INSTANCES: &str = "/v1/orgs/acme/apps/web/envs/prod/instances";
    let body = until(&s, INSTANCES, "1 instance", |b| live(b).len() == 1).await;
    let id = live(&body)[0]["id"].as_str().unwrap().to_owned();
    let r = s.post(&format!("/v1/instances/{id}/status"), json!({"status": "running"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    assert_eq!(scale(&s, "prod", 0).await, StatusCode::OK);
    let body = until(&s, INSTANCES, "desired suspended", |b| b["items"][0]["desired_state"] == "suspended").await;
    assert_eq!(body["items"][0]["reason"], "suspended: scaled to 0", "{body}");
    let r = s.post(&format!("/v1/instances/{id}/status"), json!({"status": "suspended"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    until(&s, INSTANCES, "suspended", |b| b["items"][0]["status"] == "suspended").await;

    // Its memory is free: 768 MiB of another env fit beside it.
    let big = s.post("/v1/orgs/acme/apps/web/releases", release_of(768, false)).await;
    assert_eq!(big.status, StatusCode::CREATED, "{}", big.body);
    let dep = s.post("/v1/orgs/acme/apps/web/envs/other/deploys", json!({"release_id": big.body["id"]})).await;
    assert_eq!(dep.status, StatusCode::CREATED, "{}", dep.body);
    assert_eq!(scale(&s, "other", 1).await, StatusCode::OK);
    until(&s, "/v1/orgs/acme/apps/web/envs/other/instances", "placed", |b| live(b).len() == 1).await;
    assert_eq!(scale(&s, "other", 0).await, StatusCode::OK);
    let other = until(&s, "/v1/orgs/acme/apps/web/envs/other/instances", "stopped", |b| live(b).is_empty()).await;
    let other_id = other["items"][0]["id"].as_str().unwrap().to_owned();
    let r = s.post(&format!("/v1/instances/{other_id}/status"), json!({"status": "stopped"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Scaled up: the same instance resumes; nothing new is allocated.
    assert_eq!(scale(&s, "prod", 1).await, StatusCode::OK);
    let body = until(&s, INSTANCES, "resumed", |b| live(b).len() == 1).await;
    assert_eq!(live(&body)[0]["id"], id.as_str(), "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "no new instance: {body}");
    assert_eq!(live(&body)[0]["reason"], "resumed: scaled up to 1", "{body}");

    // Its node reports it preparing the resume; scaled to 0 meanwhile, it is suspended again
    // (its snapshot holds its memory), not stopped; then scaled up, resumed again.
    let r = s
        .post(
            &format!("/v1/instances/{id}/status"),
            json!({"status": "preparing", "reason": "resuming from its snapshot"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    until(&s, INSTANCES, "preparing", |b| b["items"][0]["status"] == "preparing").await;
    assert_eq!(scale(&s, "prod", 0).await, StatusCode::OK);
    let body = until(&s, INSTANCES, "desired suspended", |b| b["items"][0]["desired_state"] != "running").await;
    assert_eq!(body["items"][0]["desired_state"], "suspended", "not stopped: {body}");
    assert_eq!(scale(&s, "prod", 1).await, StatusCode::OK);
    let body = until(&s, INSTANCES, "resumed again", |b| live(b).len() == 1).await;
    assert_eq!(live(&body)[0]["id"], id.as_str(), "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "no new instance: {body}");
    // Booted afresh (or running) is no resume any more: a scale to 0 of a booting instance that
    // was never suspended stops it, as before.
    let r = s.post(&format!("/v1/instances/{id}/status"), json!({"status": "running"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.post(&format!("/v1/instances/{id}/status"), json!({"status": "booting"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    until(&s, INSTANCES, "booting", |b| b["items"][0]["status"] == "booting").await;
    assert_eq!(scale(&s, "prod", 0).await, StatusCode::OK);
    let body = until(&s, INSTANCES, "stopped", |b| b["items"][0]["desired_state"] != "running").await;
    assert_eq!(body["items"][0]["desired_state"], "stopped", "{body}");
}
