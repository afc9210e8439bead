//! A mutation retried with the same idempotency key acts once.

use std::net::SocketAddr;

use vt_client::vt_api::{CreateApp, CreateOrg, Name};
use vt_client::{Client, Error};
use vt_server::{Server, ServerConfig};

async fn start() -> (Client, tempfile::TempDir) {
    let (url, token, dir) = serve().await;
    (Client::new(&url, Some(token)), dir)
}

/// A server: its URL, its admin token, its data directory.
async fn serve() -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned(), SocketAddr::from(([127, 0, 0, 1], 0)));
    config.sqlite = vt_store::SqliteOptions { full_sync: false };
    let server = Server::start(&config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let token = std::fs::read_to_string(server.admin_token_written.clone().unwrap()).unwrap();
    tokio::spawn(server.run(std::future::pending()));
    (format!("http://{addr}"), token.trim().to_owned(), dir)
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

#[tokio::test]
async fn same_key_acts_once() {
    let (client, _dir) = start().await;
    let req = CreateOrg { name: name("acme") };
    let first = client.org_create(&req, "key-1").await.unwrap();
    let second = client.org_create(&req, "key-1").await.unwrap();
    assert_eq!(first.value.id, second.value.id);
    assert!(!first.replayed);
    assert!(second.replayed);

    let page = client.event_list(Some(0), 1000).await.unwrap();
    let id = first.value.id.to_string();
    let about_org: Vec<_> = page.events.iter().filter(|e| e.aggregate_id == id).collect();
    assert_eq!(about_org.len(), 1, "{about_org:#?}");

    // The same key with a different request is refused, not replayed.
    let err = client.org_create(&CreateOrg { name: name("other") }, "key-1").await.unwrap_err();
    assert_eq!(err.api().map(|e| e.code.as_str()), Some("idempotency_key_reused"), "{err}");

    // A new key is a new request: the name is taken now.
    let err = client.org_create(&req, "key-2").await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 409, .. }), "{err}");

    let app = client.app_create("acme", &CreateApp { name: name("web"), description: None }, "key-3").await.unwrap();
    assert_eq!(client.app_get(&first.value.id.to_string(), "web").await.unwrap().id, app.value.id);
}

#[tokio::test]
async fn unreachable_server_is_a_connect_error_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&format!("http://{addr}"), None).with_retries(3, std::time::Duration::from_millis(10));
    let started = std::time::Instant::now();
    let err = client.org_create(&CreateOrg { name: name("acme") }, "k").await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(30), "retried with backoff");
}

/// A server that answers 503 once, then 201: the retry carries the same key.
#[tokio::test]
async fn retries_a_503_with_the_same_key() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = keys.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let len = sock.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..len]).to_string();
            let key = req.lines().find_map(|l| l.strip_prefix("idempotency-key: ")).unwrap_or("").to_owned();
            seen.lock().unwrap().push(key);
            let (status, body) = if n == 0 {
                ("503 Service Unavailable", "busy".to_owned())
            } else {
                ("201 Created", r#"{"id":"org_01jd8x6k3v9q4m2t7r5w0y1zcb","name":"acme","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#.to_owned())
            };
            let resp = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nvt-seq: 7\r\nconnection: close\r\n\r\n{body}", body.len());
            sock.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    let client =
        Client::new(&format!("http://{addr}"), Some("t".into())).with_retries(3, std::time::Duration::from_millis(10));
    let org = client.org_create(&CreateOrg { name: name("acme") }, "the-key").await.unwrap();
    assert_eq!(org.value.name, "acme");
    assert_eq!(org.seq, 7);
    assert_eq!(*keys.lock().unwrap(), ["the-key", "the-key"]);
}

/// A client given several URLs of a control plane: the one that cannot be connected to is
/// left for the next, for reads and mutations (same key: acts once), and the client keeps
/// the one that answered.
#[tokio::test]
async fn an_unreachable_url_is_left_for_the_next() {
    let (up, admin, _dir) = serve().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let client = Client::new(&closed, Some(admin.clone())).with_fallbacks(std::slice::from_ref(&up));
    assert_eq!(client.base(), closed);

    let org = client.org_create(&CreateOrg { name: name("acme") }, "failover-1").await.unwrap();
    assert!(!org.replayed);
    assert_eq!(client.base(), up, "the client keeps the URL that answered");
    assert_eq!(client.org_get("acme").await.unwrap().id, org.value.id);

    // Every clone shares the URL in use; a clone made before moving on moves too.
    let twin = Client::new(&closed, Some(admin)).with_fallbacks(std::slice::from_ref(&up));
    let copy = twin.clone();
    let again = twin.org_create(&CreateOrg { name: name("acme") }, "failover-1").await.unwrap();
    assert!(again.replayed, "the same key acted once");
    assert_eq!(copy.base(), up);

    // Every URL down: the error names the last one tried.
    let down = Client::new(&closed, None)
        .with_fallbacks(std::slice::from_ref(&closed))
        .with_retries(1, std::time::Duration::from_millis(1));
    let err = down.org_list().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&closed), "{err}");
}

/// A long-lived caller's keys: its prefix and kind, a new key per call.
#[test]
fn idempotency_keys_are_new_per_call() {
    let keys = vt_client::IdempotencyKeys::new("agent-node-1");
    let (a, b) = (keys.next("hb"), keys.next("hb"));
    assert!(a.starts_with("agent-node-1-hb-") && b.starts_with("agent-node-1-hb-"), "{a} {b}");
    assert_ne!(a, b);
}
