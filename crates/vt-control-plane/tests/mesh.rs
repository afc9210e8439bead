//! The mesh's peer lists (docs/nodes.md, "The mesh"): each node follows, with its instances,
//! every other node that is not revoked and registered a WireGuard key, an address and a port;
//! never itself; sorted by name.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEYS: [&str; 3] = [
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=",
    "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA=",
];

/// A node enrolled and registered with `extra` (address, port) merged into its registration.
struct Enrolled {
    name: String,
    token: String,
    subnet: String,
}

async fn enroll_and_register(s: &TestServer, name: &str, key: &str, extra: Value) -> Enrolled {
    let r = s.post("/v1/nodes/enroll-tokens", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let enroll = r.body["secret"].as_str().unwrap().to_owned();
    let body = json!({ "name": name }).to_string();
    let r = s.call_as(Some(&enroll), Method::POST, "/v1/nodes/enroll", Some(&body), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let token = r.body["secret"].as_str().unwrap().to_owned();
    let r = register(s, &token, name, key, &extra).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    Enrolled { name: name.to_owned(), token, subnet: r.body["subnet"].as_str().unwrap().to_owned() }
}

async fn register(s: &TestServer, token: &str, name: &str, key: &str, extra: &Value) -> common::Resp {
    let mut body =
        json!({"name": name, "capacity": {"cpu_millis": 2000, "memory_mib": 1024}, "wireguard_public_key": key});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    s.call_as(Some(token), Method::POST, "/v1/nodes", Some(&body.to_string()), &[]).await
}

/// What node `n` follows: `(seq, mesh)`, waiting for a change past `after` when given.
async fn follow(s: &TestServer, n: &Enrolled, after: Option<u64>) -> (u64, Value) {
    let path = match after {
        Some(a) => format!("/v1/nodes/{}/instances?after={a}&wait_ms=10000", n.name),
        None => format!("/v1/nodes/{}/instances", n.name),
    };
    let r = s.call_as(Some(&n.token), Method::GET, &path, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (r.body["seq"].as_u64().unwrap(), r.body["mesh"].clone())
}

fn names(mesh: &Value) -> Vec<&str> {
    mesh.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_every_other_meshed_node_and_never_itself() {
    let s = TestServer::start().await;
    // Registered out of name order; `n3` has no port: not reachable, so nobody's peer.
    let b = enroll_and_register(&s, "n2", KEYS[1], json!({"address": "fd00:99::2", "wireguard_port": 51821})).await;
    let a = enroll_and_register(&s, "n1", KEYS[0], json!({"address": "10.99.0.1", "wireguard_port": 51820})).await;
    let c = enroll_and_register(&s, "n3", KEYS[2], json!({"address": "10.99.0.3"})).await;

    let (_, mesh) = follow(&s, &a, None).await;
    assert_eq!(
        mesh,
        json!([{
            "node_id": s.get("/v1/nodes/n2").await.body["id"],
            "name": "n2",
            "public_key": KEYS[1],
            "endpoint": "[fd00:99::2]:51821",
            "allowed_ips": [b.subnet],
        }])
    );
    let (_, mesh) = follow(&s, &b, None).await;
    assert_eq!(names(&mesh), ["n1"]);
    assert_eq!((mesh[0]["endpoint"].as_str(), &mesh[0]["allowed_ips"]), (Some("10.99.0.1:51820"), &json!([a.subnet])));
    let (_, mesh) = follow(&s, &c, None).await;
    assert_eq!(names(&mesh), ["n1", "n2"], "sorted by name, and never itself");
    assert_ne!(a.subnet, b.subnet);

    // A node that registers again from another port: its peers follow it there.
    let (seq, _) = follow(&s, &a, None).await;
    let r = register(&s, &b.token, "n2", KEYS[1], &json!({"address": "fd00:99::2", "wireguard_port": 51999})).await;
    assert_eq!((r.status, r.body["wireguard_port"].as_u64()), (StatusCode::OK, Some(51999)), "{}", r.body);
    let (_, mesh) = follow(&s, &a, Some(seq)).await;
    assert_eq!(mesh[0]["endpoint"], "[fd00:99::2]:51999");
    // The same registration again changes nothing: no event, no new position.
    let head = s.head().await;
    let r = register(&s, &b.token, "n2", KEYS[1], &json!({"address": "fd00:99::2", "wireguard_port": 51999})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(s.head().await, head);
    // `n3` gets a port: it becomes everyone's peer.
    let r = register(&s, &c.token, "n3", KEYS[2], &json!({"address": "10.99.0.3", "wireguard_port": 51820})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(names(&follow(&s, &a, None).await.1), ["n2", "n3"]);
    assert_eq!(names(&follow(&s, &b, None).await.1), ["n1", "n3"]);

    // Ports are checked by the schema.
    for port in [json!(0), json!(65536), json!("51820")] {
        let r = register(&s, &a.token, "n1", KEYS[0], &json!({"address": "10.99.0.1", "wireguard_port": port})).await;
        assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "wireguard_port"), "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_leaves_every_peer_list() {
    let s = TestServer::start().await;
    let mut nodes = vec![];
    for (i, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
        let at = json!({"address": format!("10.99.0.{}", i + 1), "wireguard_port": 51820});
        nodes.push(enroll_and_register(&s, name, KEYS[i], at).await);
    }
    let (seq, mesh) = follow(&s, &nodes[0], None).await;
    assert_eq!(names(&mesh), ["n2", "n3"]);

    let r = s.call(Method::POST, "/v1/nodes/n2/revoke", None, &[]).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("revoked")), "{}", r.body);
    // A node following by cursor is woken by the revocation and no longer lists it.
    let (after, mesh) = follow(&s, &nodes[0], Some(seq)).await;
    assert!(after > seq);
    assert_eq!(names(&mesh), ["n3"]);
    assert_eq!(names(&follow(&s, &nodes[2], None).await.1), ["n1"]);
    // The revoked node itself is refused its list.
    let r = s.call_as(Some(&nodes[1].token), Method::GET, "/v1/nodes/n2/instances", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    // Its host enrolls again under its name with a new key: a new peer, under the old name.
    const NEW_KEY: &str = "DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDA=";
    let again = enroll_and_register(&s, "n2", NEW_KEY, json!({"address": "10.99.0.2", "wireguard_port": 51820})).await;
    let (_, mesh) = follow(&s, &nodes[0], None).await;
    assert_eq!(names(&mesh), ["n2", "n3"]);
    assert_eq!(mesh[0]["public_key"], NEW_KEY, "only the new node, never the revoked one's key");
    assert_eq!(mesh[0]["allowed_ips"], json!([again.subnet]));
}
