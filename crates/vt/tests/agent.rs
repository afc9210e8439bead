//! The whole path through the CLI: `vt server` (with its node agent) as a child process, a
//! busybox image pushed with `vt image push`, `vt deploy`, `vt scale web=1`: the scheduler
//! places the instance on the server's node, the agent boots it as a real microVM (TCG), and
//! its output arrives through `vt logs`.
//!
//! Skipped with a message when the guest kernel, qemu, mkfs.ext4 or /bin/busybox is missing;
//! fails instead under `CI=true`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{acme_with_busybox, plain_server_args, spawn_vt_server, vt_at};

fn guest_ready() -> bool {
    vt_runtime::testing::guest_or_skip("the agent CLI test", &[vt_image::testing::BUSYBOX]).is_some()
}

fn start_server(dir: &Path, data: &Path) -> (common::ServerChild, String) {
    let args = plain_server_args(data, &[]);
    spawn_vt_server(dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// org/app/env, the busybox image pushed, a deploy of `command` and one `web` instance.
fn deploy(dir: &Path, data: &Path, url: &str, command: &str) {
    let vt = |args: &[&str]| vt_at(dir, data, url, args);
    let image = acme_with_busybox(dir, data, url);
    let manifest = dir.join("vt.toml");
    std::fs::write(&manifest, format!("schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/sh\", \"-c\", {command:?}]\nresources = {{ cpu = 0.5, memory_mib = 256 }}\n")).unwrap();
    vt(&["deploy", "--image", &image, "--manifest", manifest.to_str().unwrap()]);
    vt(&["scale", "web=1"]);
}

/// Live `qemu-system` processes whose command line names `needle`.
fn qemu_pids(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
                .into_owned();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            cmd.starts_with("qemu-system") && cmd.contains(needle) && !zombie
        })
        .collect()
}

/// Wait until `vt instances` shows an instance in `status`; returns its id.
fn wait_instance(dir: &Path, data: &Path, url: &str, status: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = vt_at(dir, data, url, &["instances", "-o", "json"]);
        let items = r.json()["items"].as_array().cloned().unwrap_or_default();
        if let Some(i) = items.iter().find(|i| i["status"] == status) {
            return i["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no instance became {status}: {}", r.text);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILL of the whole server (agent included) while the instance boots: its QEMU outlives
/// it. The restarted server's agent ends that half-booted VM and boots one again: exactly one
/// VM for the instance, and it runs.
#[test]
fn sigkill_mid_boot_then_restart_leaves_exactly_one_vm() {
    if !guest_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = start_server(dir.path(), &data);
    deploy(dir.path(), &data, &url, "echo up; exec sleep 600");
    let id = wait_instance(dir.path(), &data, &url, "booting", 120);
    let _ = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
    let _ = child.wait();
    let orphans = qemu_pids(&id);
    eprintln!("VMs of {id} alive after SIGKILL of the server: {}", orphans.len());

    let (mut child, url) = start_server(dir.path(), &data);
    let running = wait_instance(dir.path(), &data, &url, "running", 120);
    assert_eq!(running, id, "the same instance runs again (no new instance)");
    let vms = qemu_pids(&id);
    std::thread::sleep(Duration::from_secs(1));
    let later = qemu_pids(&id);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    for pid in qemu_pids(&id) {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert_eq!(
        (vms.len(), later.len()),
        (1, 1),
        "exactly one VM for {id}: {vms:?} then {later:?} (orphans after SIGKILL: {orphans:?})"
    );
    assert!(orphans.iter().all(|p| !vms.contains(p)), "the half-booted VM was replaced");
}

#[test]
fn deploy_boots_a_microvm_and_vt_logs_shows_its_output() {
    if !guest_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = start_server(dir.path(), &data);
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);
    let image = acme_with_busybox(dir.path(), &data, &url);
    let manifest = dir.path().join("vt.toml");
    std::fs::write(&manifest, "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/sh\", \"-c\", \"echo hello from vt; exec sleep 600\"]\nresources = { cpu = 0.5, memory_mib = 256 }\n").unwrap();
    vt(&["deploy", "--image", &image, "--manifest", manifest.to_str().unwrap()]);
    vt(&["scale", "web=1"]);

    let deadline = Instant::now() + Duration::from_secs(180);
    let id = loop {
        let r = vt(&["instances", "-o", "json"]);
        let items = r.json()["items"].as_array().cloned().unwrap_or_default();
        if let Some(i) = items.iter().find(|i| i["status"] == "running") {
            break i["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no instance became running: {}", r.text);
        std::thread::sleep(Duration::from_millis(500));
    };
    // The output arrives shortly after `running`.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = vt(&["logs"]);
        if r.stdout.lines().any(|l| l.starts_with(&format!("{id} ")) && l.ends_with(" stdout hello from vt")) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", r.text);
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = vt(&["logs", "--instance", &id, "--tail", "1", "-o", "json"]);
    let line: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(
        (line["instance"].as_str(), line["stream"].as_str(), line["text"].as_str()),
        (Some(id.as_str()), Some("stdout"), Some("hello from vt")),
        "{}",
        r.text
    );

    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // `vt server` stops its VMs when it stops.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !qemu_pids(&id).is_empty() {
        assert!(Instant::now() < deadline, "a VM outlived `vt server`");
        std::thread::sleep(Duration::from_millis(100));
    }
}
