//! Node identity (docs/nodes.md): a single-use enrollment token exchanged for a node's own
//! token, registration with the node's WireGuard key, and revocation: its tokens die, its
//! instances are placed elsewhere, its name is free again.

mod common;

use std::time::Duration;

use common::{digest, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEY_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY_B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

async fn enroll_token(s: &TestServer, labels: Value) -> String {
    let r = s.post("/v1/nodes/enroll-tokens", json!({"ttl_secs": 600, "labels": labels})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!((r.body["role"].as_str(), r.body["state"].as_str()), (Some("enroll"), Some("active")), "{}", r.body);
    r.body["secret"].as_str().unwrap().to_owned()
}

async fn enroll(s: &TestServer, token: &str, name: &str) -> common::Resp {
    let body = json!({ "name": name }).to_string();
    s.call_as(Some(token), Method::POST, "/v1/nodes/enroll", Some(&body), &[]).await
}

async fn register(s: &TestServer, token: &str, name: &str, key: &str, labels: &Value) -> common::Resp {
    let body = json!({"name": name, "capacity": {"cpu_millis": 2000, "memory_mib": 1024}, "labels": labels, "wireguard_public_key": key});
    s.call_as(Some(token), Method::POST, "/v1/nodes", Some(&body.to_string()), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_token_enrolls_one_node_once() {
    let s = TestServer::start().await;
    let token = enroll_token(&s, json!({"zone": "a"})).await;
    // Nothing else is allowed with it.
    let r = s.call_as(Some(&token), Method::GET, "/v1/nodes", None, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("only enrolls one node"), "{}", r.body);
    // An admin token does not enroll.
    let r = enroll(&s, &s.token, "edge-1").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);

    // Two hosts racing with one token: one node.
    let (a, b) = tokio::join!(enroll(&s, &token, "edge-1"), enroll(&s, &token, "edge-2"));
    let (won, lost) = if a.status == StatusCode::CREATED { (a, b) } else { (b, a) };
    assert_eq!(won.status, StatusCode::CREATED, "{}", won.body);
    assert_ne!(lost.status, StatusCode::CREATED, "{}", lost.body);
    assert_eq!(won.body["labels"], json!({"zone": "a"}));
    let name = won.body["name"].as_str().unwrap().to_owned();
    let node_token = won.body["secret"].as_str().unwrap().to_owned();
    assert!(!won.body.to_string().contains(&token), "the enrollment token is never echoed");

    // Used: refused, saying it is single-use.
    let r = enroll(&s, &token, "edge-3").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("single-use"), "{}", r.body);

    // The node's own token registers it, under that name only, with its key.
    let r = register(&s, &node_token, "elsewhere", KEY_A, &json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = register(&s, &node_token, &name, KEY_A, &json!({"zone": "a"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!((r.body["wireguard_public_key"].as_str(), &r.body["labels"]), (Some(KEY_A), &json!({"zone": "a"})));
    // Again (a restart): the same key is fine, another is refused.
    assert_eq!(register(&s, &node_token, &name, KEY_A, &json!({"zone": "a"})).await.status, StatusCode::OK);
    let r = register(&s, &node_token, &name, KEY_B, &json!({"zone": "a"})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::CONFLICT, "wireguard_public_key"), "{}", r.body);
    // A bad key is refused by the schema.
    let r = register(&s, &node_token, &name, "not-a-key", &json!({})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "wireguard_public_key"), "{}", r.body);

    // Another token cannot take a registered node's name.
    let second = enroll_token(&s, json!({})).await;
    let r = enroll(&s, &second, &name).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::CONFLICT, "name_taken"), "{}", r.body);
    // Enrollment tokens are made only as such, with a bounded life.
    let r = s.post("/v1/tokens", json!({"name": "e", "role": "enroll"})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "role"), "{}", r.body);
    let r = s.post("/v1/nodes/enroll-tokens", json!({"ttl_secs": 5})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "ttl_secs"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_loses_its_tokens_its_instances_and_its_name() {
    let s = TestServer::start().await;
    s.cp.scheduler.configure(vt_control_plane::scheduler::SchedulerSettings {
        interval: Duration::from_millis(200),
        ..Default::default()
    });
    let mut tokens = vec![];
    for name in ["n1", "n2"] {
        let token = enroll_token(&s, json!({})).await;
        let r = enroll(&s, &token, name).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let node_token = r.body["secret"].as_str().unwrap().to_owned();
        assert_eq!(register(&s, &node_token, name, KEY_A, &json!({})).await.status, StatusCode::CREATED);
        tokens.push(node_token);
    }
    for (path, name) in [("/v1/orgs", "acme"), ("/v1/orgs/acme/apps", "web"), ("/v1/orgs/acme/apps/web/envs", "prod")] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let manifest = "schema_version = 1\n\n[processes.web]\nscaling = { min = 1, max = 1 }\nresources = { cpu = 1, memory_mib = 256 }\n";
    let r = s
        .post(
            "/v1/orgs/acme/apps/web/releases",
            json!({"image": format!("acme/web@{}", digest('a')), "manifest": manifest}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let release = r.body["id"].as_str().unwrap().to_owned();
    let r = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": release})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let live = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["desired_state"] == "running")
            .map(|i| i["node_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let placed =
        common::until(&s, "/v1/orgs/acme/apps/web/envs/prod/instances", "an instance", |v| live(v).len() == 1).await;
    let on = live(&placed)[0].clone();
    let node = s.get(&format!("/v1/nodes/{on}")).await.body;
    let name = node["name"].as_str().unwrap().to_owned();
    let token = tokens[if name == "n1" { 0 } else { 1 }].clone();

    let r = s.call(Method::POST, &format!("/v1/nodes/{name}/revoke"), None, &[]).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("revoked")), "{}", r.body);
    // Its token is dead: no heartbeat, no registration.
    let r = s.call_as(Some(&token), Method::POST, &format!("/v1/nodes/{on}/heartbeat"), Some("{}"), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("revoked"), "{}", r.body);
    // Its instance is placed on the other node.
    common::until(&s, "/v1/orgs/acme/apps/web/envs/prod/instances", "the instance elsewhere", |v| {
        live(v).len() == 1 && live(v)[0] != on
    })
    .await;
    // Revoking again changes nothing.
    let r = s.call(Method::POST, &format!("/v1/nodes/{on}/revoke"), None, &[]).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("revoked")), "{}", r.body);
    // The host enrolls again under its name, as a new node.
    let again = enroll_token(&s, json!({})).await;
    let r = enroll(&s, &again, &name).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_ne!(r.body["node_id"].as_str(), Some(on.as_str()));
    let new_token = r.body["secret"].as_str().unwrap().to_owned();
    let r = register(&s, &new_token, &name, KEY_B, &json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(s.get(&format!("/v1/nodes/{name}")).await.body["status"], "ready", "the name is the new node's");
}
