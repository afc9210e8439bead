//! Workspaces end to end through the real CLI, a real `vt server` with its node agent, and
//! real microVMs (TCG), with a tiny IDE image instead of code-server: busybox's httpd on
//! port 8080 (the port a workspace's IDE is health-checked on).
//!
//! The CLI's output is snapshot-tested (receipts, tables, `-o json`, errors); the rest checks
//! what the platform does: racing creates and starts make one workspace and one VM, a node
//! without room refuses a workspace and names the one to stop, an IDE that exits at once
//! fails the workspace once (no restart loop), and a deleted workspace leaves no VM and no disk.
//!
//! Skipped with a message when the guest kernel, qemu or /bin/busybox is missing; fails
//! instead under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{plain_server_args, spawn_vt_server_with_origin, vt_isolated, Run, ServerChild};
use serde_json::Value;
use vt_image::layout::{write_image, LayerFormat};
use vt_image::oci::RuntimeConfig;

/// The IDE image: busybox's httpd serving /www on port 8080.
const IDE: &str = "acme/ide:v1";
/// An IDE image whose entrypoint prints a line and exits 1.
const BAD: &str = "acme/ide:bad";

/// A `vt server` with its node agent `node-1`, org `acme` and both images pushed.
struct Server {
    /// First, so that a failing test stops the server (and its VMs) before its directory goes.
    child: ServerChild,
    dir: tempfile::TempDir,
    data: PathBuf,
    url: String,
    /// The workspace origin, `127.0.0.1:PORT`.
    origin: String,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    fn start(test: &str) -> Option<Server> {
        vt_runtime::testing::guest_or_skip(test, &[vt_image::testing::BUSYBOX])?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Accesses are recorded every second, so that the test sees them.
        let args = plain_server_args(&data, &["--workspace-access-every", "1s"]);
        let (child, url, origin, output) = spawn_vt_server_with_origin(dir.path(), &args);
        let s = Server { dir, data, url, origin, output, child };
        s.ok(&["org", "create", "acme"]);
        s.push(
            "ide",
            IDE,
            RuntimeConfig {
                cmd: Some(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"].map(String::from).to_vec()),
                ..Default::default()
            },
        );
        s.push(
            "bad",
            BAD,
            RuntimeConfig {
                entrypoint: Some(["/bin/sh", "-c", "echo boom-from-ide; exit 1"].map(String::from).to_vec()),
                ..Default::default()
            },
        );
        Some(s)
    }

    /// Build a busybox image with `config` and push it as `image` (`repo:tag`).
    fn push(&self, name: &str, image: &str, config: RuntimeConfig) {
        let build = self.dir.path().join("build").join(name);
        let rootfs = build.join("rootfs");
        vt_image::testing::busybox_rootfs(&rootfs).unwrap();
        std::fs::create_dir_all(rootfs.join("www")).unwrap();
        std::fs::write(rootfs.join("www/index.html"), "hello from the ide\n").unwrap();
        write_image(&rootfs, &build.join("layout"), config, LayerFormat::Uncompressed).unwrap();
        let (repo, tag) = image.split_once(':').unwrap();
        self.ok(&["image", "push", build.join("layout").to_str().unwrap(), "--repo", repo, "--tag", tag]);
    }

    /// `vt ARGS...` in org `acme`, whatever its exit code.
    fn vt(&self, args: &[&str]) -> Run {
        let mut c = vt_isolated(self.dir.path(), args);
        c.env("VT_SERVER", &self.url).env("VT_DATA_DIR", &self.data).env("VT_ORG", "acme");
        Run::of(c.output().unwrap(), self.dir.path())
    }

    /// `vt ARGS...`, asserting it succeeds.
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.vt(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.text);
        r
    }

    fn get(&self, workspace: &str) -> Value {
        self.ok(&["workspace", "get", workspace, "-o", "json"]).json()
    }

    /// `vt workspace create NAME --image IMAGE` with the test's small resources, then `extra`.
    fn create(&self, name: &str, image: &str, extra: &[&str]) -> Run {
        let base =
            ["workspace", "create", name, "--image", image, "--memory-mib", "256", "--cpus", "1", "--disk-gib", "1"];
        self.vt(&[&base[..], extra].concat())
    }

    /// Every event in the log, oldest first.
    fn events(&self) -> Vec<Value> {
        let mut out: Vec<Value> = vec![];
        loop {
            let after = out.last().map_or(0, |e| e["seq"].as_u64().unwrap()).to_string();
            let page = self.ok(&["events", "-o", "json", "--after", &after, "--limit", "1000"]).json();
            let events = page["events"].as_array().unwrap_or_else(|| panic!("not a page of events: {page}")).clone();
            if events.is_empty() {
                return out;
            }
            out.extend(events);
        }
    }

    /// The events of type `kind` about the workspace's env (from its `workspace.created`).
    fn events_of(&self, events: &[Value], workspace_id: &str, kind: &str) -> Vec<Value> {
        let env = events
            .iter()
            .find(|e| e["event_type"] == "workspace.created" && e["payload"]["workspace_id"] == workspace_id)
            .unwrap_or_else(|| panic!("no workspace.created for {workspace_id}"))["payload"]["env_id"]
            .clone();
        events.iter().filter(|e| e["event_type"] == kind && e["payload"]["env_id"] == env).cloned().collect()
    }

    /// The qemu processes of this server that run `instance`.
    fn vms_of(&self, instance: &str) -> usize {
        let out = std::process::Command::new("pgrep").args(["-af", "qemu-system"]).output().unwrap();
        let data = self.data.display().to_string();
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&data) && l.contains(instance)).count()
    }

    /// Every qemu process of this server.
    fn vms(&self) -> Vec<String> {
        let out = std::process::Command::new("pgrep").args(["-af", "qemu-system"]).output().unwrap();
        let data = self.data.display().to_string();
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&data)).map(str::to_owned).collect()
    }

    /// Files under the agent's volumes directory whose name has `volume` in it.
    fn disks_of(&self, volume: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, volume: &str, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.file_name().unwrap().to_string_lossy().contains(volume) {
                    out.push(p.clone());
                }
                if p.is_dir() {
                    walk(&p, volume, out);
                }
            }
        }
        let mut out = vec![];
        walk(&self.data.join("agent"), volume, &mut out);
        out
    }

    /// Poll `vt workspace get NAME -o json` until `done` says so (or panic after `secs`).
    fn wait_for(&self, name: &str, secs: u64, what: &str, done: impl Fn(&Run) -> bool) -> Run {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.vt(&["workspace", "get", name, "-o", "json"]);
            if done(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "workspace {name} is not {what} after {secs}s: {}", r.text);
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn server_output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// SIGKILL the server (its VMs keep running) and start it again on the same data directory.
    fn kill_and_restart(&mut self) {
        let _ = std::process::Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let args = plain_server_args(&self.data, &["--workspace-access-every", "1s"]);
        (self.child, self.url, self.origin, self.output) = spawn_vt_server_with_origin(self.dir.path(), &args);
    }

    /// Stop the server (its VMs with it) and check that none is left.
    fn stop(mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}: {}", self.server_output());
        assert_eq!(self.vms(), Vec::<String>::new(), "the server left VMs behind");
    }
}

/// Filters of [`common::filters`] and what workspaces add: their ids, digests, addresses.
fn filters() -> Vec<(&'static str, &'static str)> {
    let mut f = common::filters();
    f.extend([
        (r"\bws_[0-9a-z]{26}\b", "ws_xxxxxxxxxxxxxxxxxxxxxxxxxx"),
        (r"sha256:[0-9a-f]{64}", "sha256:[digest]"),
        // Guest addresses (never the loopback of the origins).
        (r"\b(10|100|172|192)\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", "[guest-ip]"),
        (r"\bfd[0-9a-f]{2}(:[0-9a-f]{0,4}){2,7}", "[guest-ip]"),
    ]);
    f
}

macro_rules! wsnap {
    ($name:expr, $run:expr) => {
        insta::with_settings!({ filters => filters(), prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!($name, $run.text);
        })
    };
}

/// `GET path` on the workspace origin as the console user; the status and the body.
fn origin_get(s: &Server, path: &str) -> (u16, String) {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let password = std::fs::read_to_string(s.data.join("console-password")).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("vt:{}", password.trim()));
    let mut c = std::net::TcpStream::connect(&s.origin).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n", s.origin)
        .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn the_cli_creates_shows_and_removes_workspaces() {
    let Some(s) = Server::start("the workspace CLI test") else { return };

    let r = s.create("dev", IDE, &["--wait"]);
    wsnap!("workspace_create", r);
    let r = s.create("dev-json", IDE, &["--wait", "-o", "json"]);
    wsnap!("workspace_create_json", r);
    let created = r.json();
    assert_eq!((created["status"].as_str(), created["desired"].as_str()), (Some("running"), Some("running")));
    wsnap!("workspace_create_taken", s.create("dev", IDE, &[]));

    // The IDE is served on the workspace origin, and the access is recorded.
    let (status, body) = origin_get(&s, "/workspace/dev/");
    assert_eq!((status, body.as_str()), (200, "hello from the ide\n"));
    s.wait_for("dev", 30, "accessed", |r| !r.json()["last_accessed_at"].is_null());
    assert!(s.get("dev-json")["last_accessed_at"].is_null());

    wsnap!("workspace_port_add", s.vt(&["workspace", "port", "add", "dev", "3000"]));
    for port in ["3001", "3002", "3003", "3004"] {
        s.ok(&["workspace", "port", "add", "dev", port]);
    }
    // A registered port that nothing listens on: the front answers 502.
    let (status, _) = origin_get(&s, "/workspace/dev/port/3000/");
    assert_eq!(status, 502);
    wsnap!("workspace_port_add_sixth", s.vt(&["workspace", "port", "add", "dev", "3005"]));
    wsnap!("workspace_port_add_zero", s.vt(&["workspace", "port", "add", "dev", "0"]));
    wsnap!("workspace_port_remove", s.vt(&["workspace", "port", "remove", "dev", "3004"]));
    wsnap!("workspace_port_list", s.vt(&["workspace", "port", "list", "dev"]));
    wsnap!("workspace_list", s.vt(&["workspace", "list"]));
    wsnap!("workspace_get", s.vt(&["workspace", "get", "dev"]));
    wsnap!("workspace_get_missing", s.vt(&["workspace", "get", "missing"]));
    wsnap!("workspace_open", s.vt(&["workspace", "open", "dev"]));

    let dev = s.get("dev");
    let instance = dev["instance_id"].as_str().unwrap().to_owned();
    assert_eq!(s.vms_of(&instance), 1, "{:?}", s.vms());
    wsnap!("workspace_stop", s.vt(&["workspace", "stop", "dev", "--wait"]));
    assert_eq!(s.vms_of(&instance), 0, "a stopped workspace keeps no VM: {:?}", s.vms());
    wsnap!("workspace_open_stopped", s.vt(&["workspace", "open", "dev"]));

    // Delete: refused without a terminal and --yes; with --yes, the VM and the disk go.
    let json = s.get("dev-json");
    let (id, instance) = (json["id"].as_str().unwrap().to_owned(), json["instance_id"].as_str().unwrap().to_owned());
    let events = s.events();
    let volumes = s.events_of(&events, &id, "volume.created");
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let volume = volumes[0]["payload"]["volume_id"].as_str().unwrap().to_owned();
    assert!(!s.disks_of(&volume).is_empty(), "the home disk of dev-json is on the node");
    assert_eq!(s.vms_of(&instance), 1, "{:?}", s.vms());
    wsnap!("workspace_delete_not_a_terminal", s.vt(&["workspace", "delete", "dev-json"]));
    assert_eq!(s.get("dev-json")["status"], "running");
    wsnap!("workspace_delete", s.vt(&["workspace", "delete", "dev-json", "--yes"]));
    s.wait_for("dev-json", 60, "gone", |r| r.code != 0);
    wsnap!("workspace_get_deleted", s.vt(&["workspace", "get", "dev-json"]));
    assert_eq!(s.vms_of(&instance), 0, "{:?}", s.vms());
    assert_eq!(s.disks_of(&volume), Vec::<PathBuf>::new(), "the home disk is removed");
    // The list no longer shows it.
    wsnap!("workspace_list_after_delete", s.vt(&["workspace", "list"]));
    s.stop();
}

/// The `seq` of an event.
fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap()
}

#[test]
fn racing_creates_and_starts_make_one_workspace_and_one_vm() {
    let Some(s) = Server::start("the workspace race test") else { return };

    // Four creates of one name at once: one wins, the others are told the name is taken.
    let runs: Vec<Run> = std::thread::scope(|t| {
        let racers: Vec<_> = (0..4).map(|_| t.spawn(|| s.create("race", IDE, &[]))).collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let texts = runs.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n");
    assert_eq!(runs.iter().filter(|r| r.code == 0).count(), 1, "{texts}");
    for lost in runs.iter().filter(|r| r.code != 0) {
        assert_eq!(lost.code, 4, "{texts}");
        assert!(lost.stderr.contains("code: name_taken (HTTP 409)"), "{texts}");
    }
    s.wait_for("race", 120, "running", |r| r.json()["status"] == "running");
    s.ok(&["workspace", "stop", "race", "--wait"]);
    let stopped = s.get("race");
    assert_eq!((stopped["status"].as_str(), stopped["instance_id"].as_str()), (Some("stopped"), None));
    assert_eq!(s.vms(), Vec::<String>::new(), "a stopped workspace keeps no VM");

    // Four starts at once: all succeed (one starts it, the others find it started).
    let runs: Vec<Run> = std::thread::scope(|t| {
        let racers: Vec<_> = (0..4).map(|_| t.spawn(|| s.vt(&["workspace", "start", "race"]))).collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let texts = runs.iter().map(|r| r.text.as_str()).collect::<Vec<_>>().join("\n");
    assert!(runs.iter().all(|r| r.code == 0), "{texts}");
    let running = s.wait_for("race", 120, "running", |r| r.json()["status"] == "running").json();
    // Give a second VM, if one were coming, the time to show up.
    std::thread::sleep(Duration::from_secs(3));
    let instance = running["instance_id"].as_str().expect("a running workspace has its instance").to_owned();
    assert_eq!(s.get("race")["instance_id"].as_str(), Some(instance.as_str()));
    assert_eq!(s.vms_of(&instance), 1, "{:?}", s.vms());
    assert_eq!(s.vms().len(), 1, "one VM in all: {:?}", s.vms());

    let id = running["id"].as_str().unwrap();
    let events = s.events();
    assert_eq!(s.events_of(&events, id, "volume.created").len(), 1, "one home disk");
    let created: Vec<_> = events.iter().filter(|e| e["event_type"] == "workspace.created").collect();
    assert_eq!(created.len(), 1, "{created:?}");
    let starts: Vec<_> = events
        .iter()
        .filter(|e| e["event_type"] == "workspace.desired_state_changed" && e["payload"]["desired"] == "running")
        .collect();
    assert_eq!(starts.len(), 1, "the racing starts recorded one start: {starts:?}");
    let allocated = s.events_of(&events, id, "instance.allocated");
    assert_eq!(allocated.len(), 2, "one instance for the create, one for the start: {allocated:?}");
    let after_start: Vec<_> = allocated.iter().filter(|e| seq(e) > seq(starts[0])).collect();
    assert_eq!(after_start.len(), 1, "{after_start:?}");
    assert_eq!(after_start[0]["payload"]["instance_id"].as_str(), Some(instance.as_str()));
    s.stop();
}

#[test]
fn a_full_node_refuses_a_workspace_and_names_the_one_to_stop() {
    let Some(s) = Server::start("the workspace capacity test") else { return };
    let nodes = s.ok(&["node", "list", "-o", "json"]).json();
    let allocatable = nodes["items"][0]["allocatable"]["memory_mib"]
        .as_u64()
        .unwrap_or_else(|| panic!("no allocatable memory: {nodes}"));
    let memory = (allocatable * 6 / 10).to_string();
    let create = |name: &str, extra: &[&str]| {
        let base =
            ["workspace", "create", name, "--image", IDE, "--memory-mib", &memory, "--cpus", "1", "--disk-gib", "1"];
        s.vt(&[&base[..], extra].concat())
    };
    let r = create("big1", &["--wait"]);
    assert_eq!(r.code, 0, "{}", r.text);

    let r = create("big2", &["--wait"]);
    assert_eq!(r.code, 4, "{}", r.text);
    assert!(r.stderr.contains("code: capacity_exhausted (HTTP 409)"), "{}", r.text);
    assert!(r.stderr.contains(&format!("the workspace needs {memory} MiB")), "{}", r.text);
    assert!(r.stderr.contains("`vt workspace stop big1`"), "{}", r.text);
    // The refused create wrote nothing.
    let list = s.ok(&["workspace", "list", "-o", "json"]).json();
    let names: Vec<_> = list["items"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["big1"]);
    let created = s.events().into_iter().filter(|e| e["event_type"] == "workspace.created").count();
    assert_eq!(created, 1);

    // Stopped, big1 frees its memory: big2 fits.
    s.ok(&["workspace", "stop", "big1", "--wait"]);
    let r = create("big2", &["--wait"]);
    assert_eq!(r.code, 0, "{}", r.text);
    // Now big1 cannot start again, and is told about big2.
    let r = s.vt(&["workspace", "start", "big1"]);
    assert_eq!(r.code, 4, "{}", r.text);
    assert!(r.stderr.contains("capacity_exhausted") && r.stderr.contains("`vt workspace stop big2`"), "{}", r.text);
    assert_eq!(s.get("big1")["status"], "stopped");
    s.stop();
}

#[test]
fn an_ide_that_exits_at_once_fails_its_workspace_without_a_restart_loop() {
    let Some(s) = Server::start("the failing workspace test") else { return };
    let r = s.create("bad", BAD, &["--wait"]);
    wsnap!("workspace_create_failed", r);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("boom-from-ide"), "{}", r.text);

    let w = s.get("bad");
    assert_eq!((w["status"].as_str(), w["desired"].as_str()), (Some("failed"), Some("stopped")), "{w}");
    assert!(w["reason"].as_str().unwrap().contains("failed"), "{w}");
    assert!(
        w["last_log_lines"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().ends_with(" stdout boom-from-ide")),
        "{w}"
    );
    let id = w["id"].as_str().unwrap().to_owned();
    let before = s.events_of(&s.events(), &id, "instance.allocated").len();
    assert_eq!(before, 1);

    // No restart loop: after a while, still the one failed instance and no VM.
    std::thread::sleep(Duration::from_secs(10));
    let events = s.events();
    assert_eq!(s.events_of(&events, &id, "instance.allocated").len(), 1, "the failed IDE was not restarted");
    let failed: Vec<_> =
        events.iter().filter(|e| e["event_type"] == "workspace.failed" && e["payload"]["workspace_id"] == id).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(s.vms(), Vec::<String>::new());
    let w = s.get("bad");
    assert_eq!((w["status"].as_str(), w["instance_id"].as_str()), (Some("failed"), None), "{w}");
    wsnap!("workspace_list_failed", s.vt(&["workspace", "list"]));
    s.stop();
}

#[test]
fn a_server_killed_mid_start_converges_to_one_vm_and_one_disk() {
    let Some(mut s) = Server::start("the workspace crash test") else { return };
    s.ok(&["workspace", "create", "crash", "--image", IDE, "--memory-mib", "256", "--cpus", "1", "--disk-gib", "1"]);
    // Killed once the IDE's instance is placed and on its way, before it runs.
    let placed = s.wait_for("crash", 60, "placed", |r| {
        let w = r.json();
        !w["instance_id"].is_null() && w["status"] != "running"
    });
    let instance = placed.json()["instance_id"].as_str().unwrap().to_owned();
    s.kill_and_restart();
    let running = s.wait_for("crash", 120, "running after the restart", |r| r.json()["status"] == "running").json();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running["instance_id"].as_str(), Some(instance.as_str()), "the same instance, adopted or booted once");
    assert_eq!(s.vms_of(&instance), 1, "{:?}", s.vms());
    assert_eq!(s.vms().len(), 1, "one VM in all: {:?}", s.vms());
    let events = s.events();
    let id = running["id"].as_str().unwrap();
    assert_eq!(s.events_of(&events, id, "volume.created").len(), 1, "one home disk");
    assert_eq!(s.events_of(&events, id, "instance.allocated").len(), 1, "one instance");
    let volume = s.events_of(&events, id, "volume.created")[0]["payload"]["volume_id"].as_str().unwrap().to_owned();
    assert!(!s.disks_of(&volume).is_empty(), "the home disk exists");
    let (status, _) = origin_get(&s, "/workspace/crash/");
    assert_eq!(status, 200, "served after the restart");
    s.stop();
}

/// `vt workspace stop --suspend` saves the workspace's VM to a snapshot on its node (no VM
/// runs, even after the server is killed and started again) and `vt workspace start` resumes
/// the same instance with its memory: a file in /tmp (a tmpfs, lost by a cold boot) is still
/// there. Suspending again is a no-op; so is suspending a stopped workspace.
#[test]
fn a_suspended_workspace_resumes_with_its_memory() {
    let Some(mut s) = Server::start("the workspace suspend test") else { return };
    s.ok(&[
        "workspace",
        "create",
        "dev",
        "--image",
        IDE,
        "--memory-mib",
        "256",
        "--cpus",
        "1",
        "--disk-gib",
        "1",
        "--wait",
    ]);
    let instance = s.get("dev")["instance_id"].as_str().unwrap().to_owned();
    let exec = |s: &Server, cmd: &str| s.ok(&["exec", &instance, "--", "sh", "-c", cmd]).stdout.trim().to_owned();
    exec(&s, "echo kept-in-memory > /tmp/marker");

    let r = s.vt(&["workspace", "stop", "dev", "--suspend", "--wait"]);
    wsnap!("workspace_stop_suspend", r);
    assert_eq!(s.vms_of(&instance), 0, "a suspended workspace runs no VM: {:?}", s.vms());
    let w = s.get("dev");
    assert_eq!((w["status"].as_str(), w["desired"].as_str()), (Some("suspended"), Some("suspended")), "{w}");
    wsnap!("workspace_list_suspended", s.vt(&["workspace", "list"]));
    // Again: nothing to record.
    let id = w["id"].as_str().unwrap().to_owned();
    let changes = |s: &Server| s.events_of(&s.events(), &id, "workspace.desired_state_changed").len();
    let before = changes(&s);
    let again = s.ok(&["workspace", "stop", "dev", "--suspend", "-o", "json"]).json();
    assert_eq!(again["status"], "suspended");
    assert_eq!(changes(&s), before, "a second suspend records nothing");

    // A restarted server (and agent) does not start a suspended instance.
    s.kill_and_restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.get("dev")["status"], "suspended");
    assert_eq!(s.vms_of(&instance), 0, "{:?}", s.vms());

    let began = Instant::now();
    s.ok(&["workspace", "start", "dev", "--wait"]);
    println!("suspended → running in {:?}", began.elapsed());
    let w = s.get("dev");
    assert_eq!(w["instance_id"].as_str(), Some(instance.as_str()), "the same instance resumed: {w}");
    assert_eq!(exec(&s, "cat /tmp/marker"), "kept-in-memory", "its /tmp kept");
    let (status, body) = origin_get(&s, "/workspace/dev/");
    assert_eq!((status, body.as_str()), (200, "hello from the ide\n"));

    // Stopped for good: the snapshot does not outlive it; suspending a stopped one keeps it stopped.
    s.ok(&["workspace", "stop", "dev", "--wait"]);
    let stopped = s.ok(&["workspace", "stop", "dev", "--suspend", "-o", "json"]).json();
    assert_eq!(stopped["status"], "stopped");
    s.stop();
}
