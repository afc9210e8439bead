//! Boot benchmark: our full path against a bare QEMU boot of the same kernel, for one guest
//! directory or several side by side (e.g. Debian's kernel against vt's own).
//!
//! ```sh
//! cargo run --release -p vt-runtime --bin vt-boot-bench -- --runs 5
//! cargo run --release -p vt-runtime --bin vt-boot-bench -- --runs 5 \
//!     --guest-dir /var/cache/vt/guest-debian --guest-dir /var/cache/vt/guest
//! ```
//!
//! `--runs` times (default 5), for each guest directory in turn (`--guest-dir`, repeatable;
//! default `VT_GUEST_DIR` or `/var/cache/vt/guest`), so that a change in the machine's load
//! reaches every directory alike:
//! * **ours**: [`Runtime::start`] of `sh -c true` on a busybox root disk built by vt-image,
//!   until the guest's `Ready` (scratch disk, VMM, kernel, init: disks, overlay, channel
//!   handshake); the phases come from [`Vm::timings`](vt_runtime::Vm::timings);
//! * **bare**: [`qemu::bare_boot`]: the same kernel and initramfs with no device, init
//!   powering off as soon as it runs (QEMU spawn → QEMU exit);
//! * **resume**: a cold boot of `sleep` to `Ready`, [`Vm::suspend`](vt_runtime::Vm::suspend),
//!   then [`Runtime::restore`] into a new QEMU until its `Ready` (target: resume ≤ 0.25× the
//!   cold boot, same run).
//!
//! * with `--steps`, a boot of our path with `vt.debug` on the kernel command line (vt-init
//!   records each of its steps; the kernel is not `quiet`): each vt-init step's time since
//!   init's start and its own, read back from the guest's console;
//! * with `--again` (implies `--steps`), a boot with `vt.debug vt.again`: vt-init sets up
//!   loopback, both disks and the overlay once and undoes them before the real steps, which
//!   then show what each costs the second time it runs in the same VM. Under TCG the first
//!   time includes translating the kernel code the step runs; the second does not.
//!
//! Prints every run, the median and p95 (nearest rank) of each, the ratio ours/bare
//! (target ≤ 1.5×), the guest's init → entrypoint time (target ≤ 50 ms), its kernel → init
//! time (target ≤ 1 s under TCG), and where our path spends its time; with several
//! directories, a last table puts them side by side. Needs what `tests/qemu_boot.rs` needs
//! (`scripts/guest-kernel.sh`, `busybox-static`); `VT_QEMU_ACCEL=tcg|kvm|auto` (default tcg).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use vt_runtime::qemu::{self, Accel, QemuConfig, QemuRuntime};
use vt_runtime::{BootTimings, ExitStatus, InstanceSpec, Launch, Runtime, State, VmEvent};

const TARGET_RATIO: f64 = 1.5;
const TARGET_INIT_MS: f64 = 50.0;
const TARGET_KERNEL_MS: f64 = 1000.0;
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const TARGET_RESUME_RATIO: f64 = 0.25;

const USAGE: &str =
    "usage: vt-boot-bench [--runs N] [--steps] [--again] [--guest-dir DIR]...   (N ≥ 1, default 5; DIR repeatable)";

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(bench_all(args)) {
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

struct Args {
    runs: usize,
    /// Also time vt-init's steps (`vt.debug` boots).
    steps: bool,
    /// Also time them when they run a second time in the VM (`vt.debug vt.again` boots).
    again: bool,
    /// Empty: the default guest directory.
    guest_dirs: Vec<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut out = Args { runs: 5, steps: false, again: false, guest_dirs: Vec::new() };
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--runs" => {
                let v = args.next().ok_or("--runs needs a value")?;
                out.runs =
                    v.parse().ok().filter(|&n| n >= 1).ok_or_else(|| format!("--runs {v}: expected an integer ≥ 1"))?;
            }
            "--steps" => out.steps = true,
            "--again" => (out.steps, out.again) = (true, true),
            "--guest-dir" => {
                let v = args.next().ok_or("--guest-dir needs a value")?;
                out.guest_dirs.push(PathBuf::from(v));
            }
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(Some(out))
}

/// One boot of our path, in milliseconds.
struct Ours {
    /// `start()` → `Ready`.
    total: f64,
    /// VMM spawned → `Ready`.
    from_spawn: f64,
    /// Scratch disk made and channel listening.
    scratch: f64,
    /// Prepared → VMM spawned.
    spawn: f64,
    /// Guest clock: kernel start → init start.
    kernel_to_init: f64,
    /// Guest clock: init start → entrypoint start.
    init_to_entrypoint: f64,
    /// VMM spawned → `Ready` on the host minus the guest's kernel start → entrypoint: QEMU's
    /// start before the kernel runs plus the `Ready` frame's way to the host.
    host_side: f64,
}

impl Ours {
    fn from(t: &BootTimings) -> Result<Ours, String> {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let missing = || format!("incomplete timings after Ready: {t:?}");
        let (prepared, spawned, ready) =
            (t.prepared.ok_or_else(missing)?, t.vmm_spawned.ok_or_else(missing)?, t.entrypoint.ok_or_else(missing)?);
        let (init_us, entry_us) =
            (t.guest_init_started_us.ok_or_else(missing)?, t.guest_entrypoint_started_us.ok_or_else(missing)?);
        let from_spawn = ms(ready.saturating_sub(spawned));
        Ok(Ours {
            total: ms(ready),
            from_spawn,
            scratch: ms(prepared),
            spawn: ms(spawned.saturating_sub(prepared)),
            kernel_to_init: init_us as f64 / 1000.0,
            init_to_entrypoint: entry_us.saturating_sub(init_us) as f64 / 1000.0,
            host_side: from_spawn - entry_us as f64 / 1000.0,
        })
    }
}

/// The median and p95 of one guest directory's runs, for the side-by-side table.
struct Summary {
    dir: PathBuf,
    kernel_to_init: Vec<f64>,
    init_to_entrypoint: Vec<f64>,
    total: Vec<f64>,
    bare: Vec<f64>,
}

impl Summary {
    const ROWS: usize = 4;

    /// Row `i` of the side-by-side table: its name and samples.
    fn row(&self, i: usize) -> (&'static str, &[f64]) {
        match i {
            0 => ("guest kernel → init", &self.kernel_to_init),
            1 => ("guest init → entrypoint", &self.init_to_entrypoint),
            2 => ("ours: start() → Ready", &self.total),
            _ => ("bare: QEMU spawn → exit", &self.bare),
        }
    }
}

async fn bench_all(args: Args) -> Result<String, String> {
    let dirs = if args.guest_dirs.is_empty() {
        let Some(dir) = vt_runtime::testing::guest_or_skip("vt-boot-bench", &[vt_image::testing::BUSYBOX]) else {
            return Err("cannot boot microVMs on this host (see above)".into());
        };
        vec![dir]
    } else {
        for d in &args.guest_dirs {
            let missing = QemuConfig::from_guest_dir(d).missing();
            if !missing.is_empty() {
                return Err(format!(
                    "--guest-dir {}: missing {} (scripts/guest-kernel.sh)",
                    d.display(),
                    missing.join(", ")
                ));
            }
        }
        args.guest_dirs.clone()
    };
    let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let disk = vt_image::testing::busybox_root_disk(tmp.path()).map_err(|e| format!("busybox root disk: {e}"))?;
    let mut benches = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        benches.push(Bench::new(dir, &args, tmp.path().join(format!("dir-{n}"))).await?);
    }
    // Run by run, each directory in turn: a change in the machine's load reaches them all.
    for i in 0..args.runs {
        for b in &mut benches {
            b.run(i, &disk).await?;
        }
    }
    let mut report = String::new();
    for b in &benches {
        report.push_str(&b.report(args.runs));
        report.push('\n');
    }
    if benches.len() > 1 {
        let summaries: Vec<Summary> = benches.iter().map(Bench::summary).collect();
        report.push_str(&compare(&summaries));
    }
    Ok(report)
}

/// Side by side: one column pair (median, p95) per guest directory.
fn compare(summaries: &[Summary]) -> String {
    let mut s = String::from("side by side (median / p95, ms)\n");
    for (i, sum) in summaries.iter().enumerate() {
        s.push_str(&format!("  [{}] {} (kernel {})\n", i + 1, sum.dir.display(), kernel_release(&sum.dir)));
    }
    s.push_str(&format!("{:<28}", ""));
    for i in 0..summaries.len() {
        s.push_str(&format!("  {:>17}", format!("[{}]", i + 1)));
    }
    s.push('\n');
    for row in 0..Summary::ROWS {
        s.push_str(&format!("{:<28}", summaries[0].row(row).0));
        for sum in summaries {
            let v = sum.row(row).1;
            s.push_str(&format!("  {:>7.0} / {:>7.0}", median(v), p95(v)));
        }
        s.push('\n');
    }
    s
}

fn kernel_release(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("kernel.release")).map(|r| r.trim().to_owned()).unwrap_or_else(|_| "?".into())
}

/// One guest directory: its runtimes and every run's samples.
struct Bench {
    dir: PathBuf,
    work: PathBuf,
    rt: QemuRuntime,
    accel: Accel,
    /// `vt.debug` boots (`--steps`) and `vt.debug vt.again` boots (`--again`).
    debug_rt: Option<QemuRuntime>,
    again_rt: Option<QemuRuntime>,
    ours: Vec<Ours>,
    bare: Vec<f64>,
    resumes: Vec<Resume>,
    steps: Vec<Vec<(String, f64)>>,
    again: Vec<Vec<(String, f64)>>,
}

impl Bench {
    async fn new(dir: &Path, args: &Args, work: PathBuf) -> Result<Bench, String> {
        let mut cfg = QemuConfig::from_guest_dir(dir);
        cfg.accel = match std::env::var("VT_QEMU_ACCEL") {
            Ok(a) => a.parse().map_err(|e| format!("VT_QEMU_ACCEL={a}: {e}"))?,
            Err(_) => Accel::Tcg,
        };
        let runtime = |cfg: QemuConfig| QemuRuntime::new(cfg).map_err(|e| e.to_string());
        let rt = runtime(cfg.clone())?;
        let accel = rt.accel().await;
        let debug = QemuConfig { verbose_console: true, ..cfg };
        let again = QemuConfig { boot_args: "vt.again".into(), ..debug.clone() };
        Ok(Bench {
            dir: dir.to_owned(),
            work,
            rt,
            accel,
            debug_rt: if args.steps { Some(runtime(debug)?) } else { None },
            again_rt: if args.again { Some(runtime(again)?) } else { None },
            ours: Vec::new(),
            bare: Vec::new(),
            resumes: Vec::new(),
            steps: Vec::new(),
            again: Vec::new(),
        })
    }

    /// Run `i`: a bare boot, ours, a suspend/resume, and the `vt.debug` boots asked for.
    async fn run(&mut self, i: usize, disk: &Path) -> Result<(), String> {
        let b = qemu::bare_boot(self.rt.config(), self.accel, BOOT_TIMEOUT)
            .await
            .map_err(|e| format!("bare boot {i}: {e}"))?;
        self.bare.push(b.as_secs_f64() * 1000.0);
        self.ours.push(boot_ours(&self.rt, disk, &self.work.join(format!("vm-{i}")), i).await?);
        self.resumes.push(suspend_resume(&self.rt, disk, &self.work.join(format!("snap-{i}")), i).await?);
        for (rt, out, name) in [(&self.debug_rt, &mut self.steps, "steps"), (&self.again_rt, &mut self.again, "again")]
        {
            let Some(rt) = rt else { continue };
            let work_dir = self.work.join(format!("{name}-{i}"));
            boot_ours(rt, disk, &work_dir, i).await?;
            let console = std::fs::read_to_string(work_dir.join("console.log")).unwrap_or_default();
            out.push(init_steps(&console));
        }
        Ok(())
    }

    fn summary(&self) -> Summary {
        let col = |f: fn(&Ours) -> f64| self.ours.iter().map(f).collect::<Vec<f64>>();
        Summary {
            dir: self.dir.clone(),
            kernel_to_init: col(|o| o.kernel_to_init),
            init_to_entrypoint: col(|o| o.init_to_entrypoint),
            total: col(|o| o.total),
            bare: self.bare.clone(),
        }
    }

    fn report(&self, runs: usize) -> String {
        let (ours, bare) = (&self.ours, &self.bare);
        let mut s = format!(
            "vt-boot-bench: {runs} runs, alternating, accel {:?}, kernel {} ({})\n\n",
            self.accel,
            self.dir.join("vmlinux").display(),
            kernel_release(&self.dir)
        );
        s.push_str(&format!(
            "{:>4}  {:>16}  {:>17}  {:>18}  {:>24}\n",
            "run", "ours start→Ready", "ours spawn→Ready", "bare spawn→exit", "guest init→entrypoint"
        ));
        for (i, (o, b)) in ours.iter().zip(bare).enumerate() {
            s.push_str(&format!(
                "{:>4}  {:>13.0} ms  {:>14.0} ms  {:>15.0} ms  {:>21.0} ms\n",
                i + 1,
                o.total,
                o.from_spawn,
                b,
                o.init_to_entrypoint
            ));
        }
        let col = |f: fn(&Ours) -> f64| ours.iter().map(f).collect::<Vec<f64>>();
        let total = col(|o| o.total);
        let init = col(|o| o.init_to_entrypoint);
        let kernel = col(|o| o.kernel_to_init);
        let ratio = median(&total) / median(bare);
        let ratio_spawn = median(&col(|o| o.from_spawn)) / median(bare);
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };

        s.push_str(&format!("\n{:<40}  {:>10}  {:>10}\n", "", "median", "p95"));
        let row = |s: &mut String, name: &str, v: &[f64]| {
            s.push_str(&format!("{name:<40}  {:>7.1} ms  {:>7.1} ms\n", median(v), p95(v)))
        };
        row(&mut s, "ours: start() → Ready", &total);
        row(&mut s, "ours: VMM spawn → Ready", &col(|o| o.from_spawn));
        row(&mut s, "bare: QEMU spawn → power-off", bare);
        row(&mut s, "guest init → entrypoint", &init);
        s.push_str(&format!(
            "\nratio ours/bare (medians): {ratio:.2}× from start(), {ratio_spawn:.2}× from the VMM spawn — target ≤ {TARGET_RATIO}×: {}\n",
            verdict(ratio <= TARGET_RATIO)
        ));
        s.push_str(&format!(
            "guest init → entrypoint (median): {:.0} ms — target ≤ {TARGET_INIT_MS} ms: {}\n",
            median(&init),
            verdict(median(&init) <= TARGET_INIT_MS)
        ));
        s.push_str(&format!(
            "guest kernel → init (median): {:.0} ms — target ≤ {TARGET_KERNEL_MS} ms: {}\n",
            median(&kernel),
            verdict(median(&kernel) <= TARGET_KERNEL_MS)
        ));

        s.push_str(&format!("\nour path by phase (Vm::timings){:<9}  {:>10}  {:>10}\n", "", "median", "p95"));
        for (name, samples) in [
            ("scratch disk (mkfs + listen)", col(|o| o.scratch)),
            ("VMM spawn", col(|o| o.spawn)),
            ("guest kernel → init", col(|o| o.kernel_to_init)),
            ("guest init → entrypoint", col(|o| o.init_to_entrypoint)),
            ("host side: VMM start + Ready delivery", col(|o| o.host_side)),
        ] {
            row(&mut s, name, &samples);
        }
        s.push_str("(the host side is VMM spawn → Ready on the host minus kernel → entrypoint on the guest's clock)\n");
        s.push_str(&resume_report(&self.resumes));
        if !self.steps.is_empty() {
            s.push_str(&steps_report(&self.steps, &self.again));
        }
        s
    }
}

/// One cold boot → suspend → restore, in milliseconds.
struct Resume {
    /// `start()` → `Ready` of a long-running entrypoint.
    cold: f64,
    /// `Vm::suspend`: pause → state saved → VMM gone.
    suspend: f64,
    /// Size of the saved state, MiB.
    mib: f64,
    /// `restore()` → `Ready` (after the guest resumed).
    resume: f64,
    /// `restore()` → snapshot loaded and the guest let run.
    load: f64,
}

async fn suspend_resume(rt: &QemuRuntime, disk: &Path, work_dir: &Path, i: usize) -> Result<Resume, String> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let launch = Launch {
        argv: vec!["/bin/sh".into(), "-c".into(), "exec sleep 600".into()],
        cwd: "/".into(),
        user: "root".into(),
        hostname: "bench".into(),
        ..Launch::default()
    };
    let spec = InstanceSpec::new(&format!("bench-snap-{i}"), disk.to_owned(), work_dir.to_owned(), launch);
    let start = std::time::Instant::now();
    let mut vm = rt.start(spec.clone()).await.map_err(|e| format!("start {i}: {e}"))?;
    until_running(&mut vm).await.map_err(|e| format!("cold boot {i}: {e}"))?;
    let cold = ms(start.elapsed());
    let snap = vm.suspend().await.map_err(|e| format!("suspend {i}: {e}"))?;
    vm.wait().await;
    let start = std::time::Instant::now();
    let mut vm = rt.restore(spec).await.map_err(|e| format!("restore {i}: {e}"))?;
    until_running(&mut vm).await.map_err(|e| format!("resume {i}: {e}"))?;
    let resume = ms(start.elapsed());
    let load = vm.timings().snapshot_loaded.map_or(f64::NAN, ms);
    vm.control(vt_runtime::Control::Kill).await;
    vm.wait().await;
    let _ = vt_runtime::snapshot::remove(work_dir);
    Ok(Resume { cold, suspend: ms(snap.took), mib: snap.bytes as f64 / (1 << 20) as f64, resume, load })
}

async fn until_running(vm: &mut vt_runtime::Vm) -> Result<(), String> {
    tokio::time::timeout(BOOT_TIMEOUT, async {
        while let Some(ev) = vm.next_event().await {
            match ev {
                VmEvent::State(State::Running) => return Ok(()),
                VmEvent::State(s) if s.is_terminal() => return Err(format!("ended: {s}")),
                _ => {}
            }
        }
        Err("no Ready".to_string())
    })
    .await
    .map_err(|_| format!("no Ready within {BOOT_TIMEOUT:?}"))?
}

fn resume_report(r: &[Resume]) -> String {
    let col = |f: fn(&Resume) -> f64| r.iter().map(f).collect::<Vec<f64>>();
    let mut s = format!("\nsuspend / resume (a running `sleep`){:<4}  {:>10}  {:>10}\n", "", "median", "p95");
    for (name, v) in [
        ("cold boot: start() → Ready", col(|r| r.cold)),
        ("suspend: pause → saved → VMM gone", col(|r| r.suspend)),
        ("resume: restore() → Ready", col(|r| r.resume)),
        ("  of which restore() → state loaded", col(|r| r.load)),
    ] {
        s.push_str(&format!("{name:<40}  {:>7.1} ms  {:>7.1} ms\n", median(&v), p95(&v)));
    }
    let ratio = median(&col(|r| r.resume)) / median(&col(|r| r.cold));
    let verdict = if ratio <= TARGET_RESUME_RATIO { "met" } else { "NOT met" };
    s.push_str(&format!(
        "saved state: {:.0} MiB (median)\nratio resume/cold boot (medians): {ratio:.2}× — target ≤ {TARGET_RESUME_RATIO}×: {verdict}\n",
        median(&col(|r| r.mib))
    ));
    s
}

async fn boot_ours(rt: &QemuRuntime, disk: &Path, work_dir: &Path, i: usize) -> Result<Ours, String> {
    let launch = Launch {
        argv: vec!["/bin/sh".into(), "-c".into(), "true".into()],
        env: vec![("VT_APP".into(), "bench".into())],
        cwd: "/".into(),
        user: "root".into(),
        hostname: "bench".into(),
        ..Launch::default()
    };
    let spec = InstanceSpec::new(&format!("bench-{i}"), disk.to_owned(), work_dir.to_owned(), launch);
    let mut vm = rt.start(spec).await.map_err(|e| format!("start {i}: {e}"))?;
    let ready = tokio::time::timeout(BOOT_TIMEOUT, async {
        while let Some(ev) = vm.next_event().await {
            if ev == VmEvent::State(State::Running) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let timings = vm.timings();
    let out = tokio::time::timeout(BOOT_TIMEOUT, vm.wait())
        .await
        .map_err(|_| format!("run {i}: no power-off within {BOOT_TIMEOUT:?}"))?;
    if !ready || out.state != (State::Stopped { exit: Some(ExitStatus::Code(0)) }) {
        return Err(format!(
            "run {i}: expected Ready then exit 0; ended {:?} (console: {})",
            out.state,
            work_dir.join("console.log").display()
        ));
    }
    Ours::from(&timings)
}

/// vt-init's steps from a `vt.debug` console: (step, ms since init's start), in order. The
/// lines are `vt-init: <boottime> us  +<ms> ms  <step>` (`vt-init`'s `print_steps`).
fn init_steps(console: &str) -> Vec<(String, f64)> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.trim_end().strip_prefix("vt-init: ")?;
            let (_, rest) = rest.split_once(" us  +")?;
            let (ms, step) = rest.split_once(" ms  ")?;
            Some((step.to_owned(), ms.trim().parse().ok()?))
        })
        .collect()
}

/// Each step of the `vt.debug` boots, in the order of the first: its time since init's start
/// and its own (since the step before), median and p95; with `again` boots, its own time
/// when it ran a second time in the VM (`vt.again`).
fn steps_report(boots: &[Vec<(String, f64)>], again: &[Vec<(String, f64)>]) -> String {
    /// Per boot: each step's (name, since init's start, since the step before).
    fn own(boots: &[Vec<(String, f64)>]) -> Vec<Vec<(&str, f64, f64)>> {
        boots
            .iter()
            .map(|b| {
                let mut last = 0.0;
                b.iter()
                    .map(|(n, at)| {
                        let step = at - last;
                        last = *at;
                        (n.as_str(), *at, step)
                    })
                    .collect()
            })
            .collect()
    }
    let (boots, again) = (own(boots), own(again));
    let of = |boots: &[Vec<(&str, f64, f64)>], name: &str, f: fn(&(&str, f64, f64)) -> f64| -> Vec<f64> {
        boots.iter().filter_map(|b| b.iter().find(|s| s.0 == name).map(f)).collect()
    };
    let mut s = format!(
        "\nvt-init steps (vt.debug boots, ms){:<20}  {:>15}  {:>15}  {:>13}\n{:<54}  {:>15}  {:>15}  {:>13}\n",
        "", "since init", "the step", "again", "", "median    p95", "median    p95", "median  boots"
    );
    for &(name, ..) in boots.first().map(Vec::as_slice).unwrap_or_default() {
        let (at, step) = (of(&boots, name, |s| s.1), of(&boots, name, |s| s.2));
        let second = of(&again, name, |s| s.2);
        let again_col = if second.is_empty() {
            String::from("-")
        } else {
            format!("{:>6.1}  {:>5}", median(&second), second.len())
        };
        s.push_str(&format!(
            "{name:<54}  {:>6.1}  {:>6.1}  {:>6.1}  {:>6.1}  {again_col:>13}\n",
            median(&at),
            p95(&at),
            median(&step),
            p95(&step)
        ));
    }
    if !again.is_empty() {
        let first: f64 = median(&of(&again, "first round: undone", |s| s.1));
        s.push_str(&format!(
            "(again: loopback, the disks and the overlay were set up and undone once before in the same VM, \
             done {first:.0} ms after init's start; under TCG a kernel path's second run is not translated again)\n"
        ));
    }
    s
}

/// Nearest-rank percentile (`pct` in 1..=100) of unsorted samples.
fn percentile(v: &[f64], pct: usize) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (pct * v.len()).div_ceil(100).clamp(1, v.len());
    v[rank - 1]
}

fn median(v: &[f64]) -> f64 {
    percentile(v, 50)
}

fn p95(v: &[f64]) -> f64 {
    percentile(v, 95)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_the_console_and_reported_with_their_own_time() {
        let console = "[    0.7] Run /init as init process\n\
                       vt-init:   700000 us  +   0.0 ms  init started\n\
                       vt-init:   707500 us  +   7.5 ms  mounted /dev /proc /sys\n\
                       vt-init: fatal: not a step line\n\
                       vt-init:   720000 us  +  20.0 ms  loopback up\n";
        let steps = init_steps(console);
        assert_eq!(
            steps,
            [
                ("init started".to_owned(), 0.0),
                ("mounted /dev /proc /sys".to_owned(), 7.5),
                ("loopback up".to_owned(), 20.0)
            ]
        );
        let again = vec![vec![
            ("init started".to_owned(), 0.0),
            ("first round: undone".to_owned(), 30.0),
            ("loopback up".to_owned(), 30.5),
        ]];
        let report = steps_report(&[steps], &again);
        let line = |name: &str| report.lines().find(|l| l.starts_with(name)).unwrap().to_owned();
        // since init, p95, the step's own time, p95, again (own), boots
        assert_eq!(
            line("loopback up").split_whitespace().skip(2).collect::<Vec<_>>(),
            ["20.0", "20.0", "12.5", "12.5", "0.5", "1"]
        );
        assert!(line("mounted /dev").ends_with('-'), "{report}");
        assert!(report.contains("done 30 ms after"), "{report}");
    }
}
