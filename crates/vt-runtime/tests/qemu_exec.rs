//! Exec sessions and re-attaching, on a real microVM under QEMU (TCG unless VT_QEMU_ACCEL says
//! otherwise): both streams and the exit code of a command; a pseudo-terminal that follows a
//! resize; output larger than the credit window arriving whole; and a VM left running by one
//! "agent" (`Control::Abandon`) taken over by another (`Runtime::attach`) with none of the
//! output printed in between lost.
//!
//! Needs what `qemu_boot.rs` needs (the guest kernel and initramfs from
//! `scripts/guest-kernel.sh`); skipped without it, except under `CI=true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vt_runtime::exec::{ExecInput, ExecOutput, ExecRequest, ExecSession};
use vt_runtime::qemu::{Accel, QemuConfig, QemuRuntime};
use vt_runtime::{AttachSpec, Control, ExitStatus, InstanceSpec, Launch, Runtime, State, Vm, VmEvent};

fn guest_dir() -> Option<PathBuf> {
    vt_runtime::testing::guest_or_skip("the exec test", &[vt_image::testing::BUSYBOX])
}

fn runtime(dir: &Path) -> QemuRuntime {
    let mut cfg = QemuConfig::from_guest_dir(dir);
    cfg.accel = std::env::var("VT_QEMU_ACCEL").map(|a| a.parse().unwrap()).unwrap_or(Accel::Tcg);
    cfg.verbose_console = std::env::var_os("VT_GUEST_DEBUG").is_some();
    QemuRuntime::new(cfg).unwrap()
}

/// The VM's output lines ("line N") until `until` says stop; every log acknowledged.
async fn lines_until(vm: &mut Vm, seen: &mut BTreeSet<u32>, until: impl Fn(&BTreeSet<u32>, &State) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut state = vm.state();
    let mut partial = String::new();
    while !until(seen, &state) {
        assert!(Instant::now() < deadline, "timed out; seen {seen:?}, state {state:?}");
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), vm.next_event()).await else { continue };
        match ev {
            VmEvent::State(s) => state = s,
            VmEvent::Log { seq, data, .. } => {
                partial.push_str(&String::from_utf8_lossy(&data));
                while let Some(i) = partial.find('\n') {
                    let line: String = partial.drain(..=i).collect();
                    if let Some(n) = line.trim().strip_prefix("line ") {
                        seen.insert(n.parse().unwrap());
                    }
                }
                vm.ack(seq);
            }
            VmEvent::LogLost { seq, bytes } => panic!("lost {bytes} bytes (seq {seq})"),
        }
    }
}

/// Everything a session prints, and how it ended (its input is kept open meanwhile).
async fn collect(s: ExecSession) -> (Vec<u8>, Vec<u8>, Option<ExitStatus>) {
    let ExecSession { input, output } = s;
    let r = outputs(output).await;
    drop(input);
    r
}

async fn outputs(mut output: vt_runtime::exec::ExecOutputs) -> (Vec<u8>, Vec<u8>, Option<ExitStatus>) {
    let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(o) = tokio::time::timeout(Duration::from_secs(60), output.recv()).await.expect("exec output") {
        match o {
            ExecOutput::Stdout(d) => out.extend(d),
            ExecOutput::Stderr(d) => err.extend(d),
            ExecOutput::Exit(s) => exit = Some(s),
        }
    }
    (out, err, exit)
}

fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest { argv: argv.iter().map(|s| s.to_string()).collect(), ..ExecRequest::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sessions_and_reattach_after_the_agent_goes_away() {
    let Some(dir) = guest_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(&dir);
    let disk = vt_image::testing::busybox_root_disk(tmp.path()).unwrap();
    let work = tmp.path().join("vm");
    let launch = Launch {
        argv: ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        env: vec![("GREETING".into(), "hello".into())],
        ..Launch::default()
    };
    let mut vm = rt.start(InstanceSpec::new("i-exec", disk, work.clone(), launch)).await.unwrap();
    let mut seen = BTreeSet::new();
    lines_until(&mut vm, &mut seen, |_, s| *s == State::Running).await;

    // Both streams and the exit code; the instance's environment plus the request's.
    let exec = vm.exec_handle();
    let mut r = req(&["sh", "-c", "echo out $GREETING $EXTRA; echo err >&2; exit 7"]);
    r.env = vec![("EXTRA".into(), "x".into())];
    let (out, err, exit) = collect(exec.open(r).await.unwrap()).await;
    assert_eq!(
        (out.as_slice(), err.as_slice(), exit),
        (&b"out hello x\n"[..], &b"err\n"[..], Some(ExitStatus::Code(7)))
    );

    // Several sessions at once: the slow one does not hold up the quick one.
    let slow = exec.open(req(&["sh", "-c", "sleep 2; echo slow"])).await.unwrap();
    let t = Instant::now();
    let (out, _, _) = collect(exec.open(req(&["echo", "quick"])).await.unwrap()).await;
    assert_eq!((out.as_slice(), t.elapsed() < Duration::from_secs(2)), (&b"quick\n"[..], true));
    let (out, _, exit) = collect(slow).await;
    assert_eq!((out.as_slice(), exit), (&b"slow\n"[..], Some(ExitStatus::Code(0))));

    // A missing program: 127 and a message on stderr.
    let (_, err, exit) = collect(exec.open(req(&["/nope"])).await.unwrap()).await;
    assert_eq!(exit, Some(ExitStatus::Code(127)));
    assert!(String::from_utf8_lossy(&err).contains("/nope"), "{}", String::from_utf8_lossy(&err));

    // Stdin to a pipe, EOF ends it.
    let ExecSession { mut input, output } = exec.open(req(&["sh", "-c", "tr a-z A-Z"])).await.unwrap();
    input.send(ExecInput::Stdin(b"shout\n".to_vec())).await.unwrap();
    input.send(ExecInput::StdinEof).await.unwrap();
    let (out, _, exit) = collect(ExecSession { input, output }).await;
    assert_eq!((out.as_slice(), exit), (&b"SHOUT\n"[..], Some(ExitStatus::Code(0))));

    // A terminal: `tty` names a pts device, `stty size` follows a resize.
    let mut r = req(&["sh"]);
    r.tty = Some((24, 80));
    let ExecSession { mut input, output } = exec.open(r).await.unwrap();
    input.send(ExecInput::Stdin(b"tty; stty size\n".to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    input.send(ExecInput::Resize { rows: 50, cols: 132 }).await.unwrap();
    input.send(ExecInput::Stdin(b"stty size; exit 3\n".to_vec())).await.unwrap();
    let (out, _, exit) = collect(ExecSession { input, output }).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("24 80") && text.contains("50 132"), "{text}");
    assert_eq!(exit, Some(ExitStatus::Code(3)));

    // More output than one credit window, all of it, in order.
    let t = Instant::now();
    let (out, _, exit) = collect(exec.open(req(&["sh", "-c", "head -c 4000000 /dev/zero"])).await.unwrap()).await;
    assert_eq!((out.len(), exit), (4_000_000, Some(ExitStatus::Code(0))));
    println!("4 MB through a session in {:?}", t.elapsed());

    // A client that goes away: the process is hung up, the VM runs on.
    let ExecSession { input, output } = exec.open(req(&["sleep", "600"])).await.unwrap();
    drop(input);
    let (_, _, exit) = outputs(output).await;
    assert_eq!(exit, Some(ExitStatus::Signal(1)), "SIGHUP ends the session");

    // The agent goes away; the VM prints on; a new one attaches and gets every line.
    lines_until(&mut vm, &mut seen, |seen, _| seen.len() >= 5).await;
    let before = *seen.last().unwrap();
    vm.control(Control::Abandon).await;
    let _ = vm.wait().await;
    let pid = std::fs::read_to_string(work.join("vmm.pid")).unwrap().trim().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spec = AttachSpec { id: "i-exec".into(), work_dir: work.clone(), pid, timeout: Duration::from_secs(30) };
    let t = Instant::now();
    let mut vm = rt.attach(spec).await.unwrap();
    lines_until(&mut vm, &mut seen, |seen, s| *s == State::Running && seen.last().unwrap() > &(before + 20)).await;
    println!("re-attached in {:?}", t.elapsed());
    let last = *seen.last().unwrap();
    let missing: Vec<u32> = (1..=last).filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "lines missing after re-attaching: {missing:?}");

    // Exec works on the re-attached VM; then a stop ends it as usual.
    let (out, _, exit) = collect(vm.exec_handle().open(req(&["echo", "again"])).await.unwrap()).await;
    assert_eq!((out.as_slice(), exit), (&b"again\n"[..], Some(ExitStatus::Code(0))));
    vm.control(Control::Stop { grace: Duration::from_secs(5) }).await;
    let o = vm.wait().await;
    assert!(matches!(o.state, State::Stopped { .. }), "{:?}", o.state);
}
