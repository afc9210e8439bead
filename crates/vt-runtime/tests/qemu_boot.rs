//! Boots a real microVM under QEMU (TCG unless VT_QEMU_ACCEL says otherwise) from a busybox
//! root disk built by vt-image, runs a shell command as the entrypoint and checks that its
//! output and exit status come back through the guest channel.
//!
//! Needs the guest kernel and initramfs from `scripts/guest-kernel.sh` (in `VT_GUEST_DIR`,
//! default `/var/cache/vt/guest`), `qemu-system-x86_64`, `mkfs.ext4` and `/bin/busybox`.
//! Without them the test is skipped with a message, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vt_runtime::qemu::{Accel, QemuConfig, QemuRuntime};
use vt_runtime::{Control, ExitStatus, InstanceSpec, Launch, Runtime, State, VmEvent};

fn guest_dir() -> Option<PathBuf> {
    vt_runtime::testing::guest_or_skip("the qemu boot test", &[vt_image::testing::BUSYBOX])
}

/// Build a busybox image layout and its ext4 root disk with vt-image.
fn busybox_root_disk(tmp: &Path) -> PathBuf {
    vt_image::testing::busybox_root_disk(tmp).unwrap()
}

fn runtime(dir: &Path) -> QemuRuntime {
    let mut cfg = QemuConfig::from_guest_dir(dir);
    if let Ok(a) = std::env::var("VT_QEMU_ACCEL") {
        cfg.accel = a.parse().unwrap();
    } else {
        cfg.accel = Accel::Tcg;
    }
    cfg.verbose_console = std::env::var_os("VT_GUEST_DEBUG").is_some();
    QemuRuntime::new(cfg).unwrap()
}

fn launch(argv: &[&str]) -> Launch {
    launch_as("root", argv)
}

fn launch_as(user: &str, argv: &[&str]) -> Launch {
    Launch {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("VT_APP".into(), "test".into()), ("VT_INSTANCE_ID".into(), "i-1".into())],
        cwd: "/".into(),
        user: user.into(),
        hostname: "guest".into(),
        ..Launch::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_command_output_and_exit_code_come_back() {
    let Some(dir) = guest_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&dir);
    println!("accelerator: {:?}", rt.accel().await);
    vt_runtime::testing::busybox_contract(&rt, tmp.path(), Duration::from_secs(180)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_stops_a_running_entrypoint_and_missing_program_is_127() {
    let Some(dir) = guest_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tokio::task::spawn_blocking({
        let t = tmp.path().to_owned();
        move || busybox_root_disk(&t)
    })
    .await
    .unwrap();
    let rt = runtime(&dir);

    // A long-running entrypoint stopped through the channel (SIGTERM forwarded).
    let spec = InstanceSpec::new(
        "i-2",
        disk.clone(),
        tmp.path().join("vm2"),
        launch(&["/bin/sh", "-c", "echo up; exec sleep 600"]),
    );
    let mut vm = rt.start(spec).await.unwrap();
    let mut saw_up = false;
    while let Some(ev) =
        tokio::time::timeout(Duration::from_secs(180), vm.next_event()).await.expect("event within 180 s")
    {
        if let VmEvent::Log { data, .. } = &ev {
            if data.starts_with(b"up") {
                saw_up = true;
                vm.control(Control::Stop { grace: Duration::from_secs(20) }).await;
            }
        }
    }
    assert!(saw_up);
    let out = vm.wait().await;
    assert_eq!(out.state, State::Stopped { exit: Some(ExitStatus::Signal(15)) });
    assert_eq!(out.vmm_exit, Some(0));

    // A program that does not exist: exit 127 with a message on stderr, not a failed VM.
    let spec = InstanceSpec::new("i-3", disk, tmp.path().join("vm3"), launch(&["/no/such/program"]));
    let vm = rt.start(spec).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(180), vm.wait()).await.unwrap();
    assert_eq!(out.state, State::Stopped { exit: Some(ExitStatus::Code(127)) });
}

// The boot benchmark is `src/bin/vt-boot-bench.rs` (docs/runtime.md).

/// GET `/` from `addr`, retrying until `deadline`: the body, or the last error.
fn http_get(addr: std::net::SocketAddr, deadline: Instant) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: vm\r\n\r\n")?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r)
        };
        match attempt() {
            Ok(r) if r.starts_with("HTTP/1.") => return Ok(r.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()),
            Ok(r) => last = format!("not HTTP: {r:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// The instance's network (a tap, its IPv6 address, the route), a volume disk and a secret:
/// an HTTP server in the guest answers from the host over the tap; what the guest wrote to
/// the volume is on the host's disk afterwards; the secret arrived as a 0400 file; the tap is
/// gone once the VM ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_volume_and_secret() {
    let Some(dir) = vt_runtime::testing::networked_guest_or_skip("the network test", &[vt_image::testing::BUSYBOX])
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tokio::task::spawn_blocking({
        let t = tmp.path().to_owned();
        move || busybox_root_disk(&t)
    })
    .await
    .unwrap();
    let volume = tmp.path().join("data.ext4");
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "vt-vol-data"])
        .arg(&volume)
        .arg("16M")
        .status()
        .unwrap();
    assert!(mkfs.success());
    let rt = runtime(&dir);
    let net = vt_runtime::net::NetworkSpec::for_instance("inst_net_test", "fd7a:115c:a1e0:9::/64").unwrap();
    let script = "set -e; \
        cat /run/secrets/token; echo; stat -c '%a %u' /run/secrets/token; \
        echo persisted > /mnt/volumes/data/f; ls /srv/data/f; \
        mkdir -p /www; echo hello over the tap > /www/index.html; \
        exec httpd -f -p 8080 -h /www";
    let mut spec =
        InstanceSpec::new("i-net", disk, tmp.path().join("vm"), launch_as("nobody", &["/bin/sh", "-c", script]));
    spec.network = Some(net.clone());
    spec.volumes = vec![vt_runtime::VolumeDisk {
        name: "data".into(),
        disk: volume.clone(),
        label: "vt-vol-data".into(),
        mount_path: "/srv/data".into(),
    }];
    spec.launch.secrets = vec![vt_runtime::Secret { name: "token".into(), data: b"s3cr3t".to_vec() }];
    // nobody cannot write to a fresh ext4 root directory; run as root for the volume write.
    spec.launch.user = "root".into();
    let mut vm = rt.start(spec).await.unwrap();
    let mut stdout = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(180), vm.next_event()).await.expect("event within 180 s");
        match ev {
            Some(VmEvent::State(State::Running)) => break,
            Some(VmEvent::Log { data, .. }) => stdout.extend(data),
            Some(VmEvent::State(s)) if s.is_terminal() => panic!("ended before running: {s:?}"),
            Some(_) => {}
            None => panic!("no running state"),
        }
    }
    let addr = std::net::SocketAddr::new(net.address.into(), 8080);
    let got =
        tokio::task::spawn_blocking(move || http_get(addr, Instant::now() + Duration::from_secs(60))).await.unwrap();
    let console = || std::fs::read_to_string(tmp.path().join("vm/console.log")).unwrap_or_default();
    assert_eq!(got.as_deref(), Ok("hello over the tap\n"), "console:\n{}", console());
    vm.control(Control::Stop { grace: Duration::from_secs(10) }).await;
    while let Some(ev) = vm.next_event().await {
        if let VmEvent::Log { data, .. } = ev {
            stdout.extend(data);
        }
    }
    let out = vm.wait().await;
    assert!(matches!(out.state, State::Stopped { .. }), "{:?}", out.state);
    assert_eq!(String::from_utf8_lossy(&stdout), "s3cr3t\n400 0\n/srv/data/f\n");
    assert!(!Path::new("/sys/class/net").join(&net.tap).exists(), "the tap is removed");
    let f = std::process::Command::new("debugfs").args(["-R", "cat /f"]).arg(&volume).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&f.stdout), "persisted\n");
}
