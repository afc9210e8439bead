//! The API accepts exactly what its contract allows (issue #23), over real HTTP:
//! cursors, JSON bodies (content type, size, framing, trailing bytes, duplicate keys,
//! objects as arrays), ranges from the OpenAPI document, node labels, repeated headers,
//! and error messages that never echo more than a cut of the input.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn seeded() -> TestServer {
    let s = TestServer::start().await;
    assert_eq!(s.post("/v1/orgs", json!({"name": "acme"})).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/orgs/acme/apps", json!({"name": "web"})).await.status, StatusCode::CREATED);
    assert_eq!(s.post("/v1/orgs/acme/apps/web/envs", json!({"name": "prod"})).await.status, StatusCode::CREATED);
    s
}

fn message(r: &Resp) -> &str {
    r.body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn event_cursors_beyond_the_log_are_refused_not_wrapped() {
    let s = seeded().await;
    let head = s.head().await;
    for after in ["9223372036854775808", "18446744073709551615", "18446744073709551616", "-1", "1e3", "x"] {
        for follow in ["", "&follow=true"] {
            let r = s.get(&format!("/v1/events?after={after}{follow}")).await;
            assert_eq!(
                (r.status, r.error_code(), r.error_field()),
                (StatusCode::BAD_REQUEST, "invalid_field", "after"),
                "{after}{follow}: {}",
                r.body
            );
        }
    }
    // The largest position is a cursor like any other: past the head, nothing.
    let r = s.get("/v1/events?after=9223372036854775807").await;
    assert_eq!((r.status, r.body["events"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{}", r.body);
    assert_eq!(r.body["head"].as_u64(), Some(head));
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=4294967296", "limit"),
        ("after=1&after=2", "after"),
        ("follow=yes", "follow"),
    ] {
        let r = s.get(&format!("/v1/events?{query}")).await;
        assert_eq!((r.status, r.error_field()), (StatusCode::BAD_REQUEST, field), "{query}: {}", r.body);
    }
    let r = s.get("/v1/nodes/n1/instances?after=9223372036854775808").await;
    assert_eq!((r.status, r.error_field()), (StatusCode::BAD_REQUEST, "after"), "{}", r.body);
    let r = s.get("/v1/nodes/n1/instances?wait_ms=20001").await;
    assert_eq!((r.status, r.error_field()), (StatusCode::BAD_REQUEST, "wait_ms"), "{}", r.body);
    // `Vt-Min-Seq` is a log position too.
    let r = s.call(Method::GET, "/v1/orgs", None, &[("vt-min-seq", "9223372036854775808")]).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::BAD_REQUEST, "Vt-Min-Seq"), "{}", r.body);
}

#[tokio::test]
async fn json_bodies_are_one_object_with_each_key_once() {
    let s = seeded().await;
    let before = s.head().await;
    let bad: &[(&str, StatusCode, &str, &str)] = &[
        ("{\"name\":\"x\"} garbage", StatusCode::BAD_REQUEST, "malformed_request", ""),
        ("{}{}", StatusCode::BAD_REQUEST, "malformed_request", ""),
        ("{\"name\":\"x\"}{\"name\":\"y\"}", StatusCode::BAD_REQUEST, "malformed_request", ""),
        ("{\"name\":\"x\",\"name\":\"y\"}", StatusCode::BAD_REQUEST, "malformed_request", "name"),
        ("[\"x\"]", StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "body"),
        ("\"x\"", StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "body"),
        ("", StatusCode::BAD_REQUEST, "malformed_request", ""),
    ];
    for (body, status, code, field) in bad {
        let r = s.call(Method::POST, "/v1/orgs", Some(body), &[]).await;
        assert_eq!((r.status, r.error_code(), r.error_field()), (*status, *code, *field), "{body:?}: {}", r.body);
    }
    // Objects only as objects: serde's sequence form of a struct is refused.
    let node = |capacity: Value| json!({"name": "n1", "capacity": capacity});
    let r = s.post("/v1/nodes", node(json!([1000, 1024]))).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "capacity"), "{}", r.body);
    assert!(message(&r).contains("not an array"), "{}", r.body);
    // Nested duplicates name where they are.
    let dup = "{\"name\":\"n1\",\"capacity\":{\"cpu_millis\":1,\"cpu_millis\":2,\"memory_mib\":1}}";
    let r = s.call(Method::POST, "/v1/nodes", Some(dup), &[]).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::BAD_REQUEST, "capacity.cpu_millis"), "{}", r.body);
    assert_eq!(s.head().await, before, "nothing was written");
}

#[tokio::test]
async fn content_type_is_json_exactly_and_required_with_a_body() {
    let s = TestServer::start().await;
    let org = |n: &str| format!("{{\"name\":\"{n}\"}}");
    for (i, ct) in
        ["application/json", "APPLICATION/JSON", "application/json; charset=utf-8", "Application/Json;Charset=UTF-8"]
            .iter()
            .enumerate()
    {
        let r = s.call(Method::POST, "/v1/orgs", Some(&org(&format!("ok{i}"))), &[("content-type", ct)]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{ct}: {}", r.body);
    }
    for ct in ["application/jsonp", "text/plain", "application/json; charset=latin1", "application/json-seq", ""] {
        let r = s.call(Method::POST, "/v1/orgs", Some(&org("bad")), &[("content-type", ct)]).await;
        assert_eq!(
            (r.status, r.error_field()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type"),
            "{ct:?}: {}",
            r.body
        );
    }
    // No Content-Type on a body: refused (reqwest sends none for a plain string body).
    let resp = s.http.post(s.url("/v1/orgs")).bearer_auth(&s.token).body(org("bare")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Two Content-Type headers: refused.
    let resp = s
        .http
        .post(s.url("/v1/orgs"))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .header("content-type", "text/plain")
        .body(org("twice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn one_body_limit_with_or_without_an_idempotency_key() {
    let s = seeded().await;
    let limit = vt_control_plane::http::MAX_BODY;
    // Just over 2 MiB: 413 either way, and the message says 2 MiB.
    let over = format!("{{\"name\":\"x\",\"description\":\"{}\"}}", "d".repeat(limit));
    for headers in [vec![], vec![("idempotency-key", "big-1")]] {
        let r = s.call(Method::POST, "/v1/orgs/acme/apps", Some(&over), &headers).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{headers:?}: {}", r.body);
        assert!(message(&r).contains("2 MiB (2097152 bytes)"), "{}", r.body);
    }
    // Up to the limit the body is read and judged on its content: here, a description too long.
    let within = format!("{{\"name\":\"x\",\"description\":\"{}\"}}", "d".repeat(limit - 40));
    for headers in [vec![], vec![("idempotency-key", "big-2")]] {
        let r = s.call(Method::POST, "/v1/orgs/acme/apps", Some(&within), &headers).await;
        assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "description"), "{}", r.body);
        assert!(message(&r).len() < 300, "{}", message(&r));
    }
}

/// A raw HTTP/1.1 exchange: what reqwest will not send.
async fn raw(s: &TestServer, request: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_malformed_chunked_body_is_malformed_not_too_large() {
    let s = TestServer::start().await;
    let head = |extra: &str| {
        format!(
            "POST /v1/orgs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n{extra}\r\n",
            s.token
        )
    };
    let answer = raw(&s, &format!("{}zz\r\n{{}}\r\n0\r\n\r\n", head(""))).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("malformed_request") && answer.contains("chunked"), "{answer}");
    let answer = raw(&s, &format!("{}zz\r\n{{}}\r\n0\r\n\r\n", head("idempotency-key: k1\r\n"))).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A well-formed chunked body is fine.
    let body = "{\"name\":\"chunked\"}";
    let answer = raw(&s, &format!("{}{:x}\r\n{body}\r\n0\r\n\r\n", head(""), body.len())).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[tokio::test]
async fn integers_stay_within_the_documented_ranges() {
    let s = seeded().await;
    let node = |cpu: Value, mem: Value| json!({"name": "n1", "capacity": {"cpu_millis": cpu, "memory_mib": mem}});
    for (cpu, mem, field) in [
        (json!(4294967295u64), json!(1024), "capacity.cpu_millis"),
        (json!(2147483648u64), json!(1024), "capacity.cpu_millis"),
        (json!(1000001), json!(1024), "capacity.cpu_millis"),
        (json!(1000), json!(16777217), "capacity.memory_mib"),
        (json!(1000), json!(-1), "capacity.memory_mib"),
        (json!(1.5), json!(1024), "capacity.cpu_millis"),
    ] {
        let r = s.post("/v1/nodes", node(cpu.clone(), mem.clone())).await;
        assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, field), "{cpu} {mem}: {}", r.body);
    }
    let r = s.post("/v1/nodes", node(json!(1000000), json!(16777216))).await;
    assert_eq!(r.status, StatusCode::CREATED, "the largest values are fine: {}", r.body);
    // Boot timings: a day at most, so a p50 of 2^64-1 cannot be stored. The body is checked
    // before the instance is looked up.
    let report = json!({"status": "running", "boot": {"running_ms": u64::MAX}});
    let r = s.post("/v1/instances/inst_01jd8x6k3v9q4m2t7r5w0y1zcb/status", report).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "boot.running_ms"), "{}", r.body);
    let r = s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {"web": 1001}})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "processes.web"), "{}", r.body);
    let r = s.put("/v1/orgs/acme/apps/web/envs/prod/scale", json!({"processes": {}})).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "processes"), "{}", r.body);
    let token = json!({"name": "ci", "role": "deployer", "org": "acme", "expires_in_secs": 315360001u64});
    let r = s.post("/v1/tokens", token).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "expires_in_secs"), "{}", r.body);
}

#[tokio::test]
async fn node_labels_are_bounded_in_count_and_syntax() {
    let s = TestServer::start().await;
    let register =
        |labels: Value| json!({"name": "n1", "capacity": {"cpu_millis": 1000, "memory_mib": 1024}, "labels": labels});
    let many: serde_json::Map<String, Value> = (0..10_000).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = s.post("/v1/nodes", register(Value::Object(many))).await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "labels"), "{}", r.body);
    assert!(message(&r).contains("at most 64"), "{}", r.body);
    for key in ["../x", "", "a b", "-a", "a/", "/a", "Example.com/x", "a..b/c", &"k".repeat(64), "a\u{0}b"] {
        let r = s.post("/v1/nodes", register(json!({ key: "v" }))).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{key:?}: {}", r.body);
        assert!(r.error_field().starts_with("labels"), "{key:?}: {}", r.body);
    }
    for value in ["a\nb", "\u{7f}", &"v".repeat(257)] {
        let r = s.post("/v1/nodes", register(json!({ "zone": value }))).await;
        assert_eq!(
            (r.status, r.error_field()),
            (StatusCode::UNPROCESSABLE_ENTITY, "labels.zone"),
            "{value:?}: {}",
            r.body
        );
    }
    let fine: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("example.com/k-{i}.x_y"), json!("any value é"))).collect();
    let r = s.post("/v1/nodes", register(Value::Object(fine))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["labels"].as_object().unwrap().len(), 64);
}

#[tokio::test]
async fn a_repeated_header_is_refused() {
    let s = TestServer::start().await;
    let send = |name: &'static str, a: &'static str, b: &'static str| {
        s.http
            .post(s.url("/v1/orgs"))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .header(name, a)
            .header(name, b)
            .body("{\"name\":\"acme\"}")
            .send()
    };
    let r = send("idempotency-key", "k1", "k2").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "idempotency-key", "{body}");
    // Even the same key twice: one header, one key.
    assert_eq!(send("idempotency-key", "k1", "k1").await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.get("/v1/orgs").await.body["items"], json!([]), "nothing was created");
    let r = s
        .http
        .get(s.url("/v1/orgs"))
        .bearer_auth(&s.token)
        .header("vt-min-seq", "1")
        .header("vt-min-seq", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = s.http.get(s.url("/v1/orgs")).bearer_auth(&s.token).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "two Authorization headers");
}

#[tokio::test]
async fn error_messages_echo_a_cut_of_the_input() {
    let s = seeded().await;
    let huge = "a".repeat(1_000_000);
    let cases = [
        json!({"name": huge}),
        json!({"name": 1, huge.clone(): 1}),
        json!({"name": "x", huge.clone(): 1}),
        json!({"name": "x", "description": huge}),
    ];
    for body in cases {
        let r = s.post("/v1/orgs/acme/apps", body).await;
        assert!(r.status.is_client_error(), "{}", r.status);
        let text = r.body.to_string();
        assert!(text.len() < 2000, "{} bytes: {}", text.len(), &text[..300]);
        // A long key is shown once, cut, in the field and the message together.
        assert!(text.matches(&"a".repeat(100)).count() == 0, "{text}");
    }
    for path in [format!("/v1/orgs/{}", "o".repeat(10_000)), format!("/v1/orgs/acme/apps/{}", "x".repeat(10_000))] {
        let r = s.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(r.body.to_string().len() < 1000, "{}", r.body);
    }
    let r = s.get(&format!("/v1/events?{}=1", "q".repeat(10_000))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.to_string().len() < 1000, "{}", r.body);
    let key = "k".repeat(255);
    s.call(Method::POST, "/v1/orgs", Some("{\"name\":\"one\"}"), &[("idempotency-key", &key)]).await;
    let r = s.call(Method::POST, "/v1/orgs", Some("{\"name\":\"two\"}"), &[("idempotency-key", &key)]).await;
    assert_eq!(r.error_code(), "idempotency_key_reused");
    assert!(!message(&r).contains(&key), "{}", message(&r));
}

#[tokio::test]
async fn every_operation_takes_only_what_its_document_entry_declares() {
    let s = seeded().await;
    // Query parameters an operation does not list, with or without parameters of its own.
    for path in ["/v1/orgs?x=1", "/v1/orgs/acme?verbose=true", "/v1/events?after=0&since=1", "/v1/system/status?"] {
        let r = s.get(path).await;
        if path.ends_with('?') {
            assert_eq!(r.status, StatusCode::OK, "an empty query is no parameter: {}", r.body);
            continue;
        }
        assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "unknown_field"), "{path}: {}", r.body);
    }
    // A body where the operation takes none.
    let before = s.head().await;
    let r = s.call(Method::POST, "/v1/orgs/acme/apps/web/envs/prod/rollback", Some("{}"), &[]).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "malformed_request"), "{}", r.body);
    let r = s.call(Method::DELETE, "/v1/tokens/tok_01jd8x6k3v9q4m2t7r5w0y1zcb", Some("{\"why\":1}"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(s.head().await, before);
    // Without one, as clients send it, the operation runs (here: nothing to roll back to).
    let r = s.call(Method::POST, "/v1/orgs/acme/apps/web/envs/prod/rollback", None, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
}
