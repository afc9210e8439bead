//! Exec benchmark: sessions on one running microVM, through the guest channel (no HTTP).
//!
//! ```sh
//! cargo run --release -p vt-runtime --bin vt-exec-bench -- --runs 20 --mib 100
//! ```
//!
//! Boots a busybox VM whose entrypoint sleeps, then:
//! * **round trip**: `--runs` times (default 20) a session of `busybox true`, open → `Exit`;
//! * **throughput**: one session of `head -c <mib> MiB /dev/zero`, every byte received
//!   (through the credit window, as a client reading as fast as it can);
//!
//! and prints a table: p50, p95 (nearest rank) and max of the round trip, MiB/s. The full
//! path of `vt exec` adds the API, the grant and a WebSocket on top (docs/exec.md has both
//! numbers). Needs what `tests/qemu_boot.rs` needs; `VT_QEMU_ACCEL`, `VT_GUEST_DIR`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use vt_runtime::exec::{ExecOutput, ExecRequest};
use vt_runtime::qemu::{Accel, QemuConfig, QemuRuntime};
use vt_runtime::{Control, ExitStatus, InstanceSpec, Launch, Runtime, State, VmEvent};

fn main() -> ExitCode {
    let (runs, mib) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("usage: vt-exec-bench [--runs N] [--mib M]   (defaults 20, 100)");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\nusage: vt-exec-bench [--runs N] [--mib M]");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    match rt.block_on(bench(runs, mib)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<(usize, u64)>, String> {
    let (mut runs, mut mib) = (20usize, 100u64);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = args.next().ok_or(format!("{name} needs a number"))?;
            v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or(format!("{name}: `{v}` is not a number ≥ 1"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--runs" => runs = num("--runs")? as usize,
            "--mib" => mib = num("--mib")?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some((runs, mib)))
}

async fn bench(runs: usize, mib: u64) -> Result<String, String> {
    let guest = vt_runtime::qemu::default_guest_dir();
    let mut cfg = QemuConfig::from_guest_dir(&guest);
    cfg.accel = match std::env::var("VT_QEMU_ACCEL") {
        Ok(a) => a.parse()?,
        Err(_) => Accel::Tcg,
    };
    let rt = QemuRuntime::new(cfg).map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let disk = vt_image::testing::busybox_root_disk(tmp.path()).map_err(|e| format!("root disk: {e}"))?;
    let launch = Launch { argv: vec!["sleep".into(), "3600".into()], ..Launch::default() };
    let mut vm =
        rt.start(InstanceSpec::new("bench", disk, tmp.path().join("vm"), launch)).await.map_err(|e| e.to_string())?;
    while vm.state() != State::Running {
        match tokio::time::timeout(Duration::from_secs(180), vm.next_event()).await {
            Ok(Some(VmEvent::State(State::Failed { reason, .. }))) => return Err(reason),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err("the VM did not start".into()),
        }
    }
    let exec = vm.exec_handle();
    let run = |argv: Vec<String>| {
        let exec = exec.clone();
        async move {
            let s = exec.open(ExecRequest { argv, ..ExecRequest::default() }).await?;
            let (input, mut output) = (s.input, s.output);
            let mut bytes = 0u64;
            let mut exit = None;
            while let Some(o) = output.recv().await {
                match o {
                    ExecOutput::Stdout(d) | ExecOutput::Stderr(d) => bytes += d.len() as u64,
                    ExecOutput::Exit(s) => exit = Some(s),
                }
            }
            drop(input);
            match exit {
                Some(ExitStatus::Code(0)) => Ok(bytes),
                other => Err(format!("the session ended with {other:?}")),
            }
        }
    };
    let mut trips = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        run(vec!["busybox".into(), "true".into()]).await?;
        trips.push(t.elapsed());
    }
    trips.sort();
    let t = Instant::now();
    let got = run(vec!["sh".into(), "-c".into(), format!("head -c {} /dev/zero", mib << 20)]).await?;
    let took = t.elapsed();
    if got != mib << 20 {
        return Err(format!("received {got} bytes of {}", mib << 20));
    }
    vm.control(Control::Kill).await;
    let _ = vm.wait().await;
    let rank = |p: f64| trips[((p * trips.len() as f64).ceil() as usize).clamp(1, trips.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(format!(
        "exec through the guest channel ({:?}, {runs} round trips, {mib} MiB)\n\
         | measure | value |\n| --- | --- |\n\
         | round trip `busybox true` p50 | {:.1} ms |\n| round trip p95 | {:.1} ms |\n| round trip max | {:.1} ms |\n\
         | {mib} MiB of output | {:.2} s, {:.1} MiB/s |\n",
        rt.accel().await,
        ms(rank(0.5)),
        ms(rank(0.95)),
        ms(*trips.last().unwrap_or(&Duration::ZERO)),
        took.as_secs_f64(),
        mib as f64 / took.as_secs_f64(),
    ))
}
