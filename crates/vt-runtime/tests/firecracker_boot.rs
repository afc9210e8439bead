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

use std::path::Path;
use std::time::Duration;

use vt_runtime::firecracker::{probe_kvm, FirecrackerConfig, FirecrackerRuntime};

/// The runtime when this host can boot Firecracker guests; otherwise `None` after printing why.
async fn runtime_or_skip(test: &str) -> Option<FirecrackerRuntime> {
    let skip = |why: String| {
        eprintln!("SKIPPED: {test}: {why}");
        None
    };
    if std::env::var_os("FIRECRACKER_BIN").is_none_or(|b| b.is_empty()) {
        return skip("FIRECRACKER_BIN is not set (Firecracker needs a host with a working KVM)".into());
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
        return skip(format!("the KVM probe boot under Firecracker failed: {why}"));
    }
    match FirecrackerRuntime::new(cfg) {
        Ok(rt) => Some(rt),
        Err(e) => skip(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_command_output_and_exit_code_come_back() {
    let Some(rt) = runtime_or_skip("the firecracker boot test").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    vt_runtime::testing::busybox_contract(&rt, tmp.path(), Duration::from_secs(60)).await;
}
