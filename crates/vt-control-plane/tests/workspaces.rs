//! Workspaces through the API without a runtime (the runtime's side is crates/vt/tests/workspaces.rs
//! and workspace_cli.rs): answers decided before the commit, so a replayed key answers the
//! same; the hidden app stays hidden; bad input names its field.

mod common;

use common::{digest, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn world() -> TestServer {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/orgs", json!({"name": "acme"})).await.status, StatusCode::CREATED);
    let r = s.post("/v1/nodes", json!({"name": "n1", "capacity": {"cpu_millis": 4000, "memory_mib": 8192}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    s
}

fn create(name: &str) -> String {
    json!({"name": name, "org": "acme", "image": format!("acme/ide@{}", digest('a')), "cpus": 1, "memory_mib": 512, "disk_gib": 1})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_key_answers_what_the_first_request_did() {
    let s = world().await;
    let key = [("Idempotency-Key", "create-dev-1")];
    let first = s.call(Method::POST, "/v1/workspaces", Some(&create("dev")), &key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!((first.body["name"].as_str(), first.body["status"].as_str()), (Some("dev"), Some("creating")));
    let again = s.call(Method::POST, "/v1/workspaces", Some(&create("dev")), &key).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    assert_eq!(again.body, first.body, "the same answer, not an empty one");

    let key = [("Idempotency-Key", "stop-dev-1")];
    let stop = s.call(Method::POST, "/v1/workspaces/dev/stop", None, &key).await;
    assert_eq!((stop.status, stop.body["desired"].as_str()), (StatusCode::OK, Some("stopped")), "{}", stop.body);
    assert_eq!(s.call(Method::POST, "/v1/workspaces/dev/stop", None, &key).await.body, stop.body);

    let key = [("Idempotency-Key", "port-dev-1")];
    let body = json!({"port": 3000}).to_string();
    let added = s.call(Method::POST, "/v1/workspaces/dev/ports", Some(&body), &key).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body, json!({"items": [{"port": 3000, "path": "/workspace/dev/port/3000/"}]}));
    assert_eq!(s.call(Method::POST, "/v1/workspaces/dev/ports", Some(&body), &key).await.body, added.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hidden_app_stays_hidden_and_bad_input_names_its_field() {
    let s = world().await;
    let r = s.call(Method::POST, "/v1/workspaces", Some(&create("dev")), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Not one of the org's apps, by name or by listing; the name `dev` is free for an app.
    assert_eq!(s.get("/v1/orgs/acme/apps").await.body, json!({"items": []}));
    assert_eq!(s.get("/v1/orgs/acme/apps/dev").await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.post("/v1/orgs/acme/apps", json!({"name": "dev"})).await.status, StatusCode::CREATED);

    let r = s.call(Method::POST, "/v1/workspaces", Some(&create("dev")), &[]).await;
    assert_eq!((r.status, r.error_code(), r.error_field()), (StatusCode::CONFLICT, "name_taken", "name"), "{}", r.body);
    for (body, field) in [
        (json!({"name": "Bad_Name", "org": "acme"}), "name"),
        (json!({"name": "x", "org": "nope"}), "org"),
        (json!({"name": "x", "org": "acme", "cpus": 0}), "cpus"),
        (json!({"name": "x", "org": "acme", "image": "other/ide:v1"}), "image"),
        (json!({"name": "x", "org": "acme"}), "image"),
    ] {
        let r = s.post("/v1/workspaces", body.clone()).await;
        assert_eq!(r.error_field(), field, "{body}: {}", r.body);
    }
    for (port, status) in [("0", StatusCode::UNPROCESSABLE_ENTITY), ("70000", StatusCode::UNPROCESSABLE_ENTITY)] {
        let r = s.call(Method::DELETE, &format!("/v1/workspaces/dev/ports/{port}"), None, &[]).await;
        assert_eq!((r.status, r.error_field()), (status, "port"), "{port}: {}", r.body);
    }
    let r = s.post("/v1/workspaces/dev/ports", json!({"port": 8080})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "port"), "{}", r.body);
    // Deleting twice: the second is a conflict; the name stays taken until the disk is gone.
    assert_eq!(s.call(Method::DELETE, "/v1/workspaces/dev", None, &[]).await.status, StatusCode::ACCEPTED);
    let r = s.call(Method::DELETE, "/v1/workspaces/dev", None, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = s.call(Method::POST, "/v1/workspaces/dev/start", None, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
}
