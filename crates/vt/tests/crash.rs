//! Crash safety: a client appends in a loop while `vt server` is killed with
//! SIGKILL and restarted on the same data directory. Every acknowledged write
//! must be there afterwards, the views must catch up, and nothing may be
//! duplicated (the client retries unacknowledged writes with the same
//! Idempotency-Key, as the CLI does).
//!
//! Plain HTTP/1.1 over std::net so the test depends on nothing but the binary.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn start(dir: &Path, addr: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vt"))
        .args(["server", "--data-dir", dir.to_str().unwrap(), "--listen", &addr.to_string()])
        .args(["--workspace-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// One request; `None` when the server cannot be reached or the connection breaks.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some((200, _)) = request(addr, "GET", "/healthz", "", &[], "") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not become ready");
}

#[test]
fn acknowledged_writes_survive_sigkill_and_nothing_is_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let mut server = start(dir.path(), addr);
    wait_ready(addr);
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap().trim().to_owned();

    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut kills = 0;
    let mut i = 0u64;
    let started = Instant::now();
    let mut next_kill = Instant::now() + Duration::from_millis(400);
    while kills < 3 || acked.len() < 150 {
        assert!(started.elapsed() < Duration::from_secs(120), "test ran too long");
        let name = format!("org{i}");
        let key = format!("crash-{i}");
        let body = format!("{{\"name\":\"{name}\"}}");
        // Retry until acknowledged, always with the same key.
        loop {
            if kills < 3 && Instant::now() >= next_kill {
                server.kill().unwrap(); // SIGKILL
                server.wait().unwrap();
                kills += 1;
                server = start(dir.path(), addr);
                next_kill = Instant::now() + Duration::from_millis(400);
            }
            match request(addr, "POST", "/v1/orgs", &token, &[("Idempotency-Key", &key)], &body) {
                Some((201, _)) => {
                    acked.insert(name.clone());
                    break;
                }
                Some((status, body)) if status < 500 => panic!("unexpected {status}: {body}"),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        i += 1;
    }
    wait_ready(addr);

    // The log: dense, and exactly one org.created per name.
    let (_, status) = request(addr, "GET", "/v1/system/status", &token, &[], "").unwrap();
    let head = serde_json::from_str::<serde_json::Value>(&status).unwrap()["head"].as_u64().unwrap();
    let mut after = 0;
    let mut created = vec![];
    loop {
        let (code, page) =
            request(addr, "GET", &format!("/v1/events?after={after}&limit=1000"), &token, &[], "").unwrap();
        assert_eq!(code, 200, "{page}");
        let page: serde_json::Value = serde_json::from_str(&page).unwrap();
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        for e in events {
            after += 1;
            assert_eq!(e["seq"].as_u64().unwrap(), after, "seqs are dense");
            if e["event_type"] == "org.created" {
                created.push(e["payload"]["name"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(after, head);
    let unique: BTreeSet<String> = created.iter().cloned().collect();
    assert_eq!(unique.len(), created.len(), "no org was created twice");
    assert!(acked.is_subset(&unique), "every acknowledged write is in the log");

    // The views catch up and agree with the log.
    let (code, orgs) = request(addr, "GET", "/v1/orgs", &token, &[("Vt-Min-Seq", &head.to_string())], "").unwrap();
    assert_eq!(code, 200, "{orgs}");
    let names: BTreeSet<String> = serde_json::from_str::<serde_json::Value>(&orgs).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, unique);
    server.kill().unwrap();
    server.wait().unwrap();
    eprintln!("{} acknowledged writes, {kills} SIGKILLs, {head} events", acked.len());
}
