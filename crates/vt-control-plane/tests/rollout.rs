//! Health-gated rolling deploys, fail-fast, per-phase timings and crash-loop
//! backoff, end to end: a real server and scheduler, with the node agent
//! simulated by posting status reports as the agent would.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vt_control_plane::scheduler::SchedulerSettings;

const INSTANCES: &str = "/v1/orgs/acme/apps/web/envs/prod/instances";
const DEPLOYS: &str = "/v1/orgs/acme/apps/web/envs/prod/deploys";
const DESCRIBE: &str = "/v1/orgs/acme/apps/web/envs/prod/describe";
const SCALE: &str = "/v1/orgs/acme/apps/web/envs/prod/scale";

fn manifest() -> String {
    "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/httpd\", \"-f\"]\nports = [{ name = \"http\", port = 8080 }]\nscaling = { min = 1, max = 3 }\nresources = { cpu = 0.5, memory_mib = 256 }\n\n[processes.web.healthcheck]\ntype = \"http\"\nport = \"http\"\npath = \"/healthz\"\n".to_owned()
}

/// A server with org `acme`, app `web`, env `prod` and one roomy node; the scheduler runs every 100 ms.
async fn setup(backoff: vt_scheduler::Backoff) -> TestServer {
    let s = TestServer::start().await;
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

async fn release(s: &TestServer, c: char) -> String {
    let r = s
        .post(
            "/v1/orgs/acme/apps/web/releases",
            json!({"image": format!("acme/web@{}", digest(c)), "manifest": manifest()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn deploy(s: &TestServer, release: &str) -> String {
    let r = s.post(DEPLOYS, json!({"release_id": release})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

fn items(body: &Value) -> Vec<Value> {
    body["items"].as_array().cloned().unwrap_or_default()
}

/// Instances of `release` meant to run and not ended, oldest first.
fn live_of(body: &Value, release: &str) -> Vec<Value> {
    let ended = |i: &Value| i["status"] == "stopped" || i["status"] == "failed";
    let mut v: Vec<Value> = items(body)
        .into_iter()
        .filter(|i| i["desired_state"] == "running" && i["release_id"] == release && !ended(i))
        .collect();
    v.sort_by_key(|i| i["created_at"].as_str().unwrap_or_default().to_owned());
    v
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// What the node agent would post.
async fn report(s: &TestServer, instance: &str, body: Value) {
    let r = s.post(&format!("/v1/instances/{instance}/status"), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn instance(s: &TestServer, instance: &str) -> Value {
    s.get(&format!("/v1/instances/{instance}")).await.body
}

async fn deploy_until(s: &TestServer, dep: &str, status: &str) -> Value {
    until(s, &format!("{DEPLOYS}/{dep}"), status, |d| d["status"] == status).await
}

/// Deploy `release` with `n` instances of `web` and make them ready, as an agent would.
async fn deploy_ready(s: &TestServer, release: &str, n: usize) -> (String, Vec<String>) {
    let dep = deploy(s, release).await;
    let body = until(s, INSTANCES, "instances allocated", |b| live_of(b, release).len() == n).await;
    let ids: Vec<String> = live_of(&body, release).iter().map(id).collect();
    for i in &ids {
        report(s, i, json!({"status": "running", "health": "passing", "address": "10.0.0.2"})).await;
    }
    deploy_until(s, &dep, "succeeded").await;
    (dep, ids)
}

fn differences(describe: &Value) -> Vec<String> {
    describe["processes"][0]["differences"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect()
}

fn phases(d: &Value) -> Vec<(String, u64)> {
    d["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["phase"].as_str().unwrap().to_owned(), p["after_ms"].as_u64().unwrap()))
        .collect()
}

/// The log does not move over several scheduler activations.
async fn assert_quiet(s: &TestServer, what: &str) {
    let (head, runs) = (s.head().await, s.cp.scheduler.status().runs);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(s.cp.scheduler.status().runs >= runs + 3, "the scheduler kept running");
    assert_eq!(s.head().await, head, "{what}: repeated activations with nothing changed append nothing");
}

#[tokio::test]
async fn a_rolling_deploy_stops_old_instances_only_as_new_ones_become_ready() {
    let s = setup(Default::default()).await;
    assert_eq!(s.put(SCALE, json!({"processes": {"web": 2}})).await.status, StatusCode::OK);
    let rel1 = release(&s, 'a').await;
    let (dep1, old) = deploy_ready(&s, &rel1, 2).await;
    let d1 = s.get(&format!("{DEPLOYS}/{dep1}")).await.body;
    let names: Vec<String> = phases(&d1).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["scheduled", "image_ready", "booted", "healthy"], "{d1}");
    assert_quiet(&s, "a succeeded deploy").await;

    let rel2 = release(&s, 'b').await;
    let dep2 = deploy(&s, &rel2).await;
    let body = until(&s, INSTANCES, "2 new instances", |b| live_of(b, &rel2).len() == 2).await;
    let new: Vec<String> = live_of(&body, &rel2).iter().map(id).collect();
    let d2 = deploy_until(&s, &dep2, "rolling").await;
    assert_eq!(phases(&d2).len(), 1, "scheduled, when allocated: {d2}");
    for n in &new {
        report(&s, n, json!({"status": "booting"})).await;
    }
    until(&s, &format!("{DEPLOYS}/{dep2}"), "image ready", |d| d["phases"].as_array().unwrap().len() == 2).await;
    for n in &new {
        report(&s, n, json!({"status": "running", "health": "pending", "boot": {"running_ms": 900}})).await;
    }
    until(&s, &format!("{DEPLOYS}/{dep2}"), "booted", |d| d["phases"].as_array().unwrap().len() == 3).await;
    // Running but not ready: the old instances keep serving.
    assert_quiet(&s, "health checks pending").await;
    let body = s.get(INSTANCES).await.body;
    assert_eq!(live_of(&body, &rel1).len(), 2, "no old instance stops before a new one is ready: {body}");
    let diffs = differences(&s.get(DESCRIBE).await.body);
    assert!(diffs.contains(&"2 running, 0 ready; 2 health check pending".to_owned()), "{diffs:?}");
    assert!(diffs.contains(&format!("rolling deploy {dep2}: 0 of 2 new ready")), "{diffs:?}");

    // One new instance passes: one old one (the newest) stops.
    report(
        &s,
        &new[0],
        json!({"status": "running", "health": "passing", "boot": {"running_ms": 900, "healthy_ms": 1300}}),
    )
    .await;
    let body = until(&s, INSTANCES, "one old stopped", |b| live_of(b, &rel1).len() == 1).await;
    assert_eq!(id(&live_of(&body, &rel1)[0]), old[0], "the newest old instance stops first");
    let stopped = instance(&s, &old[1]).await;
    assert_eq!(stopped["reason"], format!("replaced by release {rel2}"), "{stopped}");
    assert_quiet(&s, "one of two new ready").await;
    assert_eq!(
        live_of(&s.get(INSTANCES).await.body, &rel1).len(),
        1,
        "the second old one waits for the second new one"
    );
    let diffs = differences(&s.get(DESCRIBE).await.body);
    assert!(diffs.contains(&format!("rolling deploy {dep2}: 1 of 2 new ready")), "{diffs:?}");
    assert!(diffs.contains(&"2 running, 1 ready; 1 health check pending".to_owned()), "{diffs:?}");

    // The second passes: the last old one stops and the deploy succeeds, with every phase timed.
    report(&s, &new[1], json!({"status": "running", "health": "passing"})).await;
    let d2 = deploy_until(&s, &dep2, "succeeded").await;
    assert_eq!(live_of(&s.get(INSTANCES).await.body, &rel1).len(), 0);
    let timed = phases(&d2);
    assert_eq!(
        timed.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        ["scheduled", "image_ready", "booted", "healthy"],
        "{d2}"
    );
    assert!(timed.windows(2).all(|w| w[0].1 <= w[1].1), "phases are timed from acceptance, in order: {timed:?}");
    assert!(d2["reason"].as_str().unwrap().starts_with("2 instance(s) of release"), "{d2}");
    let types: Vec<String> = s.get("/v1/events?limit=1000").await.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "deploy.phase_reached").count(),
        8,
        "each phase of each deploy once: {types:?}"
    );
    let d = s.get(DESCRIBE).await.body;
    assert_eq!(differences(&d), Vec::<String>::new(), "{d}");
    assert_eq!(d["processes"][0]["ready_desired_release"], 2);
    assert_quiet(&s, "a finished rollout").await;
}

#[tokio::test]
async fn a_new_instance_that_exits_fails_the_deploy_and_the_env_goes_back() {
    let s = setup(Default::default()).await;
    assert_eq!(s.put(SCALE, json!({"processes": {"web": 2}})).await.status, StatusCode::OK);
    let rel1 = release(&s, 'a').await;
    let (_, old) = deploy_ready(&s, &rel1, 2).await;
    let rel2 = release(&s, 'b').await;
    let dep2 = deploy(&s, &rel2).await;
    let body = until(&s, INSTANCES, "2 new instances", |b| live_of(b, &rel2).len() == 2).await;
    let new: Vec<String> = live_of(&body, &rel2).iter().map(id).collect();
    report(&s, &new[0], json!({"status": "booting"})).await;
    report(&s, &new[0], json!({"status": "failed", "exit_code": 1, "reason": "the entrypoint exited with code 1"}))
        .await;

    let d = deploy_until(&s, &dep2, "failed").await;
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("instance {} (web) exited with code 1: the entrypoint exited with code 1", new[0])),
        "{d}"
    );
    assert!(reason.ends_with(&format!("env back on release {rel1}")), "{d}");
    assert_eq!(
        (d["failed_instance_id"].as_str(), d["reverted_to_release_id"].as_str()),
        (Some(new[0].as_str()), Some(rel1.as_str())),
        "{d}"
    );
    let env = s.get("/v1/orgs/acme/apps/web/envs/prod").await.body;
    assert_eq!(env["desired_release_id"], rel1.as_str(), "the env is back on the previous release");
    assert_eq!(env["current_deploy_id"], dep2.as_str(), "the failed deploy stays current, to explain");
    let other = instance(&s, &new[1]).await;
    assert_eq!(other["desired_state"], "stopped", "{other}");
    assert_eq!(other["reason"], format!("deploy {dep2} failed; env back on release {rel1}"));
    assert_quiet(&s, "after a failed deploy").await;
    let body = s.get(INSTANCES).await.body;
    let kept: Vec<String> = live_of(&body, &rel1).iter().map(id).collect();
    assert_eq!(kept, old, "the old instances are untouched: {body}");
    assert!(live_of(&body, &rel2).is_empty(), "{body}");
    for o in &old {
        assert_eq!(instance(&s, o).await["status"], "running");
    }
    let events = s.get("/v1/events?limit=1000").await.body;
    let reverted: Vec<&Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["event_type"] == "env.release_reverted").collect();
    assert_eq!(reverted.len(), 1, "{events}");
    assert_eq!(
        (reverted[0]["payload"]["release_id"].as_str(), reverted[0]["payload"]["from_release_id"].as_str()),
        (Some(rel1.as_str()), Some(rel2.as_str()))
    );
    let diffs = differences(&s.get(DESCRIBE).await.body);
    assert!(
        diffs
            .iter()
            .any(|x| x.starts_with(&format!("deploy {dep2} failed: instance {} (web) exited with code 1", new[0]))),
        "{diffs:?}"
    );

    // A rollback now skips the failed release: rel1 is desired, there is nothing before it.
    let r = s.call(Method::POST, "/v1/orgs/acme/apps/web/envs/prod/rollback", None, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
}

#[tokio::test]
async fn a_failing_health_check_fails_the_deploy() {
    let s = setup(Default::default()).await;
    let rel1 = release(&s, 'a').await;
    let (_, old) = deploy_ready(&s, &rel1, 1).await;
    let rel2 = release(&s, 'b').await;
    let dep2 = deploy(&s, &rel2).await;
    let body = until(&s, INSTANCES, "a new instance", |b| live_of(b, &rel2).len() == 1).await;
    let new = id(&live_of(&body, &rel2)[0]);
    report(&s, &new, json!({"status": "running", "health": "pending"})).await;
    let why = "health check failed 3 times: GET /healthz on port 8080: connection refused";
    report(&s, &new, json!({"status": "running", "health": "failing", "reason": why})).await;
    let d = deploy_until(&s, &dep2, "failed").await;
    assert!(d["reason"].as_str().unwrap().starts_with(&format!("instance {new} (web) {why}")), "{d}");
    let failed = until(&s, &format!("/v1/instances/{new}"), "the unhealthy instance stopped", |i| {
        i["desired_state"] == "stopped"
    })
    .await;
    assert_eq!(failed["failure"]["kind"], "unhealthy", "{failed}");
    let body = s.get(INSTANCES).await.body;
    assert_eq!(live_of(&body, &rel1).iter().map(id).collect::<Vec<_>>(), old, "{body}");
    assert_eq!(s.get("/v1/orgs/acme/apps/web/envs/prod").await.body["desired_release_id"], rel1.as_str());
}

#[tokio::test]
async fn a_deploy_with_nothing_to_run_succeeds_at_once() {
    let s = setup(Default::default()).await;
    assert_eq!(s.put(SCALE, json!({"processes": {"web": 0}})).await.status, StatusCode::OK);
    let rel1 = release(&s, 'a').await;
    let dep = deploy(&s, &rel1).await;
    let d = deploy_until(&s, &dep, "succeeded").await;
    assert_eq!(phases(&d).len(), 4, "{d}");
    assert_eq!(d["reason"], format!("no instance of release {rel1} is desired"));
    assert_quiet(&s, "an empty deploy").await;
}

#[tokio::test]
async fn crash_loops_back_off_and_describe_says_so() {
    let s = setup(Default::default()).await;
    let rel1 = release(&s, 'a').await;
    let (_, first) = deploy_ready(&s, &rel1, 1).await;

    // Each failure of the running release delays the replacement: 1 s, then 2 s, then 4 s.
    let mut current = first[0].clone();
    for (n, delay) in [(1u32, 1u64), (2, 2), (3, 4)] {
        let failed_at = Instant::now();
        let last = if n < 3 {
            report(
                &s,
                &current,
                json!({"status": "failed", "exit_code": 1, "reason": "the entrypoint exited with code 1"}),
            )
            .await;
            "exited with code 1".to_owned()
        } else {
            // A failing health check: the control plane stops it, and the same backoff applies.
            let why = "health check failed 3 times: GET /healthz on port 8080: connection refused";
            report(&s, &current, json!({"status": "running", "health": "failing", "reason": why})).await;
            let stopped = until(&s, &format!("/v1/instances/{current}"), "the unhealthy instance stopped", |i| {
                i["desired_state"] == "stopped"
            })
            .await;
            assert_eq!(stopped["reason"], format!("health check failing: {why}"), "{stopped}");
            why.to_owned()
        };
        let d = until(&s, DESCRIBE, "a crash loop", |d| d["processes"][0]["crash_loop"]["failures"] == n).await;
        let s_ = if n == 1 { "" } else { "s" };
        let want = format!("crash loop: {n} consecutive failure{s_}, last: {last}; next restart in {delay} s");
        assert!(differences(&d).contains(&want), "{want:?} in {:?}", differences(&d));
        assert_eq!(d["processes"][0]["crash_loop"]["waiting"], 1, "{d}");
        if delay > 1 {
            assert_quiet(&s, "a replacement held back").await;
        }
        let body = until(&s, INSTANCES, "a replacement", |b| {
            live_of(b, &rel1).len() == 1 && id(&live_of(b, &rel1)[0]) != current
        })
        .await;
        let waited = failed_at.elapsed();
        assert!(
            waited >= Duration::from_millis(delay * 1000 - 200),
            "failure {n}: replaced after {waited:?}, before its {delay} s backoff"
        );
        current = id(&live_of(&body, &rel1)[0]);
    }
    let d = s.get(DESCRIBE).await.body;
    assert!(
        differences(&d)
            .iter()
            .any(|x| x.starts_with("crash loop: 3 consecutive failures") && x.ends_with("a replacement is starting")),
        "{d}"
    );
}
