//! The README's quick start, verbatim: its start command is `scripts/up.sh`, which ends in
//! `exec target/release/vt server "${template[@]}" "$@"` (the workspace template, which the
//! walkthrough does not use); this test starts that same `vt server` on a fresh data dir
//! (`./.vt` of a scratch directory, free ports), then runs every command of the walkthrough
//! block in order with bash, exactly as written, from a directory that looks like the
//! repository (`examples/`, `target/release/vt`). Any non-zero exit fails the test,
//! and so does the sample app no longer answering what the README says through the route.
//! Last, the server is stopped with SIGTERM with the sample app's instances running, and the
//! stop is timed against `--drain-timeout` + `--vm-stop-timeout`.
//!
//! Needs what the core loop test needs (guest kernel, qemu, busybox, taps), plus curl and jq.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

/// The fenced `sh` blocks of the README's `## Quick start` section, in order.
fn quick_start_blocks(readme: &str) -> Vec<Vec<String>> {
    let section = readme.split("\n## Quick start\n").nth(1).expect("README has a `## Quick start` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut blocks = vec![];
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(vec![]),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), l) if !l.trim().is_empty() && !l.trim_start().starts_with('#') => b.push(l.to_owned()),
            _ => {}
        }
    }
    blocks
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap()
}

#[test]
fn readme_quick_start_parses() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = quick_start_blocks(&readme);
    assert_eq!(blocks.len(), 2, "a start block and a walkthrough block: {blocks:?}");
    assert_eq!(blocks[0], ["scripts/up.sh"], "the start command");
    let up = std::fs::read_to_string(repo_root().join("scripts/up.sh")).unwrap();
    // up.sh adds the workspace template (`--workspace-template`), which the quick start does not use.
    assert!(
        up.contains("exec target/release/vt server \"${template[@]}\" \"$@\""),
        "up.sh starts `vt server`, as this test does"
    );
    let walk = &blocks[1];
    assert!(walk[0].starts_with("vt() { target/release/vt"), "{walk:?}");
    assert!(walk.iter().any(|l| l.starts_with("vt rollback")), "the walkthrough reaches `vt rollback`: {walk:?}");
}

/// What the sample app must answer at the `n`-th `curl` of the walkthrough.
const PAGES: [&str; 2] = ["hello from vt", "hello again"];

#[test]
fn readme_quick_start_runs_verbatim() {
    if vt_runtime::testing::networked_guest_or_skip("the README test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    for tool in ["curl", "jq", "bash"] {
        let found = std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
        assert!(found.status.success(), "the README test needs {tool} (scripts/test.sh installs it)");
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let walk = quick_start_blocks(&readme).remove(1);

    // A directory that looks like the repository to the README's commands.
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::os::unix::fs::symlink(repo_root().join("examples"), cwd.join("examples")).unwrap();
    std::fs::create_dir_all(cwd.join("target/release")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vt"), cwd.join("target/release/vt")).unwrap();

    let port = common::free_port();
    let mut args = common::ingress_server_args(&cwd.join(".vt"), port);
    args.extend(["--drain-timeout", "10s", "--vm-stop-timeout", "10s"].map(str::to_owned));
    let began = Instant::now();
    let (mut server, url, output) =
        common::spawn_vt_server_captured(cwd, &args.iter().map(String::as_str).collect::<Vec<_>>());
    println!("vt server ready in {:?}", began.elapsed());

    // Each command in its own bash, after the README's first line (the `vt` function), from
    // the scratch repository; the CLI finds the admin token in ./.vt as the README says.
    let (prelude, commands) = walk.split_first().unwrap();
    let mut curls = 0;
    let walk_began = Instant::now();
    for command in commands {
        let t = Instant::now();
        // vt_isolated's environment (a private config file and HOME), for bash and so for vt.
        let c = common::vt_isolated(cwd, &[]);
        let script = format!("set -euo pipefail\n{prelude}\n{command}\n");
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .current_dir(cwd)
            .envs(c.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
            .env_remove("VT_DATA_DIR")
            .env("VT_SERVER", &url)
            .output()
            .unwrap();
        let r = common::Run::of(out, cwd);
        println!("$ {command}   ({:.1?})\n{}", t.elapsed(), r.text);
        assert_eq!(r.code, 0, "README command failed: {command}\n{}", r.text);
        if command.starts_with("curl ") {
            let want = PAGES.get(curls).copied().unwrap_or("hello");
            curls += 1;
            assert!(r.stdout.starts_with(want), "{command}: the sample app should say {want:?}:\n{}", r.text);
            assert!(r.stdout.contains("instance: inst_") && r.stdout.contains("release:  rel_"), "{}", r.text);
        }
    }
    println!("the walkthrough took {:.1?}", walk_began.elapsed());
    assert_eq!(curls, PAGES.len(), "the README reaches the app through the route {} times", PAGES.len());

    // The rollback brought the first page back, and the secret is there (never its value).
    let page = common::http_get(port, "/").map(|b| String::from_utf8_lossy(&b).into_owned());
    let page = page.unwrap_or_else(|e| panic!("the sample app through the route after the rollback: {e}"));
    assert!(page.starts_with("hello from vt") && page.contains("secret GREETING: set (2 bytes)"), "{page}");

    // Stop with the sample app running: within the drain and VM stop timeouts, VMs stopped.
    let vms = common::vt_at(cwd, &cwd.join(".vt"), &url, &["instances", "-o", "json"]).json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "running")
        .count();
    assert!(vms >= 2, "at least two instances running before the stop ({vms})");
    let t = Instant::now();
    let _ = std::process::Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let status = server.wait().unwrap();
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    println!("vt server stopped with {vms} instances running in {took:.1?}");
    assert!(status.success(), "{status:?}: {text}");
    assert!(took < Duration::from_secs(21), "a stop takes at most drain + VM stop timeouts + 1 s: {took:?}\n{text}");
    // Every VM stops: the running instances and any still starting or stopping then.
    let stopped: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("stopped ")?.split_once(" VM(s) in ")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no `stopped N VM(s)` line: {text}"));
    assert!(stopped >= vms, "stopped {stopped} VMs, {vms} were running: {text}");
    let left =
        std::process::Command::new("pgrep").args(["-f", &cwd.join(".vt").display().to_string()]).output().unwrap();
    assert!(left.stdout.is_empty(), "no VMM left running: {}", String::from_utf8_lossy(&left.stdout));
}
