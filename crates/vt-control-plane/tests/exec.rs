//! `vt exec` through a real HTTP server and real WebSockets: grants, their refusals, the relay
//! and what the log records. The backend runs the command as a local process (or floods
//! output), behind the same `ExecBackend` trait the node agent implements.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use vt_api::exec::{ClientFrame, ExecExit, ServerFrame};
use vt_control_plane::exec::testing::{Flood, LocalProcess};
use vt_control_plane::exec::ExecBackend;

use common::env::*;
use common::TestServer;

/// A server with org `acme` (app `web`, env `prod`, one ready instance) and org `other`;
/// tokens: deployer, a second deployer, a viewer of acme, a deployer of other.
struct World {
    s: TestServer,
    instance: String,
    deployer: String,
    deployer_id: String,
    deployer2: String,
    viewer: String,
    stranger: String,
}

async fn token(s: &TestServer, name: &str, role: &str, org: &str) -> (String, String) {
    let r = s.post("/v1/tokens", json!({"name": name, "role": role, "org": org})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (r.body["secret"].as_str().unwrap().to_owned(), r.body["id"].as_str().unwrap().to_owned())
}

async fn world(backend: Arc<dyn ExecBackend>, ttl: Option<Duration>) -> World {
    let s = setup_on(TestServer::start_with_exec(backend, ttl).await, Default::default()).await;
    let release = release(&s, 'a').await;
    let (_, ids) = deploy_ready(&s, &release, 1).await;
    assert_eq!(s.post("/v1/orgs", json!({"name": "other"})).await.status, StatusCode::CREATED);
    let (deployer, deployer_id) = token(&s, "dev", "deployer", "acme").await;
    let (deployer2, _) = token(&s, "dev2", "deployer", "acme").await;
    let (viewer, _) = token(&s, "look", "viewer", "acme").await;
    let (stranger, _) = token(&s, "dev", "deployer", "other").await;
    World { s, instance: ids[0].clone(), deployer, deployer_id, deployer2, viewer, stranger }
}

impl World {
    async fn grant_as(&self, token: &str, body: Value) -> common::Resp {
        let path = format!("/v1/instances/{}/exec", self.instance);
        self.s.call_as(Some(token), Method::POST, &path, Some(&body.to_string()), &[]).await
    }

    async fn grant(&self, body: Value) -> String {
        let r = self.grant_as(&self.deployer, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["instance"], self.instance.as_str());
        let path = r.body["path"].as_str().unwrap().to_owned();
        assert_eq!(path, format!("/v1/exec/{}", r.body["grant"].as_str().unwrap()));
        path
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open `path` as a WebSocket with `token`; an HTTP refusal as its status and error body.
async fn connect(s: &TestServer, token: &str, path: &str) -> Result<Ws, (StatusCode, Value)> {
    let mut req = format!("ws://{}{}", s.addr, path).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            Err((StatusCode::from_u16(resp.status().as_u16()).unwrap(), body))
        }
        Err(e) => panic!("connecting: {e}"),
    }
}

#[derive(Debug, Default)]
struct Transcript {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<ExecExit>,
    errors: Vec<String>,
    close: Option<(u16, String)>,
}

/// Read the session to its end.
async fn read_all(ws: &mut Ws) -> Transcript {
    let mut t = Transcript::default();
    let reading = async {
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Binary(b) => match ServerFrame::decode(b).unwrap() {
                    ServerFrame::Stdout(b) => t.stdout.extend_from_slice(&b),
                    ServerFrame::Stderr(b) => t.stderr.extend_from_slice(&b),
                    ServerFrame::Exit(e) => t.exit = Some(e),
                    ServerFrame::Error(m) => t.errors.push(m),
                },
                // Reading on answers the close and ends the stream.
                Message::Close(f) => t.close = f.map(|f| (u16::from(f.code), f.reason.to_string())),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading).await.expect("the session ends");
    t
}

async fn send(ws: &mut Ws, frame: ClientFrame) {
    ws.send(Message::Binary(frame.encode())).await.unwrap();
}

/// The log's events of `event_type`.
async fn events(s: &TestServer, event_type: &str) -> Vec<Value> {
    let page = s.get("/v1/events?limit=1000").await.body;
    page["events"].as_array().unwrap().iter().filter(|e| e["event_type"] == event_type).cloned().collect()
}

async fn until_event(s: &TestServer, event_type: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let found = events(s, event_type).await;
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {n} `{event_type}` events");
}

/// Grant, upgrade, stdin in, stdout and stderr out, exit 7; the grant is single-use; the log
/// has the command line and the exit code, and none of the session's bytes or env values.
#[tokio::test]
async fn a_session_runs_to_its_exit_code_and_is_recorded() {
    let w = world(Arc::new(LocalProcess), None).await;
    let path = w
        .grant(json!({
            "argv": ["sh", "-c", "cat; echo out; echo err >&2; exit 7"],
            "env": {"GREETING": "env-value-never-logged"},
        }))
        .await;
    let mut ws = connect(&w.s, &w.deployer, &path).await.unwrap();
    send(&mut ws, ClientFrame::Stdin(Bytes::from_static(b"stdin-bytes-never-logged\n"))).await;
    send(&mut ws, ClientFrame::StdinEof).await;
    let t = read_all(&mut ws).await;
    assert_eq!(String::from_utf8_lossy(&t.stdout), "stdin-bytes-never-logged\nout\n");
    assert_eq!(String::from_utf8_lossy(&t.stderr), "err\n");
    assert_eq!(t.exit, Some(ExecExit::Code(7)));
    assert_eq!(t.close, Some((1000, "exited with code 7".into())));

    // Single use: the same grant again is gone.
    let (status, body) = connect(&w.s, &w.deployer, &path).await.unwrap_err();
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "gone");
    assert!(body["error"]["message"].as_str().unwrap().contains("already used"), "{body}");

    // The env is the command's.
    let path = w.grant(json!({"argv": ["sh", "-c", "echo $GREETING"], "env": {"GREETING": "hi"}})).await;
    let mut ws = connect(&w.s, &w.deployer, &path).await.unwrap();
    send(&mut ws, ClientFrame::StdinEof).await;
    let t = read_all(&mut ws).await;
    assert_eq!((String::from_utf8_lossy(&t.stdout).as_ref(), t.exit), ("hi\n", Some(ExecExit::Code(0))));

    let granted = until_event(&w.s, "instance.exec_granted", 2).await;
    let g = &granted[0];
    assert_eq!(g["payload"]["argv"], json!(["sh", "-c", "cat; echo out; echo err >&2; exit 7"]));
    assert_eq!(g["payload"]["env_names"], json!(["GREETING"]));
    assert_eq!(g["payload"]["tty"], false);
    assert_eq!(g["payload"]["instance_id"], w.instance.as_str());
    assert_eq!(g["payload"]["token_id"], w.deployer_id.as_str());
    assert_eq!(g["actor"], format!("token:{}", w.deployer_id));
    let ended = until_event(&w.s, "instance.exec_ended", 2).await;
    assert_eq!(ended[0]["payload"]["exit_code"], 7);
    assert_eq!(ended[0]["payload"]["end"], "exited");
    assert_eq!(ended[0]["payload"]["exec_id"], g["payload"]["exec_id"]);
    assert_eq!(ended[0]["aggregate_type"], "exec");

    let log = w.s.get("/v1/events?limit=1000").await.body.to_string();
    for secret in ["stdin-bytes-never-logged", "env-value-never-logged", path.trim_start_matches("/v1/exec/")] {
        assert!(!log.contains(secret), "the log holds `{secret}`");
    }
}

/// What is refused, and how.
#[tokio::test]
async fn grants_are_refused_clearly() {
    let w = world(Arc::new(LocalProcess), None).await;
    let sleep = json!({"argv": ["sleep", "30"]});

    // Another org's instance does not exist for its tokens; a viewer may not exec.
    let r = w.grant_as(&w.stranger, sleep.clone()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{}", r.body);
    let r = w.grant_as(&w.viewer, sleep.clone()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "forbidden"), "{}", r.body);

    // Bad requests.
    for (body, field) in [
        (json!({"argv": []}), "argv"),
        (json!({"argv": [""]}), "argv"),
        (json!({"argv": ["sh"], "rows": 10}), "rows"),
        (json!({"argv": ["sh"], "env": {"VT_X": "1"}}), "env.VT_X"),
        (json!({"argv": ["sh"], "cwd": "relative"}), "cwd"),
    ] {
        let r = w.grant_as(&w.deployer, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.body);
        assert!(r.error_field().starts_with(field), "{body}: {}", r.body);
    }
    // A grant cannot be replayed by key.
    let path = format!("/v1/instances/{}/exec", w.instance);
    let r =
        w.s.call_as(Some(&w.deployer), Method::POST, &path, Some(&sleep.to_string()), &[("idempotency-key", "k1")])
            .await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "Idempotency-Key"), "{}", r.body);

    let path = w.grant(sleep.clone()).await;
    // Not an upgrade: a clear 400 (and the grant is not used up by it).
    let r = w.s.call_as(Some(&w.deployer), Method::GET, &path, None, &[]).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "malformed_request"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("WebSocket"), "{}", r.body);
    // An unknown grant; another token of the same org; no token.
    let (status, body) = connect(&w.s, &w.deployer, &format!("/v1/exec/vtx_{}", "0".repeat(64))).await.unwrap_err();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = connect(&w.s, &w.deployer, "/v1/exec/bogus").await.unwrap_err();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = connect(&w.s, &w.deployer2, &path).await.unwrap_err();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("another token"), "{body}");
    let (status, _) = connect(&w.s, "vt_nope", &path).await.unwrap_err();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Still good for its own token; the client going away hangs the command up.
    let ws = connect(&w.s, &w.deployer, &path).await.unwrap();
    drop(ws);
    let ended = until_event(&w.s, "instance.exec_ended", 1).await;
    assert_eq!(ended[0]["payload"]["end"], "disconnected", "{}", ended[0]);

    // An instance that is not running.
    report(&w.s, &w.instance, json!({"status": "stopped", "exit_code": 0})).await;
    let r = w.grant_as(&w.deployer, sleep).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::CONFLICT, "conflict"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("`stopped`"), "{}", r.body);
}

#[tokio::test]
async fn an_expired_grant_is_gone() {
    let w = world(Arc::new(LocalProcess), Some(Duration::from_millis(300))).await;
    let path = w.grant(json!({"argv": ["true"]})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = connect(&w.s, &w.deployer, &path).await.unwrap_err();
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("expired at"), "{body}");
}

#[tokio::test]
async fn a_malformed_frame_ends_the_session_with_a_reason() {
    let w = world(Arc::new(LocalProcess), None).await;
    let path = w.grant(json!({"argv": ["sleep", "30"]})).await;
    let mut ws = connect(&w.s, &w.deployer, &path).await.unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"\x7fjunk"))).await.unwrap();
    let t = read_all(&mut ws).await;
    assert_eq!(t.close, Some((1002, "malformed frame: unknown frame kind 0x7f".into())));
    assert_eq!(t.exit, None);
    let ended = until_event(&w.s, "instance.exec_ended", 1).await;
    assert_eq!(ended[0]["payload"]["end"], "malformed_input");
}

/// A client that does not read holds the session's output back: the backend's sends block,
/// and nothing in between keeps taking it.
#[tokio::test]
async fn a_slow_reader_back_pressures_the_session() {
    let sent = Arc::new(AtomicU64::new(0));
    let w = world(Arc::new(Flood(sent.clone())), None).await;
    let path = w.grant(json!({"argv": ["yes"]})).await;
    let mut ws = connect(&w.s, &w.deployer, &path).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let late = sent.load(Ordering::SeqCst);
    // What sockets and channels hold: a few MiB of loopback buffers, never the flood.
    assert!(late * 64 < 64 * 1024, "{late} chunks of 64 KiB went out to a client that reads nothing");
    assert_eq!(early, late, "the flood kept going while nobody read");
    // Reading lets it go on.
    for _ in 0..(late + 50) {
        ws.next().await.unwrap().unwrap();
    }
    assert!(sent.load(Ordering::SeqCst) > late);
}

#[tokio::test]
async fn without_an_agent_serving_the_node_exec_is_refused_naming_it() {
    let s = setup(Default::default()).await;
    let release = release(&s, 'a').await;
    let (_, ids) = deploy_ready(&s, &release, 1).await;
    let r = s.post(&format!("/v1/instances/{}/exec", ids[0]), json!({"argv": ["sh"]})).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::CONFLICT, "conflict"), "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("node `n1`") && message.contains("is not connected"), "{}", r.body);
}
