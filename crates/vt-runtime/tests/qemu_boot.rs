//! Boots a real microVM under QEMU (TCG unless VT_QEMU_ACCEL says otherwise) from a busybox
//! root disk built by vt-image, runs a shell command as the entrypoint and checks that its
//! output and exit status come back through the guest channel.
//!
//! Needs the guest kernel and initramfs from `scripts/guest-kernel.sh` (in `VT_GUEST_DIR`,
//! default `/var/cache/vt/guest`), `qemu-system-x86_64`, `mkfs.ext4` and `/bin/busybox`.
//! Without them the test is skipped with a message, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vt_image::layout::{write_image, LayerFormat};
use vt_image::oci::RuntimeConfig;
use vt_image::{ImageStore, OciLayoutSource, StoreOptions};
use vt_runtime::qemu::{Accel, QemuConfig, QemuRuntime};
use vt_runtime::{Control, ExitStatus, InstanceSpec, Launch, Runtime, State, Stream, VmEvent};

fn guest_dir() -> Option<PathBuf> {
    vt_runtime::testing::guest_or_skip("the qemu boot test", &[vt_image::testing::BUSYBOX])
}

/// Build a busybox image layout and its ext4 root disk with vt-image.
fn busybox_root_disk(tmp: &Path) -> PathBuf {
    let rootfs = tmp.join("rootfs");
    vt_image::testing::busybox_rootfs(&rootfs).unwrap();
    let layout = tmp.join("layout");
    let img = write_image(
        &rootfs,
        &layout,
        RuntimeConfig {
            entrypoint: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        },
        LayerFormat::Uncompressed,
    )
    .unwrap();
    let store = ImageStore::open(&tmp.join("images"), StoreOptions::default()).unwrap();
    let src = OciLayoutSource::open(&layout).unwrap();
    store
        .ensure_rootdisk(&src, &img.manifest.digest)
        .unwrap()
        .path
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
        env: vec![
            ("VT_APP".into(), "test".into()),
            ("VT_INSTANCE_ID".into(), "i-1".into()),
        ],
        cwd: "/".into(),
        user: user.into(),
        hostname: "guest".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_command_output_and_exit_code_come_back() {
    let Some(dir) = guest_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tokio::task::spawn_blocking({
        let t = tmp.path().to_owned();
        move || busybox_root_disk(&t)
    })
    .await
    .unwrap();
    let rt = runtime(&dir);
    let spec = InstanceSpec::new(
        "i-1",
        disk,
        tmp.path().join("vm"),
        launch_as(
            "nobody",
            &[
                "/bin/sh",
                "-c",
                "echo hello from the guest; echo \"app=$VT_APP host=$(cat /proc/sys/kernel/hostname) uid=$(id -u)\"; echo oops >&2; exit 7",
            ],
        ),
    );
    let started = Instant::now();
    let mut vm = rt.start(spec).await.unwrap();
    let mut states = Vec::new();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let collect = async {
        while let Some(ev) = vm.next_event().await {
            match ev {
                VmEvent::State(s) => states.push(s),
                VmEvent::Log {
                    stream: Stream::Stdout,
                    data,
                } => stdout.extend(data),
                VmEvent::Log {
                    stream: Stream::Stderr,
                    data,
                } => stderr.extend(data),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(180), collect)
        .await
        .expect("the VM ended within 180 s");
    let out = vm.wait().await;
    let total = started.elapsed();
    let console = std::fs::read_to_string(tmp.path().join("vm/console.log")).unwrap_or_default();
    if std::env::var_os("VT_GUEST_DEBUG").is_some() {
        println!("--- guest console ---\n{console}---");
    }
    assert_eq!(
        out.state,
        State::Stopped {
            exit: Some(ExitStatus::Code(7))
        },
        "console:\n{console}"
    );
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "hello from the guest\napp=test host=guest uid=65534\n"
    );
    assert_eq!(String::from_utf8_lossy(&stderr), "oops\n");
    let names: Vec<&str> = states.iter().map(State::name).collect();
    assert_eq!(
        names,
        ["preparing", "booting", "running", "stopping", "stopped"]
    );
    // The VMM process exited by itself (guest power-off), with status 0.
    assert_eq!(out.vmm_exit, Some(0));
    let t = &out.timings;
    let b2e = t.boot_to_entrypoint().unwrap();
    println!(
        "qemu boot (accel {:?}): prepare {:?}, vmm spawn → guest hello {:?}, vmm spawn → entrypoint {:?} \
         (guest clock: init at {} ms, entrypoint at {} ms), total incl. power-off {:?}",
        rt.accel().await,
        t.prepared.unwrap(),
        t.guest_hello.unwrap() - t.vmm_spawned.unwrap(),
        b2e,
        t.guest_init_started_us.unwrap() / 1000,
        t.guest_entrypoint_started_us.unwrap() / 1000,
        total
    );
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
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(180), vm.next_event())
        .await
        .expect("event within 180 s")
    {
        if let VmEvent::Log { data, .. } = &ev {
            if data.starts_with(b"up") {
                saw_up = true;
                vm.control(Control::Stop {
                    grace: Duration::from_secs(20),
                })
                .await;
            }
        }
    }
    assert!(saw_up);
    let out = vm.wait().await;
    assert_eq!(
        out.state,
        State::Stopped {
            exit: Some(ExitStatus::Signal(15))
        }
    );
    assert_eq!(out.vmm_exit, Some(0));

    // A program that does not exist: exit 127 with a message on stderr, not a failed VM.
    let spec = InstanceSpec::new(
        "i-3",
        disk,
        tmp.path().join("vm3"),
        launch(&["/no/such/program"]),
    );
    let vm = rt.start(spec).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(180), vm.wait())
        .await
        .unwrap();
    assert_eq!(
        out.state,
        State::Stopped {
            exit: Some(ExitStatus::Code(127))
        }
    );
}

/// Boot benchmark: our full path (scratch disk, modules, disks, overlay, channel handshake)
/// to the entrypoint against a bare boot of the same kernel (no devices, init powers off at
/// once), alternating. `cargo test -p vt-runtime --test qemu_boot boot_benchmark -- --ignored
/// --nocapture` (VT_BENCH_RUNS, default 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn boot_benchmark() {
    let Some(dir) = guest_dir() else { return };
    let runs: usize = std::env::var("VT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    let disk = tokio::task::spawn_blocking({
        let t = tmp.path().to_owned();
        move || busybox_root_disk(&t)
    })
    .await
    .unwrap();
    let rt = runtime(&dir);
    let accel = rt.accel().await;
    let (mut ours, mut bare, mut init) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let b = vt_runtime::qemu::bare_boot(rt.config(), accel, Duration::from_secs(120))
            .await
            .unwrap();
        bare.push(b);
        let spec = InstanceSpec::new(
            &format!("b-{i}"),
            disk.clone(),
            tmp.path().join(format!("b-{i}")),
            launch(&["/bin/sh", "-c", "true"]),
        );
        let vm = rt.start(spec).await.unwrap();
        let out = vm.wait().await;
        assert_eq!(
            out.state,
            State::Stopped {
                exit: Some(ExitStatus::Code(0))
            }
        );
        let t = out.timings;
        ours.push(t.boot_to_entrypoint().unwrap());
        init.push(Duration::from_micros(
            t.guest_entrypoint_started_us.unwrap() - t.guest_init_started_us.unwrap(),
        ));
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (o, b, i) = (med(&mut ours), med(&mut bare), med(&mut init));
    println!(
        "boot benchmark ({runs} runs, accel {accel:?}, medians): vmm spawn → entrypoint {o:?}; \
         bare boot (spawn → power-off) {b:?}; ratio {:.2}; guest init start → entrypoint {i:?}",
        o.as_secs_f64() / b.as_secs_f64()
    );
}
