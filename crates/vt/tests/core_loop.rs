//! The core loop, end to end with real parts only: `vt server` (control plane, scheduler,
//! node agent, ingress) on a fresh data dir → `vt image push` of a busybox image →
//! `vt deploy --wait` of a manifest whose `web` process serves HTTP with an http health check,
//! 2 instances → both boot as microVMs → requests through the ingress (a TCP route) succeed →
//! a second release rolls while a client sends requests in a loop, none failing → `vt
//! rollback --wait` → the first body is served again. Beside it all along, a TLS route whose
//! port another process holds: it says `failed` with the reason, the TCP route is served
//! regardless, and once the port is freed the route listens.
//!
//! Needs what the agent tests need (guest kernel, qemu, busybox) plus tap devices (root).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{acme_with_busybox, http_get, ingress_server_args, spawn_vt_server, vt_at};

fn manifest(body: &str) -> String {
    format!(
        r#"schema_version = 1

[env]
BODY = "{body}"

[processes.web]
command = ["/bin/sh", "-c", "mkdir -p /www && echo \"body $BODY\" > /www/index.html && exec httpd -f -p 8080 -h /www"]
ports = [{{ name = "http", port = 8080 }}]
resources = {{ cpu = 0.5, memory_mib = 128 }}
scaling = {{ min = 2, max = 2 }}

[processes.web.healthcheck]
type = "http"
port = "http"
path = "/"
interval = "1s"
timeout = "500ms"
"#
    )
}

/// One GET of `/` through the ingress: the body, trimmed, or why not.
fn get(port: u16) -> Result<String, String> {
    http_get(port, "/").map(|b| String::from_utf8_lossy(&b).trim().to_owned())
}

/// Wait until the ingress answers with `want`.
fn until_body(port: u16, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match get(port) {
            Ok(b) if b == want => return,
            other => assert!(Instant::now() < deadline, "expected {want:?} through the ingress, got {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn core_loop_deploy_roll_and_rollback_through_the_ingress() {
    if vt_runtime::testing::networked_guest_or_skip("the core loop test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let args = ingress_server_args(&data, port);
    let (mut child, url) = spawn_vt_server(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);
    let image = acme_with_busybox(dir.path(), &data, &url);
    let r = vt(&["route", "create", "--tcp", "--process", "web", "--backend-port", "8080", "-o", "json"]);
    assert_eq!(r.json()["port"], port, "{}", r.text);
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = squatter.local_addr().unwrap().port().to_string();
    let r = vt(&[
        "route",
        "create",
        "--hostname",
        "web.test",
        "--port",
        &held,
        "--process",
        "web",
        "--backend-port",
        "8080",
    ]);
    assert_eq!(r.code, 0, "{}", r.text);

    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, manifest(body)).unwrap();
        p
    };
    let (m1, m2) = (write("v1.toml", "v1"), write("v2.toml", "v2"));
    let deploy =
        |m: &Path| vt(&["deploy", "--wait", "--image", &image, "--manifest", m.to_str().unwrap(), "-o", "json"]);

    // First release: 2 instances, both ready, served through the ingress.
    let t = Instant::now();
    let first = deploy(&m1);
    println!("deploy 1 took {:?}: {}", t.elapsed(), first.stdout);
    let r = vt(&["instances", "-o", "json"]);
    let ready: Vec<_> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "running" && i["health"] == "passing")
        .map(|i| i["address"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ready.len(), 2, "two ready instances: {}", r.text);
    assert!(ready.iter().all(|a| a.parse::<std::net::Ipv6Addr>().is_ok()), "IPv6 addresses: {ready:?}");
    until_body(port, "body v1", Duration::from_secs(30));

    // Second release rolls while a client keeps sending requests: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let bodies = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let client = {
        let (stop, ok, failures, bodies) = (stop.clone(), ok.clone(), failures.clone(), bodies.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match get(port) {
                    Ok(b) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        bodies.lock().unwrap().insert(b);
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let t = Instant::now();
    let second = deploy(&m2);
    println!("deploy 2 (rolling) took {:?}: {}", t.elapsed(), second.stdout);
    until_body(port, "body v2", Duration::from_secs(30));
    // The client's own requests see the new release too before it stops (its last one may have
    // been answered by the old release just before this probe saw the new one).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bodies.lock().unwrap().contains("body v2") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let failures = failures.lock().unwrap().clone();
    let n = ok.load(Ordering::SeqCst);
    println!("during the rollout: {n} requests succeeded, {} failed", failures.len());
    assert!(failures.is_empty(), "requests failed during the rolling deploy: {failures:?}");
    assert!(n > 10, "the client ran during the rollout ({n} requests)");
    assert!(bodies.lock().unwrap().contains("body v2"));

    // The held port's route says why it is not served, in the list and in describe.
    let listeners = |host: &str| {
        let list = vt(&["route", "list", "-o", "json"]).json();
        let route = list["items"].as_array().unwrap().iter().find(|r| r["hostname"] == host).cloned().unwrap();
        route["listeners"].clone()
    };
    let l = listeners("web.test");
    assert_eq!((l[0]["node"].as_str(), l[0]["state"].as_str()), (Some("node-1"), Some("failed")), "{l}");
    assert!(l[0]["reason"].as_str().unwrap().contains("in use"), "{l}");
    let text = vt(&["route", "list"]).stdout;
    assert!(text.contains("failed on node-1") && text.contains("Address already in use"), "{text}");
    let text = vt(&["describe"]).stdout;
    assert!(text.contains(&format!("route web.test:{held} is not served on node node-1")), "{text}");
    assert!(text.contains("next: vt route get "), "{text}");
    // Freed, it is bound at the edge's next retry.
    drop(squatter);
    let deadline = Instant::now() + Duration::from_secs(20);
    while listeners("web.test")[0]["state"] != "listening" {
        assert!(Instant::now() < deadline, "the freed port was never bound: {}", listeners("web.test"));
        std::thread::sleep(Duration::from_millis(200));
    }

    // The in-process agent holds a node token of its own, private to root.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("node-token")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Rollback: the first body again.
    let t = Instant::now();
    vt(&["rollback", "--wait"]);
    println!("rollback took {:?}", t.elapsed());
    until_body(port, "body v1", Duration::from_secs(30));

    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
