//! Suspend and resume through `vt server` (issue #20): a process with `scaling.suspend = true`
//! keeps a counter in memory (a shell loop, its value and a token drawn at its start in /tmp,
//! a tmpfs). `vt scale web=0` suspends its instance: `suspended`, no VMM running, its snapshot
//! on the node; `vt scale web=1` resumes the same instance on the same node, the same shell
//! counting on from where it was, its clock in step with the host's. With its snapshot lost, a
//! scale up boots it afresh and says why. A deploy that no longer suspends stops the suspended
//! instance and its snapshot is deleted.
//!
//! Needs the guest kernel and initramfs (`scripts/guest-kernel.sh`, protocol 5); skipped without
//! them, except under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{acme_with_busybox, ingress_server_args, spawn_vt_server_captured, vt_at, vt_isolated};

/// Kills the test's VMs if the test fails before the server stops them.
struct KillVms<'a>(&'a Path);

impl Drop for KillVms<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill").args(["-KILL", "-f", &self.0.display().to_string()]).status();
    }
}

const COUNTER: &str = "tok=$(cat /proc/sys/kernel/random/uuid); echo $tok > /tmp/tok; i=0; \
                       while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.2; done";

/// The instance's snapshot, wherever the data dir keeps the instance's work dir.
fn snapshot_of(data: &Path, id: &str) -> Option<PathBuf> {
    let mut stack = vec![data.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                if p.file_name().is_some_and(|n| n == id) && p.join("vmm.json").exists() {
                    return Some(p.join("snapshot").join("vmstate"));
                }
                stack.push(p);
            }
        }
    }
    None
}

fn vmm_running(id: &str) -> bool {
    std::process::Command::new("pgrep").args(["-f", &format!("qemu-system.*{id}")]).status().is_ok_and(|s| s.success())
}

fn host_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn a_process_that_suspends_at_zero_resumes_with_its_memory() {
    if vt_runtime::testing::guest_or_skip("the suspend test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _vms = KillVms(&data);
    let port = common::free_port();
    let args = ingress_server_args(&data, port);
    let server_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_server, url, output) = spawn_vt_server_captured(dir.path(), &server_args);
    let server_log = || String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    let image = acme_with_busybox(dir.path(), &data, &url);
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);
    let manifest = dir.path().join("vt.toml");
    let write_manifest = |suspend: bool| {
        std::fs::write(
            &manifest,
            format!(
                "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/sh\", \"-c\", \"{COUNTER}\"]\n\
                 resources = {{ cpu = 1, memory_mib = 128 }}\nscaling = {{ min = 0, max = 1, suspend = {suspend} }}\n"
            ),
        )
        .unwrap()
    };
    write_manifest(true);
    vt(&["deploy", "--wait", "--image", &image, "--manifest", manifest.to_str().unwrap()]);
    vt(&["scale", "web=1"]);
    let deadline = Instant::now() + Duration::from_secs(180);
    let first = loop {
        let r = vt(&["instances", "-o", "json"]).json();
        if let Some(i) = r["items"].as_array().unwrap().iter().find(|i| i["status"] == "running") {
            break i.clone();
        }
        assert!(Instant::now() < deadline, "no instance runs: {r}\n{}", server_log());
        std::thread::sleep(Duration::from_millis(500));
    };
    let id = first["id"].as_str().unwrap().to_owned();
    let node = first["node_id"].clone();
    let exec = |cmd: &str| {
        let mut c = vt_isolated(dir.path(), &["exec", &id, "--", "sh", "-c", cmd]);
        c.env("VT_SERVER", &url)
            .env("VT_DATA_DIR", &data)
            .env("VT_ORG", "acme")
            .env("VT_APP", "web")
            .env("VT_ENV", "prod");
        let out = c.output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let instance = || -> serde_json::Value {
        let r = vt(&["instances", "-o", "json"]).json();
        r["items"].as_array().unwrap().iter().find(|i| i["id"] == id.as_str()).cloned().unwrap()
    };
    let until = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let i = instance();
            if f(&i) {
                return i;
            }
            assert!(Instant::now() < deadline, "not {what}: {i}\n{}", server_log());
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while exec("cat /tmp/n 2>/dev/null || echo 0").parse::<u64>().unwrap() < 3 {
        assert!(Instant::now() < deadline, "the counter does not count");
        std::thread::sleep(Duration::from_millis(300));
    }
    let token = exec("cat /tmp/tok");

    // Scaled to 0: suspended, not stopped.
    vt(&["scale", "web=0"]);
    let t = Instant::now();
    let i = until("suspended", &|i| i["status"] == "suspended");
    println!("running → suspended in {:?}: {}", t.elapsed(), i["reason"]);
    assert_eq!(i["desired_state"], "suspended", "{i}");
    assert!(!vmm_running(&id), "no VMM runs for a suspended instance");
    let snapshot = snapshot_of(&data, &id).expect("the instance's work dir");
    assert!(snapshot.is_file(), "the snapshot is on the node: {}", snapshot.display());
    std::thread::sleep(Duration::from_secs(3));

    // Scaled to 1: the same instance resumes, on the same node, the counter where it was.
    vt(&["scale", "web=1"]);
    let t = Instant::now();
    let i = until("running again", &|i| i["status"] == "running" && i["desired_state"] == "running");
    println!("scale 1 → running in {:?}: {}", t.elapsed(), i["reason"]);
    assert_eq!(i["node_id"], node);
    assert!(i["reason"].as_str().unwrap_or_default().contains("resumed"), "{i}");
    let items = vt(&["instances", "-o", "json"]).json();
    let live: Vec<&serde_json::Value> =
        items["items"].as_array().unwrap().iter().filter(|i| i["desired_state"] == "running").collect();
    assert_eq!(live.len(), 1, "no second instance: {items}");
    assert_eq!(exec("cat /tmp/tok"), token, "the same shell, its memory kept");
    let n: u64 = exec("cat /tmp/n").parse().unwrap();
    assert!(n >= 3, "the counter went on from where it was: {n}");
    let (b, guest, a) = (host_now(), exec("date +%s").parse::<i64>().unwrap(), host_now());
    assert!(guest >= b - 1 && guest <= a + 1, "guest clock {guest}, host {b}..={a}");
    assert!(!snapshot.exists(), "a snapshot is resumed once, then gone");

    // Suspended again and its snapshot lost: the scale up boots the same instance afresh and
    // says why (a new shell: a new token).
    vt(&["scale", "web=0"]);
    until("suspended again", &|i| i["status"] == "suspended");
    std::fs::remove_file(&snapshot).unwrap();
    vt(&["scale", "web=1"]);
    let i = until("running afresh", &|i| i["status"] == "running" && i["desired_state"] == "running");
    let reason = i["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("booted afresh: cannot resume from its snapshot"), "{i}");
    println!("without its snapshot: {reason}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while exec("cat /tmp/tok 2>/dev/null || true").is_empty() {
        assert!(Instant::now() < deadline, "the new shell does not start");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_ne!(exec("cat /tmp/tok"), token, "a cold boot: a new shell");

    // Suspended again, then a release that does not suspend: stopped, the snapshot deleted.
    vt(&["scale", "web=0"]);
    until("suspended again", &|i| i["status"] == "suspended");
    assert!(snapshot.is_file());
    write_manifest(false);
    vt(&["deploy", "--wait", "--image", &image, "--manifest", manifest.to_str().unwrap()]);
    let i = until("stopped", &|i| i["status"] == "stopped");
    println!("stopped: {}", i["reason"]);
    assert!(!snapshot.exists() && !snapshot.parent().unwrap().exists(), "the snapshot is deleted");
}
