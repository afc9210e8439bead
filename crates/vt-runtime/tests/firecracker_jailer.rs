//! Runs the real Firecracker under its real jailer as production does: its own uid and gid,
//! its own network namespace holding the instance's tap (veth to the host), a volume given
//! as a loop-device node, Firecracker's default seccomp filters. Boot or not (guests cannot
//! boot on PVM hosts), every request up to `InstanceStart` must be accepted: the test reads
//! the instance's state (`GET /`, "Running") and configuration (`GET /vm/config`) back from
//! the jailed Firecracker, checks the process (uid, seccomp mode, network namespace), then
//! kills it and checks that nothing is left (namespace, host link, loop device, jail) and
//! that the volume file kept its owner.
//!
//! Needs root, `FIRECRACKER_BIN` and `JAILER_BIN` (a static build, docs/runtime.md), the
//! guest kernel and initramfs (`scripts/guest-kernel.sh`) and `mkfs.ext4`; otherwise it is
//! skipped with a message, under `CI=true` too.
//!
//! `FIRECRACKER_BIN=... JAILER_BIN=... cargo test -p vt-runtime --test firecracker_jailer -- --nocapture`

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use vt_runtime::firecracker::{jail, ApiClient, ApiRequest, FirecrackerConfig, FirecrackerRuntime};
use vt_runtime::net::{netns_path, NetworkSpec};
use vt_runtime::{Control, InstanceSpec, Launch, Runtime, State, VolumeDisk};

fn skip_reason() -> Option<String> {
    for v in ["FIRECRACKER_BIN", "JAILER_BIN"] {
        if std::env::var_os(v).is_none_or(|b| b.is_empty()) {
            return Some(format!("{v} is not set"));
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")) {
        return Some("the jailer needs root".into());
    }
    let missing = FirecrackerConfig::from_env(&vt_runtime::qemu::default_guest_dir()).missing();
    (!missing.is_empty()).then(|| format!("needs {} (run scripts/guest-kernel.sh)", missing.join(", ")))
}

fn proc_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line[field.len()..].trim().to_owned()
}

fn loops_of(file: &Path) -> String {
    let out = std::process::Command::new("losetup").arg("-j").arg(file).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_firecracker_accepts_instance_start_with_its_tap_in_its_netns() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: the real jailer test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut cfg = FirecrackerConfig::from_env(&vt_runtime::qemu::default_guest_dir());
    let jc = cfg.jailer.as_mut().unwrap();
    jc.chroot_base_dir = t.join("jails");
    let chroot_base = jc.chroot_base_dir.clone();
    let rt = FirecrackerRuntime::new(cfg).unwrap();

    let root_disk = t.join("root.ext4");
    std::fs::File::create(&root_disk).unwrap().set_len(16 << 20).unwrap();
    std::fs::set_permissions(&root_disk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let vol = t.join("data.ext4");
    std::fs::File::create(&vol).unwrap().set_len(16 << 20).unwrap();
    std::os::unix::fs::chown(&vol, Some(4321), Some(4322)).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o600)).unwrap();

    let id = format!("inst_fcjail{}", std::process::id());
    let jail_id = jail::jail_id(&id);
    let ns = format!("vt-{jail_id}");
    let net = NetworkSpec::for_instance(&id, "fd7a:115c:a1e0:25::/64").unwrap();
    let launch = Launch { argv: vec!["/bin/true".into()], hostname: "guest".into(), ..Launch::default() };
    let mut spec = InstanceSpec::new(&id, root_disk, t.join("vm"), launch);
    spec.network = Some(net.clone());
    spec.volumes =
        vec![VolumeDisk { name: "data".into(), disk: vol.clone(), label: "data".into(), mount_path: String::new() }];
    spec.boot_timeout = Duration::from_secs(60);
    let started = Instant::now();
    let mut vm = rt.start(spec).await.unwrap();

    // Wait for Firecracker to report the instance running: InstanceStart was accepted.
    let exec_name = std::fs::canonicalize(std::env::var_os("FIRECRACKER_BIN").unwrap()).unwrap();
    let root = chroot_base.join(exec_name.file_name().unwrap()).join(&jail_id).join("root");
    let api = ApiClient::new(root.join(jail::API_SOCKET)).with_timeout(Duration::from_secs(2));
    let info = loop {
        if let State::Failed { reason, .. } = vm.state() {
            panic!("the jailed instance failed: {reason} (console: {})", t.join("vm/console.log").display());
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no running instance within 30 s");
        if let Ok(r) = api.send(&ApiRequest::get("/")).await {
            let body = String::from_utf8_lossy(&r.body).into_owned();
            if body.contains(r#""state":"Running""#) {
                break body;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("instance info after {:?}: {info}", started.elapsed());
    let config = String::from_utf8_lossy(&api.send(&ApiRequest::get("/vm/config")).await.unwrap().body).into_owned();
    eprintln!("vm config: {config}");
    assert!(config.contains(&format!(r#""host_dev_name":"{}""#, net.tap)), "{config}");
    assert!(config.contains(r#""path_on_host":"/vol0.ext4""#), "{config}");

    // The process: the jail's uid, Firecracker's seccomp filters, the jail's namespace.
    let pid = vm.vmm_pid().unwrap();
    let uid = proc_field(pid, "Uid:");
    let jail_uid: u32 = uid.split_whitespace().next().unwrap().parse().unwrap();
    assert!(jail_uid >= 1_000, "Firecracker runs as uid {uid}");
    assert_eq!(proc_field(pid, "Seccomp:"), "2", "seccomp filter mode");
    let ns_ino = std::fs::metadata(netns_path(&ns)).unwrap().ino();
    assert_eq!(std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino(), ns_ino, "in {ns}");
    assert!(Path::new("/sys/class/net").join(&net.tap).exists(), "host end {}", net.tap);
    assert_eq!(std::fs::metadata(&vol).unwrap().uid(), 4321, "the volume keeps its owner");
    assert!(loops_of(&vol).contains("/dev/loop"));
    eprintln!("firecracker pid {pid}: uid {uid}, seccomp 2, netns {ns}, tap {}", net.tap);

    vm.control(Control::Kill).await;
    while vm.next_event().await.is_some() {}
    let o = vm.wait().await;
    eprintln!("after kill: {:?}", o.state);
    assert!(!netns_path(&ns).exists(), "netns removed");
    for _ in 0..200 {
        if !Path::new("/sys/class/net").join(&net.tap).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!Path::new("/sys/class/net").join(&net.tap).exists(), "host end removed");
    assert_eq!(loops_of(&vol), "", "loop device detached");
    assert!(!root.exists(), "jail removed");
    let m = std::fs::metadata(&vol).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (4321, 4322, 0o600));
}
