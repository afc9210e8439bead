//! Many nodes, first part (docs/nodes.md): a control plane without an agent of its own, and a
//! second `vt server --role agent --join URL` on this host (its own data directory and nftables
//! table) that enrolls once with a single-use token, registers with its WireGuard key and
//! labels, and runs what is deployed; the control plane's ingress reaches its instance. A
//! restart needs no token, the token is refused a second time, and revoking the node kills its
//! token. The joined node's instance's logs and exec sessions reach the user through the
//! channel the node dials to the control plane (`vt logs`, `vt logs --follow`, `vt exec` with
//! stdin and exit codes); with its node stopped, they are refused naming it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{acme_with_busybox, http_get, loopback_args, spawn_vt_server, vt_at, vt_isolated, Run, ServerChild};

const MANIFEST: &str = r#"schema_version = 1

[processes.web]
command = ["/bin/sh", "-c", "echo hello from node-b; (i=0; while sleep 1; do i=$((i+1)); echo tick $i; done) & mkdir -p /www && echo joined > /www/index.html && exec httpd -f -p 8080 -h /www"]
ports = [{ name = "http", port = 8080 }]
resources = { cpu = 0.5, memory_mib = 128 }
scaling = { min = 1, max = 1 }

[processes.web.healthcheck]
type = "http"
port = "http"
path = "/"
interval = "1s"
timeout = "500ms"
"#;

/// `vt server --role agent --join URL` on `data` as node `name`, with `token` (when given) in
/// `VT_ENROLL_TOKEN`: the child once it is ready, or everything it printed when it exited.
fn join(dir: &Path, data: &Path, url: &str, name: &str, token: Option<&str>) -> Result<ServerChild, String> {
    let args = [
        "server",
        "--role",
        "agent",
        "--join",
        url,
        "--node-name",
        name,
        "--data-dir",
        data.to_str().unwrap(),
        "--nft-table",
        &format!("vt{}", name.replace('-', "")),
        // Both nodes are this host: no WireGuard interface on it (crates/vt-mesh and
        // crates/vt-agent/tests/mesh.rs test the mesh in network namespaces).
        "--no-mesh",
    ];
    let mut cmd = vt_isolated(dir, &args);
    if let Some(t) = token {
        cmd.env("VT_ENROLL_TOKEN", t);
    }
    let mut child = ServerChild(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            return Err(seen);
        }
        seen.push_str(&line);
        if line.contains(&format!("vt node `{name}` ready")) {
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return Ok(child);
        }
    }
}

fn stop(mut child: ServerChild) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_node_joins_with_a_single_use_token_and_runs_what_is_deployed() {
    if vt_runtime::testing::networked_guest_or_skip("the join test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cp");
    let port = common::free_port();
    let range = format!("{port}-{port}");
    let args = loopback_args(
        &data,
        &["--role", "control-plane,edge", "--ingress-listen", "127.0.0.1", "--ingress-tcp-ports", &range],
    );
    let (cp, url) = spawn_vt_server(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);

    let issued = vt(&["node", "enroll-token", "create", "--ttl", "10m", "--labels", "zone=b", "-o", "json"]).json();
    let token = issued["secret"].as_str().unwrap().to_owned();
    let node_data = dir.path().join("node-b");
    let node = join(dir.path(), &node_data, &url, "node-b", Some(&token)).unwrap_or_else(|out| panic!("{out}"));
    // Registered before it said ready; the views show it within moments.
    let deadline = Instant::now() + Duration::from_secs(10);
    let b = loop {
        let r = Run::of(
            vt_isolated(dir.path(), &["node", "get", "node-b", "-o", "json"])
                .env("VT_SERVER", &url)
                .env("VT_DATA_DIR", &data)
                .output()
                .unwrap(),
            dir.path(),
        );
        if r.code == 0 {
            break r.json();
        }
        assert!(Instant::now() < deadline, "node-b is not known: {}", r.text);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((b["status"].as_str(), &b["labels"]), (Some("ready"), &serde_json::json!({"zone": "b"})), "{b}");
    assert_eq!(b["wireguard_public_key"].as_str().map(str::len), Some(44), "{b}");
    let key_file = std::fs::metadata(node_data.join("wireguard.key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_file.permissions()) & 0o777, 0o600);

    // The token is single-use: another host cannot enroll with it.
    let refused = join(dir.path(), &dir.path().join("node-c"), &url, "node-c", Some(&token));
    let out = refused.err().expect("a used enrollment token enrolls nobody");
    assert!(out.contains("single-use"), "{out}");

    // What is deployed runs on the joined node, and the control plane's ingress reaches it.
    let image = acme_with_busybox(dir.path(), &data, &url);
    vt(&["route", "create", "--tcp", "--process", "web", "--backend-port", "8080"]);
    let manifest = dir.path().join("vt.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    vt(&["deploy", "--wait", "--image", &image, "--manifest", manifest.to_str().unwrap()]);
    let instances = vt(&["instances", "-o", "json"]).json();
    let running: Vec<_> = instances["items"].as_array().unwrap().iter().filter(|i| i["status"] == "running").collect();
    assert_eq!(running.len(), 1, "{instances}");
    assert_eq!(running[0]["node_id"], b["id"], "placed on the joined node");
    let served = |within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            match http_get(port, "/") {
                Ok(body) if String::from_utf8_lossy(&body).trim() == "joined" => return,
                other => assert!(Instant::now() < deadline, "not served through the ingress: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    served(Duration::from_secs(30));

    // Its logs and exec sessions come through the node's channel (the control plane has no agent).
    let id = running[0]["id"].as_str().unwrap().to_owned();
    let cli = |args: &[&str]| {
        let mut c = vt_isolated(dir.path(), args);
        c.env("VT_SERVER", &url).env("VT_DATA_DIR", &data).env("VT_ORG", "acme").env("VT_APP", "web");
        c.env("VT_ENV", "prod");
        c
    };
    let ticks = |text: &str| text.lines().filter_map(|l| l.split(" tick ").nth(1)?.trim().parse::<u32>().ok()).max();
    let deadline = Instant::now() + Duration::from_secs(30);
    let backlog = loop {
        let r = vt(&["logs", "--instance", &id]);
        if r.stdout.contains("stdout hello from node-b") && ticks(&r.stdout).is_some() {
            break r.stdout;
        }
        assert!(Instant::now() < deadline, "the joined node's log: {}", r.text);
        std::thread::sleep(Duration::from_millis(500));
    };
    // Followed: lines written after the backlog arrive.
    let last = ticks(&backlog).unwrap();
    let mut follow = cli(&["logs", "--instance", &id, "--follow"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let began = Instant::now();
    let newer = loop {
        let line = lines.next().expect("the follow stream stays open").unwrap();
        if ticks(&line).is_some_and(|n| n > last + 1) {
            break line;
        }
    };
    assert!(began.elapsed() < Duration::from_secs(20), "{newer} after {:?}", began.elapsed());
    let _ = follow.kill();
    let _ = follow.wait();
    let r = vt(&["exec", &id, "--", "echo", "hi"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{}", r.text);
    let mut child = cli(&["exec", "-i", &id, "--", "sh", "-c", "cat; echo err >&2; exit 3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\nworld\n").unwrap();
    let r = Run::of(child.wait_with_output().unwrap(), dir.path());
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (3, "hello\nworld\n", "err\n"), "{}", r.text);

    // A restart needs no token: the node is the same, its instance runs again.
    stop(node);
    // Meanwhile its instance's logs are refused, naming the node.
    let r = Run::of(cli(&["logs", "--instance", &id]).output().unwrap(), dir.path());
    assert!(r.code != 0 && r.stderr.contains("node `node-b`") && r.stderr.contains("not connected"), "{}", r.text);
    let node = join(dir.path(), &node_data, &url, "node-b", None).unwrap_or_else(|out| panic!("{out}"));
    let nodes = vt(&["node", "list", "-o", "json"]).json();
    assert_eq!(nodes["items"].as_array().unwrap().len(), 1, "still one node: {nodes}");
    assert_eq!(nodes["items"][0]["id"], b["id"]);
    served(Duration::from_secs(120));
    // The restarted node's channel serves exec again (its instance is the same or a new one).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = Run::of(cli(&["exec", "--process", "web", "--", "echo", "again"]).output().unwrap(), dir.path());
        if (r.code, r.stdout.as_str()) == (0, "again\n") {
            break;
        }
        assert!(Instant::now() < deadline, "exec after the node's restart: {}", r.text);
        std::thread::sleep(Duration::from_millis(500));
    }

    // Revoked: its token is dead (the agent is refused), the node is `revoked`.
    vt(&["node", "revoke", "node-b"]);
    let b = vt(&["node", "get", "node-b", "-o", "json"]).json();
    assert_eq!(b["status"], "revoked", "{b}");
    let node_token = std::fs::read_to_string(node_data.join("node-token")).unwrap();
    let refused = vt_isolated(dir.path(), &["node", "list"])
        .env("VT_SERVER", &url)
        .env("VT_TOKEN", node_token.trim())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && text.contains("revoked"), "{text}");
    stop(node);
    stop(cp);
}
