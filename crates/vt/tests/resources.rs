//! org/app/env/release/deploy/scale/describe/instances/events against a real
//! server, in table and JSON form.

mod common;

use common::{TestServer, DIGEST_IMAGE};

#[test]
fn org_app_env() {
    let s = TestServer::start();
    snap!("org_create", s.run(&["org", "create", "acme"]));
    snap!("org_create_json", s.run(&["org", "create", "globex", "-o", "json"]));
    snap!("org_list", s.run(&["org", "list"]));
    snap!("org_list_json", s.run(&["org", "list", "--format", "json"]));
    snap!("org_get", s.run(&["org", "get", "acme"]));
    snap!("app_create", s.run(&["app", "create", "web", "--org", "acme", "--description", "the site"]));
    snap!("app_list", s.run(&["app", "list", "--org", "acme"]));
    snap!("app_get_json", s.run(&["app", "get", "web", "--org", "acme", "-o", "json"]));
    snap!("env_create", s.run(&["env", "create", "prod", "--org", "acme", "--app", "web"]));
    snap!("env_list", s.run(&["env", "list", "--org", "acme", "--app", "web"]));
    snap!("env_get", s.run(&["env", "get", "prod", "--org", "acme", "--app", "web"]));
}

#[test]
fn context_supplies_defaults_and_flags_win() {
    let s = TestServer::start();
    s.seed();
    snap!("context_show", s.run(&["context", "show"]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.dir.path().join("config.toml")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the context file may hold a token");
    }
    // The environment beats the context; a flag beats both.
    let r = s.run_with(&["app", "list"], &[("VT_ORG", "other")]);
    assert_eq!(r.code, 3, "{}", r.text);
    let r = s.run_with(&["app", "list", "--org", "acme"], &[("VT_ORG", "other")]);
    assert_eq!(r.code, 0, "{}", r.text);
    // The context says org `acme`; a flag naming another org wins.
    let r = s.run(&["app", "list", "--org", "other"]);
    assert_eq!(r.code, 3, "{}", r.text);
    let r = s.run(&["app", "get"]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert!(r.stdout.contains("name         web"), "{}", r.text);
}

#[test]
fn release_deploy_scale_describe() {
    let s = TestServer::start();
    s.seed();
    let manifest = s.manifest();
    let manifest = manifest.to_str().unwrap();
    let r = s.run(&["release", "create", "--image", DIGEST_IMAGE, "--manifest", manifest, "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let release = r.json()["id"].as_str().unwrap().to_owned();
    snap!("release_create", s.run(&["release", "create", "--image", DIGEST_IMAGE, "--manifest", manifest]));
    snap!("release_list", s.run(&["release", "list"]));
    snap!("deploy_create", s.run(&["deploy", "--release", &release]));
    snap!("deploy_list", s.run(&["deploy", "list"]));
    snap!("deploy_list_json", s.run(&["deploy", "list", "-o", "json"]));
    snap!("scale", s.run(&["scale", "web=3", "worker=2"]));
    snap!("scale_out_of_range", s.run(&["scale", "worker=0"]));
    snap!("scale_json", s.run(&["scale", "web=2", "-o", "json"]));
    snap!("scale_show", s.run(&["scale"]));
    snap!("describe", s.run(&["describe"]));
    snap!("describe_json", s.run(&["describe", "-o", "json"]));
    snap!("instances_empty", s.run(&["instances"]));
    snap!("instances_empty_json", s.run(&["instances", "-o", "json"]));
    snap!("events", s.run(&["events", "--after", "1", "--limit", "5"]));
    snap!("events_newest", s.run(&["events", "--limit", "3"]));
}

#[test]
fn deploy_with_image_creates_the_release_first() {
    let s = TestServer::start();
    s.seed();
    let manifest = s.manifest();
    let r = s.run(&["deploy", "--image", DIGEST_IMAGE, "--manifest", manifest.to_str().unwrap(), "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let deploy = r.json();
    let releases = s.run(&["release", "list", "-o", "json"]).json();
    assert_eq!(releases["items"][0]["id"], deploy["release_id"]);
    // No scheduler runs in this test: the deploy stays pending, so --wait times out (exit 1).
    let r = s.run(&["deploy", "--release", deploy["release_id"].as_str().unwrap(), "--wait", "--timeout", "1"]);
    assert_eq!(r.code, 1, "{}", r.text);
    assert!(r.stderr.contains("error: deploy dep_"), "{}", r.text);
    assert!(r.stderr.lines().all(|l| !l.starts_with('[')), "no progress lines when stderr is not a TTY: {}", r.text);
}

#[test]
fn json_output_is_only_json() {
    let s = TestServer::start();
    s.seed();
    let manifest = s.manifest();
    let manifest = manifest.to_str().unwrap();
    for args in [
        &["org", "list"][..],
        &["org", "get", "acme"],
        &["app", "create", "api"],
        &["app", "list"],
        &["env", "list"],
        &["env", "get", "prod"],
        &["release", "create", "--image", DIGEST_IMAGE, "--manifest", manifest],
        &["release", "list"],
        &["deploy", "list"],
        &["scale", "web=1"],
        &["scale"],
        &["describe"],
        &["instances"],
        &["events"],
        &["node", "list"],
        &["context", "show"],
        &["manifest", "json", manifest],
        &["manifest", "validate", manifest],
        &["manifest", "schema"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let r = s.run(&a);
        assert_eq!(r.code, 0, "{args:?}: {}", r.text);
        assert!(r.stderr.is_empty(), "{args:?}: stderr should be empty: {}", r.text);
        let v = r.json();
        assert!(v.is_object() || v.is_array(), "{args:?}");
        assert!(r.stdout.ends_with("}\n") || r.stdout.ends_with("]\n"), "{args:?}");
    }
}

#[test]
fn events_follow_streams_ndjson() {
    let s = TestServer::start();
    s.seed();
    let mut child = s.vt(&["events", "--follow", "-o", "json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut seen = vec![];
    for _ in 0..4 {
        let line = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(v["event_type"].as_str().unwrap().to_owned());
    }
    child.kill().unwrap();
    let _ = child.wait();
    // The admin token, then the console user's (docs/front.md), then the seed.
    assert_eq!(seen, ["token.created", "token.created", "org.created", "app.created"]);
}

#[test]
fn rollback_to_the_previous_release() {
    let s = TestServer::start();
    s.seed();
    snap!("rollback_none", s.run(&["rollback"]));
    let manifest = s.manifest();
    let mut releases = vec![];
    for _ in 0..2 {
        let r = s.run(&[
            "release",
            "create",
            "--image",
            DIGEST_IMAGE,
            "--manifest",
            manifest.to_str().unwrap(),
            "-o",
            "json",
        ]);
        assert_eq!(r.code, 0, "{}", r.text);
        let id = r.json()["id"].as_str().unwrap().to_owned();
        assert_eq!(s.run(&["deploy", "--release", &id]).code, 0);
        releases.push(id);
    }
    snap!("rollback", s.run(&["rollback"]));
    let r = s.run(&["rollback", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let d = r.json();
    assert_eq!(
        (d["kind"].as_str(), d["release_id"].as_str()),
        (Some("rollback"), Some(releases[1].as_str())),
        "back again: {d}"
    );
    snap!("rollback_json", r);
}

/// One request to the test server as a node agent would make it (plain
/// HTTP/1.1): the status and the body.
fn api(s: &TestServer, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let addr = s.url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.token,
        body.len()
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    let (head, mut rest) = out.split_once("\r\n\r\n").unwrap();
    let mut text = String::new();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            text.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
    } else {
        text = rest.to_owned();
    }
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// Poll the env's instances until `ok` finds one (10 s at most).
/// Stand for node `node`'s agent on its channel (the real protocol, `vt_api::channel`): open
/// the channel with its token, answer the first request, a log's, with `log` on the request's
/// stream. Returns once the channel is open; the thread ends after the answer.
fn serve_one_log(url: &str, token: &str, node: &str, log: &'static str) -> std::thread::JoinHandle<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use vt_api::channel::{NodeRequest, StreamOpen};
    let client = vt_client::Client::new(url, Some(token.to_owned()));
    let node = node.to_owned();
    let (open, opened) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut channel = client.node_channel(&node).await.unwrap();
            open.send(()).unwrap();
            let request = loop {
                match channel.next().await.expect("the channel stays open").unwrap() {
                    Message::Text(t) => break serde_json::from_str::<NodeRequest>(t.as_str()).unwrap(),
                    _ => continue,
                }
            };
            assert!(matches!(request, NodeRequest::Logs { .. }), "{request:?}");
            let mut stream = client.node_stream(&node, request.request()).await.unwrap();
            let opening = serde_json::to_string(&StreamOpen::Opened).unwrap();
            stream.send(Message::Text(opening.into())).await.unwrap();
            stream.send(Message::Binary(log.as_bytes().to_vec().into())).await.unwrap();
            stream.close(None).await.unwrap();
        });
    });
    opened.recv_timeout(std::time::Duration::from_secs(10)).expect("the channel opens");
    thread
}

fn instance_where(s: &TestServer, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> String {
    let started = std::time::Instant::now();
    loop {
        let (_, body) = api(s, "GET", "/v1/orgs/acme/apps/web/envs/prod/instances", "");
        if let Some(i) = body["items"].as_array().unwrap().iter().find(|i| ok(i)) {
            return i["id"].as_str().unwrap().to_owned();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no instance {what}: {body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn deploy_wait_names_the_failed_instance_and_shows_its_logs() {
    let s = TestServer::start();
    s.seed();
    let (status, node) =
        api(&s, "POST", "/v1/nodes", r#"{"name": "n1", "capacity": {"cpu_millis": 4000, "memory_mib": 4096}}"#);
    assert_eq!(status, 201, "{node}");
    let manifest = s.dir.path().join("one.toml");
    std::fs::write(&manifest, "schema_version = 1\n\n[processes.web]\ncommand = [\"./server\"]\nresources = { cpu = 0.5, memory_mib = 256 }\n").unwrap();
    let release = |image: &str| {
        let r = s.run(&["release", "create", "--image", image, "--manifest", manifest.to_str().unwrap(), "-o", "json"]);
        assert_eq!(r.code, 0, "{}", r.text);
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let (rel1, rel2) = (release(DIGEST_IMAGE), release(&DIGEST_IMAGE.replace("aa", "bb")));

    // The first release runs: its instance reports ready, as the agent would.
    assert_eq!(s.run(&["deploy", "--release", &rel1]).code, 0);
    let first = instance_where(&s, "of the first release", |i| i["release_id"] == rel1.as_str());
    let (status, body) =
        api(&s, "POST", &format!("/v1/instances/{first}/status"), r#"{"status": "running", "health": "passing"}"#);
    assert_eq!(status, 200, "{body}");

    // The second one's instance exits 1 while `vt deploy --wait` follows it.
    let child = s
        .vt(&["deploy", "--release", &rel2, "--wait", "--timeout", "30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let new = instance_where(&s, "of the second release", |i| i["release_id"] == rel2.as_str());
    // Node n1's agent serves the instance's log through its channel (docs/nodes.md).
    let (status, issued) = api(&s, "POST", "/v1/tokens", r#"{"name": "n1-agent", "role": "node", "node": "n1"}"#);
    assert_eq!(status, 201, "{issued}");
    let node = serve_one_log(
        &s.url,
        issued["secret"].as_str().unwrap(),
        "n1",
        "2026-01-01T00:00:00.000Z stdout starting\n2026-01-01T00:00:00.100Z stderr fatal: DATABASE_URL is not set\n",
    );
    let body = r#"{"status": "failed", "exit_code": 1, "reason": "the entrypoint exited with code 1"}"#;
    let (status, reply) = api(&s, "POST", &format!("/v1/instances/{new}/status"), body);
    assert_eq!(status, 200, "{reply}");
    let r = common::Run::of(child.wait_with_output().unwrap(), s.dir.path());
    node.join().unwrap();
    assert_eq!(r.code, 1, "a failed deploy exits 1: {}", r.text);
    assert!(
        r.stderr.contains("error: deploy dep_")
            && r.stderr.contains(&format!("instance {new} (web) exited with code 1")),
        "{}",
        r.text
    );
    assert!(
        r.stderr.contains("stderr fatal: DATABASE_URL is not set"),
        "the failed instance's last log lines: {}",
        r.text
    );
    assert!(r.stdout.contains(&format!("env back on release {rel1}")), "{}", r.text);
    snap!("deploy_wait_failed", r);

    // `vt describe` says what happened, and the old instance still serves.
    let r = s.run(&["describe"]);
    assert!(
        r.stdout.contains("failed: instance inst_") && r.stdout.contains(&format!("desired release  {rel1}")),
        "{}",
        r.text
    );
    snap!("describe_failed_deploy", r);
}

/// `vt instances` and `vt describe` with instances in several states, reported as a node
/// agent would: addresses, health verdicts, ages, and the next step for what differs.
#[test]
fn instances_and_describe_show_address_health_and_next_steps() {
    let s = TestServer::start();
    s.seed();
    let (status, node) =
        api(&s, "POST", "/v1/nodes", r#"{"name": "n1", "capacity": {"cpu_millis": 4000, "memory_mib": 4096}}"#);
    assert_eq!(status, 201, "{node}");
    let manifest = s.dir.path().join("two.toml");
    std::fs::write(
        &manifest,
        "schema_version = 1\n\n[processes.web]\ncommand = [\"/app/web.sh\"]\nports = [{ name = \"http\", port = 8080 }]\nresources = { cpu = 0.5, memory_mib = 128 }\nscaling = { min = 2 }\n\n[processes.web.healthcheck]\ntype = \"http\"\nport = \"http\"\npath = \"/healthz\"\n\n[processes.worker]\ncommand = [\"/app/worker.sh\"]\nresources = { cpu = 0.25, memory_mib = 128 }\n",
    )
    .unwrap();
    let r = s.run(&["deploy", "--image", DIGEST_IMAGE, "--manifest", manifest.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.text);
    // Wait for all three to be placed.
    let started = std::time::Instant::now();
    let items = loop {
        let (_, body) = api(&s, "GET", "/v1/orgs/acme/apps/web/envs/prod/instances", "");
        let items = body["items"].as_array().unwrap().clone();
        if items.len() == 3 {
            break items;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "three instances placed: {body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let ids = |process: &str| -> Vec<String> {
        items.iter().filter(|i| i["process"] == process).map(|i| i["id"].as_str().unwrap().to_owned()).collect()
    };
    let (web, worker) = (ids("web"), ids("worker"));
    let report = |id: &str, body: &str| {
        let (status, reply) = api(&s, "POST", &format!("/v1/instances/{id}/status"), body);
        assert_eq!(status, 200, "{reply}");
    };
    report(
        &web[0],
        r#"{"status": "running", "health": "passing", "address": "fd00:0:0:1::10", "reason": "boot: image 0.2 s, vmm 0.1 s, kernel→init 0.9 s, init→entrypoint 0.1 s, running 1.3 s, healthy 2.5 s", "boot": {"root_disk_ms": 200, "running_ms": 1300, "healthy_ms": 2468}}"#,
    );
    // Not ready yet (a failing verdict would start a replacement and race the snapshot).
    report(&web[1], r#"{"status": "running", "health": "pending", "address": "fd00:0:0:1::11"}"#);
    report(&worker[0], r#"{"status": "booting", "address": "fd00:0:0:1::12"}"#);
    // Read-your-writes: the views have the reports once `vt instances` shows the last one.
    let started = std::time::Instant::now();
    while !s.run(&["instances", "-o", "json"]).stdout.contains("fd00:0:0:1::12") {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let filters = common::filters();
    // Rows come in id order, and ids are random: the test sorts them by what they show.
    let r = s.run(&["instances"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let mut rows: Vec<String> = r.stdout.lines().map(str::to_owned).collect();
    rows[1..].sort_by_key(|l| (l.contains("worker"), l.contains("pending")));
    insta::with_settings!({ filters => filters.clone(), prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!("instances_address_health_age", rows.join("\n"));
    });
    let r = s.run(&["describe"]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert!(r.stdout.contains(&format!("next: vt logs --instance {}", web[1])), "{}", r.text);
    let mut lines: Vec<String> = r.stdout.lines().map(str::to_owned).collect();
    // The two web rows of the instances table, in a stable order.
    let at = lines.iter().position(|l| l.starts_with("PROCESS  INSTANCE")).unwrap();
    lines[at + 1..at + 3].sort_by_key(|l| l.contains("pending"));
    insta::with_settings!({ filters => filters, prepend_module_to_snapshot => false, omit_expression => true }, {
        insta::assert_snapshot!("describe_instances_next", lines.join("\n"));
    });
}
