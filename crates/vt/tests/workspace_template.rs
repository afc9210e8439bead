//! The default workspace template (scripts/workspace-template.sh, docs/workspaces.md) on the
//! real runtime, before workspaces exist as such: deployed as a service with a home volume,
//! code-server boots in a microVM, passes its health check, serves the workbench through the
//! ingress, and what is written in the home survives the instance (stop, start again).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{http_get, ingress_server_args, spawn_vt_server, vt_at};

/// The template's layout: a cache hit of the script, or its build (as root; minutes).
fn template() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/workspace-template.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("VT", env!("CARGO_BIN_EXE_vt"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !path.is_empty() {
        return Some(PathBuf::from(path));
    }
    let why = format!(
        "the workspace template could not be built ({}): run scripts/workspace-template.sh as root",
        out.status
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

const MANIFEST: &str = r#"schema_version = 1

[processes.ide]
ports = [{ name = "http", port = 8080 }]
resources = { cpu = 2, memory_mib = 2048 }
scaling = { min = 0, max = 1 }

[processes.ide.healthcheck]
type = "http"
port = "http"
path = "/healthz"
interval = "3s"
timeout = "2s"

[[volumes]]
name = "home"
path = "/home/vt"
process = "ide"
"#;

#[test]
fn the_template_runs_code_server_in_a_microvm_with_a_home_that_persists() {
    if vt_runtime::testing::guest_or_skip("the workspace template test", &[]).is_none() {
        return;
    }
    let Some(layout) = template() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let args = ingress_server_args(&data, port);
    let (mut child, url) = spawn_vt_server(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);
    for args in [&["org", "create", "acme"][..], &["app", "create", "web"], &["env", "create", "prod"]] {
        vt(args);
    }
    vt(&["image", "push", layout.to_str().unwrap(), "--repo", "acme/web", "--tag", "ide"]);
    vt(&["volume", "create", "home", "--size-gib", "2"]);
    let manifest = dir.path().join("vt.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    // A workspace runs one instance or none: start at one.
    vt(&["scale", "ide=1"]);
    let began = Instant::now();
    let r = vt(&["deploy", "--wait", "--image", "acme/web:ide", "--manifest", manifest.to_str().unwrap()]);
    println!("deployed and healthy in {:?}:\n{}", began.elapsed(), r.stdout);
    vt(&["route", "create", "--tcp", "--process", "ide", "--backend-port", "8080"]);

    // The workbench through the ingress (code-server redirects `/` to the folder it opens).
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        match http_get(port, "/?folder=/home/vt") {
            Ok(body) => break String::from_utf8_lossy(&body).into_owned(),
            Err(e) => assert!(Instant::now() < deadline, "no workbench through the route: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(page.contains("workbench"), "{page}");

    let instance = |vt: &dyn Fn(&[&str]) -> common::Run| -> String {
        let list = vt(&["instances", "-o", "json"]).json();
        let running: Vec<_> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] == "running" && i["health"] == "passing")
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        running.first().cloned().unwrap_or_default()
    };
    let first = instance(&vt);
    assert!(!first.is_empty(), "no running instance");
    // The home is the volume, the IDE user's; write into it as that user.
    let r = vt(&[
        "exec",
        &first,
        "--",
        "setpriv",
        "--reuid=1000",
        "--regid=1000",
        "--clear-groups",
        "sh",
        "-c",
        "echo kept > /home/vt/kept.txt; stat -c %U /home/vt",
    ]);
    assert!(r.stdout.contains("vt"), "{}", r.text);

    // Stop it, start it again: a new instance, the same home.
    vt(&["scale", "ide=0"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !instance(&vt).is_empty() {
        assert!(Instant::now() < deadline, "the instance never stopped");
        std::thread::sleep(Duration::from_millis(500));
    }
    vt(&["scale", "ide=1"]);
    let deadline = Instant::now() + Duration::from_secs(240);
    let second = loop {
        let id = instance(&vt);
        if !id.is_empty() {
            break id;
        }
        assert!(Instant::now() < deadline, "the instance never came back");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_ne!(second, first);
    let r = vt(&["exec", &second, "--", "cat", "/home/vt/kept.txt"]);
    assert_eq!(r.stdout.trim(), "kept", "{}", r.text);

    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}
