//! Ingress routes over the HTTP API: create, list, get, delete, conflicts,
//! TCP port allocation and exhaustion, bad input, idempotency.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const ROUTES: &str = "/v1/orgs/acme/apps/web/envs/prod/routes";

async fn seeded() -> TestServer {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/orgs", json!({"name": "acme"})).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/orgs/acme/apps", json!({"name": "web"})).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/orgs/acme/apps/web/envs", json!({"name": "prod"})).await.status, StatusCode::CREATED);
    s
}

async fn delete(s: &TestServer, path: &str) -> Resp {
    s.call(Method::DELETE, path, None, &[]).await
}

#[tokio::test]
async fn tls_routes_create_list_get_delete() {
    let s = seeded().await;
    let mut a = s.post(ROUTES, json!({"hostname": "WWW.Example.com", "process": "web", "backend_port": 8443})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    // The env has no release: the route is taken as it is, and the answer says so.
    let notes = a.body.as_object_mut().unwrap().remove("notes").unwrap();
    assert!(notes[0].as_str().unwrap().contains("no release yet"), "{notes}");
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("route_"));
    assert_eq!(
        (a.body["protocol"].as_str(), a.body["hostname"].as_str(), a.body["port"].as_u64()),
        (Some("tls"), Some("www.example.com"), Some(443))
    );
    assert_eq!(a.body["proxy_protocol"], false);
    let mut b = s.post(ROUTES, json!({"hostname": "api.example.com", "port": 8443, "process": "api", "backend_port": 9000, "proxy_protocol": true})).await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.body);
    b.body.as_object_mut().unwrap().remove("notes");
    // The same host name on another port is another route.
    let c = s
        .post(ROUTES, json!({"hostname": "www.example.com", "port": 8443, "process": "web", "backend_port": 8443}))
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.body);

    assert_eq!(s.get(&format!("{ROUTES}/{id}")).await.body, a.body);
    let items = s.get(ROUTES).await.body["items"].as_array().unwrap().clone();
    let order: Vec<(u64, &str)> =
        items.iter().map(|r| (r["port"].as_u64().unwrap(), r["hostname"].as_str().unwrap())).collect();
    assert_eq!(order, [(443, "www.example.com"), (8443, "api.example.com"), (8443, "www.example.com")]);
    assert_eq!(s.get("/v1/routes").await.body["items"].as_array().unwrap().len(), 3);
    // A host name with routes on two ports is ambiguous; with one it names the route.
    assert_eq!(s.get(&format!("{ROUTES}/www.example.com")).await.status, StatusCode::CONFLICT);
    assert_eq!(s.get(&format!("{ROUTES}/api.example.com")).await.body, b.body);

    let d = delete(&s, &format!("{ROUTES}/{id}")).await;
    assert_eq!((d.status, &d.body["id"]), (StatusCode::OK, &a.body["id"]), "{}", d.body);
    assert_eq!(s.get(&format!("{ROUTES}/{id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(delete(&s, &format!("{ROUTES}/{id}")).await.status, StatusCode::NOT_FOUND);
    // Deleting released the host name on that port.
    let again = s.post(ROUTES, json!({"hostname": "www.example.com", "process": "web", "backend_port": 8080})).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    let types: Vec<String> = s.get("/v1/events").await.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert!(types.ends_with(&["route.deleted".to_owned(), "route.created".to_owned()]), "{types:?}");
}

#[tokio::test]
async fn same_hostname_and_port_is_refused_naming_the_field() {
    let s = seeded().await;
    assert_eq!(
        s.post(ROUTES, json!({"hostname": "a.example", "process": "web", "backend_port": 1})).await.status,
        StatusCode::CREATED
    );
    let head = s.head().await;
    // Another env of another app cannot take it either: listeners are shared.
    s.post("/v1/orgs/acme/apps", json!({"name": "other"})).await;
    s.post("/v1/orgs/acme/apps/other/envs", json!({"name": "prod"})).await;
    let head2 = s.head().await;
    assert!(head2 > head);
    for path in [ROUTES, "/v1/orgs/acme/apps/other/envs/prod/routes"] {
        let r = s.post(path, json!({"hostname": "A.example", "process": "web", "backend_port": 2})).await;
        assert_eq!(
            (r.status, r.error_code(), r.error_field()),
            (StatusCode::CONFLICT, "name_taken", "hostname"),
            "{}",
            r.body
        );
        assert!(r.body["error"]["message"].as_str().unwrap().contains("a.example"), "{}", r.body);
    }
    assert_eq!(s.head().await, head2, "refused creates write nothing");
}

#[tokio::test]
async fn tcp_ports_are_allocated_lowest_free_and_run_out() {
    let s = seeded().await;
    s.cp.ingress.set_tcp_ports(21000..=21001);
    let tcp = json!({"protocol": "tcp", "process": "db", "backend_port": 5432, "proxy_protocol": true});
    let first = s.post(ROUTES, tcp.clone()).await;
    assert_eq!((first.status, first.body["port"].as_u64()), (StatusCode::CREATED, Some(21000)), "{}", first.body);
    assert_eq!(first.body["hostname"], serde_json::Value::Null);
    let second = s.post(ROUTES, tcp.clone()).await;
    assert_eq!(second.body["port"], 21001);
    let full = s.post(ROUTES, tcp.clone()).await;
    assert_eq!(
        (full.status, full.error_code(), full.error_field()),
        (StatusCode::CONFLICT, "conflict", "port"),
        "{}",
        full.body
    );
    assert!(full.body["error"]["message"].as_str().unwrap().contains("21000-21001"), "{}", full.body);
    // Deleting frees its port, and the lowest free one is handed out next.
    assert_eq!(delete(&s, &format!("{ROUTES}/{}", first.body["id"].as_str().unwrap())).await.status, StatusCode::OK);
    let third = s.post(ROUTES, tcp).await;
    assert_eq!(third.body["port"], 21000, "{}", third.body);
}

#[tokio::test]
async fn concurrent_tcp_creates_get_distinct_ports() {
    let s = seeded().await;
    s.cp.ingress.set_tcp_ports(22000..=22999);
    let tcp = json!({"protocol": "tcp", "process": "db", "backend_port": 5432}).to_string();
    let calls = (0..6).map(|_| s.call(Method::POST, ROUTES, Some(&tcp), &[]));
    let results = futures_util::future::join_all(calls).await;
    let mut ports: Vec<u64> =
        results.iter().map(|r| r.body["port"].as_u64().unwrap_or_else(|| panic!("{}", r.body))).collect();
    ports.sort();
    assert_eq!(ports, (22000..22006).collect::<Vec<u64>>());
}

#[tokio::test]
async fn bad_route_input_names_the_field_and_writes_nothing() {
    let s = seeded().await;
    let before = s.head().await;
    let cases = vec![
        (json!({"process": "web", "backend_port": 8080}), "invalid_field", "hostname"),
        (json!({"hostname": "-bad-.example", "process": "web", "backend_port": 8080}), "invalid_field", "hostname"),
        (json!({"hostname": "10.0.0.1", "process": "web", "backend_port": 8080}), "invalid_field", "hostname"),
        (json!({"hostname": "a.example", "process": "Web", "backend_port": 8080}), "invalid_field", "process"),
        (json!({"hostname": "a.example", "process": "web", "backend_port": 0}), "invalid_field", "backend_port"),
        (json!({"hostname": "a.example", "process": "web", "backend_port": 70000}), "invalid_field", "backend_port"),
        (json!({"hostname": "a.example", "process": "web"}), "invalid_field", "backend_port"),
        (json!({"hostname": "a.example", "port": 0, "process": "web", "backend_port": 1}), "invalid_field", "port"),
        (json!({"hostname": "a.example", "port": 20500, "process": "web", "backend_port": 1}), "invalid_field", "port"),
        (
            json!({"protocol": "tcp", "hostname": "a.example", "process": "web", "backend_port": 1}),
            "invalid_field",
            "hostname",
        ),
        (json!({"protocol": "tcp", "port": 20001, "process": "web", "backend_port": 1}), "invalid_field", "port"),
        (json!({"protocol": "udp", "process": "web", "backend_port": 1}), "invalid_field", "protocol"),
        (json!({"hostname": "a.example", "process": "web", "backend_port": 1, "weight": 2}), "unknown_field", "weight"),
    ];
    for (body, code, field) in cases {
        let r = s.post(ROUTES, body.clone()).await;
        assert_eq!((r.status.as_u16() / 100, r.error_code(), r.error_field()), (4, code, field), "{body}: {}", r.body);
    }
    assert_eq!(
        s.post(
            "/v1/orgs/acme/apps/web/envs/nope/routes",
            json!({"hostname": "a.example", "process": "web", "backend_port": 1})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(delete(&s, &format!("{ROUTES}/route_01jd8x6k3v9q4m2t7r5w0y1zcb")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(s.head().await, before);
}

#[tokio::test]
async fn route_mutations_replay_with_an_idempotency_key() {
    let s = seeded().await;
    let body = json!({"hostname": "a.example", "process": "web", "backend_port": 8443}).to_string();
    let first = s.call(Method::POST, ROUTES, Some(&body), &[("idempotency-key", "r1")]).await;
    let again = s.call(Method::POST, ROUTES, Some(&body), &[("idempotency-key", "r1")]).await;
    assert_eq!((first.status, again.status), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first.body, again.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    let path = format!("{ROUTES}/{}", first.body["id"].as_str().unwrap());
    let d1 = s.call(Method::DELETE, &path, None, &[("idempotency-key", "d1")]).await;
    let d2 = s.call(Method::DELETE, &path, None, &[("idempotency-key", "d1")]).await;
    assert_eq!((d1.status, d2.status, d1.body == d2.body), (StatusCode::OK, StatusCode::OK, true));
}

#[tokio::test]
async fn instances_report_an_address_and_metrics_need_an_ingress() {
    use vt_events::{Actor, Event, InstanceAllocated, NewEvent, Resources};
    use vt_ids::*;
    let s = seeded().await;
    let env = s.get("/v1/orgs/acme/apps/web/envs/prod").await.body;
    let parse = |k: &str| env[k].as_str().unwrap().to_owned();
    let instance_id = InstanceId::new();
    let allocated = Event::InstanceAllocated(InstanceAllocated {
        org_id: OrgId::parse(&parse("org_id")).unwrap(),
        app_id: AppId::parse(&parse("app_id")).unwrap(),
        env_id: EnvId::parse(&parse("id")).unwrap(),
        instance_id,
        process: "web".into(),
        release_id: ReleaseId::new(),
        deploy_id: None,
        node_id: NodeId::new(),
        resources: Resources { cpu_millis: 100, memory_mib: 64 },
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
    s.cp.fresh().await.unwrap();
    let path = format!("/v1/instances/{instance_id}/status");
    let r = s.post(&path, json!({"status": "running", "address": "not-an-ip"})).await;
    assert_eq!((r.error_code(), r.error_field()), ("invalid_field", "address"), "{}", r.body);
    let r = s.post(&path, json!({"status": "running", "address": "fd00::7"})).await;
    assert_eq!((r.status, r.body["address"].as_str()), (StatusCode::OK, Some("fd00::7")), "{}", r.body);
    // The same report again changes nothing (no status report of the instance; the scheduler
    // may append its own events meanwhile: this instance's node does not exist); a report
    // without the address keeps it.
    let reports = || async {
        let events = s.get("/v1/events?limit=1000").await.body;
        let id = instance_id.to_string();
        let of_it =
            |e: &&serde_json::Value| e["aggregate_id"] == id.as_str() && e["event_type"] == "instance.status_reported";
        events["events"].as_array().unwrap().iter().filter(of_it).count()
    };
    let before = reports().await;
    assert!(before > 0, "the first report is recorded");
    s.post(&path, json!({"status": "running", "address": "fd00::7"})).await;
    assert_eq!(reports().await, before);
    let r = s.post(&path, json!({"status": "stopping"})).await;
    assert_eq!(r.body["address"], "fd00::7");
    // Metrics are the operator's: an admin token.
    let m = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(m.status(), StatusCode::UNAUTHORIZED);
    let m = s.http.get(s.url("/metrics")).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(m.status(), StatusCode::NOT_FOUND);
    s.cp.ingress.set_metrics(|| "vt_ingress_up 1\n".into());
    let m = s.http.get(s.url("/metrics")).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(m.status(), StatusCode::OK);
    assert!(m.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(m.text().await.unwrap(), "vt_ingress_up 1\n");
}

#[tokio::test]
async fn routes_are_checked_against_the_envs_release() {
    let s = seeded().await;
    let rel = s
        .post(
            "/v1/orgs/acme/apps/web/releases",
            json!({"image": format!("acme/web@{}", digest('a')), "manifest": manifest()}),
        )
        .await;
    assert_eq!(rel.status, StatusCode::CREATED, "{}", rel.body);
    let dep = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": rel.body["id"]})).await;
    assert_eq!(dep.status, StatusCode::CREATED, "{}", dep.body);
    let before = s.head().await;
    let cases = [
        (json!({"hostname": "a.example", "process": "api", "backend_port": 8080}), "process", "no process `api`"),
        (
            json!({"hostname": "a.example", "process": "web", "backend_port": 9000}),
            "backend_port",
            "tcp ports are 8080",
        ),
        (json!({"protocol": "tcp", "process": "web", "backend_port": 22}), "backend_port", "tcp ports are 8080"),
    ];
    for (body, field, says) in cases {
        let r = s.post(ROUTES, body.clone()).await;
        assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, field), "{body}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(says), "{body}: {}", r.body);
    }
    assert_eq!(s.head().await, before, "nothing was written");
    let ok = s.post(ROUTES, json!({"hostname": "a.example", "process": "web", "backend_port": 8080})).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    assert!(ok.body.get("notes").is_none(), "checked against the release: nothing to note: {}", ok.body);
}

#[tokio::test]
async fn tls_routes_keep_off_privileged_ports_and_the_apis_port() {
    let s = seeded().await;
    let api = s.addr.port();
    let route = |port: u16| json!({"hostname": "a.example", "port": port, "process": "web", "backend_port": 8080});
    for port in [1, 22, 80, 1023, api] {
        let r = s.post(ROUTES, route(port)).await;
        assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "port"), "{port}: {}", r.body);
    }
    for port in [443, 1024, 8443] {
        let r = s.post(ROUTES, route(port)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{port}: {}", r.body);
    }
    // TCP routes are allocated around the API's port when the range holds it.
    s.cp.ingress.set_tcp_ports(api..=api.saturating_add(1));
    let r = s.post(ROUTES, json!({"protocol": "tcp", "process": "web", "backend_port": 8080})).await;
    assert_eq!((r.status, r.body["port"].as_u64()), (StatusCode::CREATED, Some(u64::from(api) + 1)), "{}", r.body);
}
