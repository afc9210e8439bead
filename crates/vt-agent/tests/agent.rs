//! The node agent against a real control plane, booting real microVMs (TCG unless
//! VT_QEMU_ACCEL says otherwise): a busybox image pushed into the built-in registry, a release
//! whose `web` process runs a shell command, an instance allocated on the agent's node.
//!
//! Needs the guest kernel and initramfs from `scripts/guest-kernel.sh` (in `VT_GUEST_DIR`,
//! default `/var/cache/vt/guest`), `qemu-system-x86_64`, `mkfs.ext4` and `/bin/busybox`.
//! Without them the tests are skipped with a message, except under `CI=true`, where they fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vt_agent::{Agent, AgentConfig};
use vt_api::{CreateApp, CreateEnv, CreateOrg, CreateRelease, CreateToken, Hostname, Instance, Name, TokenRole};
use vt_client::registry::RegistryClient;
use vt_client::Client;
use vt_control_plane::ControlPlane;
use vt_events::{
    Actor, DesiredState, Event, InstanceAllocated, InstanceDesiredStateChanged, InstanceStatus, NewEvent, Resources,
};
use vt_ids::*;
use vt_image::layout::{write_image, LayerFormat};
use vt_image::oci::RuntimeConfig;
use vt_server::{Server, ServerConfig};

/// The tests boot VMs on a small machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn guest_ready() -> bool {
    vt_runtime::testing::guest_or_skip("the agent tests", &[vt_image::testing::BUSYBOX]).is_some()
}

struct World {
    _tmp: tempfile::TempDir,
    cp: Arc<ControlPlane>,
    base: String,
    /// A node token of `node-a`: what the agent acts with.
    node_token: String,
    dirs: vt_agent::AgentDirs,
    client: Client,
    org_id: OrgId,
    app_id: AppId,
    env_id: EnvId,
    release_id: ReleaseId,
}

/// A control plane on 127.0.0.1:0, a busybox image in its registry, org/app/env and a release
/// whose `web` process runs `command`.
async fn world(command: &str) -> World {
    let argv = ["/bin/sh", "-c", command].iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    world_with(&format!("schema_version = 1\n\n[processes.web]\ncommand = [{argv}]\n")).await
}

/// The same with the release's whole manifest given.
async fn world_with(manifest: &str) -> World {
    let manifest = manifest.to_owned();
    let tmp = tempfile::Builder::new().prefix("vta").tempdir_in("/tmp").unwrap();
    let mut config = ServerConfig::new(tmp.path().join("data"), ([127, 0, 0, 1], 0).into());
    config.sqlite = vt_store::SqliteOptions { full_sync: false };
    let server = Server::start(&config).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let token = std::fs::read_to_string(server.data.admin_token()).unwrap().trim().to_owned();
    let cp = server.control_plane.clone();
    let dirs = server.data.agent();
    tokio::spawn(server.run(std::future::pending()));
    let client = Client::new(&base, Some(token.clone()));

    // The image: busybox, no entrypoint (the manifest's command runs).
    let build = tmp.path().join("build");
    vt_image::testing::busybox_rootfs(&build.join("rootfs")).unwrap();
    let layout = build.join("layout");
    let img = write_image(&build.join("rootfs"), &layout, RuntimeConfig::default(), LayerFormat::Uncompressed).unwrap();
    let blob = |d: &str| layout.join("blobs/sha256").join(d.strip_prefix("sha256:").unwrap());
    let reg = RegistryClient::new(&base, Some(token.clone()));
    for d in [img.config.digest.to_string(), img.layer.digest.to_string()] {
        reg.push_blob("acme/web", &d, &blob(&d)).await.unwrap();
    }
    let manifest_digest = img.manifest.digest.to_string();
    reg.put_manifest(
        "acme/web",
        &manifest_digest,
        &img.manifest.media_type.to_string(),
        std::fs::read(blob(&manifest_digest)).unwrap(),
    )
    .await
    .unwrap();

    let name = |s: &str| Name::parse(s).unwrap();
    let org = client.org_create(&CreateOrg { name: name("acme") }, "k-org").await.unwrap().value;
    let app =
        client.app_create("acme", &CreateApp { name: name("web"), description: None }, "k-app").await.unwrap().value;
    let env = client.env_create("acme", "web", &CreateEnv { name: name("prod") }, "k-env").await.unwrap().value;
    let node_token = client
        .token_create(&CreateToken {
            name: name("node-a"),
            role: TokenRole::Node,
            org: None,
            node: Some("node-a".into()),
            expires_in_secs: None,
        })
        .await
        .unwrap()
        .secret;
    let release = client
        .release_create(
            "acme",
            "web",
            &CreateRelease { image: format!("acme/web@{manifest_digest}"), manifest },
            "k-rel",
        )
        .await
        .unwrap()
        .value;
    World {
        cp,
        base,
        node_token,
        dirs,
        client,
        org_id: org.id,
        app_id: app.id,
        env_id: env.id,
        release_id: release.id,
        _tmp: tmp,
    }
}

impl World {
    fn agent(&self) -> Arc<Agent> {
        self.agent_via(&self.base)
    }

    /// An agent that reaches the control plane (and its registry) at `server`.
    fn agent_via(&self, server: &str) -> Arc<Agent> {
        self.agent_with(server, |_| {})
    }

    /// The same with its configuration changed by `tweak` first.
    fn agent_with(&self, server: &str, tweak: impl FnOnce(&mut AgentConfig)) -> Arc<Agent> {
        let node = Hostname::parse("node-a").unwrap();
        // Where the server reads instance logs: the data directory's agent dirs.
        let mut cfg = AgentConfig::new(server, Some(self.node_token.clone()), node, self.dirs.clone());
        cfg.resync_interval = Duration::from_secs(2);
        cfg.stop_grace = Duration::from_secs(2);
        // Beside other tests in the host's namespace: no egress (the host's forwarding stays
        // as it is) and a table of this test's own.
        cfg.network.egress = vt_firewall::Egress::Off;
        cfg.network.table = format!("vta{}", std::process::id());
        tweak(&mut cfg);
        Agent::new(cfg).unwrap()
    }

    async fn node_id(&self) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(n) = self.client.node_get("node-a").await {
                return n.id;
            }
            assert!(Instant::now() < deadline, "the agent never registered its node");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn append(&self, e: Event) {
        self.cp
            .store
            .append(vt_store::AppendRequest {
                events: vec![NewEvent::new(e, Actor::system("test"), None)],
                ..Default::default()
            })
            .await
            .unwrap();
        self.cp.fresh().await.unwrap();
    }

    async fn allocate(&self, node_id: NodeId) -> InstanceId {
        let instance_id = InstanceId::new();
        self.append(Event::InstanceAllocated(InstanceAllocated {
            org_id: self.org_id,
            app_id: self.app_id,
            env_id: self.env_id,
            instance_id,
            process: "web".into(),
            release_id: self.release_id,
            deploy_id: None,
            node_id,
            resources: Resources { cpu_millis: 1000, memory_mib: 256 },
            secrets_version: None,
            volumes: vec![],
        }))
        .await;
        instance_id
    }

    /// Desire the instance stopped and wait until its status is final.
    async fn stop(&self, id: InstanceId) -> Instance {
        self.append(Event::InstanceDesiredStateChanged(InstanceDesiredStateChanged {
            org_id: self.org_id,
            env_id: self.env_id,
            instance_id: id,
            desired: DesiredState::Stopped,
            reason: None,
        }))
        .await;
        self.wait_status(id, "stopped", |v| v.status.is_terminal()).await
    }

    async fn wait_status(&self, id: InstanceId, what: &str, ok: impl Fn(&Instance) -> bool) -> Instance {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let v = self.client.instance_get(&id.to_string()).await.unwrap();
            if ok(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "instance never became {what}: {v:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// QEMU processes whose command line mentions `needle`.
fn qemu_processes(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| {
            let cmd =
                String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).into_owned();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            cmd.starts_with("qemu-system") && cmd.contains(needle) && !zombie
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_boots_logs_and_reports_its_exit_code() {
    if !guest_ready() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let w = world("echo hello from vt; echo to stderr >&2; exit 3").await;
    let agent = w.agent();
    let run = tokio::spawn(agent.clone().run());
    // The control plane reads this node's logs through the channel its agent opens, as a
    // joined node's (docs/nodes.md).
    let _channel = AbortOnDrop(tokio::spawn(agent.clone().serve_channel()));
    let node = w.node_id().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.cp.channels.is_connected(node) {
        assert!(Instant::now() < deadline, "the node's channel never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = w.allocate(node).await;

    // Follow the logs from the start: the stream ends when the instance does.
    let follower = {
        let client = w.client.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut s = client.instance_logs(&id, true, None).await.unwrap();
            let mut lines = vec![];
            while let Some(l) = s.next_line().await {
                lines.push(l.unwrap());
            }
            lines
        })
    };

    let v = w.wait_status(id, "terminal", |v| v.status.is_terminal()).await;
    assert_eq!((v.status, v.exit_code), (InstanceStatus::Failed, Some(3)), "{v:?}");
    let reason = v.reason.clone().unwrap_or_default();
    assert!(reason.contains("exited with code 3") && reason.contains("vt logs"), "{reason}");

    let mut s = w.client.instance_logs(&id.to_string(), false, None).await.unwrap();
    let mut lines = vec![];
    while let Some(l) = s.next_line().await {
        lines.push(l.unwrap());
    }
    let texts: Vec<String> = lines.iter().map(|l| l.split_once(' ').unwrap().1.to_owned()).collect();
    assert!(texts.contains(&"stdout hello from vt".to_string()), "{lines:?}");
    assert!(texts.contains(&"stderr to stderr".to_string()), "{lines:?}");
    let followed =
        tokio::time::timeout(Duration::from_secs(10), follower).await.expect("follow ends with the instance").unwrap();
    assert!(followed.iter().any(|l| l.ends_with("stdout hello from vt")), "{followed:?}");
    // tail
    let mut s = w.client.instance_logs(&id.to_string(), false, Some(1)).await.unwrap();
    let last = s.next_line().await.unwrap().unwrap();
    assert!(s.next_line().await.is_none());
    assert!(last.contains(" agent failed: "), "{last}");

    // The record on disk has the timings; the node lists the instance.
    let rec = agent.records().into_iter().find(|r| r.id == id.to_string()).unwrap();
    assert!(rec.timings.root_disk_ms.is_some() && rec.timings.running_ms.is_some(), "{rec:?}");
    eprintln!("boot timings: {}", rec.timings.summary());
    let listed = w.client.node_instances("node-a").await.unwrap().items;
    assert_eq!(listed.iter().map(|i| i.id).collect::<Vec<_>>(), vec![id]);

    // Idempotent: more activations change nothing (no new events).
    let head = w.cp.store.head().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(w.cp.store.head().await.unwrap(), head);
    assert_eq!(qemu_processes(&id.to_string()), 0);
    run.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_boot_leaves_exactly_one_vm() {
    if !guest_ready() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let w = world("echo up; exec sleep 600").await;
    let run = tokio::spawn(w.agent().run());
    let node = w.node_id().await;
    let id = w.allocate(node).await;
    w.wait_status(id, "booting", |v| v.status == InstanceStatus::Booting).await;
    // Kill the agent mid-boot (its VM goes with it: the VMM is its child).
    run.abort();
    let _ = run.await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let agent2 = w.agent();
    let run2 = tokio::spawn(agent2.clone().run());
    let v = w.wait_status(id, "running", |v| v.status == InstanceStatus::Running || v.status.is_terminal()).await;
    assert_eq!(v.status, InstanceStatus::Running, "{v:?}");
    assert_eq!(qemu_processes(&id.to_string()), 1, "exactly one VM for the instance");
    // Further activations leave it alone.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(qemu_processes(&id.to_string()), 1);

    // Desired stopped: the stop goes through the channel; the instance ends stopped.
    let v = w.stop(id).await;
    assert_eq!(v.status, InstanceStatus::Stopped, "{v:?}");
    assert_eq!(qemu_processes(&id.to_string()), 0);
    run2.abort();
}

/// Adoption: a record whose VM process is alive is watched, never booted again; stopping it
/// signals the process. A stand-in process (its command line names the work dir) plays the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_vm_is_adopted_not_restarted() {
    if !guest_ready() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let w = world("exec sleep 600").await;
    let agent = w.agent();
    let node_id = NodeId::parse(&agent.register().await.unwrap()).unwrap();
    let id = w.allocate(node_id).await;
    let work_dir = w.dirs.vms.clone().join(id.to_string());
    std::fs::create_dir_all(&work_dir).unwrap();
    // `sh -c 'sleep 600; true' <work_dir>`: a live process naming the work dir.
    use std::os::unix::process::CommandExt;
    let mut fake = std::process::Command::new("sh")
        .args(["-c", "sleep 600; true", work_dir.to_str().unwrap()])
        .process_group(0)
        .spawn()
        .unwrap();
    let states = vt_agent::state::StateDir::open(w.dirs.instances.clone()).unwrap();
    let mut rec = vt_agent::state::InstanceRecord::new(&id.to_string(), &w.release_id.to_string(), work_dir.clone());
    rec.phase = vt_agent::state::Phase::Running;
    rec.vm_pid = Some(fake.id());
    states.save(&mut rec).unwrap();

    let run = tokio::spawn(agent.clone().run());
    let v = w.wait_status(id, "running", |v| v.status == InstanceStatus::Running).await;
    assert!(v.reason.unwrap_or_default().contains("adopted"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(qemu_processes(&id.to_string()), 0, "no VM booted beside the adopted one");
    let v = w.stop(id).await;
    assert_eq!(v.status, InstanceStatus::Stopped, "{v:?}");
    let _ = fake.wait();
    // The shell's `sleep` child outlives it: end the whole group.
    let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", fake.id())]).status();
    run.abort();
}

/// A cgroup left behind by an instance whose VM is gone (a supervisor aborted in its cleanup,
/// an agent that crashed) is removed when an agent starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_left_by_a_vm_that_is_gone_is_removed() {
    let Ok(root) = vt_runtime::cgroup::CgroupRoot::detect() else {
        eprintln!("skipped: no usable cgroup hierarchy");
        return;
    };
    let _serial = SERIAL.lock().await;
    let w = world("true").await;
    let id = InstanceId::new().to_string();
    let states = vt_agent::state::StateDir::open(w.dirs.instances.clone()).unwrap();
    let mut rec = vt_agent::state::InstanceRecord::new(&id, &w.release_id.to_string(), w.dirs.vms.join(&id));
    rec.phase = vt_agent::state::Phase::Stopped;
    states.save(&mut rec).unwrap();
    let cg = vt_runtime::cgroup::Cgroup::create(&root, &id, 1000).unwrap();
    assert!(cg.path().is_dir());
    let agent = w.agent();
    let run = tokio::spawn(agent.clone().run());
    let deadline = Instant::now() + Duration::from_secs(10);
    while cg.path().exists() {
        if Instant::now() > deadline {
            let _ = cg.remove();
            panic!("the cgroup of {id} stayed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop_vms(Duration::from_secs(1));
    run.await.unwrap();
}

/// The image cache keeps the root disk (and blobs) of an instance while it runs and drops them
/// once it is stopped for good, at the next collection after a reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_cache_drops_what_no_instance_uses() {
    if !guest_ready() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let w = world("exec sleep 600").await;
    let agent = w.agent_with(&w.base, |cfg| {
        cfg.resync_interval = Duration::from_millis(500);
        cfg.image_gc_every = Duration::from_millis(200);
        cfg.image_gc_min_age = Duration::ZERO;
    });
    let node_id = NodeId::parse(&agent.register().await.unwrap()).unwrap();
    let id = w.allocate(node_id).await;
    let run = tokio::spawn(agent.clone().run());
    w.wait_status(id, "running", |v| v.status == InstanceStatus::Running).await;
    let cache = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(w.dirs.images.join(dir))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let disks = cache("rootdisks");
    assert!(disks.iter().any(|d| d.ends_with(".ext4")), "{disks:?}");
    // Several collections while it runs (a reconcile every 500 ms): all kept.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cache("rootdisks"), disks, "kept while the instance runs");
    assert!(!cache("blobs/sha256").is_empty());
    w.stop(id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cache("rootdisks").is_empty() || !cache("blobs/sha256").is_empty() {
        assert!(Instant::now() < deadline, "still cached: {:?} {:?}", cache("rootdisks"), cache("blobs/sha256"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.abort();
}

/// With a network: the instance gets an address in its node's /64 and its http health check
/// reaches it over the tap: `passing` (with `healthy_ms`) while httpd answers, `failing` with
/// a reason once it is gone; the agent does not stop an instance for failing (the control
/// plane decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_reach_the_instance_over_its_tap() {
    if vt_runtime::testing::networked_guest_or_skip("the health check test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let _one = SERIAL.lock().await;
    let w = world_with(
        r#"schema_version = 1

[processes.web]
command = ["/bin/sh", "-c", "mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && sleep 6 && killall httpd && exec sleep 600"]
ports = [{ name = "http", port = 8080 }]

[processes.web.healthcheck]
type = "http"
port = "http"
path = "/"
interval = "1s"
timeout = "500ms"
grace = "0s"
retries = 2
"#,
    )
    .await;
    let agent = w.agent();
    let task = tokio::spawn(agent.clone().run());
    let node_id = w.node_id().await;
    let subnet = w.client.node_get("node-a").await.unwrap().subnet.expect("the node has a subnet");
    let id = w.allocate(node_id).await;

    let v = w.wait_status(id, "passing", |v| v.health == Some(vt_events::Health::Passing)).await;
    assert_eq!(v.status, InstanceStatus::Running);
    let addr: std::net::Ipv6Addr = v.address.as_deref().expect("an address").parse().unwrap();
    let net: std::net::Ipv6Addr = subnet.strip_suffix("/64").unwrap().parse().unwrap();
    assert_eq!(addr.segments()[..4], net.segments()[..4], "{addr} is in {subnet}");
    let boot = v.boot.expect("boot timings");
    assert!(boot.healthy_ms >= boot.running_ms && boot.running_ms.is_some(), "{boot:?}");
    // CPU is a weighted share: the VMM runs in the instance's cgroup (1000 millis → 1024 shares / weight 100).
    if let Ok(root) = vt_runtime::cgroup::CgroupRoot::detect() {
        let cg = vt_runtime::cgroup::Cgroup::of(&root, &id.to_string());
        let pid = agent.records().iter().find(|r| r.id == id.to_string()).and_then(|r| r.vm_pid).expect("a VMM pid");
        assert_eq!(cg.procs().unwrap(), vec![pid], "the VMM is in {}", cg.path().display());
        let knob = ["cpu.shares", "cpu.weight"].iter().map(|k| cg.path().join(k)).find(|p| p.exists()).unwrap();
        let value = std::fs::read_to_string(&knob).unwrap();
        assert!(["1024", "100"].contains(&value.trim()), "{}: {value}", knob.display());
    }

    let v = w.wait_status(id, "failing", |v| v.health == Some(vt_events::Health::Failing)).await;
    assert_eq!(v.status, InstanceStatus::Running, "failing is not stopped by the agent");
    let reason = v.reason.unwrap_or_default();
    assert!(reason.contains("GET / on port 8080 failed 2 time(s) in a row"), "{reason}");

    let v = w.stop(id).await;
    assert_eq!(v.status, InstanceStatus::Stopped, "{v:?}");
    assert_eq!(v.health, None);
    if let Ok(root) = vt_runtime::cgroup::CgroupRoot::detect() {
        let cg = vt_runtime::cgroup::Cgroup::of(&root, &id.to_string());
        let deadline = Instant::now() + Duration::from_secs(5);
        while cg.path().exists() {
            assert!(Instant::now() < deadline, "{} removed after the VM ended", cg.path().display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    task.abort();
}

/// A TCP proxy to `backend` that, while `down` is set, answers each new connection whose
/// request is for the registry (`/v2/`) with a 503 and closes it; everything else passes.
async fn registry_outage_proxy(backend: String, down: Arc<std::sync::atomic::AtomicBool>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let backend = backend.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (backend, down) = (backend.clone(), down.clone());
            tokio::spawn(async move {
                let mut head = vec![0u8; 16];
                let Ok(n) = client.read(&mut head).await else { return };
                head.truncate(n);
                let request = String::from_utf8_lossy(&head);
                if down.load(std::sync::atomic::Ordering::SeqCst)
                    && request.split(' ').nth(1).is_some_and(|p| p.starts_with("/v2/"))
                {
                    let _ = client
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&backend).await else { return };
                if server.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    url
}

/// The registry is unavailable while an instance prepares: the instance waits in `preparing`,
/// saying why, never fails (so no crash loop counts it), and runs once the registry is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_while_preparing_is_waited_out() {
    if !guest_ready() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let w = world("echo up; exec sleep 600").await;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let proxy = registry_outage_proxy(w.base.clone(), down.clone()).await;
    let run = tokio::spawn(w.agent_via(&proxy).run());
    let node = w.node_id().await;
    let id = w.allocate(node).await;
    let v = w
        .wait_status(id, "waiting for the registry", |v| {
            v.reason.as_deref().is_some_and(|r| r.starts_with("waiting: "))
        })
        .await;
    assert_eq!(v.status, InstanceStatus::Preparing, "{v:?}");
    let reason = v.reason.clone().unwrap();
    assert!(reason.contains("registry unavailable") && reason.contains("503"), "{reason}");
    assert!(reason.contains("retrying in "), "{reason}");
    // It keeps waiting (the retries back off), then the registry comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.client.instance_get(&id.to_string()).await.unwrap().status, InstanceStatus::Preparing);
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let v = w.wait_status(id, "running", |v| v.status == InstanceStatus::Running || v.status.is_terminal()).await;
    assert_eq!(v.status, InstanceStatus::Running, "{v:?}");
    // Never failed: nothing a crash loop would count.
    let events = w.cp.store.read_events(0, 10_000).await.unwrap();
    let failed = events
        .iter()
        .filter(|e| e.event_type == "instance.status_reported")
        .filter(|e| e.payload["status"] == "failed");
    assert_eq!(failed.count(), 0);
    let v = w.stop(id).await;
    assert_eq!(v.status, InstanceStatus::Stopped, "{v:?}");
    run.abort();
}

/// Aborts the task when dropped (the test ends, or fails).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
