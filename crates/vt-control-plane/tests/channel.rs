//! Nodes' channels through a real HTTP server and real WebSockets (docs/nodes.md, "Logs and
//! exec of a joined node"): a node's agent, played by this test with the node's own token,
//! opens its channel, takes the control plane's requests and opens their streams; the user's
//! `GET /v1/instances/{id}/logs` and exec session are relayed through them. Refused: another
//! token on the channel, a stream of another node's request, an unknown or reused request id;
//! a node without a channel and a stream never opened are clear errors.

mod common;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use vt_api::channel::{NodeRequest, StreamOpen};
use vt_api::exec::{ClientFrame, ExecExit, ServerFrame};

use common::env::*;
use common::TestServer;

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

/// A server with acme/web/prod, one ready instance on node `n1`, and node `n2`; the tokens of
/// both nodes.
struct World {
    s: TestServer,
    instance: String,
    n1: String,
    n2: String,
}

async fn world() -> World {
    let s = setup(Default::default()).await;
    let rel = release(&s, 'a').await;
    let (_, ids) = deploy_ready(&s, &rel, 1).await;
    let r = s.post("/v1/nodes", json!({"name": "n2", "capacity": {"cpu_millis": 1000, "memory_mib": 1024}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let n1 = s.issue(json!({"name": "agent-1", "role": "node", "node": "n1"})).await;
    let n2 = s.issue(json!({"name": "agent-2", "role": "node", "node": "n2"})).await;
    World { s, instance: ids[0].clone(), n1, n2 }
}

/// The next request on a channel (within 5 s).
async fn next_request(channel: &mut Ws) -> NodeRequest {
    let read = async {
        loop {
            match channel.next().await.expect("the channel stays open").unwrap() {
                Message::Text(t) => return serde_json::from_str::<NodeRequest>(t.as_str()).unwrap(),
                _ => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("a request comes")
}

/// Wait until the hub has the channel (the upgrade completes after the client's handshake).
async fn until_connected(s: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.cp.channels.connected().is_empty() {
        assert!(Instant::now() < deadline, "the channel never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn open_stream(s: &TestServer, token: &str, node: &str, request: &str) -> Result<Ws, (StatusCode, Value)> {
    connect(s, token, &format!("/v1/nodes/{node}/streams/{request}")).await
}

async fn opened(ws: &mut Ws, open: &StreamOpen) {
    ws.send(Message::Text(serde_json::to_string(open).unwrap().into())).await.unwrap();
}

fn message(r: &common::Resp) -> &str {
    r.body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_channel_is_named_at_once() {
    let w = world().await;
    let began = Instant::now();
    let r = w.s.get(&format!("/v1/instances/{}/logs", w.instance)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(message(&r).contains("node `n1`") && message(&r).contains("not connected"), "{}", r.body);
    let r = w.s.post(&format!("/v1/instances/{}/exec", w.instance), json!({"argv": ["sh"]})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(message(&r).contains("node `n1`") && message(&r).contains("not connected"), "{}", r.body);
    assert!(began.elapsed() < Duration::from_secs(2), "answered at once: {:?}", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_nodes_own_token_opens_its_channel() {
    let w = world().await;
    for (token, who) in [(&w.s.token, "admin"), (&w.n2, "another node")] {
        let (status, body) = connect(&w.s, token, "/v1/nodes/n1/channel").await.map(|_| ()).expect_err("refused");
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
    }
    let (status, _) = connect(&w.s, &w.n1, "/v1/nodes/nope/channel").await.map(|_| ()).expect_err("refused");
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A plain GET is no upgrade.
    let r = w.s.call_as(Some(&w.n1), Method::GET, "/v1/nodes/n1/channel", None, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let _channel = connect(&w.s, &w.n1, "/v1/nodes/n1/channel").await.unwrap();
    until_connected(&w.s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_through_the_nodes_stream() {
    let w = world().await;
    let mut channel = connect(&w.s, &w.n1, "/v1/nodes/n1/channel").await.unwrap();
    until_connected(&w.s).await;
    let s = &w.s;
    let tail5 = format!("/v1/instances/{}/logs?tail=5", w.instance);
    let logs = s.get(&tail5);
    let node = async {
        let request = next_request(&mut channel).await;
        let NodeRequest::Logs { request, instance, tail, follow } = request else { panic!("{request:?}") };
        assert_eq!((instance.to_string(), tail, follow), (w.instance.clone(), Some(5), false));
        // Another node's token, or this one's path with it: refused; the id is not used up.
        let (status, _) = open_stream(s, &w.n2, "n1", &request).await.err().unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = open_stream(s, &w.n2, "n2", &request).await.err().unwrap();
        assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::NOT_FOUND, Some("request")), "{body}");
        let (status, _) = open_stream(s, &s.token, "n1", &request).await.err().unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        let unknown = format!("vtq_{}", "0".repeat(64));
        let (status, _) = open_stream(s, &w.n1, "n1", &unknown).await.err().unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        let mut stream = open_stream(s, &w.n1, "n1", &request).await.unwrap();
        // Once only.
        let (status, _) = open_stream(s, &w.n1, "n1", &request).await.err().unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        opened(&mut stream, &StreamOpen::Opened).await;
        stream.send(Message::Binary("2026-01-01T00:00:00Z stdout one\n".into())).await.unwrap();
        stream.send(Message::Binary("2026-01-01T00:00:01Z stdout two\n".into())).await.unwrap();
        stream.close(None).await.unwrap();
        while stream.next().await.is_some() {}
    };
    let (r, ()) = tokio::join!(logs, node);
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!("2026-01-01T00:00:00Z stdout one\n2026-01-01T00:00:01Z stdout two\n"));

    // The node fails to read: the user is told, with the node's reason.
    let all = format!("/v1/instances/{}/logs", w.instance);
    let logs = s.get(&all);
    let node = async {
        let request = next_request(&mut channel).await;
        let mut stream = open_stream(s, &w.n1, "n1", request.request()).await.unwrap();
        opened(&mut stream, &StreamOpen::Failed { message: "the disk is gone".into() }).await;
        let _ = stream.close(None).await;
    };
    let (r, ()) = tokio::join!(logs, node);
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert!(message(&r).contains("the disk is gone"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_never_opened_times_out() {
    let w = world().await;
    w.s.cp.channels.set_open_timeout(Duration::from_secs(1));
    let mut channel = connect(&w.s, &w.n1, "/v1/nodes/n1/channel").await.unwrap();
    until_connected(&w.s).await;
    let began = Instant::now();
    let all = format!("/v1/instances/{}/logs", w.instance);
    let logs = w.s.get(&all);
    let (r, request) = tokio::join!(logs, next_request(&mut channel));
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert!(message(&r).contains("did not open the stream within 1 s"), "{}", r.body);
    assert!(began.elapsed() < Duration::from_secs(3), "{:?}", began.elapsed());
    // Too late: the request is gone.
    let (status, _) = open_stream(&w.s, &w.n1, "n1", request.request()).await.err().unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_session_is_relayed_both_ways() {
    let w = world().await;
    let mut channel = connect(&w.s, &w.n1, "/v1/nodes/n1/channel").await.unwrap();
    until_connected(&w.s).await;
    let s = &w.s;
    let deployer = s.issue(json!({"name": "dev", "role": "deployer", "org": "acme"})).await;
    let path = format!("/v1/instances/{}/exec", w.instance);
    let body = json!({"argv": ["cat"], "env": {"K": "v"}, "tty": true, "rows": 30, "cols": 100}).to_string();
    let r = s.call_as(Some(&deployer), Method::POST, &path, Some(&body), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let grant = r.body["path"].as_str().unwrap().to_owned();

    // The node: echoes stdin as stdout until stdin's end, then exits 3.
    let node = async {
        let request = next_request(&mut channel).await;
        let NodeRequest::Exec { request, argv, env, tty, .. } = request else { panic!("{request:?}") };
        assert_eq!((argv, env.get("K").map(String::as_str)), (vec!["cat".to_owned()], Some("v")));
        assert_eq!(tty.map(|t| (t.rows, t.cols)), Some((30, 100)));
        let mut stream = open_stream(s, &w.n1, "n1", &request).await.unwrap();
        opened(&mut stream, &StreamOpen::Opened).await;
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Binary(b) = msg else { continue };
            match ClientFrame::decode(b).unwrap() {
                ClientFrame::Stdin(b) => {
                    stream.send(Message::Binary(ServerFrame::Stdout(b).encode())).await.unwrap();
                }
                ClientFrame::StdinEof => {
                    stream.send(Message::Binary(ServerFrame::Exit(ExecExit::Code(3)).encode())).await.unwrap();
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
    };
    let client = async {
        let mut ws = connect(s, &deployer, &grant).await.unwrap();
        for word in ["hello ", "node"] {
            ws.send(Message::Binary(ClientFrame::Stdin(word.into()).encode())).await.unwrap();
        }
        ws.send(Message::Binary(ClientFrame::StdinEof.encode())).await.unwrap();
        let (mut out, mut exit) = (Vec::new(), None);
        let read = async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Binary(b) = msg {
                    match ServerFrame::decode(b).unwrap() {
                        ServerFrame::Stdout(b) => out.extend_from_slice(&b),
                        ServerFrame::Exit(e) => exit = Some(e),
                        other => panic!("{other:?}"),
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read).await.expect("the session ends");
        (out, exit)
    };
    let ((out, exit), ()) = tokio::join!(client, node);
    assert_eq!((String::from_utf8(out).unwrap(), exit), ("hello node".to_owned(), Some(ExecExit::Code(3))));

    // The instance has no VM on the node: the user is told it is not running.
    let r = s.call_as(Some(&deployer), Method::POST, &path, Some(&json!({"argv": ["sh"]}).to_string()), &[]).await;
    let grant = r.body["path"].as_str().unwrap().to_owned();
    let node = async {
        let request = next_request(&mut channel).await;
        let mut stream = open_stream(s, &w.n1, "n1", request.request()).await.unwrap();
        opened(&mut stream, &StreamOpen::NotRunning).await;
        let _ = stream.close(None).await;
    };
    let (refused, ()) = tokio::join!(connect(s, &deployer, &grant), node);
    let (status, body) = refused.map(|_| ()).expect_err("refused");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // The log never holds an env value nor a request id.
    let events = s.get("/v1/events?last=100").await.body.to_string();
    assert!(!events.contains("vtq_"), "{events}");
}
