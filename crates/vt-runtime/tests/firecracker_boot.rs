//! Boots a real microVM under Firecracker from a busybox root disk built by vt-image, runs a
//! shell command as the entrypoint and checks that its output and exit status come back
//! through the guest channel (vsock).
//!
//! Runs only where Firecracker can boot guests: `FIRECRACKER_BIN` names the binary and a
//! probe boot on `/dev/kvm` works (not on our dev machines and CI: their KVM is PVM). Needs
//! the guest kernel and initramfs from `scripts/guest-kernel.sh` (with `/etc/vt/modules.vsock`),
//! `mkfs.ext4` and `/bin/busybox`. Otherwise it is skipped with a message, under `CI=true` too.
//!
//! `FIRECRACKER_BIN=/usr/local/bin/firecracker cargo test -p vt-runtime --test firecracker_boot -- --nocapture`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vt_runtime::firecracker::{probe_kvm, FirecrackerConfig, FirecrackerRuntime};
use vt_runtime::{ExitStatus, InstanceSpec, Launch, Runtime, State};

/// The runtime when this host can boot Firecracker guests; otherwise `None` after printing why.
async fn runtime_or_skip(test: &str) -> Option<FirecrackerRuntime> {
    let skip = |why: String| {
        eprintln!("SKIPPED: {test}: {why}");
        None
    };
    if std::env::var_os("FIRECRACKER_BIN").is_none_or(|b| b.is_empty()) {
        return skip(
            "FIRECRACKER_BIN is not set (Firecracker needs a host with a working KVM)".into(),
        );
    }
    let mut cfg = FirecrackerConfig::from_env(&vt_runtime::qemu::default_guest_dir());
    cfg.verbose_console = std::env::var_os("VT_GUEST_DEBUG").is_some();
    let mut missing = cfg.missing();
    if !Path::new(vt_image::testing::BUSYBOX).is_file() {
        missing.push(vt_image::testing::BUSYBOX.into());
    }
    if !missing.is_empty() {
        return skip(format!(
            "needs {} (run scripts/guest-kernel.sh; apt-get install busybox-static)",
            missing.join(", ")
        ));
    }
    if let Err(why) = probe_kvm(&cfg).await {
        return skip(format!(
            "the KVM probe boot under Firecracker failed: {why}"
        ));
    }
    match FirecrackerRuntime::new(cfg) {
        Ok(rt) => Some(rt),
        Err(e) => skip(e.to_string()),
    }
}

fn busybox_root_disk(tmp: &Path) -> PathBuf {
    vt_image::testing::busybox_root_disk(tmp).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_command_output_and_exit_code_come_back() {
    let Some(rt) = runtime_or_skip("the firecracker boot test").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tokio::task::spawn_blocking({
        let t = tmp.path().to_owned();
        move || busybox_root_disk(&t)
    })
    .await
    .unwrap();
    let launch = Launch {
        argv: [
            "/bin/sh",
            "-c",
            "echo hello from the guest; echo \"app=$VT_APP host=$(cat /proc/sys/kernel/hostname) uid=$(id -u)\"; echo oops >&2; exit 7",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![("VT_APP".into(), "test".into())],
        cwd: "/".into(),
        user: "nobody".into(),
        hostname: "guest".into(),
        ..Launch::default()
    };
    let spec = InstanceSpec::new("i-1", disk, tmp.path().join("vm"), launch);
    let started = Instant::now();
    let vm = rt.start(spec).await.unwrap();
    let vt_runtime::testing::Finished { states, stdout, stderr, outcome: out } =
        vt_runtime::testing::run_to_end(vm, Duration::from_secs(60)).await;
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
    // Firecracker exited by itself (the guest rebooted), with status 0.
    assert_eq!(out.vmm_exit, Some(0));
    let t = &out.timings;
    println!(
        "firecracker boot: prepare {:?}, vmm spawn → guest hello {:?}, vmm spawn → entrypoint {:?} \
         (guest clock: init at {} ms, entrypoint at {} ms), total incl. power-off {:?}",
        t.prepared.unwrap(),
        t.guest_hello.unwrap() - t.vmm_spawned.unwrap(),
        t.boot_to_entrypoint().unwrap(),
        t.guest_init_started_us.unwrap() / 1000,
        t.guest_entrypoint_started_us.unwrap() / 1000,
        total
    );
}
