//! The edge end to end: a real control plane (SQLite, HTTP), a real ingress on
//! loopback, real rustls TLS backends and a backend that parses PROXY v2.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use vt_edge::{Edge, StoreSource};
use vt_events::{Actor, Event, InstanceAllocated, NewEvent, Resources};
use vt_ids::*;
use vt_ingress::proxy_v2::{self, Decoded, Header};
use vt_ingress::testing::{connector, read_line, tls_backend};
use vt_ingress::{Ingress, IngressConfig};
use vt_server::{Server, ServerConfig};

const T: Duration = Duration::from_secs(20);

/// A port free on both loopback addresses right now.
fn free_port() -> u16 {
    loop {
        let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l4.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!(status < 300, "POST {path}: {status} {v}");
        v
    }
    async fn delete(&self, path: &str) -> Value {
        let (status, v) = self.call(reqwest::Method::DELETE, path, None).await;
        assert_eq!(status, 200, "DELETE {path}: {v}");
        v
    }
}

fn id<K: Kind>(v: &Value) -> Id<K> {
    Id::parse(v["id"].as_str().unwrap()).unwrap()
}

/// A TCP server that reads a PROXY v2 header and answers with the source address it carries.
async fn proxy_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 256];
                let answer = loop {
                    match proxy_v2::decode(&buf) {
                        Decoded::Complete { header: Header::Proxy { src, .. }, .. } => break format!("{src}\n"),
                        Decoded::Complete { .. } => break "no-address\n".to_owned(),
                        Decoded::Invalid(why) => break format!("invalid: {why}\n"),
                        Decoded::NeedMore => {}
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// The backend's name, through the ingress, with the certificate verified for `host`.
async fn tls_hello(conn: &TlsConnector, addr: SocketAddr, host: &str) -> std::io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = conn.connect(ServerName::try_from(host.to_owned()).unwrap(), tcp).await?;
    read_line(&mut tls).await
}

/// Wait until the edge has applied everything up to the store's head.
async fn settled(edge: &Edge, store: &Arc<dyn vt_store::Store>) {
    let head = store.head().await.unwrap();
    let mut rx = edge.subscribe();
    timeout(T, rx.wait_for(|s| s.cursor >= head && !s.waiting_for_views && s.last_error.is_none()))
        .await
        .expect("edge settles")
        .unwrap();
}

/// A control plane (no ingress of its own) with org `acme`, app `shop`, env
/// `prod`, and one running instance at 127.0.0.1 per process of `processes`;
/// TCP routes get `tcp_port`.
async fn control_plane(
    dir: &std::path::Path,
    tcp_port: u16,
    processes: &[&str],
) -> (Api, Arc<vt_control_plane::ControlPlane>) {
    let config = ServerConfig::new(dir.join("cp"), "127.0.0.1:0".parse().unwrap());
    let server = Server::start(&config).await.unwrap();
    let token = std::fs::read_to_string(server.admin_token_written.clone().unwrap()).unwrap().trim().to_owned();
    let base = format!("http://{}", server.local_addr().unwrap());
    let cp = server.control_plane.clone();
    cp.ingress.set_tcp_ports(tcp_port..=tcp_port);
    let store = cp.store.clone();
    tokio::spawn(server.run(std::future::pending()));
    let api = Api { base, token, http: reqwest::Client::new() };

    // Tenancy, a node, and one running instance per process type (the
    // scheduler does not exist yet: allocate through the store directly).
    let org = api.post("/v1/orgs", json!({"name": "acme"})).await;
    let app = api.post("/v1/orgs/acme/apps", json!({"name": "shop"})).await;
    let env = api.post("/v1/orgs/acme/apps/shop/envs", json!({"name": "prod"})).await;
    let node = api.post("/v1/nodes", json!({"name": "n1", "capacity": {"cpu_millis": 4000, "memory_mib": 4096}})).await;
    let (org_id, app_id, env_id, node_id): (OrgId, AppId, EnvId, NodeId) = (id(&org), id(&app), id(&env), id(&node));
    for process in processes {
        let instance_id = InstanceId::new();
        let allocated = Event::InstanceAllocated(InstanceAllocated {
            org_id,
            app_id,
            env_id,
            instance_id,
            process: process.to_string(),
            release_id: ReleaseId::new(),
            deploy_id: None,
            node_id,
            resources: Resources { cpu_millis: 100, memory_mib: 64 },
            secrets_version: None,
            volumes: vec![],
        });
        store
            .append(vt_store::AppendRequest {
                events: vec![NewEvent::new(allocated, Actor::system("test"), None)],
                ..Default::default()
            })
            .await
            .unwrap();
        cp.fresh().await.unwrap();
        let v = api
            .post(&format!("/v1/instances/{instance_id}/status"), json!({"status": "running", "address": "127.0.0.1"}))
            .await;
        assert_eq!(v["address"], "127.0.0.1");
    }
    (api, cp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_from_the_control_plane_reach_real_backends() {
    let dir = tempfile::tempdir().unwrap();
    let tcp_port = free_port();
    let (api, cp) = control_plane(dir.path(), tcp_port, &["alpha", "beta", "gamma"]).await;
    let store = cp.store.clone();

    let (addr_a, cert_a) = tls_backend("alpha", "a.test").await;
    let (addr_b, cert_b) = tls_backend("beta", "b.test").await;
    let (port_a, port_b) = (addr_a.port(), addr_b.port());
    let port_c = proxy_backend().await;
    let tls_port = free_port();
    let routes = "/v1/orgs/acme/apps/shop/envs/prod/routes";
    let ra = api
        .post(routes, json!({"hostname": "a.test", "port": tls_port, "process": "alpha", "backend_port": port_a}))
        .await;
    api.post(routes, json!({"hostname": "B.test", "port": tls_port, "process": "beta", "backend_port": port_b})).await;
    let rc = api
        .post(routes, json!({"protocol": "tcp", "process": "gamma", "backend_port": port_c, "proxy_protocol": true}))
        .await;
    assert_eq!(rc["port"], tcp_port);

    // The edge, following the store, with its table persisted.
    let state = dir.path().join("ingress-table.json");
    let ingress =
        Ingress::start(IngressConfig { state_path: Some(state.clone()), ..IngressConfig::loopback() }).await.unwrap();
    let edge = Edge::new(Arc::new(StoreSource(store.clone())), ingress.clone(), "n1");
    tokio::spawn(edge.clone().run(Duration::from_secs(1), std::future::pending()));
    settled(&edge, &store).await;
    let status = edge.status();
    assert_eq!((status.routes, status.backends, status.applied_seq), (3, 3, store.head().await.unwrap()), "{status:?}");

    let conn = connector(&[cert_a, cert_b]);
    let v4 = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let v6 = SocketAddr::new("::1".parse().unwrap(), tls_port);
    for addr in [v6, v4] {
        assert_eq!(tls_hello(&conn, addr, "a.test").await.unwrap(), "alpha");
        assert_eq!(tls_hello(&conn, addr, "b.test").await.unwrap(), "beta");
    }

    // The TCP route sends a PROXY v2 header carrying the client's own address.
    let mut s = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    let client = s.local_addr().unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), client.to_string());

    // Metrics are labelled with route ids.
    let text = ingress.metrics_text();
    assert!(
        text.contains(&format!("vt_ingress_route_connections_total{{route=\"{}\"}} 2", ra["id"].as_str().unwrap())),
        "{text}"
    );

    // Deleting a route closes new connections to it; the others still work.
    api.delete(&format!("{routes}/{}", ra["id"].as_str().unwrap())).await;
    settled(&edge, &store).await;
    assert_eq!(edge.status().routes, 2);
    assert!(tls_hello(&conn, v4, "a.test").await.is_err(), "a deleted route must not be served");
    assert_eq!(tls_hello(&conn, v4, "b.test").await.unwrap(), "beta");

    // The applied table (with its cursor) survives a restart of the ingress.
    let saved = vt_ingress::RouteTable::load(&state).unwrap().unwrap();
    assert_eq!((saved.version, saved.routes.len()), (edge.status().applied_seq, 2));
}

/// The listener reports of a route, from the API: `(node, state, reason)`.
async fn listeners(api: &Api, route: &str) -> Vec<(String, String, String)> {
    let (status, v) =
        api.call(reqwest::Method::GET, &format!("/v1/orgs/acme/apps/shop/envs/prod/routes/{route}"), None).await;
    assert_eq!(status, 200, "{v}");
    let field = |l: &Value, k: &str| l[k].as_str().unwrap_or_default().to_owned();
    v["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (field(l, "node"), field(l, "state"), field(l, "reason")))
        .collect()
}

async fn until_listener(api: &Api, route: &str, state: &str) -> Vec<(String, String, String)> {
    timeout(T, async {
        loop {
            let l = listeners(api, route).await;
            if l.iter().any(|(_, s, _)| s == state) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("route {route} never became {state}"))
}

/// How many `route.listener_changed` events the log holds.
async fn listener_events(store: &Arc<dyn vt_store::Store>) -> usize {
    let events = store.read_events(0, 10_000).await.unwrap();
    events.iter().filter(|e| e.event_type == "route.listener_changed").count()
}

/// A route whose port another process holds fails alone: the route says why,
/// the other route is served, and once the port is free the edge binds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_process_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let tcp_port = free_port();
    let (api, cp) = control_plane(dir.path(), tcp_port, &["alpha", "gamma"]).await;
    let store = cp.store.clone();
    let (addr_a, cert_a) = tls_backend("alpha", "a.test").await;
    let port_c = proxy_backend().await;
    let held = free_port();
    let squatter = std::net::TcpListener::bind(("127.0.0.1", held)).unwrap();
    let routes = "/v1/orgs/acme/apps/shop/envs/prod/routes";
    let ra = api
        .post(routes, json!({"hostname": "a.test", "port": held, "process": "alpha", "backend_port": addr_a.port()}))
        .await;
    let rc = api
        .post(routes, json!({"protocol": "tcp", "process": "gamma", "backend_port": port_c, "proxy_protocol": true}))
        .await;
    let (ra, rc) = (ra["id"].as_str().unwrap().to_owned(), rc["id"].as_str().unwrap().to_owned());
    assert!(listeners(&api, &ra).await.is_empty(), "no report before an ingress runs");

    let ingress = Ingress::start(IngressConfig::loopback()).await.unwrap();
    let edge = Edge::new(Arc::new(StoreSource(store.clone())), ingress.clone(), "n1");
    let task = tokio::spawn(edge.clone().run(Duration::from_millis(200), std::future::pending()));
    let failed = until_listener(&api, &ra, "failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "n1");
    assert!(failed[0].2.contains(&format!("cannot listen on port {held}")), "{failed:?}");
    assert!(failed[0].2.contains("in use"), "{failed:?}");
    assert_eq!(until_listener(&api, &rc, "listening").await[0].0, "n1");
    // The other route is served; the edge is not in error (the failure is the route's).
    let mut s = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
    let client = s.local_addr().unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), client.to_string());
    let status = edge.status();
    assert!(status.last_error.is_none(), "{status:?}");
    assert_eq!(status.failed_ports.len(), 1, "{status:?}");
    // Retries do not repeat the report.
    let reports = listener_events(&store).await;
    assert_eq!(reports, 2);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(listener_events(&store).await, reports, "a report per change, not per retry");

    // The port is freed: the next retry binds it and the route is served.
    drop(squatter);
    until_listener(&api, &ra, "listening").await;
    let conn = connector(&[cert_a]);
    assert_eq!(tls_hello(&conn, SocketAddr::from(([127, 0, 0, 1], held)), "a.test").await.unwrap(), "alpha");
    assert!(edge.status().failed_ports.is_empty());
    assert_eq!(listener_events(&store).await, 3);

    // A restarted edge reads what it reported before and reports nothing new.
    task.abort();
    ingress.close_listeners().await;
    let ingress = Ingress::start(IngressConfig::loopback()).await.unwrap();
    let edge = Edge::new(Arc::new(StoreSource(store.clone())), ingress.clone(), "n1");
    edge.activate().await.unwrap();
    edge.activate().await.unwrap();
    assert_eq!(edge.status().routes, 2);
    assert_eq!(listener_events(&store).await, 3);
    assert_eq!(tls_hello(&conn, SocketAddr::from(([127, 0, 0, 1], held)), "a.test").await.unwrap(), "alpha");
}
