//! `vt server` runs the ingress: a route created through the CLI gets a
//! listener, and `GET /metrics` shows the ingress's and the edge's counters.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{free_port, ingress_server_args, spawn_vt_server, vt_isolated, Run};

/// `GET path` with `token` (the operator's: metrics are for admins).
fn get(url: &str, path: &str, token: &str) -> String {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn server_runs_the_ingress_and_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let args = ingress_server_args(&data, port);
    let (mut child, url) = spawn_vt_server(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    // Metrics are the operator's: without a token, 401.
    assert!(get(&url, "/metrics", "none").starts_with("HTTP/1.1 401"));
    let vt = |args: &[&str]| {
        let mut c = vt_isolated(dir.path(), args);
        c.env("VT_DATA_DIR", &data).env("VT_SERVER", &url);
        Run::of(c.output().unwrap(), dir.path())
    };
    for args in [
        &["org", "create", "acme"][..],
        &["app", "create", "web", "--org", "acme"],
        &["env", "create", "prod", "--org", "acme", "--app", "web"],
    ] {
        let r = vt(args);
        assert_eq!(r.code, 0, "{}", r.text);
    }
    let r = vt(&[
        "route",
        "create",
        "--tcp",
        "--process",
        "db",
        "--backend-port",
        "5432",
        "--org",
        "acme",
        "--app",
        "web",
        "--env",
        "prod",
        "-o",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.text);
    let route = r.json();
    assert_eq!(route["port"], port);
    let id = route["id"].as_str().unwrap().to_owned();

    // The edge applies the route: the port listens (no backend yet: the
    // connection is closed and counted as a failure of that route).
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = get(&url, "/metrics", &token);
        if m.contains(&format!("vt_ingress_route_connections_total{{route=\"{id}\"}}")) {
            break m;
        }
        assert!(Instant::now() < deadline, "route never applied:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("vt_edge_error 0"), "{metrics}");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the route's port listens");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)), "no backend: closed");
    assert!(std::path::Path::new(&dir.path().join("data/ingress-table.json")).exists());

    // A TLS route on a port another process holds: failed, and why; the TCP route still listens.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = squatter.local_addr().unwrap().port().to_string();
    let scope = ["--org", "acme", "--app", "web", "--env", "prod"];
    let create =
        ["route", "create", "--hostname", "db.test", "--port", &held, "--process", "db", "--backend-port", "1"];
    let r = vt(&[&create[..], &scope].concat());
    assert_eq!(r.code, 0, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let r = vt(&[&["route", "get", "db.test"][..], &scope].concat());
        if r.stdout.contains("failed on ") {
            break r.stdout;
        }
        assert!(Instant::now() < deadline, "never reported failed:\n{}", r.text);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains(&format!("cannot listen on port {held}: Address already in use")), "{text}");
    let list = vt(&[&["route", "list", "-o", "json"][..], &scope].concat()).json();
    let states: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|r| r["listeners"][0]["state"].as_str().unwrap_or("-")).collect();
    assert!(states.contains(&"listening") && states.contains(&"failed"), "{list}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "the TCP route still listens");
    drop(squatter);

    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
