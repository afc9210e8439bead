//! Volumes end to end, through the CLI against `vt server` with its node agent, with real
//! microVMs (TCG): a process writes to its volume, a new release's instance sees the data;
//! a volume is attached to one instance at a time, and what cannot be placed says why.
//!
//! The CLI's output (tables, receipts, errors, `-o json`) is snapshot-tested against a real
//! control plane with two simulated nodes, which also shows locality: an instance lands on
//! the node that holds its volume, not on the roomier one.
//!
//! The microVM test is skipped with a message when the guest kernel, qemu, mkfs.ext4 or /bin/busybox is missing;
//! fails instead under `CI=true`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    acme_with_busybox, plain_server_args, spawn_vt_server, vt_at, vt_isolated, Run, TestServer, DIGEST_IMAGE,
};
use serde_json::json;
use vt_client::vt_api::RegisterNode;

fn guest_ready() -> bool {
    vt_runtime::testing::guest_or_skip("the volumes test", &[vt_image::testing::BUSYBOX]).is_some()
}

/// A manifest whose `web` runs `script` with each of `volumes` (name, path) mounted.
fn manifest(dir: &Path, name: &str, script: &str, volumes: &[(&str, &str)]) -> String {
    let p = dir.join(name);
    let mut text = format!(
        "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n\
         resources = {{ cpu = 0.5, memory_mib = 128 }}\nscaling = {{ min = 0, max = 2 }}\n"
    );
    for (name, path) in volumes {
        text.push_str(&format!("\n[[volumes]]\nname = {name:?}\npath = {path:?}\nprocess = \"web\"\n"));
    }
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// The text after `prefix` on a stdout line of `id`'s logs, if there is one yet.
fn logged(vt: &dyn Fn(&[&str]) -> Run, id: &str, prefix: &str) -> Option<String> {
    let logs = vt(&["logs", "--instance", id]).stdout;
    logs.lines().find_map(|l| l.split(&format!(" stdout {prefix}")).nth(1).map(str::to_owned))
}

/// Wait until `vt logs` shows a line from a running instance other than `not` ending in `text`;
/// returns that instance's id.
fn wait_for_line(vt: &dyn Fn(&[&str]) -> Run, not: Option<&str>, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let r = vt(&["logs"]);
        let found = r.stdout.lines().find_map(|l| {
            let id = l.split(' ').next()?;
            (Some(id) != not && l.ends_with(&format!(" stdout {text}"))).then(|| id.to_owned())
        });
        if let Some(id) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no instance printed {text:?}: {}\n{}", r.text, vt(&["instances"]).text);
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_volume_keeps_its_data_across_releases_and_serves_one_instance_at_a_time() {
    if !guest_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = plain_server_args(&data, &[]);
    let (mut child, url) = spawn_vt_server(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);
    let vt_any = |args: &[&str]| {
        let mut c = vt_isolated(dir.path(), args);
        c.env("VT_SERVER", &url).env("VT_DATA_DIR", &data).env("VT_ORG", "acme").env("VT_APP", "web");
        Run::of(c.env("VT_ENV", "prod").output().unwrap(), dir.path())
    };
    let image = acme_with_busybox(dir.path(), &data, &url);

    // No volume yet: the instance is not placed, and describe says why.
    let v1 = manifest(
        dir.path(),
        "v1.toml",
        "echo first > /data/msg && head -c 4194304 /dev/urandom > /data/blob && sync && \
         echo sum $(sha256sum /data/blob | cut -c1-64) && echo wrote && exec sleep 600",
        &[("data", "/data")],
    );
    vt(&["deploy", "--image", &image, "--manifest", &v1]);
    vt(&["scale", "web=1"]);
    let d = vt(&["describe"]);
    assert!(d.stdout.contains("process web needs a free volume `data`; none exists in its env"), "{}", d.text);

    let created = vt(&["volume", "create", "data", "--size-gib", "1", "-o", "json"]).json();
    assert_eq!((created["name"].as_str(), created["node"].as_str()), (Some("data"), Some("node-1")));
    let volume = created["id"].as_str().unwrap().to_owned();

    // The first release writes to its volume.
    let first = wait_for_line(&vt, None, "wrote");
    let v = vt(&["volume", "get", "data", "-o", "json"]).json();
    assert_eq!(v["attached_to"].as_str(), Some(first.as_str()), "{v}");
    let inst = vt(&["instances", "-o", "json"]).json();
    let i = inst["items"].as_array().unwrap().iter().find(|i| i["id"] == first.as_str()).unwrap().clone();
    assert_eq!(i["volumes"], serde_json::json!([{"name": "data", "volume_id": volume}]));

    let sum = logged(&vt, &first, "sum ").expect("the first instance printed its blob's checksum");
    assert_eq!(sum.len(), 64, "{sum}");

    // A snapshot while it runs (the VM pauses for the copy), restored as a new volume.
    let snap = vt(&["volume", "snapshot", "data", "-o", "json"]).json();
    assert_eq!(snap["status"], "completed", "{snap}");
    assert!(snap["paused_ms"].as_u64().is_some() && snap["bytes"].as_u64().unwrap() >= 4 << 20, "{snap}");
    eprintln!("snapshot of a running 1 GiB volume holding 4 MiB: {snap}");
    let snap_id = snap["id"].as_str().unwrap().to_owned();
    let listed = vt(&["volume", "snapshots", "data", "-o", "json"]).json();
    assert_eq!(listed["items"][0]["id"].as_str(), Some(snap_id.as_str()));
    let r = vt_any(&["volume", "restore", &snap_id, "--as", "data"]);
    assert_eq!(r.code, 4, "restoring onto an existing name: {}", r.text);
    let copy = vt(&["volume", "restore", &snap_id, "--as", "copy", "-o", "json"]).json();
    assert_eq!((copy["from_snapshot"].as_str(), copy["node"].as_str()), (Some(snap_id.as_str()), Some("node-1")));

    // A second replica finds no free volume, and describe says so.
    vt(&["scale", "web=2"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = vt(&["describe"]);
        if d.stdout.contains("process web needs a free volume `data`; 1 exists, it is attached") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", d.text);
        std::thread::sleep(Duration::from_millis(300));
    }
    vt(&["scale", "web=1"]);

    // Deleting an attached volume is refused; without --yes and a terminal, it is not even asked.
    let r = vt_any(&["volume", "delete", "data", "--yes"]);
    assert_eq!(r.code, 4, "{}", r.text);
    assert!(r.stderr.contains(&format!("is attached to instance {first}")), "{}", r.text);
    let r = vt_any(&["volume", "delete", "data"]);
    assert_eq!(r.code, 2, "{}", r.text);
    assert!(r.stderr.contains("pass --yes"), "{}", r.text);

    // A new release: the old instance stops first, its replacement gets the same volume and
    // reads what the first one wrote.
    let v2 = manifest(
        dir.path(),
        "v2.toml",
        "echo read $(cat /data/msg) && echo size $(df -k /data | awk 'NR==2{print $2}') KiB && \
         echo copy $(cat /copy/msg) $(sha256sum /copy/blob | cut -c1-64) && exec sleep 600",
        &[("data", "/data"), ("copy", "/copy")],
    );
    vt(&["deploy", "--image", &image, "--manifest", &v2]);
    let second = wait_for_line(&vt, Some(&first), "read first");
    assert_ne!(first, second);
    // The restored volume holds the snapshot's bytes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let copied = loop {
        if let Some(c) = logged(&vt, &second, "copy ") {
            break c;
        }
        assert!(Instant::now() < deadline, "{}", vt(&["logs"]).text);
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(copied, format!("first {sum}"), "the restored volume has the same bytes");
    let v = vt(&["volume", "get", &volume, "-o", "json"]).json();
    assert_eq!(v["attached_to"].as_str(), Some(second.as_str()), "{v}");
    let events = vt(&["events", "-o", "json"]).stdout;
    let attached = events.lines().filter(|l| l.contains("\"volume.attached\"")).count();
    let detached = events.lines().filter(|l| l.contains("\"volume.detached\"")).count();
    assert_eq!((attached, detached), (3, 1), "{events}");

    // Extend: the disk grows at the next start; scale to 0 frees the volume, which can then go.
    let r = vt_any(&["volume", "extend", "data", "--size-gib", "1"]);
    assert_eq!(r.code, 2, "{}", r.text);
    assert!(r.stderr.contains("only grows"), "{}", r.text);
    vt(&["volume", "extend", "data", "--size-gib", "2"]);
    let size = |id: &str| logged(&vt, id, "size ")?.strip_suffix(" KiB")?.parse::<u64>().ok();
    let before = size(&second).expect("the second instance printed its volume's size");
    assert!((900_000..1_100_000).contains(&before), "{before} KiB");
    let detached = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = vt(&["volume", "get", "data", "-o", "json"]).json();
            if v["attached_to"].is_null() {
                break;
            }
            assert!(Instant::now() < deadline, "the volume stayed attached: {v}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // The next instance that takes it finds it grown.
    vt(&["scale", "web=0"]);
    detached();
    vt(&["scale", "web=1"]);
    let third = wait_for_line(&vt, Some(&second), "read first");
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        if let Some(s) = size(&third) {
            break s;
        }
        assert!(Instant::now() < deadline, "{}", vt(&["logs"]).text);
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!((1_900_000..2_100_000).contains(&after), "{after} KiB after growing to 2 GiB");
    vt(&["scale", "web=0"]);
    detached();
    // The bytes are on the node's disk, in the volume's ext4 image.
    let disk = data.join("agent/volumes").join(format!("{volume}.ext4"));
    let out = std::process::Command::new("debugfs").args(["-R", "cat /msg"]).arg(&disk).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\n", "{}", String::from_utf8_lossy(&out.stderr));

    vt(&["volume", "delete", "data", "--yes"]);
    // The agent removes the disk of a deleted volume.
    let deadline = Instant::now() + Duration::from_secs(30);
    while disk.exists() {
        assert!(Instant::now() < deadline, "the disk of the deleted volume is still there");
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}

/// Nodes `node-1` (8 GiB) and `node-2` (1 GiB), registered as their agents would.
fn two_nodes(s: &TestServer) -> vt_client::Client {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = vt_client::Client::new(&s.url, Some(s.token.clone()));
    rt.block_on(async {
        for (name, memory) in [("node-1", 8192), ("node-2", 1024)] {
            let node: RegisterNode =
                serde_json::from_value(json!({"name": name, "capacity": {"cpu_millis": 4000, "memory_mib": memory}}))
                    .unwrap();
            client.node_register(&node, &format!("register-{name}")).await.unwrap();
        }
    });
    client
}

fn instances(s: &TestServer, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.run(&["instances", "-o", "json"]);
        let items = r.json()["items"].as_array().cloned().unwrap_or_default();
        let live: Vec<_> = items.into_iter().filter(|i| i["desired_state"] == "running").collect();
        if live.len() == n {
            return live;
        }
        assert!(Instant::now() < deadline, "wanted {n} instance(s): {}", r.text);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn volume_commands_and_locality_on_two_nodes() {
    let s = TestServer::start();
    s.seed();
    two_nodes(&s);
    snap!("volume_create", s.run(&["volume", "create", "data", "--size-gib", "10", "--node", "node-2"]));
    snap!("volume_create_bad_size", s.run(&["volume", "create", "data", "--size-gib", "0"]));
    snap!("volume_create_too_big", s.run(&["volume", "create", "data", "--size-gib", "65537"]));
    snap!("volume_create_unknown_node", s.run(&["volume", "create", "data", "--size-gib", "1", "--node", "node-9"]));
    snap!("volume_list", s.run(&["volume", "list"]));
    snap!("volume_get", s.run(&["volume", "get", "data"]));
    snap!("volume_get_missing", s.run(&["volume", "get", "nope"]));
    snap!("volume_extend", s.run(&["volume", "extend", "data", "--size-gib", "20"]));
    snap!("volume_extend_smaller", s.run(&["volume", "extend", "data", "--size-gib", "5"]));
    // No agent here takes it: it stays pending, and a pending snapshot cannot be restored.
    snap!("volume_snapshot_no_wait", s.run(&["volume", "snapshot", "data", "--no-wait"]));
    snap!("volume_snapshots", s.run(&["volume", "snapshots", "data"]));
    let snap_id =
        s.run(&["volume", "snapshots", "data", "-o", "json"]).json()["items"][0]["id"].as_str().unwrap().to_owned();
    snap!("volume_restore_pending", s.run(&["volume", "restore", &snap_id, "--as", "copy"]));
    snap!("volume_snapshots_missing", s.run(&["volume", "snapshots", "nope"]));
    snap!("volume_backup_no_repository", s.run(&["volume", "backup", "data"]));

    // Locality: node-1 has far more room, but the only volume `data` is on node-2.
    let manifest = s.dir.path().join("vt.toml");
    std::fs::write(
        &manifest,
        "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/true\"]\nresources = { cpu = 0.5, memory_mib = 128 }\n\
         scaling = { min = 1, max = 3 }\n\n[[volumes]]\nname = \"data\"\npath = \"/data\"\n",
    )
    .unwrap();
    snap!(
        "volume_release_hint",
        s.run(&["release", "create", "--image", DIGEST_IMAGE, "--manifest", manifest.to_str().unwrap()])
    );
    let r = s.run(&["deploy", "--image", DIGEST_IMAGE, "--manifest", manifest.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.text);
    let placed = instances(&s, 1);
    let node2 = s.run(&["node", "get", "node-2", "-o", "json"]).json()["id"].as_str().unwrap().to_owned();
    assert_eq!(placed[0]["node_id"].as_str(), Some(node2.as_str()), "the instance went where its volume is");
    let v = s.run(&["volume", "get", "data", "-o", "json"]).json();
    assert_eq!(v["attached_to"], placed[0]["id"]);

    // A second volume of the same name, on node-1: the second replica lands there.
    let r = s.run(&["volume", "create", "data", "--size-gib", "1", "--node", "node-1"]);
    assert_eq!(r.code, 0, "{}", r.text);
    snap!("volume_get_ambiguous", s.run(&["volume", "get", "data"]));
    let r = s.run(&["scale", "web=2"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let placed = instances(&s, 2);
    let mut nodes: Vec<&str> = placed.iter().map(|i| i["node_id"].as_str().unwrap()).collect();
    nodes.sort();
    let node1 = s.run(&["node", "get", "node-1", "-o", "json"]).json()["id"].as_str().unwrap().to_owned();
    let mut want = vec![node1.as_str(), node2.as_str()];
    want.sort();
    assert_eq!(nodes, want, "one replica per volume, each on its volume's node");

    // A third: both volumes are attached, and describe says so instead of placing it elsewhere.
    let r = s.run(&["scale", "web=3"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = s.run(&["describe"]);
        if d.stdout.contains("process web needs a free volume `data`; 2 exist, both attached") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", d.text);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(instances(&s, 2).len(), 2);
    snap!("volume_list_attached", s.run(&["volume", "list"]));
    let id = v["id"].as_str().unwrap();
    snap!("volume_delete_attached", s.run(&["volume", "delete", id, "--yes"]));
    snap!("volume_delete_not_a_terminal", s.run(&["volume", "delete", id]));

    // A volume no instance has can go.
    let r = s.run(&["volume", "create", "spare", "--size-gib", "1", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_eq!(r.json()["node"], "node-1", "the ready node holding the fewest volumes, then the lowest name");
    snap!("volume_delete", s.run(&["volume", "delete", "spare", "--yes"]));
    let r = s.run(&["volume", "list", "-o", "json"]);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2, "{}", r.text);
}

fn restic_ready() -> bool {
    let ok = std::process::Command::new("restic").arg("version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "restic is missing (apt-get install restic)");
        eprintln!("SKIPPED: the backup test needs restic (apt-get install restic)");
    }
    ok
}

/// `vt server` on `data` with its agent as node-1, backing volumes up to `repo`.
fn backup_server(dir: &Path, data: &Path, repo: &Path, password: &Path) -> (common::ServerChild, String) {
    let extra = [
        "--backup-repo",
        repo.to_str().unwrap(),
        "--backup-password-file",
        password.to_str().unwrap(),
        "--backup-keep",
        "last=5,daily=7",
    ];
    let args = plain_server_args(data, &extra);
    spawn_vt_server(dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_backup_restored_on_a_fresh_data_directory_holds_the_same_bytes() {
    if !guest_ready() || !restic_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (repo, password) = (dir.path().join("backups"), dir.path().join("backup-password"));
    std::fs::write(&password, "correct horse\n").unwrap();
    let init = std::process::Command::new("restic")
        .arg("--repo")
        .arg(&repo)
        .arg("--password-file")
        .arg(&password)
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));

    // The first server: a process writes to its volume, which is backed up while it runs.
    let data = dir.path().join("data-a");
    let (mut a, url) = backup_server(dir.path(), &data, &repo, &password);
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);
    let image = acme_with_busybox(dir.path(), &data, &url);
    vt(&["volume", "create", "data", "--size-gib", "1"]);
    let writer = manifest(
        dir.path(),
        "writer.toml",
        "head -c 8388608 /dev/urandom > /data/blob && sync && echo sum $(sha256sum /data/blob | cut -c1-64) && \
         echo wrote && exec sleep 600",
        &[("data", "/data")],
    );
    vt(&["deploy", "--image", &image, "--manifest", &writer]);
    vt(&["scale", "web=1"]);
    let first = wait_for_line(&vt, None, "wrote");
    let sum = logged(&vt, &first, "sum ").expect("the writer printed its checksum");
    let v = vt(&["volume", "backup", "data", "-o", "json"]).json();
    let b = &v["backups"];
    assert!(b["pending"].is_null() && b["last_error"].is_null(), "{v}");
    let id = b["last_success_id"].as_str().expect("a completed backup").to_owned();
    assert!(b["last_bytes_added"].as_u64().unwrap() >= 8 << 20, "{v}");
    eprintln!("backup of a running 1 GiB volume holding 8 MiB: {b}");
    let listed = vt(&["volume", "backups", "data", "-o", "json"]).json();
    assert_eq!(listed["items"][0]["id"].as_str(), Some(id.as_str()), "{listed}");
    let events = vt(&["events", "-o", "json"]).stdout;
    assert!(events.contains("\"backup.requested\"") && events.contains("\"backup.reported\""), "{events}");

    // The node dies during a backup (SIGKILL): the restarted server finishes it.
    vt(&["volume", "backup", "data", "--no-wait"]);
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::process::Command::new("kill").args(["-KILL", &a.id().to_string()]).status();
    let _ = a.wait();
    let (mut a, url) = backup_server(dir.path(), &data, &repo, &password);
    let vt = |args: &[&str]| vt_at(dir.path(), &data, &url, args);
    let deadline = Instant::now() + Duration::from_secs(120);
    let v = loop {
        let v = vt(&["volume", "get", "data", "-o", "json"]).json();
        if v["backups"]["pending"].is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "the backup cut by the restart never finished: {v}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(v["backups"]["last_error"].is_null(), "{v}");
    assert_ne!(v["backups"]["last_success_id"].as_str(), Some(id.as_str()), "a second backup: {v}");
    let _ = std::process::Command::new("kill").args(["-TERM", &a.id().to_string()]).status();
    assert!(a.wait().unwrap().success());

    // A fresh data directory, the same repository: the backup comes back as a new volume.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let data = fresh.join("data");
    let (mut b, url) = backup_server(&fresh, &data, &repo, &password);
    let vt = |args: &[&str]| vt_at(&fresh, &data, &url, args);
    let image = acme_with_busybox(&fresh, &data, &url);
    let listed = vt(&["volume", "backups", "data", "-o", "json"]).json();
    assert_eq!(listed["items"][0]["id"].as_str(), Some(id.as_str()), "the fresh server finds the backup: {listed}");
    let restored = vt(&["volume", "restore", &id[..12], "--as", "data", "-o", "json"]).json();
    assert_eq!(restored["from_backup"].as_str(), Some(id.as_str()), "{restored}");
    let reader = manifest(
        &fresh,
        "reader.toml",
        "echo copy $(sha256sum /data/blob | cut -c1-64) && exec sleep 600",
        &[("data", "/data")],
    );
    vt(&["deploy", "--image", &image, "--manifest", &reader]);
    vt(&["scale", "web=1"]);
    let deadline = Instant::now() + Duration::from_secs(240);
    let copied = loop {
        let r = vt(&["logs"]);
        if let Some(c) = r.stdout.lines().find_map(|l| l.split(" stdout copy ").nth(1)) {
            break c.to_owned();
        }
        assert!(Instant::now() < deadline, "{}\n{}", r.text, vt(&["instances"]).text);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(copied, sum, "the restored volume holds the same bytes");
    let _ = std::process::Command::new("kill").args(["-TERM", &b.id().to_string()]).status();
    assert!(b.wait().unwrap().success());
}

/// An edge-only node (`vt server --role edge --join`) in `vt node list` and `vt node get`, and
/// refused as a volume's node: it runs no instances.
#[test]
fn an_edge_only_node_is_shown_so_and_holds_no_volume() {
    let s = TestServer::start();
    s.seed();
    two_nodes(&s);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = vt_client::Client::new(&s.url, Some(s.token.clone()));
    rt.block_on(async {
        let node: RegisterNode = serde_json::from_value(json!({
            "name": "edge-1",
            "capacity": {"cpu_millis": 2000, "memory_mib": 2048},
            "runs_instances": false,
        }))
        .unwrap();
        client.node_register(&node, "register-edge-1").await.unwrap();
        // node-1's agent reports its disk with a heartbeat; node-2's (an older agent) does not.
        let beat: vt_api::Heartbeat = serde_json::from_value(json!({"disk": {
            "total_bytes": 100u64 << 30, "free_bytes": 60u64 << 30, "reserve_bytes": 5u64 << 30,
            "budget_free_bytes": 55u64 << 30,
            "used": {"images_bytes": 2u64 << 30, "scratch_bytes": 512u64 << 20, "volumes_bytes": 10u64 << 30,
                     "snapshots_bytes": 384u64 << 20, "snapshots": 3, "logs_bytes": 3u64 << 20}
        }}))
        .unwrap();
        client.node_heartbeat("node-1", &beat, "hb-node-1").await.unwrap();
    });
    snap!("node_list_edge_only", s.run(&["node", "list"]));
    snap!("node_get_edge_only", s.run(&["node", "get", "edge-1"]));
    snap!("node_get_disk", s.run(&["node", "get", "node-1"]));
    assert_eq!(s.run(&["node", "get", "edge-1", "-o", "json"]).json()["runs_instances"], false);
    // `--format json`: the report as sent, and when it came; absent for a node that sent none.
    let n1 = s.run(&["node", "get", "node-1", "-o", "json"]).json();
    assert_eq!(n1["disk"]["used"]["snapshots_bytes"], 384u64 << 20, "{n1}");
    assert_eq!(n1["disk"]["budget_free_bytes"], 55u64 << 30, "{n1}");
    assert!(n1["disk_reported_at"].is_string(), "{n1}");
    let n2 = s.run(&["node", "get", "node-2", "-o", "json"]).json();
    assert!(n2["disk"].is_null() && n2["disk_reported_at"].is_null(), "{n2}");
    snap!("volume_create_edge_only_node", s.run(&["volume", "create", "data", "--size-gib", "1", "--node", "edge-1"]));
}
