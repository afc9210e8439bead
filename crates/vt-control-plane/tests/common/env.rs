//! An env with a node, deploys, and the status reports a node agent would post:
//! for tests of rollouts, by release or by secrets version.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use vt_control_plane::scheduler::SchedulerSettings;

use super::*;

pub const INSTANCES: &str = "/v1/orgs/acme/apps/web/envs/prod/instances";
pub const DEPLOYS: &str = "/v1/orgs/acme/apps/web/envs/prod/deploys";
pub const DESCRIBE: &str = "/v1/orgs/acme/apps/web/envs/prod/describe";
pub const SCALE: &str = "/v1/orgs/acme/apps/web/envs/prod/scale";

pub fn manifest_with_health() -> String {
    "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/httpd\", \"-f\"]\nports = [{ name = \"http\", port = 8080 }]\nscaling = { min = 1, max = 3 }\nresources = { cpu = 0.5, memory_mib = 256 }\n\n[processes.web.healthcheck]\ntype = \"http\"\nport = \"http\"\npath = \"/healthz\"\n".to_owned()
}

/// A server with org `acme`, app `web`, env `prod` and one roomy node; the scheduler runs every 100 ms.
pub async fn setup(backoff: vt_scheduler::Backoff) -> TestServer {
    setup_on(TestServer::start().await, backoff).await
}

/// [`setup`] on a server already started.
pub async fn setup_on(s: TestServer, backoff: vt_scheduler::Backoff) -> TestServer {
    s.cp.scheduler.configure(SchedulerSettings {
        interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_secs(3600),
        backoff,
        ..Default::default()
    });
    for (path, name) in [("/v1/orgs", "acme"), ("/v1/orgs/acme/apps", "web"), ("/v1/orgs/acme/apps/web/envs", "prod")] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let r = s.post("/v1/nodes", json!({"name": "n1", "capacity": {"cpu_millis": 8000, "memory_mib": 8192}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s
}

pub async fn release(s: &TestServer, c: char) -> String {
    let r = s
        .post(
            "/v1/orgs/acme/apps/web/releases",
            json!({"image": format!("acme/web@{}", digest(c)), "manifest": manifest_with_health()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

pub async fn deploy(s: &TestServer, release: &str) -> String {
    let r = s.post(DEPLOYS, json!({"release_id": release})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

pub fn items(body: &Value) -> Vec<Value> {
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Instances of `release` meant to run and not ended, oldest first.
pub fn live_of(body: &Value, release: &str) -> Vec<Value> {
    let ended = |i: &Value| i["status"] == "stopped" || i["status"] == "failed";
    let mut v: Vec<Value> = items(body)
        .into_iter()
        .filter(|i| i["desired_state"] == "running" && i["release_id"] == release && !ended(i))
        .collect();
    v.sort_by_key(|i| i["created_at"].as_str().unwrap_or_default().to_owned());
    v
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// What the node agent would post.
pub async fn report(s: &TestServer, instance: &str, body: Value) {
    let r = s.post(&format!("/v1/instances/{instance}/status"), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

pub async fn instance(s: &TestServer, instance: &str) -> Value {
    s.get(&format!("/v1/instances/{instance}")).await.body
}

pub async fn deploy_until(s: &TestServer, dep: &str, status: &str) -> Value {
    until(s, &format!("{DEPLOYS}/{dep}"), status, |d| d["status"] == status).await
}

/// Deploy `release` with `n` instances of `web` and make them ready, as an agent would.
pub async fn deploy_ready(s: &TestServer, release: &str, n: usize) -> (String, Vec<String>) {
    let dep = deploy(s, release).await;
    let body = until(s, INSTANCES, "instances allocated", |b| live_of(b, release).len() == n).await;
    let ids: Vec<String> = live_of(&body, release).iter().map(id).collect();
    for i in &ids {
        report(s, i, json!({"status": "running", "health": "passing", "address": "10.0.0.2"})).await;
    }
    deploy_until(s, &dep, "succeeded").await;
    (dep, ids)
}

pub fn differences(describe: &Value) -> Vec<String> {
    describe["processes"][0]["differences"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect()
}

pub fn phases(d: &Value) -> Vec<(String, u64)> {
    d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["phase"].as_str().unwrap().to_owned(), p["after_ms"].as_u64().unwrap()))
        .collect()
}

/// The log does not move over several scheduler activations.
pub async fn assert_quiet(s: &TestServer, what: &str) {
    let (head, runs) = (s.head().await, s.cp.scheduler.status().runs);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(s.cp.scheduler.status().runs >= runs + 3, "the scheduler kept running");
    assert_eq!(s.head().await, head, "{what}: repeated activations with nothing changed append nothing");
}
