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
        &["server", "--listen", "127.0.0.1:0", "--data-dir", data_arg, "--sqlite-sync", "normal"],
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
