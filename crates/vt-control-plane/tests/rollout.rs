//! Health-gated rolling deploys, fail-fast, per-phase timings and crash-loop
//! backoff, end to end: a real server and scheduler, with the node agent
//! simulated by posting status reports as the agent would.

mod common;

use std::time::{Duration, Instant};

use common::env::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

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
