//! Under Firecracker: the guest channel over vsock, and powering off by rebooting.
//!
//! Firecracker has no virtio-console. Its virtio-vsock device hands a guest connection to
//! the host (CID 2) port `vt_guest_proto::VSOCK_PORT` to the host's Unix socket
//! `<uds_path>_1024`, where the runtime listens (`vt-runtime/src/firecracker.rs`). `Channel::open` asks [`fallback`] while
//! it waits for the `vt.channel` port: when this VM has a virtio vsock device and no virtio
//! console device, it loads the vsock modules (`/etc/vt/modules.vsock`, not loaded on
//! other boots) and connects. The connected socket is used like the port's file.
//!
//! Firecracker has no power-off device on x86_64 either, but exits when the guest reboots
//! (`reboot=k`): the runtime puts `vt.poweroff=reboot` on the kernel command line and
//! `power_off` reboots instead ([`reboot_for_power_off`]).

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::Result;

/// Modules for vsock (vsock, vmw_vsock_virtio_transport_common, vmw_vsock_virtio_transport),
/// dependencies first; written by `scripts/guest-kernel.sh`.
const MODULES_VSOCK_LIST: &str = "/etc/vt/modules.vsock";
/// Kernel command line word: reboot where init would power off.
const POWEROFF_BY_REBOOT: &str = "vt.poweroff=reboot";
/// virtio device ids (`/sys/bus/virtio/devices/*/device`).
const VIRTIO_ID_CONSOLE: u32 = 3;
const VIRTIO_ID_VSOCK: u32 = 19;

fn cmdline_has(word: &str) -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| c.split_whitespace().any(|w| w == word))
}

/// Whether `power_off` should reboot (`vt.poweroff=reboot` on the kernel command line).
pub fn reboot_for_power_off() -> bool {
    cmdline_has(POWEROFF_BY_REBOOT)
}

/// The ids of the virtio devices present (the virtio-mmio driver registers them as it loads).
fn virtio_device_ids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/sys/bus/virtio/devices") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("device")).ok())
        .filter_map(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .collect()
}

/// The guest channel over vsock when this VM has a vsock device and no console device
/// (Firecracker); `Ok(None)`: keep waiting for the virtio-console port.
pub fn fallback() -> Result<Option<File>> {
    let ids = virtio_device_ids();
    if ids.contains(&VIRTIO_ID_CONSOLE) || !ids.contains(&VIRTIO_ID_VSOCK) {
        return Ok(None);
    }
    super::load_modules(Path::new(MODULES_VSOCK_LIST), cmdline_has("vt.debug"))?;
    connect(libc::VMADDR_CID_HOST, vt_guest_proto::VSOCK_PORT).map(Some)
}

/// The host's channel listener again, after the connection ended (a node agent restarted):
/// `None` while nobody listens.
pub fn reconnect() -> Option<File> {
    connect_once(libc::VMADDR_CID_HOST, vt_guest_proto::VSOCK_PORT).ok()
}

/// Connect to `cid:port`, retrying while the transport or the host's listener is not ready
/// (up to init's device wait).
fn connect(cid: u32, port: u32) -> Result<File> {
    let deadline = Instant::now() + super::DEVICE_WAIT;
    loop {
        let e = match connect_once(cid, port) {
            Ok(f) => return Ok(f),
            Err(e) => e,
        };
        let retry = matches!(
            e.raw_os_error(),
            Some(libc::ECONNRESET | libc::ECONNREFUSED | libc::ETIMEDOUT | libc::ENODEV | libc::EINTR)
        );
        if !retry || Instant::now() > deadline {
            let hint = if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                format!(" (no vsock support: is {MODULES_VSOCK_LIST} in the initramfs? rerun scripts/guest-kernel.sh)")
            } else {
                String::new()
            };
            return Err(format!("vsock connect to host port {port}: {e}{hint}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn connect_once(cid: u32, port: u32) -> std::io::Result<File> {
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Zeroed, then set: the struct's reserved fields differ across libc versions.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    let r = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&addr as *const libc::sockaddr_vm).cast(),
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(File::from(fd))
}
