//! The guest channel survives the node agent (issue #18): `vt server` is killed with SIGKILL
//! while an instance prints a line every half second, and started again on the same data
//! directory. The VM runs on meanwhile (QEMU is in its own process group); the new agent
//! re-attaches to it, and `vt logs` has every line, those printed while no agent was there
//! included, once each and in order; the instance's later exit status is reported.
//!
//! Needs the guest kernel and initramfs (`scripts/guest-kernel.sh`); skipped without them,
//! except under `CI=true`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{acme_with_busybox, ingress_server_args, spawn_vt_server_captured, vt_at};

const TICKS: u32 = 60;

/// Kills the test's VMs if the test fails before a server stops them.
struct KillVms<'a>(&'a Path);

impl Drop for KillVms<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill").args(["-KILL", "-f", &self.0.display().to_string()]).status();
    }
}

fn ticks(log: &str) -> Vec<u32> {
    log.lines().filter_map(|l| l.split(" stdout tick ").nth(1)).filter_map(|n| n.trim().parse().ok()).collect()
}

#[test]
fn logs_and_the_exit_status_survive_a_sigkill_of_the_server() {
    if vt_runtime::testing::guest_or_skip("the agent restart test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _vms = KillVms(&data);
    let port = common::free_port();
    let args = ingress_server_args(&data, port);
    let server_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut first, url, _) = spawn_vt_server_captured(dir.path(), &server_args);
    let image = acme_with_busybox(dir.path(), &data, &url);
    let manifest = dir.path().join("vt.toml");
    std::fs::write(
        &manifest,
        format!(
            "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt {TICKS} ]; do i=$((i+1)); echo tick $i; sleep 0.5; done; exit 3\"]\n"
        ),
    )
    .unwrap();
    vt_at(dir.path(), &data, &url, &["deploy", "--wait", "--image", &image, "--manifest", manifest.to_str().unwrap()]);
    let instances = vt_at(dir.path(), &data, &url, &["instances", "-o", "json"]).json();
    let id = instances["items"][0]["id"].as_str().unwrap().to_owned();

    // A few lines in, the server dies; the VM goes on printing with nobody attached.
    let logs = |url: &str| vt_at(dir.path(), &data, url, &["logs", "--instance", &id]).stdout;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ticks(&logs(&url)).len() < 4 {
        assert!(Instant::now() < deadline, "no ticks: {}", logs(&url));
        std::thread::sleep(Duration::from_millis(200));
    }
    first.kill().unwrap();
    let _ = first.wait();
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(4));

    let (_second, url, output) = spawn_vt_server_captured(dir.path(), &server_args);
    println!("server back {:?} after the SIGKILL", killed_at.elapsed());
    // The instance ends by itself (exit 3) after its last tick; its status says so.
    let deadline = Instant::now() + Duration::from_secs(120);
    let inst = loop {
        let r = vt_at(dir.path(), &data, &url, &["instances", "-o", "json"]).json();
        let inst = r["items"].as_array().unwrap().iter().find(|i| i["id"] == id.as_str()).cloned().unwrap();
        if inst["exit_code"].is_number() {
            break inst;
        }
        assert!(
            Instant::now() < deadline,
            "no exit status: {inst}\n{}",
            String::from_utf8_lossy(&output.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(inst["exit_code"], 3, "{inst}");
    let log = logs(&url);
    let got = ticks(&log);
    assert_eq!(got, (1..=TICKS).collect::<Vec<_>>(), "every tick once, in order:\n{log}");
    assert!(log.contains("re-attach"), "the log says the agent re-attached:\n{log}");
    // Lines keep the time they were printed, those of the outage too (not the time the new
    // agent wrote them): consecutive ticks are about half a second apart, never bunched up.
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = log
        .lines()
        .filter(|l| l.contains(" stdout tick "))
        .map(|l| chrono::DateTime::parse_from_rfc3339(l.split_whitespace().next().unwrap()).unwrap())
        .collect();
    let gaps: Vec<i64> = times.windows(2).map(|w| (w[1] - w[0]).num_milliseconds()).collect();
    assert!(gaps.iter().all(|g| (0..2500).contains(g)), "gaps between ticks (ms): {gaps:?}\n{log}");
}
