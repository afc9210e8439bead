//! The HTTP API end to end over loopback: real server, real SQLite, real HTTP.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn seeded() -> TestServer {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/orgs", json!({"name": "acme"})).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/orgs/acme/apps", json!({"name": "web"})).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/orgs/acme/apps/web/envs", json!({"name": "prod"})).await.status, StatusCode::CREATED);
    s
}

#[tokio::test]
async fn create_then_read_your_writes_by_name_and_id() {
    let s = TestServer::start().await;
    let r = s.post("/v1/orgs", json!({"name": "acme"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("org_"));
    assert!(r.headers.get("vt-seq").is_some());
    // Immediately readable (the mutation waited for its views), by id and by name, and equal to the create response.
    assert_eq!(s.get(&format!("/v1/orgs/{id}")).await.body, r.body);
    assert_eq!(s.get("/v1/orgs/acme").await.body, r.body);
    assert_eq!(s.get("/v1/orgs").await.body["items"][0], r.body);

    let app = s.post("/v1/orgs/acme/apps", json!({"name": "web", "description": "the site"})).await;
    assert_eq!(app.status, StatusCode::CREATED);
    assert_eq!(s.get("/v1/orgs/acme/apps/web").await.body, app.body);
    let env = s.post(&format!("/v1/orgs/{id}/apps/web/envs"), json!({"name": "prod"})).await;
    assert_eq!(env.status, StatusCode::CREATED);
    assert_eq!(s.get("/v1/orgs/acme/apps/web/envs/prod").await.body, env.body);
    assert!(s.get("/v1/orgs/acme/apps/web/envs").await.body["items"].as_array().unwrap().len() == 1);
}

#[tokio::test]
async fn lists_are_sorted_by_name() {
    let s = TestServer::start().await;
    for name in ["zeta", "alpha", "mid"] {
        s.post("/v1/orgs", json!({"name": name})).await;
    }
    let names: Vec<String> = s.get("/v1/orgs").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let s = seeded().await;
    let before = s.head().await;
    let long = format!("{{\"name\": \"{}\"}}", "a".repeat(64));
    let tagged = json!({"image": "acme/web:v1", "manifest": manifest()}).to_string();
    let bad_manifest = json!({"image": format!("acme/web@{}", digest('a')), "manifest": "schema_version = 1\n[processes.web]\ncolor = 1\n"}).to_string();
    let cases: Vec<(&str, &str, StatusCode, &str, &str)> = vec![
        ("/v1/orgs", "{\"name\": ", StatusCode::BAD_REQUEST, "malformed_request", ""),
        ("/v1/orgs", "[1]", StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "body"),
        ("/v1/orgs", "{\"name\": \"ok\", \"color\": 1}", StatusCode::UNPROCESSABLE_ENTITY, "unknown_field", "color"),
        ("/v1/orgs", "{}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "name"),
        ("/v1/orgs", "{\"name\": 5}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "name"),
        ("/v1/orgs", "{\"name\": \"Acme\"}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "name"),
        ("/v1/orgs", "{\"name\": \"has space\"}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "name"),
        ("/v1/orgs", &long, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "name"),
        ("/v1/orgs", "{\"name\": \"acme\"}", StatusCode::CONFLICT, "name_taken", "name"),
        ("/v1/orgs/nope/apps", "{\"name\": \"web\"}", StatusCode::NOT_FOUND, "not_found", ""),
        ("/v1/orgs/acme/apps/nope/envs", "{\"name\": \"prod\"}", StatusCode::NOT_FOUND, "not_found", ""),
        (
            "/v1/orgs/acme/apps",
            "{\"name\": \"web2\", \"description\": \"a\\u0000b\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "description",
        ),
        ("/v1/orgs/acme/apps/web/releases", &tagged, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "image"),
        (
            "/v1/orgs/acme/apps/web/releases",
            &bad_manifest,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "manifest",
        ),
        (
            "/v1/orgs/acme/apps/web/envs/prod/deploys",
            "{\"release_id\": \"rel_x\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "release_id",
        ),
        (
            "/v1/orgs/acme/apps/web/envs/prod/deploys",
            "{\"release_id\": \"rel_01jd8x6k3v9q4m2t7r5w0y1zcb\"}",
            StatusCode::NOT_FOUND,
            "not_found",
            "release_id",
        ),
        (
            "/v1/nodes",
            "{\"name\": \"n1\", \"capacity\": {\"cpu_millis\": 0, \"memory_mib\": 1}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "capacity.cpu_millis",
        ),
        (
            "/v1/nodes",
            "{\"name\": \"n1\", \"capacity\": {\"cpu_millis\": 1000, \"memory_mib\": 1024, \"gpus\": 1}}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_field",
            "capacity.gpus",
        ),
    ];
    for (path, body, status, code, field) in cases {
        let r = s.call(Method::POST, path, Some(body), &[]).await;
        assert_eq!((r.status, r.error_code(), r.error_field()), (status, code, field), "{path} {body}: {}", r.body);
        assert!(r.body["error"]["request_id"].as_str().unwrap().starts_with("req_"));
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = s.call(Method::POST, "/v1/orgs", Some("{\"name\":\"x\"}"), &[("content-type", "text/plain")]).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(s.head().await, before, "no rejected request wrote an event");
    assert_eq!(s.get("/v1/orgs").await.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_a_different_body() {
    let s = TestServer::start().await;
    let key = [("idempotency-key", "create-acme-1")];
    let body = "{\"name\": \"acme\"}";
    let first = s.call(Method::POST, "/v1/orgs", Some(body), &key).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let head = s.head().await;
    let again = s.call(Method::POST, "/v1/orgs", Some(body), &key).await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body),
        "the same key and body replays the original response"
    );
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(s.head().await, head, "the replay appended nothing");
    let other = s.call(Method::POST, "/v1/orgs", Some("{\"name\": \"other\"}"), &key).await;
    assert_eq!((other.status, other.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"));
    let bad = s.call(Method::POST, "/v1/orgs", Some(body), &[("idempotency-key", "has space")]).await;
    assert_eq!(bad.error_field(), "Idempotency-Key");
    // Concurrent requests with one key: one acts, the others replay it.
    let mut tasks = vec![];
    for _ in 0..6 {
        let http = s.http.clone();
        let (url, token) = (s.url("/v1/orgs"), s.token.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("idempotency-key", "race")
                .header("content-type", "application/json")
                .body("{\"name\":\"race\"}")
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }));
    }
    let mut bodies = vec![];
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        bodies.push(body);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "every racer got the same response");
}

#[tokio::test]
async fn idempotency_keys_survive_a_restart() {
    let s = TestServer::start().await;
    let token = s.token.clone();
    let first = s.call(Method::POST, "/v1/orgs", Some("{\"name\": \"acme\"}"), &[("idempotency-key", "k")]).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let dir = s.stop().await;
    let store = open(dir.path(), None).await;
    let s = TestServer::serve(dir, store, token).await;
    let again = s.call(Method::POST, "/v1/orgs", Some("{\"name\": \"acme\"}"), &[("idempotency-key", "k")]).await;
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!((again.status, again.body), (StatusCode::CREATED, first.body));
}

#[tokio::test]
async fn tokens_are_required_and_never_logged() {
    let s = TestServer::start().await;
    let r = s.call_as(None, Method::GET, "/v1/orgs", None, &[]).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    // Both schemes the API takes: a browser answers the basic one with the console user's
    // credentials it holds for the realm (the web console's).
    let challenges: Vec<_> = r.headers.get_all("www-authenticate").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(challenges, ["Bearer realm=\"vt\"", "Basic realm=\"vt\", charset=\"UTF-8\""]);
    for bad in ["vt_nope", &format!("vt_{}", "0".repeat(64)), ""] {
        let r = s.call_as(Some(bad), Method::GET, "/v1/orgs", None, &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    assert_eq!(s.http.get(s.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    // A node token registers its node but creates no org.
    let node_token = s.issue(json!({"name": "agent", "role": "node", "node": "n1"})).await;
    let r = s.call_as(Some(&node_token), Method::POST, "/v1/orgs", Some("{\"name\": \"x\"}"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let register = json!({"name": "n1", "capacity": {"cpu_millis": 2000, "memory_mib": 2048}}).to_string();
    let r = s.call_as(Some(&node_token), Method::POST, "/v1/nodes", Some(&register), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // No secret is in the log.
    let events = s.get("/v1/events?limit=1000").await.body.to_string();
    assert!(!events.contains(&node_token[3..]) && !events.contains(&s.token[3..]));
}

#[tokio::test]
async fn release_deploy_scale_and_describe() {
    let s = seeded().await;
    let rel = s
        .post(
            "/v1/orgs/acme/apps/web/releases",
            json!({"image": format!("acme/web@{}", digest('a')), "manifest": manifest()}),
        )
        .await;
    assert_eq!(rel.status, StatusCode::CREATED, "{}", rel.body);
    let rel_id = rel.body["id"].as_str().unwrap().to_owned();
    assert!(rel.body["manifest_hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(rel.body["image_digest"], digest('a'));
    assert_eq!(s.get(&format!("/v1/orgs/acme/apps/web/releases/{rel_id}")).await.body, rel.body);

    let dep = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": rel_id})).await;
    assert_eq!(dep.status, StatusCode::CREATED, "{}", dep.body);
    assert_eq!(dep.body["status"], "pending");
    let env = s.get("/v1/orgs/acme/apps/web/envs/prod").await.body;
    assert_eq!(env["desired_release_id"], rel_id.as_str());
    // The deploy set the initial scale from the manifest's scaling.min.
    let scale = s.get("/v1/orgs/acme/apps/web/envs/prod/scale").await.body;
    assert_eq!(scale["items"][0]["process"], "web");
    assert_eq!(scale["items"][0]["instances"], 1);

    let r = s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {"web": 3}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {"web": 9}})).await;
    assert_eq!((r.error_code(), r.error_field()), ("invalid_field", "processes.web"));
    let r = s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {"worker": 1}})).await;
    assert_eq!((r.error_code(), r.error_field()), ("invalid_field", "processes.worker"));
    let head = s.head().await;
    let r = s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {"web": 3}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.head().await, head, "setting the same count records nothing");

    let second = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": rel_id})).await;
    let first = s.get(&format!("/v1/orgs/acme/apps/web/envs/prod/deploys/{}", dep.body["id"].as_str().unwrap())).await;
    assert_eq!(first.body["status"], "superseded", "an unfinished deploy is superseded by the next");
    let deploys = s.get("/v1/orgs/acme/apps/web/envs/prod/deploys").await.body;
    assert_eq!(deploys["items"][0]["id"], second.body["id"], "newest first");

    let d = s.get("/v1/orgs/acme/apps/web/envs/prod/describe").await.body;
    let web = &d["processes"][0];
    assert_eq!((web["process"].as_str(), web["desired_instances"].as_u64()), (Some("web"), Some(3)));
    assert!(web["differences"][0].as_str().unwrap().contains("3 instance(s) desired, 0 allocated"), "{d}");
}

#[tokio::test]
async fn nodes_register_idempotently_and_heartbeat() {
    let s = TestServer::start().await;
    let reg = json!({"name": "node-1", "capacity": {"cpu_millis": 4000, "memory_mib": 8192}, "labels": {"zone": "a"}, "address": "fd00::1"});
    let first = s.post("/v1/nodes", reg.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = s.post("/v1/nodes", reg).await;
    assert_eq!(
        (again.status, &again.body["id"]),
        (StatusCode::OK, &first.body["id"]),
        "re-registering by name returns the same node"
    );
    let hb =
        s.post("/v1/nodes/node-1/heartbeat", json!({"allocatable": {"cpu_millis": 3000, "memory_mib": 6000}})).await;
    assert_eq!(hb.status, StatusCode::OK, "{}", hb.body);
    let info = s.get("/v1/nodes/node-1").await.body;
    assert_eq!(info["allocatable"]["memory_mib"], 6000);
    assert!(info["last_heartbeat_at"].is_string());
    let types: Vec<String> = s.get("/v1/events").await.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        types.ends_with(&[
            "node.registered".to_owned(),
            "node.subnet_assigned".to_owned(),
            "node.ipv4_range_assigned".to_owned(),
            "node.capacity_changed".to_owned()
        ]),
        "{types:?}"
    );

    // Every node gets its own /64 of one cluster ULA /48.
    let subnet1 = first.body["subnet"].as_str().unwrap().to_owned();
    assert_eq!(again.body["subnet"], first.body["subnet"], "re-registering keeps the subnet");
    let second =
        s.post("/v1/nodes", json!({"name": "node-2", "capacity": {"cpu_millis": 1000, "memory_mib": 1024}})).await;
    let subnet2 = second.body["subnet"].as_str().unwrap().to_owned();
    let net = |s: &str| s.strip_suffix("/64").unwrap().parse::<std::net::Ipv6Addr>().unwrap().segments();
    let (a, b) = (net(&subnet1), net(&subnet2));
    assert_eq!(a[0] & 0xff00, 0xfd00, "a ULA prefix: {subnet1}");
    assert_eq!((&a[..3], a[3], b[3]), (&b[..3], 1, 2), "{subnet1} then {subnet2}");
}

#[tokio::test]
async fn events_page_and_follow() {
    let s = seeded().await;
    let page = s.get("/v1/events?after=0&limit=2").await.body;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(page["next_after"], events[1]["seq"]);
    let e = &events[1];
    for field in [
        "seq",
        "event_id",
        "event_type",
        "schema_version",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        "org_id",
        "request_id",
        "correlation_id",
        "actor",
        "occurred_at",
        "payload",
    ] {
        assert!(e.get(field).is_some(), "envelope has {field}: {e}");
    }
    let r = s.get("/v1/events?limit=0").await;
    assert_eq!(r.error_field(), "limit");
    let r = s.get("/v1/events?after=-1").await;
    assert_eq!(r.error_code(), "invalid_field");

    // follow: the existing events, then new ones as they are appended.
    let head = s.head().await;
    let resp = s
        .http
        .get(s.url(&format!("/v1/events?follow=true&after={}", head - 1)))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let mut buf = String::new();
    let mut wrote = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while buf.lines().count() < 2 {
        if !wrote && buf.lines().count() == 1 {
            s.post("/v1/orgs", json!({"name": "followed"})).await;
            wrote = true;
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("follow delivers within 10s")
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        if !wrote && buf.lines().count() >= 1 {
            s.post("/v1/orgs", json!({"name": "followed"})).await;
            wrote = true;
        }
    }
    let lines: Vec<serde_json::Value> = buf.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["seq"], head);
    assert_eq!(lines[1]["seq"], head + 1);
    assert_eq!(lines[1]["payload"]["name"], "followed");
}

#[tokio::test]
async fn read_waits_for_min_seq_and_rebuild_matches() {
    let s = seeded().await;
    let head = s.head().await;
    let r = s.call(Method::GET, "/v1/orgs", None, &[("vt-min-seq", &head.to_string())]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.call(Method::GET, "/v1/orgs", None, &[("vt-min-seq", &(head + 100).to_string())]).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::SERVICE_UNAVAILABLE, "projection_lag"));
    let status = s.get("/v1/system/status").await.body;
    assert_eq!(status["projections"].as_array().unwrap().len(), vt_views::ViewKind::ALL.len());
    let report = s.call(Method::POST, "/v1/system/rebuild-views", None, &[]).await.body;
    assert_eq!(report["differing_rows"], json!([]), "{report}");
    assert!(report["rows"].as_u64().unwrap() >= 3);
}

#[tokio::test]
async fn unknown_endpoint_and_openapi() {
    let s = TestServer::start().await;
    let r = s.get("/v1/nope").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::NOT_FOUND, "not_found"));
    let doc: serde_json::Value = s.http.get(s.url("/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/v1/orgs"]["post"]["operationId"] == "org_create");
}

#[tokio::test]
async fn a_node_follows_its_instances_by_cursor() {
    let s = TestServer::start().await;
    let reg = json!({"name": "node-1", "capacity": {"cpu_millis": 1000, "memory_mib": 1024}});
    assert_eq!(s.post("/v1/nodes", reg).await.status, StatusCode::CREATED);
    let first = s.get("/v1/nodes/node-1/instances").await.body;
    let seq = first["seq"].as_u64().expect("a cursor");
    assert_eq!(first["items"], json!([]));

    // Nothing changes: the answer comes after `wait_ms`, at the same position.
    let t = std::time::Instant::now();
    let same = s.get(&format!("/v1/nodes/node-1/instances?after={seq}&wait_ms=300")).await.body;
    assert!(t.elapsed() >= std::time::Duration::from_millis(300), "{:?}", t.elapsed());
    assert_eq!(same["seq"].as_u64(), Some(seq));

    // A change while a request waits answers it at once, past the cursor.
    let waiting = {
        let url = format!("http://{}/v1/nodes/node-1/instances?after={seq}&wait_ms=15000", s.addr);
        let req = s.http.get(url).bearer_auth(&s.token);
        tokio::spawn(async move { req.send().await.unwrap().json::<serde_json::Value>().await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    s.post("/v1/nodes/node-1/heartbeat", json!({"allocatable": {"cpu_millis": 500, "memory_mib": 512}})).await;
    let moved = waiting.await.unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(moved["seq"].as_u64().unwrap() > seq, "{moved}");

    let r = s.get("/v1/nodes/node-1/instances?after=x").await;
    assert_eq!(
        (r.status, r.error_code(), r.error_field()),
        (StatusCode::BAD_REQUEST, "invalid_field", "after"),
        "{}",
        r.body
    );
    let r = s.get("/v1/nodes/node-1/instances?since=1").await;
    assert_eq!(r.error_code(), "unknown_field", "unknown parameters are refused: {}", r.body);
    assert!(r.body.to_string().contains("since"), "{}", r.body);
}

/// Deploys racing on one env: each one that commits was decided from the env as the one
/// before it left it (its `previous_release_id` is that deploy's release); a loser is refused
/// (409), never recorded on a stale view. The env's version is pinned before its view is read.
#[tokio::test]
async fn racing_deploys_each_decide_from_the_env_the_last_one_left() {
    let s = seeded().await;
    let mut releases = vec![];
    for c in ['a', 'b', 'c', 'd'] {
        let rel = s
            .post(
                "/v1/orgs/acme/apps/web/releases",
                json!({"image": format!("acme/web@{}", digest(c)), "manifest": manifest()}),
            )
            .await;
        assert_eq!(rel.status, StatusCode::CREATED, "{}", rel.body);
        releases.push(rel.body["id"].as_str().unwrap().to_owned());
    }
    for round in 0..5 {
        let tasks: Vec<_> = releases
            .iter()
            .enumerate()
            .map(|(i, rel)| {
                let (http, url, token) =
                    (s.http.clone(), s.url("/v1/orgs/acme/apps/web/envs/prod/deploys"), s.token.clone());
                let body = json!({"release_id": rel}).to_string();
                tokio::spawn(async move {
                    let r = http
                        .post(url)
                        .bearer_auth(token)
                        .header("idempotency-key", format!("race-{round}-{i}"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    r.status()
                })
            })
            .collect();
        for t in tasks {
            let status = t.await.unwrap();
            assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT, "{status}");
        }
    }
    // In log order, every deploy's previous release is the release of the deploy before it.
    let deploys = s.get("/v1/orgs/acme/apps/web/envs/prod/deploys").await.body;
    let mut items: Vec<serde_json::Value> = deploys["items"].as_array().unwrap().clone();
    items.reverse(); // newest first → oldest first
    assert!(items.len() >= 5, "one deploy a round at least: {}", items.len());
    for pair in items.windows(2) {
        assert_eq!(pair[1]["previous_release_id"], pair[0]["release_id"], "{:#}", pair[1]);
    }
}

/// A node's disk report rides on its heartbeat: kept as current state (no event, however often
/// it changes), shown by `GET /v1/nodes` and `GET /v1/nodes/{node}`, kept when a heartbeat
/// carries none (an older agent), and refused, naming the field and writing nothing, when no
/// filesystem could give it.
#[tokio::test]
async fn a_node_reports_its_disk_with_its_heartbeat() {
    let s = TestServer::start().await;
    let reg = json!({"name": "node-1", "capacity": {"cpu_millis": 4000, "memory_mib": 8192}});
    assert_eq!(s.post("/v1/nodes", reg).await.status, StatusCode::CREATED);
    let node = s.get("/v1/nodes/node-1").await.body;
    assert!(node["disk"].is_null() && node["disk_reported_at"].is_null(), "no report yet: {node}");
    let before = s.get("/v1/events").await.body["head"].clone();
    let report = |snapshots_bytes: u64| {
        json!({
            "total_bytes": 100u64 << 30,
            "free_bytes": 60u64 << 30,
            "reserve_bytes": 5u64 << 30,
            "budget_free_bytes": 55u64 << 30,
            "used": {
                "images_bytes": 2u64 << 30,
                "scratch_bytes": 512u64 << 20,
                "volumes_bytes": 10u64 << 30,
                "snapshots_bytes": snapshots_bytes,
                "snapshots": u64::from(snapshots_bytes > 0),
                "logs_bytes": 3u64 << 20,
            },
        })
    };
    let hb = s.post("/v1/nodes/node-1/heartbeat", json!({"disk": report(128 << 20)})).await;
    assert_eq!(hb.status, StatusCode::OK, "{}", hb.body);
    assert_eq!(hb.body["disk"], report(128 << 20), "the answer shows it");
    let node = s.get("/v1/nodes/node-1").await.body;
    assert_eq!(node["disk"], report(128 << 20));
    assert_eq!(node["disk_reported_at"], node["last_heartbeat_at"]);
    // A snapshot gone: the next report says so.
    s.post("/v1/nodes/node-1/heartbeat", json!({"disk": report(0)})).await;
    let listed = s.get("/v1/nodes").await.body;
    assert_eq!(listed["items"][0]["disk"], report(0), "{listed}");
    // An older agent's heartbeat (no report): the last report stays, with when it came.
    let reported_at = s.get("/v1/nodes/node-1").await.body["disk_reported_at"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(s.post("/v1/nodes/node-1/heartbeat", json!({})).await.status, StatusCode::OK);
    let node = s.get("/v1/nodes/node-1").await.body;
    assert_eq!((&node["disk"], &node["disk_reported_at"]), (&report(0), &reported_at));
    assert_ne!(node["last_heartbeat_at"], reported_at);
    assert_eq!(s.get("/v1/events").await.body["head"], before, "disk reports are not events");
    let last_beat = node["last_heartbeat_at"].clone();

    // Refused, naming the field; the last report stays as it was.
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut r = report(0);
        f(&mut r);
        json!({ "disk": r })
    };
    for (body, field) in [
        (with(&|r| r["free_bytes"] = json!(-1)), "disk.free_bytes"),
        (with(&|r| r["used"]["snapshots_bytes"] = json!(-5)), "disk.used.snapshots_bytes"),
        (with(&|r| r["total_bytes"] = json!(1u64 << 53)), "disk.total_bytes"),
        (with(&|r| r["used"]["images_bytes"] = json!(u64::MAX)), "disk.used.images_bytes"),
        (with(&|r| r["used"]["logs_bytes"] = json!(1e300)), "disk.used.logs_bytes"),
        (with(&|r| r["reserve_bytes"] = json!("5GiB")), "disk.reserve_bytes"),
        (
            with(&|r| r["used"].as_object_mut().unwrap().remove("volumes_bytes").map(drop).unwrap()),
            "disk.used.volumes_bytes",
        ),
        (with(&|r| r["used"]["extra_bytes"] = json!(1)), "disk.used.extra_bytes"),
        (with(&|r| r["free_bytes"] = json!(101u64 << 30)), "disk.free_bytes"),
        (with(&|r| r["budget_free_bytes"] = json!(61u64 << 30)), "disk.budget_free_bytes"),
        (with(&|r| r["used"]["volumes_bytes"] = json!(99u64 << 30)), "disk.used"),
    ] {
        let r = s.post("/v1/nodes/node-1/heartbeat", body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.body);
        assert_eq!(r.error_field(), field, "{body}: {}", r.body);
        let name = field.rsplit('.').next().unwrap();
        assert!(r.body["error"]["message"].as_str().unwrap().contains(name), "{}", r.body);
    }
    let node = s.get("/v1/nodes/node-1").await.body;
    assert_eq!((&node["disk"], &node["disk_reported_at"]), (&report(0), &reported_at), "nothing written");
    assert_eq!(node["last_heartbeat_at"], last_beat, "a refused heartbeat is no heartbeat");
}
