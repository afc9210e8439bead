//! Unit tests of the Firecracker backend: no KVM, no Firecracker. The whole driver runs
//! against a fake API server and a fake `firecracker` script; the test plays the guest on the
//! vsock listener.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vt_guest_proto::{FrameBuffer, Message, Role};

use super::api::{parse_response, Parsed};
use super::fake::{fake_firecracker, FakeApi, Rules};
use super::*;
use crate::{ExitStatus, Launch, RuntimeKind, State, Stream, VmEvent};

fn plan() -> BootPlan {
    BootPlan {
        log_path: Some("/w/firecracker.log".into()),
        vcpus: 2,
        memory_mib: 512,
        kernel: "/g/vmlinux".into(),
        initramfs: Some("/g/initramfs.cpio".into()),
        boot_args: "console=ttyS0 reboot=k".into(),
        root_disk: "/images/root.ext4".into(),
        scratch_disk: "/w/scratch.ext4".into(),
        extra_disks: vec![("vol0".into(), "/v/data.ext4".into())],
        tap: Some(("vt0123".into(), "52:54:00:01:02:03".into())),
        vsock_cid: 3,
        vsock_uds: "/w/vsock.sock".into(),
    }
}

/// The golden request sequence: method, path and the exact JSON bodies.
const GOLDEN: &[&str] = &[
    r#"PUT /logger {"log_path":"/w/firecracker.log","level":"Warning","show_level":true,"show_log_origin":false}"#,
    r#"PUT /machine-config {"vcpu_count":2,"mem_size_mib":512,"smt":false}"#,
    r#"PUT /boot-source {"kernel_image_path":"/g/vmlinux","initrd_path":"/g/initramfs.cpio","boot_args":"console=ttyS0 reboot=k"}"#,
    r#"PUT /drives/root {"drive_id":"root","path_on_host":"/images/root.ext4","is_root_device":false,"is_read_only":true}"#,
    r#"PUT /drives/scratch {"drive_id":"scratch","path_on_host":"/w/scratch.ext4","is_root_device":false,"is_read_only":false}"#,
    r#"PUT /drives/vol0 {"drive_id":"vol0","path_on_host":"/v/data.ext4","is_root_device":false,"is_read_only":false}"#,
    r#"PUT /network-interfaces/eth0 {"iface_id":"eth0","host_dev_name":"vt0123","guest_mac":"52:54:00:01:02:03"}"#,
    r#"PUT /vsock {"guest_cid":3,"uds_path":"/w/vsock.sock"}"#,
    r#"PUT /actions {"action_type":"InstanceStart"}"#,
];

fn lines(reqs: &[ApiRequest]) -> Vec<String> {
    reqs.iter().map(|r| format!("{} {} {}", r.method, r.path, r.body)).collect()
}

#[test]
fn request_sequence_is_golden() {
    assert_eq!(lines(&plan().requests()), GOLDEN);
    // Without logger, tap and volumes: just those requests go.
    let mut p = plan();
    p.log_path = None;
    p.tap = None;
    p.extra_disks.clear();
    p.initramfs = None;
    let l = lines(&p.requests());
    assert_eq!(l.len(), 6);
    assert_eq!(l[0], GOLDEN[1]);
    assert_eq!(l[1], r#"PUT /boot-source {"kernel_image_path":"/g/vmlinux","boot_args":"console=ttyS0 reboot=k"}"#);
    assert_eq!(l[5], GOLDEN[8]);
}

#[test]
fn snapshot_requests_are_golden() {
    let (state, mem) = (Path::new("/w/snapshot/vmstate.partial"), Path::new("/w/snapshot/memory.partial"));
    assert_eq!(
        lines(&api::suspend_requests(state, mem)),
        [
            r#"PATCH /vm {"state":"Paused"}"#,
            r#"PUT /snapshot/create {"snapshot_type":"Full","snapshot_path":"/w/snapshot/vmstate.partial","mem_file_path":"/w/snapshot/memory.partial"}"#,
        ]
    );
    let (state, mem) = (Path::new("/w/snapshot/vmstate.restoring"), Path::new("/w/snapshot/memory"));
    assert_eq!(
        lines(&api::restore_requests(Some(Path::new("/w/firecracker.log")), state, mem)),
        [
            r#"PUT /logger {"log_path":"/w/firecracker.log","level":"Warning","show_level":true,"show_log_origin":false}"#,
            r#"PUT /snapshot/load {"snapshot_path":"/w/snapshot/vmstate.restoring","mem_backend":{"backend_type":"File","backend_path":"/w/snapshot/memory"},"resume_vm":true}"#,
        ]
    );
}

#[tokio::test]
async fn client_sends_http_and_reads_fault_message() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("api.sock");
    let fake = FakeApi::start(
        &sock,
        Rules {
            fail: Some((
                "/drives/scratch".into(),
                400,
                r#"{"fault_message":"Unable to open the block device backing file"}"#.into(),
            )),
            ..Rules::default()
        },
    );
    let client = ApiClient::new(&sock);
    let reqs = plan().requests();
    let err = client.send_all(&reqs).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Firecracker rejected PUT /drives/scratch (400): Unable to open the block device backing file"
    );
    assert!(matches!(err, ApiError::Rejected { status: 400, .. }));
    // The sequence stopped at the rejected request.
    let got: Vec<String> = fake.requests().iter().map(|r| r.line()).collect();
    assert_eq!(got, GOLDEN[..5]);
    let rt: RuntimeError = err.into();
    assert!(rt.to_string().contains("PUT /drives/scratch"));

    let gone = ApiClient::new(tmp.path().join("nothing.sock"));
    let e = gone.send(&reqs[0]).await.unwrap_err();
    assert!(e.to_string().starts_with("PUT /logger: cannot connect to the Firecracker API socket"), "{e}");
}

#[test]
fn response_parsing() {
    let ok = b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n";
    let err = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"fault_message\":\"x\"}";
    for full in [&ok[..], &err[..]] {
        for n in 0..full.len() {
            assert_eq!(parse_response(&full[..n]), Parsed::NeedMore, "prefix {n}");
        }
    }
    assert_eq!(parse_response(ok), Parsed::Done(api::Response { status: 204, body: vec![] }));
    assert_eq!(
        parse_response(err),
        Parsed::Done(api::Response { status: 400, body: br#"{"fault_message":"x"}"#.to_vec() })
    );
    for bad in [
        &b"SSH-2.0-x\r\n\r\n"[..],
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    ] {
        assert!(matches!(parse_response(bad), Parsed::Invalid(_)), "{}", String::from_utf8_lossy(bad));
    }
    let req = api::encode_request(&ApiRequest::put("/actions", &Action::InstanceStart));
    assert_eq!(
        String::from_utf8(req).unwrap(),
        "PUT /actions HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: 31\r\n\r\n{\"action_type\":\"InstanceStart\"}"
    );
}

#[test]
fn vsock_listener_is_uds_path_underscore_port() {
    assert_eq!(vsock_listener_path(Path::new("/w/vsock.sock"), 1024), Path::new("/w/vsock.sock_1024"));
    let l = Layout::new(Path::new("/w"), None);
    assert_eq!(l.channel_listener(VSOCK_PORT), Path::new("/w/vsock.sock_1024"));
    assert_eq!(l.api_socket(), Path::new("/w/firecracker.socket"));
    assert_eq!(l.vmm("vsock.sock"), Path::new("/w/vsock.sock"));
}

#[test]
fn boot_args_add_reboot_power_off_and_quiet() {
    let mut cfg = FirecrackerConfig::from_guest_dir(Path::new("/g"));
    assert_eq!(
        boot_args(&cfg, ""),
        "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd \
         vt.poweroff=reboot quiet"
    );
    cfg.verbose_console = true;
    cfg.boot_args = "console=ttyS0 reboot=k".into();
    assert_eq!(boot_args(&cfg, "vt.probe"), "console=ttyS0 reboot=k vt.poweroff=reboot vt.debug vt.probe");
}

#[test]
fn runtime_kind_parses() {
    assert_eq!("qemu".parse::<RuntimeKind>().unwrap(), RuntimeKind::Qemu);
    assert_eq!("firecracker".parse::<RuntimeKind>().unwrap(), RuntimeKind::Firecracker);
    assert_eq!(RuntimeKind::default(), RuntimeKind::Qemu);
    assert_eq!(RuntimeKind::Firecracker.to_string(), "firecracker");
    let e = "crun".parse::<RuntimeKind>().unwrap_err();
    assert_eq!(e, r#"unknown runtime "crun" (qemu, firecracker)"#);
}

fn jailer_cfg(base: &Path) -> JailerConfig {
    JailerConfig {
        jailer_bin: "/usr/bin/jailer".into(),
        id_base: 100_000,
        id_count: 16,
        chroot_base_dir: base.to_owned(),
        netns: true,
        cgroup_parent: Some("vt.slice".into()),
        memory_overhead_mib: 128,
    }
}

#[test]
fn jailer_argv_and_jail_paths() {
    let jc = jailer_cfg(Path::new("/srv/jailer"));
    let mut j = Jail::new(&jc, Path::new("/usr/bin/firecracker"), "inst_01HZX.9");
    (j.uid, j.gid) = (100_007, 100_007);
    assert_eq!(j.id, "inst-01HZX-9");
    assert_eq!(j.netns.as_deref(), Some("vt-inst-01HZX-9"));
    assert_eq!(j.dir, Path::new("/srv/jailer/firecracker/inst-01HZX-9"));
    assert_eq!(j.root, Path::new("/srv/jailer/firecracker/inst-01HZX-9/root"));
    let argv: Vec<String> = j
        .argv(&jc, Path::new("/usr/bin/firecracker"), &["memory.max=402653184".into()])
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        argv.join(" "),
        "--id inst-01HZX-9 --exec-file /usr/bin/firecracker --uid 100007 --gid 100007 \
         --chroot-base-dir /srv/jailer --netns /var/run/netns/vt-inst-01HZX-9 \
         --cgroup-version 2 --parent-cgroup vt.slice --cgroup memory.max=402653184 \
         -- --api-sock /firecracker.socket"
    );
    // Never `--no-seccomp`, nor any seccomp option: Firecracker's default filters apply.
    assert!(!argv.iter().any(|a| a.contains("seccomp")));
    assert_eq!(jail::jail_id(&"x".repeat(80)).len(), 64);

    // Inside the jail Firecracker names files from `/`; we reach them under the root.
    let l = Layout::new(Path::new("/w"), Some(j));
    assert_eq!(l.vmm("scratch.ext4"), Path::new("/scratch.ext4"));
    assert_eq!(l.vmm("vsock.sock"), Path::new("/vsock.sock"));
    assert_eq!(l.host("scratch.ext4"), Path::new("/srv/jailer/firecracker/inst-01HZX-9/root/scratch.ext4"));
    assert_eq!(l.channel_listener(VSOCK_PORT), Path::new("/srv/jailer/firecracker/inst-01HZX-9/root/vsock.sock_1024"));
    assert_eq!(l.console(), Path::new("/w/console.log"));
}

/// With a cgroup parent the jailer sets the memory cap and the CPU weight, and the agent
/// leaves the VMM in the jailer's cgroup; without one, neither.
#[test]
fn the_jailer_owns_the_cgroup_when_it_has_a_parent() {
    let mut jc = jailer_cfg(Path::new("/srv/jailer"));
    assert_eq!(jail_cgroups(&jc, 256, 1500), ["memory.max=402653184", "cpu.weight=150"]);
    let runtime = |jailer| FirecrackerRuntime {
        cfg: FirecrackerConfig { jailer, ..FirecrackerConfig::from_guest_dir(Path::new("/g")) },
        exec: "/fc".into(),
    };
    assert!(runtime(Some(jc.clone())).places_vmms_in_cgroups());
    jc.cgroup_parent = None;
    assert!(jail_cgroups(&jc, 256, 1500).is_empty());
    assert!(!runtime(Some(jc)).places_vmms_in_cgroups());
    assert!(!runtime(None).places_vmms_in_cgroups());
}

/// The chroot gets hard links of the read-only resources and our own files, owned by the
/// jail's user (here: ourselves, so no root is needed); removing it removes everything.
#[test]
fn jail_root_is_prepared_and_removed() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(tmp.path()).unwrap();
    let mut jc = jailer_cfg(&tmp.path().join("jails"));
    (jc.id_base, jc.id_count) = (me.uid(), 1);
    let kernel = tmp.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    let mut j = Jail::new(&jc, Path::new("/opt/fc/firecracker-v1.16"), "inst_1");
    j.claim(&jc).unwrap();
    assert_eq!(j.uid, me.uid());
    std::fs::create_dir_all(j.root.join("stale")).unwrap();
    j.create().unwrap();
    assert!(!j.root.join("stale").exists(), "a previous run's jail is cleared");
    let linked = j.link(&kernel, jail::JAIL_KERNEL).unwrap();
    assert_eq!(linked, tmp.path().join("jails/firecracker-v1.16/inst-1/root/vmlinux"));
    assert_eq!(std::fs::metadata(&linked).unwrap().ino(), std::fs::metadata(&kernel).unwrap().ino());
    j.remove().unwrap();
    assert!(!tmp.path().join("jails/firecracker-v1.16/inst-1").exists());
    assert!(kernel.exists());
}

/// Every jail gets a uid/gid of its own; a restarted (or re-attached) instance gets its own
/// back; a released or stale slot is free again; a full range is a clear error.
#[test]
fn jail_uids_are_one_per_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let mut jc = jailer_cfg(tmp.path());
    jc.id_count = 3;
    let fc = Path::new("/usr/bin/firecracker");
    let claim = |id: &str| {
        let mut j = Jail::new(&jc, fc, id);
        j.claim(&jc).map(|()| {
            std::fs::create_dir_all(&j.root).unwrap();
            j
        })
    };
    let a = claim("inst_a").unwrap();
    let b = claim("inst_b").unwrap();
    let c = claim("inst_c").unwrap();
    let mut uids = vec![a.uid, b.uid, c.uid];
    uids.sort();
    assert_eq!(uids, [100_000, 100_001, 100_002]);
    assert_eq!((a.uid, a.gid), (a.gid, a.uid));
    assert_eq!(claim("inst_a").unwrap().uid, a.uid, "the same instance keeps its uid");
    let e = claim("inst_d").err().unwrap();
    assert!(e.to_string().contains("all 3 jail uids are taken"), "{e}");
    // Released: free for the next one.
    b.remove().unwrap();
    b.release();
    assert_eq!(claim("inst_d").unwrap().uid, b.uid);
    // Stale (the jail is gone, its claim left behind by a crash): taken over.
    c.remove().unwrap();
    assert_eq!(claim("inst_e").unwrap().uid, c.uid);
}

fn launch(argv: &[&str]) -> Launch {
    Launch { argv: argv.iter().map(|s| s.to_string()).collect(), hostname: "guest".into(), ..Launch::default() }
}

/// A runtime whose `firecracker` is the fake script; mkfs is `true` (no disk needed).
fn fake_runtime(tmp: &Path, api: &Path) -> FirecrackerRuntime {
    FirecrackerRuntime::new(fake_config(tmp, api)).unwrap()
}

/// [`fake_runtime`]'s configuration, for tests that add to it.
fn fake_config(tmp: &Path, api: &Path) -> FirecrackerConfig {
    let bin = fake_firecracker(tmp, api);
    let guest = tmp.join("guest");
    std::fs::create_dir_all(&guest).unwrap();
    for f in ["vmlinux", "initramfs.cpio"] {
        std::fs::write(guest.join(f), b"").unwrap();
    }
    let mut cfg = FirecrackerConfig::from_guest_dir(&guest);
    cfg.firecracker_bin = bin;
    cfg.mkfs_bin = "true".into();
    cfg
}

fn spec(tmp: &Path, launch: Launch) -> InstanceSpec {
    let root = tmp.join("root.ext4");
    std::fs::write(&root, b"").unwrap();
    InstanceSpec::new("inst_1", root, tmp.join("vm"), launch)
}

/// The guest side of the channel, played by the test.
struct Guest {
    s: UnixStream,
    fb: FrameBuffer,
}

impl Guest {
    async fn connect(path: &Path) -> Self {
        Self { s: UnixStream::connect(path).await.unwrap(), fb: FrameBuffer::new() }
    }
    async fn send(&mut self, m: Message) {
        self.s.write_all(&m.encode().unwrap()).await.unwrap();
    }
    async fn recv(&mut self) -> Message {
        let mut b = [0u8; 4096];
        loop {
            if let Some(m) = self.fb.next_message().unwrap() {
                return m;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut b)).await.unwrap().unwrap();
            assert!(n > 0, "host closed the channel");
            self.fb.push(&b[..n]);
        }
    }
    /// Hello → Hello + Launch → Ready.
    async fn boot(&mut self) -> Launch {
        self.send(Message::hello(Role::Guest, "fake-guest")).await;
        assert!(matches!(self.recv().await, Message::Hello { role: Role::Host, .. }));
        let Message::Launch(l) = self.recv().await else { panic!("no launch") };
        self.send(Message::Ready { pid: 42, init_started_us: 1000, entrypoint_started_us: 2000, now_us: 2000 }).await;
        l
    }
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_through_the_api_and_speaks_over_the_vsock_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fake = FakeApi::start(&t.join("fake-api.sock"), Rules::default());
    let rt = fake_runtime(t, &fake.socket);
    let mut vm = rt.start(spec(t, launch(&["/bin/sh", "-c", "echo hi; exit 7"]))).await.unwrap();
    fake.wait_for("/actions").await;
    let work = t.join("vm");
    let mut g = Guest::connect(&work.join("vsock.sock_1024")).await;
    let l = g.boot().await;
    assert_eq!(l.argv, ["/bin/sh", "-c", "echo hi; exit 7"]);
    g.send(Message::Log { seq: 1, at_us: 1500, stream: Stream::Stdout, data: b"hi\n".to_vec() }).await;
    g.send(Message::Exited { seq: 2, status: ExitStatus::Code(7) }).await;
    assert_eq!(g.recv().await, Message::Shutdown);
    std::fs::write(t.join("poweroff"), b"").unwrap();

    let mut states = Vec::new();
    let mut out = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), vm.next_event()).await.unwrap() {
        match ev {
            VmEvent::State(s) => states.push(s.name()),
            VmEvent::Log { data, .. } => out.extend(data),
            VmEvent::LogLost { .. } => panic!("nothing is lost here"),
        }
    }
    let pid = vm.vmm_pid().unwrap();
    let o = vm.wait().await;
    assert_eq!(o.state, State::Stopped { exit: Some(ExitStatus::Code(7)) });
    assert_eq!(o.vmm_exit, Some(0));
    assert_eq!(states, ["preparing", "booting", "running", "stopping", "stopped"]);
    assert_eq!(out, b"hi\n");
    assert_eq!(o.timings.guest_entrypoint_started_us, Some(2000));
    assert!(gone(pid));
    assert_eq!(std::fs::read_to_string(work.join("vmm.pid")).unwrap(), format!("{pid}\n"));

    // The exact sequence, with this instance's paths.
    let w = std::path::absolute(&work).unwrap();
    let w = w.display();
    let g = t.join("guest");
    let g = g.display();
    let root = t.join("root.ext4");
    let root = root.display();
    let got: Vec<String> = fake.requests().iter().map(|r| r.line()).collect();
    assert_eq!(
        got,
        [
            format!(
                r#"PUT /logger {{"log_path":"{w}/firecracker.log","level":"Warning","show_level":true,"show_log_origin":false}}"#
            ),
            r#"PUT /machine-config {"vcpu_count":1,"mem_size_mib":256,"smt":false}"#.to_string(),
            format!(
                r#"PUT /boot-source {{"kernel_image_path":"{g}/vmlinux","initrd_path":"{g}/initramfs.cpio","boot_args":"{}"}}"#,
                boot_args(rt.config(), "")
            ),
            format!(
                r#"PUT /drives/root {{"drive_id":"root","path_on_host":"{root}","is_root_device":false,"is_read_only":true}}"#
            ),
            format!(
                r#"PUT /drives/scratch {{"drive_id":"scratch","path_on_host":"{w}/scratch.ext4","is_root_device":false,"is_read_only":false}}"#
            ),
            format!(r#"PUT /vsock {{"guest_cid":3,"uds_path":"{w}/vsock.sock"}}"#),
            r#"PUT /actions {"action_type":"InstanceStart"}"#.to_string(),
        ]
    );
    // Sockets are cleaned up; the console and log stay.
    assert!(!work.join("vsock.sock_1024").exists());
    assert!(work.join("console.log").exists() && work.join("firecracker.log").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_request_fails_the_instance_and_leaves_no_vmm() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fake = FakeApi::start(
        &t.join("fake-api.sock"),
        Rules {
            fail: Some(("/machine-config".into(), 400, r#"{"fault_message":"Invalid vCPU count"}"#.into())),
            ..Rules::default()
        },
    );
    let rt = fake_runtime(t, &fake.socket);
    let vm = rt.start(spec(t, launch(&["/bin/true"]))).await.unwrap();
    let o = tokio::time::timeout(Duration::from_secs(10), vm.wait()).await.unwrap();
    assert_eq!(
        o.state,
        State::Failed {
            reason: "Firecracker rejected PUT /machine-config (400): Invalid vCPU count".into(),
            exit: None
        }
    );
    assert_eq!(o.vmm_exit, None, "killed, not exited");
    let pid: u32 = std::fs::read_to_string(t.join("vm/vmm.pid")).unwrap().trim().parse().unwrap();
    assert!(gone(pid), "firecracker {pid} still runs");
    assert!(!fake.requests().iter().any(|r| r.path == "/actions"));
    assert!(!t.join("vm/vsock.sock_1024").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_the_guest_ignores_ends_with_ctrl_alt_del() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fake = FakeApi::start(
        &t.join("fake-api.sock"),
        Rules { ctrl_alt_del_creates: Some(t.join("poweroff")), ..Rules::default() },
    );
    let rt = fake_runtime(t, &fake.socket);
    let mut vm = rt.start(spec(t, launch(&["/bin/sleep", "600"]))).await.unwrap();
    fake.wait_for("/actions").await;
    let mut g = Guest::connect(&t.join("vm/vsock.sock_1024")).await;
    g.boot().await;
    while let Some(ev) = vm.next_event().await {
        if ev == VmEvent::State(State::Running) {
            break;
        }
    }
    vm.control(Control::Stop { grace: Duration::from_millis(50) }).await;
    // The guest gets SIGTERM, then Shutdown, and answers neither.
    assert_eq!(g.recv().await, Message::Signal { signo: 15 });
    assert_eq!(g.recv().await, Message::Shutdown);
    let o = tokio::time::timeout(Duration::from_secs(20), vm.wait()).await.unwrap();
    assert_eq!(o.state, State::Stopped { exit: None });
    assert_eq!(o.vmm_exit, Some(0), "firecracker exited on the guest's reboot");
    let last = fake.requests().last().unwrap().line();
    assert_eq!(last, r#"PUT /actions {"action_type":"SendCtrlAltDel"}"#);
}

/// A guest that never connects (e.g. a kernel dying under PVM): a stop ends the VMM at once
/// instead of waiting for the boot timeout, and the instance is stopped, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_before_the_guest_connects_ends_the_vmm_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fake = FakeApi::start(&t.join("fake-api.sock"), Rules::default());
    let rt = fake_runtime(t, &fake.socket);
    let vm = rt.start(spec(t, launch(&["/bin/true"]))).await.unwrap();
    fake.wait_for("/actions").await;
    let pid = vm.vmm_pid().unwrap();
    vm.control(Control::Stop { grace: Duration::from_secs(30) }).await;
    let o = tokio::time::timeout(Duration::from_secs(5), vm.wait()).await.expect("stopped at once");
    assert_eq!(o.state, State::Stopped { exit: None });
    assert!(gone(pid));
    assert!(!t.join("vm/vsock.sock_1024").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_exiting_at_once_fails_with_its_status() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let guest = t.join("guest");
    std::fs::create_dir_all(&guest).unwrap();
    for f in ["vmlinux", "initramfs.cpio"] {
        std::fs::write(guest.join(f), b"").unwrap();
    }
    let mut cfg = FirecrackerConfig::from_guest_dir(&guest);
    cfg.firecracker_bin = "false".into();
    cfg.mkfs_bin = "true".into();
    let rt = FirecrackerRuntime::new(cfg).unwrap();
    let o = rt.start(spec(t, launch(&["/bin/true"]))).await.unwrap().wait().await;
    let State::Failed { reason, .. } = &o.state else { panic!("{:?}", o.state) };
    assert!(
        reason.starts_with("firecracker exited (exit status: 1) before its entrypoint started (console: "),
        "{reason}"
    );
}

#[tokio::test]
async fn config_errors_come_before_the_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let guest = t.join("guest");
    let mut cfg = FirecrackerConfig::from_guest_dir(&guest);
    let e = FirecrackerRuntime::new(cfg.clone()).err().unwrap();
    assert!(e.to_string().contains("run scripts/guest-kernel.sh"), "{e}");
    std::fs::create_dir_all(&guest).unwrap();
    for f in ["vmlinux", "initramfs.cpio"] {
        std::fs::write(guest.join(f), b"").unwrap();
    }
    cfg.firecracker_bin = t.join("no-such-firecracker");
    let e = FirecrackerRuntime::new(cfg.clone()).err().unwrap();
    assert!(e.to_string().contains("set FIRECRACKER_BIN"), "{e}");
    // The jailer execs only binaries called *firecracker*.
    cfg.firecracker_bin = "true".into();
    cfg.jailer = Some(JailerConfig::new(0));
    let e = FirecrackerRuntime::new(cfg.clone()).err().unwrap();
    assert!(e.to_string().contains("contains `firecracker`"), "{e}");
    // A bad `VT_JAILER_ID_BASE` leaves no uids (`JailerConfig::from_env`): refused.
    cfg.firecracker_bin = fake_firecracker(t, &t.join("api.sock"));
    cfg.jailer = Some(JailerConfig { jailer_bin: "true".into(), id_count: 0, ..JailerConfig::new(0) });
    let e = FirecrackerRuntime::new(cfg.clone()).err().unwrap();
    assert!(e.to_string().contains("VT_JAILER_ID_BASE must be a uid"), "{e}");
    cfg.jailer = None;
    let rt = FirecrackerRuntime::new(cfg).unwrap();
    let mut s = spec(t, launch(&["/bin/true"]));
    s.vcpus = 33;
    assert!(rt.start(s).await.err().unwrap().to_string().contains("1 to 32"));
    let mut s = spec(t, launch(&["/bin/true"]));
    s.work_dir = PathBuf::from("/").join("d".repeat(100));
    assert!(rt.start(s).await.err().unwrap().to_string().contains("too long for a unix socket"));
}

/// An agent lets go of a running VM (`Control::Abandon`, what its crash does); the next one
/// attaches: the guest (reconnecting its vsock, as vt-init does) gets `Hello` + `Resume` and
/// sends again what was never acknowledged; what was is not delivered twice. Then the VM
/// ends through the new session with its exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_agent_reattaches_over_the_vsock_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fake = FakeApi::start(&t.join("fake-api.sock"), Rules::default());
    let rt = fake_runtime(t, &fake.socket);
    assert!(rt.can_attach());
    let mut vm = rt.start(spec(t, launch(&["/bin/sh", "-c", "sleep 600"]))).await.unwrap();
    fake.wait_for("/actions").await;
    let work = t.join("vm");
    let chan = work.join("vsock.sock_1024");
    let mut g = Guest::connect(&chan).await;
    g.boot().await;
    g.send(Message::Log { seq: 1, at_us: 2500, stream: Stream::Stdout, data: b"one\n".to_vec() }).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), vm.next_event()).await.unwrap().unwrap() {
            VmEvent::Log { seq, .. } => {
                vm.ack(seq);
                break;
            }
            _ => continue,
        }
    }
    assert_eq!(g.recv().await, Message::Ack { seq: 1 });
    let pid = vm.vmm_pid().unwrap();
    vm.control(Control::Abandon).await;
    let _ = vm.wait().await;
    assert!(!gone(pid), "the VMM runs on");

    let spec = AttachSpec { id: "inst_1".into(), work_dir: work.clone(), pid, timeout: Duration::from_secs(10) };
    let mut vm = rt.attach(spec).await.unwrap();
    let mut g = loop {
        match UnixStream::connect(&chan).await {
            Ok(s) => break Guest { s, fb: FrameBuffer::new() },
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(matches!(g.recv().await, Message::Hello { role: Role::Host, .. }));
    assert_eq!(g.recv().await, Message::Resume);
    g.send(Message::hello(Role::Guest, "fake-guest")).await;
    g.send(Message::Ready { pid: 42, init_started_us: 1000, entrypoint_started_us: 2000, now_us: 5000 }).await;
    g.send(Message::Log { seq: 2, at_us: 3000, stream: Stream::Stdout, data: b"two\n".to_vec() }).await;
    g.send(Message::Exited { seq: 3, status: ExitStatus::Code(7) }).await;
    assert_eq!(g.recv().await, Message::Shutdown);
    std::fs::write(t.join("poweroff"), b"").unwrap();
    let (mut states, mut out) = (Vec::new(), Vec::new());
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), vm.next_event()).await.unwrap() {
        match ev {
            VmEvent::State(s) => states.push(s.name()),
            VmEvent::Log { data, .. } => out.extend(data),
            VmEvent::LogLost { .. } => panic!("nothing is lost here"),
        }
    }
    let o = vm.wait().await;
    assert_eq!(o.state, State::Stopped { exit: Some(ExitStatus::Code(7)) });
    assert_eq!(states, ["preparing", "booting", "running", "stopping", "stopped"]);
    assert_eq!(out, b"two\n");
    assert!(!chan.exists(), "the listener's socket is cleaned up");
}

/// Suspend (pause, snapshot, Firecracker killed) and restore (a new Firecracker loads it,
/// the guest's vsock connects again, `Hello`, `Resume`, `Restored`) against the fake API; a
/// second restore is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspends_and_restores_through_the_snapshot_api() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fake = FakeApi::start(&t.join("fake-api.sock"), Rules::default());
    let rt = fake_runtime(t, &fake.socket);
    assert!(rt.can_snapshot());
    let spec = spec(t, launch(&["/bin/sh", "-c", "sleep 600"]));
    let mut vm = rt.start(spec.clone()).await.unwrap();
    fake.wait_for("/actions").await;
    let work = t.join("vm");
    let chan = work.join("vsock.sock_1024");
    let mut g = Guest::connect(&chan).await;
    g.boot().await;
    while vm.state() != State::Running {
        tokio::time::timeout(Duration::from_secs(10), vm.next_event()).await.unwrap().unwrap();
    }
    let pid = vm.vmm_pid().unwrap();
    let snap = vm.suspend().await.unwrap();
    assert_eq!(snap.bytes, "state".len() as u64 + "memory".len() as u64);
    assert_eq!(vm.wait().await.state, State::Suspended);
    assert!(gone(pid), "Firecracker is killed once its state is on disk");
    let w = std::path::absolute(&work).unwrap();
    let w = w.display();
    let got: Vec<String> = fake.requests().iter().skip(7).map(|r| r.line()).collect();
    assert_eq!(
        got,
        [
            r#"PATCH /vm {"state":"Paused"}"#.to_string(),
            format!(
                r#"PUT /snapshot/create {{"snapshot_type":"Full","snapshot_path":"{w}/snapshot/vmstate.partial","mem_file_path":"{w}/snapshot/memory.partial"}}"#
            ),
        ]
    );

    let mut vm = rt.restore(spec.clone()).await.unwrap();
    let mut g = loop {
        match UnixStream::connect(&chan).await {
            Ok(s) => break Guest { s, fb: FrameBuffer::new() },
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(matches!(g.recv().await, Message::Hello { role: Role::Host, .. }));
    assert_eq!(g.recv().await, Message::Resume);
    let Message::Restored { wall_clock_us } = g.recv().await else { panic!("no Restored") };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    assert!(now >= wall_clock_us && now - wall_clock_us < 10_000_000, "{wall_clock_us} vs {now}");
    g.send(Message::hello(Role::Guest, "fake-guest")).await;
    g.send(Message::Ready { pid: 42, init_started_us: 1000, entrypoint_started_us: 2000, now_us: 9000 }).await;
    while vm.state() != State::Running {
        tokio::time::timeout(Duration::from_secs(10), vm.next_event()).await.unwrap().unwrap();
    }
    let got: Vec<String> = fake.requests().iter().skip(9).map(|r| r.line()).collect();
    assert_eq!(
        got,
        [
            format!(
                r#"PUT /logger {{"log_path":"{w}/firecracker.log","level":"Warning","show_level":true,"show_log_origin":false}}"#
            ),
            format!(
                r#"PUT /snapshot/load {{"snapshot_path":"{w}/snapshot/vmstate.restoring","mem_backend":{{"backend_type":"File","backend_path":"{w}/snapshot/memory"}},"resume_vm":true}}"#
            ),
        ]
    );
    assert!(!work.join("snapshot/vmstate.restoring").exists() && !work.join("snapshot/memory").exists());
    match rt.restore(spec).await {
        Err(RuntimeError::Snapshot(why)) => assert!(why.contains("resumed at most once"), "{why}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    vm.control(Control::Kill).await;
    vm.wait().await;
}

/// A fake `jailer`: records its argv in `dir/jailer.argv`, links the fake API server at the
/// jail's `firecracker.socket` (`<chroot base>/<exec file name>/<id>/root`) and runs until
/// `dir/poweroff` exists.
fn fake_jailer(dir: &Path, api: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("jailer");
    let script = format!(
        "#!/bin/sh\n\
         echo \"$@\" > '{dir}/jailer.argv'\n\
         while [ $# -gt 0 ]; do\n  case \"$1\" in\n    --id) id=$2; shift;;\n    --exec-file) exe=$2; shift;;\n    \
         --chroot-base-dir) base=$2; shift;;\n  esac\n  shift\ndone\n\
         ln -s '{api}' \"$base/$(basename \"$exe\")/$id/root/firecracker.socket\" || exit 3\n\
         while [ ! -e '{dir}/poweroff' ]; do sleep 0.02; done\n\
         exit 0\n",
        dir = dir.display(),
        api = api.display(),
    );
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

fn run(cmd: &[&str]) -> String {
    let out = std::process::Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What Firecracker does with `host_dev_name` (as the jail's uid, in the jail's namespace,
/// without CAP_NET_ADMIN): open the tap by name. Then play the guest: wait for a frame
/// naming the guest's address (the host's neighbour solicitation), answer with one frame.
const TAP_GUEST_PY: &str = r#"
import fcntl, os, select, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", sys.argv[1].encode(), 0x0002 | 0x1000))
print("open", flush=True)
target = bytes.fromhex(sys.argv[2])
while True:
    r, _, _ = select.select([fd], [], [], 10)
    if not r:
        print("timeout", flush=True)
        sys.exit(1)
    f = os.read(fd, 4096)
    if f[12:14] == b"\x86\xdd" and target in f:
        break
print("seen", flush=True)
os.write(fd, f[6:12] + bytes.fromhex(sys.argv[3].replace(":", "")) + b"\x88\xb5" + b"vt-test".ljust(46, b"\0"))
print("sent", flush=True)
"#;

/// The jailer path end to end with the real host side (root: network namespaces, veth, tc,
/// loop devices), the jailer and Firecracker faked: the instance's tap is in the jail's own
/// network namespace, openable by the jail's uid, and wired to a host interface named like
/// the tap (fe80::1, the /128 route: what the node's nftables rules match); the volume is a
/// block device in the jail owned by the jail's uid, while the user's file keeps its owner,
/// mode and inode; nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_instance_gets_its_tap_in_its_netns_and_never_chowns_a_volume() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    if !is_root() {
        eprintln!("SKIPPED: jailed network/volume test: needs root (netns, veth, tc, losetup)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let fake = FakeApi::start(&t.join("fake-api.sock"), Rules::default());
    let rt = {
        let mut cfg = fake_config(t, &fake.socket);
        let mut jc = JailerConfig::new(1_500_000_000);
        jc.jailer_bin = fake_jailer(t, &fake.socket);
        jc.chroot_base_dir = t.join("jails");
        cfg.jailer = Some(jc);
        FirecrackerRuntime::new(cfg).unwrap()
    };
    // The user's volume: not ours, not the jail's.
    let vol = t.join("data.ext4");
    std::fs::File::create(&vol).unwrap().set_len(4 << 20).unwrap();
    std::os::unix::fs::chown(&vol, Some(4321), Some(4322)).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&vol).unwrap();

    let id = format!("inst_jt{}", std::process::id());
    let jail_id = jail::jail_id(&id);
    let net = crate::net::NetworkSpec::for_instance(&id, "fd7a:115c:a1e0:24::/64").unwrap();
    let mut s = spec(t, launch(&["/bin/true"]));
    s.id = id.clone();
    s.network = Some(net.clone());
    s.volumes = vec![crate::VolumeDisk {
        name: "data".into(),
        disk: vol.clone(),
        label: "data".into(),
        mount_path: String::new(),
    }];
    let vm = rt.start(s).await.unwrap();
    fake.wait_for("/actions").await;

    // The jailer was told the jail's own uid and namespace, and no seccomp option.
    let argv = std::fs::read_to_string(t.join("jailer.argv")).unwrap();
    let ns = format!("vt-{jail_id}");
    assert!(argv.contains(&format!("--netns /var/run/netns/{ns} ")), "{argv}");
    assert!(!argv.contains("seccomp"), "{argv}");
    let root = t.join("jails/firecracker").join(&jail_id).join("root");
    let jail_uid =
        std::fs::metadata(root.join("scratch.ext4").parent().unwrap().join("firecracker.log")).unwrap().uid();
    assert!(jail_uid >= 1_500_000_000, "jail uid {jail_uid}");
    assert!(argv.contains(&format!("--uid {jail_uid} --gid {jail_uid} ")), "{argv}");

    // The requests name the tap (in the namespace) and the volume's node in the jail.
    let reqs: Vec<String> = fake.requests().iter().map(|r| r.line()).collect();
    let want_net = format!(
        r#"PUT /network-interfaces/eth0 {{"iface_id":"eth0","host_dev_name":"{}","guest_mac":"{}"}}"#,
        net.tap,
        net.mac()
    );
    assert!(reqs.contains(&want_net), "{reqs:#?}");
    assert!(
        reqs.contains(
            &r#"PUT /drives/vol0 {"drive_id":"vol0","path_on_host":"/vol0.ext4","is_root_device":false,"is_read_only":false}"#
                .to_string()
        ),
        "{reqs:#?}"
    );

    // The tap is in the namespace, owned by the jail's uid; the host has the other end.
    let tap = run(&["ip", "-n", &ns, "-d", "link", "show", "dev", &net.tap]);
    assert!(tap.contains("tun type tap") && tap.contains(&format!("user {jail_uid} group {jail_uid}")), "{tap}");
    assert!(std::process::Command::new("ip")
        .args(["link", "show", "dev", &net.tap])
        .output()
        .unwrap()
        .status
        .success());
    let host = run(&["ip", "-d", "link", "show", "dev", &net.tap]);
    assert!(host.contains("veth"), "the host end is a veth: {host}");
    let addrs = run(&["ip", "-6", "addr", "show", "dev", &net.tap]);
    assert!(addrs.contains("fe80::1/64"), "{addrs}");
    let route = run(&["ip", "-6", "route", "show", &format!("{}/128", net.address)]);
    assert!(route.contains(&format!("dev {}", net.tap)), "{route}");

    // The volume: a block device of the jail's user in the jail; the file itself untouched.
    let node = std::fs::metadata(root.join("vol0.ext4")).unwrap();
    assert!(node.file_type().is_block_device());
    assert_eq!((node.uid(), node.gid(), node.mode() & 0o777), (jail_uid, jail_uid, 0o600));
    let now = std::fs::metadata(&vol).unwrap();
    assert_eq!((now.uid(), now.gid(), now.mode(), now.ino()), (4321, 4322, before.mode(), before.ino()));
    let loops = run(&["losetup", "-j", vol.to_str().unwrap()]);
    assert!(loops.contains("/dev/loop"), "{loops}");

    // Frames pass both ways between the host and whoever opens the tap as the jail's uid.
    if Path::new("/usr/bin/python3").is_file() && find_bin(Path::new("setpriv")).is_some() {
        let uid = jail_uid.to_string();
        let target: String = net.address.octets().iter().map(|b| format!("{b:02x}")).collect();
        let mut guest = Command::new("ip")
            .args(["netns", "exec", &ns, "setpriv", "--reuid", &uid, "--regid", &uid, "--clear-groups"])
            .args(["/usr/bin/python3", "-c", TAP_GUEST_PY, &net.tap, &target, &net.mac()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = tokio::io::BufReader::new(guest.stdout.take().unwrap());
        let mut line = String::new();
        use tokio::io::AsyncBufReadExt;
        out.read_line(&mut line).await.unwrap();
        assert_eq!(line.trim(), "open", "the jail's uid opens its tap");
        let rx = |tap: &str| -> u64 {
            std::fs::read_to_string(format!("/sys/class/net/{tap}/statistics/rx_packets"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let rx0 = rx(&net.tap);
        let sock = std::net::UdpSocket::bind("[::]:0").unwrap();
        let mut seen = String::new();
        for _ in 0..20 {
            let _ = sock.send_to(b"x", (net.address, 9));
            line.clear();
            match tokio::time::timeout(Duration::from_millis(500), out.read_line(&mut line)).await {
                Ok(_) => {
                    seen = line.trim().to_owned();
                    break;
                }
                Err(_) => continue,
            }
        }
        assert_eq!(seen, "seen", "the host's frame reached the tap in the namespace");
        line.clear();
        out.read_line(&mut line).await.unwrap();
        assert_eq!(line.trim(), "sent");
        assert!(guest.wait().await.unwrap().success());
        let mut got = false;
        for _ in 0..100 {
            if rx(&net.tap) > rx0 {
                got = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(got, "the guest's frame reached the host's {}", net.tap);
    } else {
        eprintln!("NOTE: no /usr/bin/python3 or setpriv: the frame exchange over the tap is not checked");
    }

    // The guest powers off: the namespace, the host end, the loop device, the jail and its
    // uid go; the volume is still the user's.
    std::fs::write(t.join("poweroff"), b"").unwrap();
    let o = tokio::time::timeout(Duration::from_secs(20), vm.wait()).await.unwrap();
    assert!(o.state.is_terminal(), "{:?}", o.state);
    assert!(!crate::net::netns_path(&ns).exists(), "netns {ns} removed");
    for _ in 0..200 {
        if !Path::new("/sys/class/net").join(&net.tap).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!Path::new("/sys/class/net").join(&net.tap).exists(), "host end {} removed", net.tap);
    assert_eq!(run(&["losetup", "-j", vol.to_str().unwrap()]).trim(), "", "loop device detached");
    assert!(!root.exists(), "jail removed");
    assert_eq!(std::fs::read_dir(t.join("jails/vt-ids")).unwrap().count(), 0, "uid released");
    let after = std::fs::metadata(&vol).unwrap();
    assert_eq!((after.uid(), after.gid(), after.mode(), after.ino()), (4321, 4322, before.mode(), before.ino()));
}
