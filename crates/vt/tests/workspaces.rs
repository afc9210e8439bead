//! A workspace end to end (docs/workspaces.md) on the real runtime with the default template
//! (scripts/workspace-template.sh): `vt workspace create dev --wait` boots code-server in a
//! microVM, the workspace origin serves its workbench behind the console user's basic auth and
//! passes its WebSocket upgrade, a file in the home survives stop → start, a registered port
//! answers 502 until something listens and then serves it, a stopped workspace answers 503, and
//! delete removes the VM and the disk and the path answers 404.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{spawn_vt_server_with_origin, vt_at, Run};

/// One request to the workspace origin at `addr`: the status and the whole answer.
fn request(addr: &str, method: &str, path: &str, headers: &[String]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut out = vec![];
    // An upgraded connection stays open: read what came within the timeout.
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        if out.starts_with(b"HTTP/1.1 101") && out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {text}"));
    (status, text)
}

/// Poll `check` every 250 ms until it is true; panic with `what` after `within`.
fn wait_until(within: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let began = Instant::now();
    while !check() {
        assert!(began.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    began.elapsed()
}

#[test]
fn a_workspace_runs_code_server_behind_the_workspace_origin_and_keeps_its_home() {
    if vt_runtime::testing::guest_or_skip("the workspace test", &[]).is_none() {
        return;
    }
    let Some(layout) = common::workspace_template() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = common::plain_server_args(
        &data,
        &["--workspace-template", layout.to_str().unwrap(), "--workspace-access-every", "1s"],
    );
    let (mut child, url, origin, _) = spawn_vt_server_with_origin(dir.path(), &args);
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        vt(&a).json()
    };
    vt(&["org", "create", "acme"]);
    let password = std::fs::read_to_string(data.join("console-password")).unwrap();
    let auth = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("vt:{}", password.trim()))
    );
    let get = |path: &str| request(&origin, "GET", path, std::slice::from_ref(&auth));

    // Create → the workbench, timed phase by phase.
    let began = Instant::now();
    let created = vt(&["workspace", "create", "dev", "--wait"]);
    let running_in = began.elapsed();
    let served_in = wait_until(Duration::from_secs(60), "the workbench after create", || {
        get("/workspace/dev/?folder=/home/vt").1.contains("workbench")
    }) + running_in;
    println!("create: running in {running_in:?}, workbench served in {served_in:?}\n{}", created.text);

    // Basic auth only: 401 without; the bare path redirects to its slash form.
    let (status, _) = request(&origin, "GET", "/workspace/dev/", &[]);
    assert_eq!(status, 401);
    let (status, answer) = get("/workspace/dev");
    assert_eq!(status, 308, "{answer}");
    assert!(answer.contains("location: /workspace/dev/") || answer.contains("Location: /workspace/dev/"), "{answer}");
    // code-server's WebSocket (the workbench's connection to its server) upgrades through the front.
    let ws = [
        auth.clone(),
        "Upgrade: websocket".to_owned(),
        "Connection: Upgrade".to_owned(),
        "Sec-WebSocket-Version: 13".to_owned(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
        format!("Origin: http://{origin}"),
    ];
    let (status, answer) = request(
        &origin,
        "GET",
        "/workspace/dev/?reconnectionToken=00000000-0000-0000-0000-000000000001&reconnection=false&skipWebSocketFrames=false",
        &ws,
    );
    assert_eq!(status, 101, "{answer}");

    // A file in the home survives stop → start.
    let ws_json = json(&["workspace", "get", "dev"]);
    assert_eq!(ws_json["status"], "running", "{ws_json}");
    let first = ws_json["instance_id"].as_str().unwrap().to_owned();
    let as_vt = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"];
    let mut write = vec!["exec", first.as_str(), "--"];
    write.extend(as_vt);
    write.extend(["sh", "-c", "echo kept > /home/vt/kept.txt"]);
    vt(&write);

    // A port: 502 until something listens, then served with the prefix stripped.
    vt(&["workspace", "port", "add", "dev", "3000"]);
    wait_until(Duration::from_secs(10), "port 3000 answers 502", || get("/workspace/dev/port/3000/").0 == 502);
    let mut serve = vec!["exec", first.as_str(), "--"];
    serve.extend(as_vt);
    serve.extend([
        "setsid",
        "-f",
        "/opt/node/bin/node",
        "-e",
        "require('http').createServer((q, s) => s.end('port 3000 got ' + q.url)).listen(3000)",
    ]);
    vt(&serve);
    wait_until(Duration::from_secs(30), "port 3000 served", || {
        get("/workspace/dev/port/3000/hello?x=1").1.contains("port 3000 got /hello?x=1")
    });

    // Stop: 503 with how to start it; start: the same home.
    vt(&["workspace", "stop", "dev", "--wait"]);
    let (status, page) = get("/workspace/dev/");
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("vt workspace start dev"), "{page}");
    let began = Instant::now();
    vt(&["workspace", "start", "dev", "--wait"]);
    let running_in = began.elapsed();
    let served_in = wait_until(Duration::from_secs(60), "the workbench after start", || {
        get("/workspace/dev/?folder=/home/vt").1.contains("workbench")
    }) + running_in;
    println!("start (disk exists): running in {running_in:?}, workbench served in {served_in:?}");
    let ws_json = json(&["workspace", "get", "dev"]);
    let second = ws_json["instance_id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(vt(&["exec", &second, "--", "cat", "/home/vt/kept.txt"]).stdout.trim(), "kept");
    // The front's accesses reach the workspace's view (recorded every second here).
    wait_until(Duration::from_secs(10), "the last access recorded", || {
        !json(&["workspace", "get", "dev"])["last_accessed_at"].is_null()
    });
    let activity: Vec<String> = json(&["workspace", "get", "dev"])["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(activity.contains(&"workspace.port_added".to_owned()), "{activity:?}");

    // Delete: the VM and the disk go, the path answers 404.
    vt(&["workspace", "delete", "dev", "--yes"]);
    let gone = |d: &Path| -> bool {
        let missing = common::vt_isolated(dir.path(), &["workspace", "get", "dev"])
            .env("VT_SERVER", &url)
            .env("VT_DATA_DIR", d)
            .output()
            .unwrap();
        Run::of(missing, dir.path()).code != 0
    };
    wait_until(Duration::from_secs(60), "the workspace gone", || gone(&data));
    wait_until(Duration::from_secs(10), "the path answering 404", || get("/workspace/dev/").0 == 404);
    let vms = std::process::Command::new("pgrep").args(["-f", &second]).output().unwrap();
    assert!(vms.stdout.is_empty(), "a VM of the deleted workspace still runs");
    let disks: Vec<_> = walk(&data).into_iter().filter(|p| p.to_string_lossy().contains("vol_")).collect();
    assert!(disks.is_empty(), "the deleted workspace's disk is left: {disks:?}");

    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
