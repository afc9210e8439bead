//! `vt server` as a child process: ready line, admin token, SIGTERM, rebuild-views.

mod common;

use std::io::BufRead;
use std::process::Stdio;

use common::{vt_isolated, Run};

#[test]
fn serves_until_sigterm_then_rebuilds_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let mut child = vt_isolated(
        dir.path(),
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--workspace-listen",
            "127.0.0.1:0",
            "--data-dir",
            data_arg,
            "--sqlite-sync",
            "normal",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut human = vec![];
    let url = loop {
        let line = stderr.next().expect("server exited before it was ready").unwrap();
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
            assert!(v["level"].is_string(), "{line}");
            continue;
        }
        human.push(line.clone());
        if let Some(url) = line.strip_prefix("vt server ready on ") {
            break url.to_owned();
        }
    };
    assert!(human[0].starts_with("wrote a new master key (mk_"), "{human:?}");
    assert!(human[1].starts_with("wrote a new admin token to "), "{human:?}");
    assert!(data.join("master.key").exists());
    assert!(data.join("admin-token").exists());

    // The CLI finds the token of a local server through VT_DATA_DIR.
    let mut c = vt_isolated(dir.path(), &["org", "create", "acme", "--server", &url]);
    c.env("VT_DATA_DIR", &data);
    let r = Run::of(c.output().unwrap(), dir.path());
    assert_eq!(r.code, 0, "{}", r.text);

    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // Drain stderr so the server never blocks on a full pipe while stopping.
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l == "vt server stopped"), "{rest:?}");

    let r = Run::of(
        vt_isolated(dir.path(), &["server", "rebuild-views", "--data-dir", data_arg, "-o", "json"]).output().unwrap(),
        dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.text);
    let report = r.json();
    assert_eq!(report["differing_rows"], serde_json::json!([]));
    assert!(report["events"].as_u64().unwrap() >= 2, "{}", r.text);
}

/// `vt server ARGS...` with a terminal for stdin, stdout and stderr: run under `script(1)`
/// (util-linux), which gives its command a pseudo-terminal and copies what it writes to our
/// pipe. Returns the `script` process, the server's pid and everything written so far.
fn spawn_on_terminal(
    dir: &std::path::Path,
    args: &[&str],
) -> (common::ServerChild, u32, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = format!("exec {} server", quote(env!("CARGO_BIN_EXE_vt")));
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    // vt_isolated's environment and directory, for `script` and so for the server it runs.
    let mut c = vt_isolated(dir, &[]);
    c.env_remove("VT_LOG_FORMAT");
    let mut child = std::process::Command::new("script")
        .args(["--quiet", "--flush", "--return", "--command", &line, "/dev/null"])
        .envs(c.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    let output = common::capture(child.stdout.take().unwrap());
    // The server is script's one child (`exec`).
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let pid = loop {
        let found = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = found.split_whitespace().next().and_then(|p| p.parse().ok()) {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "script(1) started no child");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (common::ServerChild(child), pid, output)
}

/// Wait until `output` has a line starting with `prefix`; returns the offset after it.
fn wait_for_line(output: &std::sync::Mutex<Vec<u8>>, prefix: &str, within: std::time::Duration) -> usize {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
        let mut at = 0;
        for l in text.split_inclusive('\n') {
            at += l.len();
            if l.trim_start().starts_with(prefix) && l.ends_with('\n') {
                return at;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no line `{prefix}...` within {within:?}:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// An idle server on a terminal (text logs) writes nothing after its ready line for 30 s,
/// though its node agent heartbeats every 5 s and long-polls for its instances; the next thing
/// that happens (an image pushed) is one text line, not JSON.
#[test]
fn an_idle_server_on_a_terminal_writes_nothing_after_its_ready_line() {
    // With a node agent (it needs the guest kernel), or the test would prove little.
    if vt_runtime::testing::guest_or_skip("the idle server test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = common::loopback_args(&data, &["--no-ingress", "--node-name", "idle-1"]);
    let (mut script, pid, output) = spawn_on_terminal(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let ready = wait_for_line(&output, "vt server ready on ", std::time::Duration::from_secs(60));
    let head = String::from_utf8_lossy(&output.lock().unwrap()[..ready]).into_owned();
    assert!(head.contains("node agent running as node `idle-1`"), "{head}");
    let url = head.lines().find_map(|l| l.trim().strip_prefix("vt server ready on ")).unwrap().to_owned();

    let idle = std::time::Duration::from_secs(30);
    std::thread::sleep(idle);
    let after = String::from_utf8_lossy(&output.lock().unwrap()[ready..]).into_owned();
    assert_eq!(after, "", "an idle server wrote something after its ready line within {idle:?}");
    // It was idle, not dead: its agent heartbeated meanwhile.
    let nodes = common::vt_at(dir.path(), &data, &url, &["node", "list", "-o", "json"]).json();
    let beat = nodes["items"][0]["last_heartbeat_at"].as_str().unwrap_or_default().to_owned();
    assert!(!beat.is_empty(), "{nodes}");

    // Something happens: one line, as text.
    common::acme_with_busybox(dir.path(), &data, &url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let text = String::from_utf8_lossy(&output.lock().unwrap()[ready..]).into_owned();
        if let Some(l) = text.lines().find(|l| l.contains("manifest pushed")) {
            break l.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no log line for the push: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!line.trim_start().starts_with('{') && line.contains(" INFO "), "a text log line: {line:?}");

    signal(pid, "TERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while matches!(script.try_wait(), Ok(None)) {
        assert!(std::time::Instant::now() < deadline, "vt server did not stop on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    assert_eq!(script.wait().unwrap().code(), Some(0), "{text}");
    assert!(text.contains("vt server stopped"), "{text}");
}
