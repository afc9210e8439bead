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
    let msg =
        format!("{test} needs {} (run scripts/guest-kernel.sh; apt-get install busybox-static)", missing.join(", "));
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
                crate::VmEvent::Log { stream: crate::Stream::Stdout, data, .. } => stdout.extend(data),
                crate::VmEvent::Log { stream: crate::Stream::Stderr, data, .. } => stderr.extend(data),
                crate::VmEvent::LogLost { .. } => {}
            }
        }
    };
    tokio::time::timeout(within, collect).await.unwrap_or_else(|_| panic!("the VM ended within {within:?}"));
    let outcome = vm.wait().await;
    Finished { states, stdout, stderr, outcome }
}

/// The contract every backend keeps, checked on a real VM: busybox as user `nobody` prints
/// to stdout and stderr and exits 7; the output, the exit status, the lifecycle and the
/// VMM's own clean exit come back. Returns the outcome (timings) for the caller to report.
pub async fn busybox_contract(rt: &dyn crate::Runtime, tmp: &Path, within: std::time::Duration) -> crate::Outcome {
    use crate::{ExitStatus, InstanceSpec, Launch, State};
    let disk = tokio::task::spawn_blocking({
        let t = tmp.to_owned();
        move || vt_image::testing::busybox_root_disk(&t)
    })
    .await
    .expect("root disk task")
    .expect("busybox root disk");
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
    let vm = rt.start(InstanceSpec::new("i-1", disk, tmp.join("vm"), launch)).await.expect("start");
    let Finished { states, stdout, stderr, outcome } = run_to_end(vm, within).await;
    let console = std::fs::read_to_string(tmp.join("vm/console.log")).unwrap_or_default();
    if std::env::var_os("VT_GUEST_DEBUG").is_some() {
        println!("--- guest console ---\n{console}---");
    }
    assert_eq!(outcome.state, State::Stopped { exit: Some(ExitStatus::Code(7)) }, "{}: console:\n{console}", rt.name());
    assert_eq!(String::from_utf8_lossy(&stdout), "hello from the guest\napp=test host=guest uid=65534\n");
    assert_eq!(String::from_utf8_lossy(&stderr), "oops\n");
    let names: Vec<&str> = states.iter().map(State::name).collect();
    assert_eq!(names, ["preparing", "booting", "running", "stopping", "stopped"]);
    // The VMM exited by itself once the guest was done, with status 0.
    assert_eq!(outcome.vmm_exit, Some(0));
    let t = &outcome.timings;
    if let (Some(prepared), Some(hello), Some(spawned), Some(b2e)) =
        (t.prepared, t.guest_hello, t.vmm_spawned, t.boot_to_entrypoint())
    {
        println!(
            "{} boot: prepare {prepared:?}, vmm spawn → guest hello {:?}, vmm spawn → entrypoint {b2e:?} (guest clock: init at {} ms, entrypoint at {} ms)",
            rt.name(),
            hello.saturating_sub(spawned),
            t.guest_init_started_us.unwrap_or(0) / 1000,
            t.guest_entrypoint_started_us.unwrap_or(0) / 1000,
        );
    }
    outcome
}
