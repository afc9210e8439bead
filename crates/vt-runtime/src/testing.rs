//! For tests that boot real microVMs (here and in the crates above this one).

use std::path::{Path, PathBuf};

use crate::qemu::{default_guest_dir, QemuConfig};

/// The guest directory when this host can boot microVMs and every path in
/// `also` exists. Otherwise: under `CI=true` a panic (CI must not pass without
/// booting), elsewhere `None` after printing why the test is skipped.
pub fn guest_or_skip(test: &str, also: &[&str]) -> Option<PathBuf> {
    let dir = default_guest_dir();
    let mut missing = QemuConfig::from_guest_dir(&dir).missing();
    missing.extend(also.iter().filter(|p| !Path::new(p).is_file()).map(|p| p.to_string()));
    if missing.is_empty() {
        return Some(dir);
    }
    let msg = format!("{test} needs {} (run scripts/guest-kernel.sh; apt-get install busybox-static)", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// Like [`guest_or_skip`], for tests that also give instances a network: `None` (or a
/// panic under `CI=true`) when this process cannot create tap devices.
pub fn networked_guest_or_skip(test: &str, also: &[&str]) -> Option<PathBuf> {
    let dir = guest_or_skip(test, also)?;
    match crate::net::taps_available() {
        Ok(()) => Some(dir),
        Err(why) => {
            let msg = format!("{test} needs tap devices: {why}");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// Everything a VM reported until it ended, and how it ended.
pub struct Finished {
    pub states: Vec<crate::State>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub outcome: crate::Outcome,
}

/// Collect `vm`'s events until it ends; panics when that takes longer than `within`.
pub async fn run_to_end(mut vm: crate::Vm, within: std::time::Duration) -> Finished {
    let (mut states, mut stdout, mut stderr) = (Vec::new(), Vec::new(), Vec::new());
    let collect = async {
        while let Some(ev) = vm.next_event().await {
            match ev {
                crate::VmEvent::State(s) => states.push(s),
                crate::VmEvent::Log { stream: crate::Stream::Stdout, data } => stdout.extend(data),
                crate::VmEvent::Log { stream: crate::Stream::Stderr, data } => stderr.extend(data),
            }
        }
    };
    tokio::time::timeout(within, collect).await.unwrap_or_else(|_| panic!("the VM ended within {within:?}"));
    let outcome = vm.wait().await;
    Finished { states, stdout, stderr, outcome }
}
