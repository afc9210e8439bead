//! Suspend and restore on real microVMs under QEMU (TCG unless VT_QEMU_ACCEL says otherwise):
//! a VM serving HTTP with a counter in memory is saved to a snapshot, its QEMU ends, and a
//! new QEMU resumes it a few seconds later: the same process answers with the counter where
//! it was, over a tap made again; the guest's clock was set from the host's; a second
//! restore of the snapshot is refused. Without a network, the same through exec.
//!
//! Needs what `qemu_boot.rs` needs (the guest kernel and initramfs from
//! `scripts/guest-kernel.sh`, built from this vt-init: the `Restored` message is protocol 5);
//! the network test also needs tap devices. Skipped without them, except under `CI=true`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vt_runtime::exec::{ExecOutput, ExecRequest};
use vt_runtime::qemu::{Accel, QemuConfig, QemuRuntime};
use vt_runtime::{InstanceSpec, Launch, Runtime, RuntimeError, State, SuspendError, Vm, VmEvent};

/// How long the snapshot sits on disk before it is restored (the guest's clock must catch up).
const SUSPENDED_FOR: Duration = Duration::from_secs(5);

fn runtime(dir: &Path) -> QemuRuntime {
    let mut cfg = QemuConfig::from_guest_dir(dir);
    cfg.accel = std::env::var("VT_QEMU_ACCEL").map(|a| a.parse().unwrap()).unwrap_or(Accel::Tcg);
    cfg.verbose_console = std::env::var_os("VT_GUEST_DEBUG").is_some();
    QemuRuntime::new(cfg).unwrap()
}

async fn root_disk(tmp: &Path) -> PathBuf {
    let t = tmp.to_owned();
    tokio::task::spawn_blocking(move || vt_image::testing::busybox_root_disk(&t).unwrap()).await.unwrap()
}

fn launch(script: &str) -> Launch {
    Launch {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        cwd: "/".into(),
        user: "root".into(),
        hostname: "snap".into(),
        ..Launch::default()
    }
}

/// Events until `Running` (logs acknowledged); panics if the VM ends first.
async fn until_running(vm: &mut Vm, console: &Path) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(180), vm.next_event()).await.expect("an event within 180 s");
        match ev {
            Some(VmEvent::State(State::Running)) => return,
            Some(VmEvent::State(s)) if s.is_terminal() => {
                panic!("ended before running: {s}\nconsole:\n{}", std::fs::read_to_string(console).unwrap_or_default())
            }
            Some(VmEvent::Log { seq, .. }) => vm.ack(seq),
            Some(_) => {}
            None => panic!("no running state"),
        }
    }
}

fn req() -> ExecRequest {
    ExecRequest { argv: vec![], env: vec![], cwd: String::new(), user: String::new(), tty: None }
}

/// Run `sh -c cmd` in the VM: its stdout.
async fn exec(vm: &Vm, cmd: &str) -> String {
    let req = ExecRequest { argv: vec!["/bin/sh".into(), "-c".into(), cmd.into()], ..req() };
    let s = vm.exec_handle().open(req).await.unwrap();
    let (input, mut output) = (s.input, s.output);
    let mut out = Vec::new();
    while let Some(o) = tokio::time::timeout(Duration::from_secs(60), output.recv()).await.expect("exec output") {
        match o {
            ExecOutput::Stdout(d) => out.extend(d),
            ExecOutput::Stderr(d) => eprint!("{}", String::from_utf8_lossy(&d)),
            ExecOutput::Exit(st) => {
                assert_eq!(st, vt_runtime::ExitStatus::Code(0), "{cmd}");
                break;
            }
        }
    }
    drop(input);
    String::from_utf8_lossy(&out).into_owned()
}

fn host_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The guest's `date +%s` against the host's clock around it: within 1 s.
async fn assert_clock_in_step(vm: &Vm) {
    let before = host_now();
    let guest: i64 = exec(vm, "date +%s").await.trim().parse().unwrap();
    let after = host_now();
    assert!(guest >= before - 1 && guest <= after + 1, "guest clock {guest}, host {before}..={after}");
}

/// Suspend, check the old VM ended as `Suspended`, wait, restore.
async fn suspend_and_restore(rt: &QemuRuntime, vm: Vm, spec: &InstanceSpec) -> Vm {
    let old_pid = vm.vmm_pid().unwrap();
    let snap = vm.suspend().await.expect("suspend");
    println!("suspended: {} bytes in {:?}", snap.bytes, snap.took);
    assert!(snap.path.is_file());
    let out = vm.wait().await;
    assert_eq!(out.state, State::Suspended);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists(), "the old QEMU is gone");
    tokio::time::sleep(SUSPENDED_FOR).await;
    let t = Instant::now();
    let mut vm = rt.restore(spec.clone()).await.expect("restore");
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    println!("restore → running in {:?} ({:?})", t.elapsed(), vm.timings());
    assert_ne!(vm.vmm_pid(), Some(old_pid), "a new VMM process");
    assert!(!snap.path.exists(), "the snapshot is consumed once the guest runs");
    vm
}

async fn second_restore_is_refused(rt: &QemuRuntime, spec: &InstanceSpec) {
    match rt.restore(spec.clone()).await {
        Err(RuntimeError::Snapshot(why)) => assert!(why.contains("resumed at most once"), "{why}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a snapshot was restored twice"),
    }
}

async fn stop(vm: Vm) {
    vm.control(vt_runtime::Control::Stop { grace: Duration::from_secs(5) }).await;
    let out = vm.wait().await;
    assert!(matches!(out.state, State::Stopped { .. }), "{:?}", out.state);
}

/// GET `path` from `addr` (HTTP/1.0), retrying until `deadline`: the body.
fn http_get(addr: std::net::SocketAddr, path: &str, deadline: Instant) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: vm\r\n\r\n").as_bytes())?;
            let mut r = String::new();
            s.read_to_string(&mut r)?;
            Ok(r)
        };
        match attempt() {
            Ok(r) if r.starts_with("HTTP/1.") && r.get(8..13) == Some(" 200 ") => {
                return Ok(r.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
            }
            Ok(r) => last = format!("not a 200: {r:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

async fn get(addr: std::net::SocketAddr, path: &'static str) -> String {
    tokio::task::spawn_blocking(move || http_get(addr, path, Instant::now() + Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("HTTP GET")
}

/// A CGI counter in the guest's memory (tmpfs): "<count> <httpd's pid>" (the parent of the
/// httpd child serving this connection).
const COUNTER: &str = "#!/bin/sh
n=$(($(cat /tmp/n 2>/dev/null || echo 0) + 1))
echo $n > /tmp/n
read -r _ _ _ httpd _ < /proc/$PPID/stat
printf 'Content-Type: text/plain\\r\\n\\r\\n%s %s\\n' $n $httpd
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_http_server_resumes_in_a_new_vmm_with_its_memory_and_the_right_time() {
    let Some(dir) = vt_runtime::testing::networked_guest_or_skip("the snapshot test", &[vt_image::testing::BUSYBOX])
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&dir);
    let net = vt_runtime::net::NetworkSpec::for_instance("inst_snap_test", "fd7a:115c:a1e0:5a::/64").unwrap();
    let script = "mkdir -p /www/cgi-bin && printf '%s' \"$COUNTER\" > /www/cgi-bin/count \
        && chmod 755 /www/cgi-bin/count && exec httpd -f -p 8080 -h /www";
    let mut spec = InstanceSpec::new("i-snap", root_disk(tmp.path()).await, tmp.path().join("vm"), launch(script));
    spec.launch.env.push(("COUNTER".into(), COUNTER.into()));
    spec.network = Some(net.clone());
    let mut vm = rt.start(spec.clone()).await.unwrap();
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    let addr = std::net::SocketAddr::new(net.address.into(), 8080);
    let first = get(addr, "/cgi-bin/count").await;
    let (n, pid) = first.trim().split_once(' ').unwrap();
    assert_eq!(n, "1");
    assert_eq!(get(addr, "/cgi-bin/count").await.trim(), format!("2 {pid}"));

    let vm = suspend_and_restore(&rt, vm, &spec).await;
    // The same httpd, the counter where it was.
    assert_eq!(get(addr, "/cgi-bin/count").await.trim(), format!("3 {pid}"));
    assert_clock_in_step(&vm).await;
    second_restore_is_refused(&rt, &spec).await;
    stop(vm).await;
    assert!(!Path::new("/sys/class/net").join(&net.tap).exists(), "the tap is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_restore_without_a_network_keeps_processes_and_sets_the_clock() {
    let Some(dir) = vt_runtime::testing::guest_or_skip("the snapshot test", &[vt_image::testing::BUSYBOX]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&dir);
    // A counter in a shell variable, printed to a tmpfs file once a second.
    let script = "n=0; while :; do n=$((n+1)); echo $n > /tmp/n; sleep 1; done";
    let spec = InstanceSpec::new("i-snap2", root_disk(tmp.path()).await, tmp.path().join("vm"), launch(script));

    // Nothing to restore yet.
    match rt.restore(spec.clone()).await {
        Err(RuntimeError::Snapshot(why)) => assert!(why.contains("no snapshot"), "{why}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut vm = rt.start(spec.clone()).await.unwrap();
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    let before: u32 = exec(&vm, "until [ -s /tmp/n ]; do usleep 50000; done; cat /tmp/n").await.trim().parse().unwrap();
    let boot_id = exec(&vm, "cat /proc/sys/kernel/random/boot_id").await;
    // An exec session open across the suspend: its host side ends with the old VMM; the guest
    // hangs it up on the new host's Resume, and new sessions are unaffected.
    let held =
        vm.exec_handle().open(ExecRequest { argv: vec!["/bin/sleep".into(), "300".into()], ..req() }).await.unwrap();

    // A changed spec is refused, and leaves the snapshot in place.
    let vm = suspend_and_restore_checked(&rt, vm, &spec).await;
    let (_input, mut output) = (held.input, held.output);
    let ended = tokio::time::timeout(Duration::from_secs(10), output.recv()).await.expect("the held session ends");
    assert_eq!(ended, None, "ended with the old VMM, without an exit status");
    let after: u32 = exec(&vm, "cat /tmp/n").await.trim().parse().unwrap();
    assert!(after >= before, "the loop went on from {before}, now {after}");
    assert_eq!(exec(&vm, "cat /proc/sys/kernel/random/boot_id").await, boot_id, "no reboot");
    assert_clock_in_step(&vm).await;
    second_restore_is_refused(&rt, &spec).await;
    stop(vm).await;
}

/// Like [`suspend_and_restore`], after checking that a restore with another memory size is
/// refused without using up the snapshot, and that a suspended VM is not suspended again.
async fn suspend_and_restore_checked(rt: &QemuRuntime, vm: Vm, spec: &InstanceSpec) -> Vm {
    let old_pid = vm.vmm_pid().unwrap();
    vm.suspend().await.expect("suspend");
    assert_eq!(vm.suspend().await, Err(SuspendError::Ended));
    assert_eq!(vm.wait().await.state, State::Suspended);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists(), "the old QEMU is gone");
    let mut bigger = spec.clone();
    bigger.memory_mib *= 2;
    match rt.restore(bigger).await {
        Err(RuntimeError::Snapshot(why)) => assert!(why.contains("memory_mib"), "{why}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    tokio::time::sleep(SUSPENDED_FOR).await;
    let mut vm = rt.restore(spec.clone()).await.expect("restore");
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    vm
}

/// A snapshot QEMU cannot load: the restore fails with QEMU's reason, and the snapshot is
/// given back (the guest never ran from it). A fresh start in the work dir removes it (its
/// scratch disk is made anew). No guest boots here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_does_not_load_is_given_back_and_a_fresh_start_removes_it() {
    let Some(dir) = vt_runtime::testing::guest_or_skip("the snapshot test", &[vt_image::testing::BUSYBOX]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&dir);
    let spec = InstanceSpec::new("i-snap3", root_disk(tmp.path()).await, tmp.path().join("vm"), launch("sleep 600"));
    let snap_dir = vt_runtime::snapshot::dir(&spec.work_dir);
    std::fs::create_dir_all(&snap_dir).unwrap();
    std::fs::write(snap_dir.join("vmstate"), b"not a migration stream").unwrap();
    // The record a suspend writes (docs/runtime.md): QEMU's arguments and what the VM used.
    let record = serde_json::json!({
        "backend": "qemu",
        "args": ["-M", "microvm", "-accel", "tcg", "-m", "256", "-nodefaults", "-no-user-config", "-display", "none"],
        "root_disk": spec.root_disk,
        "volumes": [],
        "tap": null,
        "memory_mib": 256,
        "vcpus": 1,
    });
    std::fs::write(snap_dir.join("vmm.json"), serde_json::to_vec(&record).unwrap()).unwrap();
    assert!(vt_runtime::snapshot::exists(&spec.work_dir));
    let vm = rt.restore(spec.clone()).await.expect("the restore starts");
    let out = tokio::time::timeout(Duration::from_secs(60), vm.wait()).await.expect("ends");
    let State::Failed { reason, .. } = &out.state else { panic!("{:?}", out.state) };
    assert!(reason.starts_with("restoring the snapshot failed: the VM exited"), "{reason}");
    assert!(vt_runtime::snapshot::exists(&spec.work_dir), "given back");

    let mut vm = rt.start(spec.clone()).await.unwrap();
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    assert!(!snap_dir.exists(), "a fresh start removes the snapshot of the old scratch disk");
    stop(vm).await;
}

/// A VM left running by one "agent" (`Control::Abandon`) and attached to by another
/// (`Runtime::attach`) is suspended by the second and restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_adopted_after_an_agent_restart_is_suspended_and_restored() {
    let Some(dir) = vt_runtime::testing::guest_or_skip("the snapshot test", &[vt_image::testing::BUSYBOX]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&dir);
    let script = "echo kept > /tmp/mark; exec sleep 600";
    let spec = InstanceSpec::new("i-snap4", root_disk(tmp.path()).await, tmp.path().join("vm"), launch(script));
    let mut vm = rt.start(spec.clone()).await.unwrap();
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    let pid = vm.vmm_pid().unwrap();
    vm.control(vt_runtime::Control::Abandon).await;
    vm.wait().await;
    let attach = vt_runtime::AttachSpec {
        id: spec.id.clone(),
        work_dir: spec.work_dir.clone(),
        pid,
        timeout: Duration::from_secs(60),
    };
    let mut vm = rt.attach(attach).await.unwrap();
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    vm.suspend().await.expect("an adopted VM is suspended");
    assert_eq!(vm.wait().await.state, State::Suspended);
    // Gone (a zombie here: it is this test process's child, left unreaped by `Abandon`).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(cmdline.is_empty(), "the adopted QEMU is gone");
    let mut vm = rt.restore(spec.clone()).await.expect("restore");
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    assert_eq!(exec(&vm, "cat /tmp/mark").await, "kept\n");
    stop(vm).await;
}

/// A save that fails once the VM is paused (a directory where the state file goes, so the
/// migration stream cannot be written): the error says why, the VM is resumed and runs on (its
/// counter moves), nothing is left to restore; with the way clear, the next suspend saves it and
/// it resumes with its memory. What the node agent retries (docs/agent.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_fails_resumes_the_paused_vm_and_a_later_suspend_works() {
    let Some(dir) = vt_runtime::testing::guest_or_skip("the snapshot test", &[vt_image::testing::BUSYBOX]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&dir);
    let script = "n=0; while :; do n=$((n+1)); echo $n > /tmp/n; usleep 200000; done";
    let spec = InstanceSpec::new("i-snap5", root_disk(tmp.path()).await, tmp.path().join("vm"), launch(script));
    let mut vm = rt.start(spec.clone()).await.unwrap();
    until_running(&mut vm, &spec.work_dir.join("console.log")).await;
    count(&vm).await;
    let in_the_way = vt_runtime::snapshot::dir(&spec.work_dir).join("vmstate.partial");
    std::fs::create_dir_all(&in_the_way).unwrap();
    match vm.suspend().await {
        Err(SuspendError::Failed(why)) => println!("the save failed: {why}"),
        other => panic!("expected a failed save: {other:?}"),
    }
    assert_eq!(vm.state(), State::Running);
    assert!(!vt_runtime::snapshot::exists(&spec.work_dir), "nothing to restore");
    // Not left paused: the guest's counter moves on.
    let a = count(&vm).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = count(&vm).await;
    assert!(b > a, "the VM runs on after the failed save: {a} then {b}");
    std::fs::remove_dir(&in_the_way).unwrap();
    let vm = suspend_and_restore(&rt, vm, &spec).await;
    let c = count(&vm).await;
    assert!(c >= b, "its memory kept: {b} then {c}");
    second_restore_is_refused(&rt, &spec).await;
    stop(vm).await;
}

/// The guest's counter in /tmp/n (once it has one).
async fn count(vm: &Vm) -> u32 {
    exec(vm, "until [ -s /tmp/n ]; do usleep 50000; done; cat /tmp/n").await.trim().parse().unwrap()
}
