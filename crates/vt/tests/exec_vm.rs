//! `vt exec` into a real microVM through `vt server` (grant, WebSocket, the in-process agent,
//! the guest channel, vt-init): both streams and the exit code; `--process`; a session under a
//! pseudo-terminal driven like a person at a terminal (Python's `pty`): `tty` names a pts
//! device and `stty size` follows a resize of the local terminal.
//!
//! Needs the guest kernel and initramfs (`scripts/guest-kernel.sh`) and python3; skipped
//! without the guest, except under `CI=true`.

mod common;

use std::process::Stdio;

use common::{acme_with_busybox, ingress_server_args, spawn_vt_server_captured, vt_at, vt_isolated};

/// Drives `vt exec -it INSTANCE -- sh` on a pseudo-terminal of 24×80: `tty; stty size`, then the
/// terminal becomes 50×132, `stty size` again, `exit 5`. Prints what the terminal showed and
/// exits with vt's code.
const PTY_DRIVER: &str = r##"
import fcntl, os, select, struct, subprocess, sys, termios, time
master, slave = os.openpty()
fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
def ctty():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
p = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave, preexec_fn=ctty, close_fds=True)
os.close(slave)
seen = b""
def until(want, within=30):
    global seen
    end = time.time() + within
    while want not in seen:
        if time.time() > end:
            sys.stdout.write(seen.decode(errors="replace")); sys.exit(90)
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
until(b"# ")
os.write(master, b"tty; stty size\r")
until(b"24 80")
fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
time.sleep(1)
os.write(master, b"stty size\r")
until(b"50 132")
os.write(master, b"exit 5\r")
end = time.time() + 30
while p.poll() is None and time.time() < end:
    r, _, _ = select.select([master], [], [], 0.2)
    if r:
        try:
            seen += os.read(master, 4096)
        except OSError:
            pass
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(p.wait(timeout=5))
"##;

#[test]
fn exec_into_a_real_microvm_with_pipes_and_a_terminal() {
    if vt_runtime::testing::guest_or_skip("the exec test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let args = ingress_server_args(&data, port);
    let server_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_server, url, _) = spawn_vt_server_captured(dir.path(), &server_args);
    let image = acme_with_busybox(dir.path(), &data, &url);
    let manifest = dir.path().join("vt.toml");
    std::fs::write(&manifest, "schema_version = 1\n\n[processes.web]\ncommand = [\"sleep\", \"3600\"]\n").unwrap();
    vt_at(dir.path(), &data, &url, &["deploy", "--wait", "--image", &image, "--manifest", manifest.to_str().unwrap()]);
    let instances = vt_at(dir.path(), &data, &url, &["instances", "-o", "json"]).json();
    let id = instances["items"][0]["id"].as_str().unwrap().to_owned();
    let vt = |args: &[&str]| {
        let mut c = vt_isolated(dir.path(), args);
        c.env("VT_SERVER", &url)
            .env("VT_DATA_DIR", &data)
            .env("VT_ORG", "acme")
            .env("VT_APP", "web")
            .env("VT_ENV", "prod");
        c
    };

    // Both streams, apart, and the command's exit code as vt's.
    let out = vt(&["exec", &id, "--", "sh", "-c", "echo out; echo err >&2; exit 7"]).output().unwrap();
    assert_eq!(
        (
            String::from_utf8_lossy(&out.stdout).as_ref(),
            String::from_utf8_lossy(&out.stderr).as_ref(),
            out.status.code()
        ),
        ("out\n", "err\n", Some(7))
    );
    // `--process` picks the running instance; `-i` forwards stdin.
    let mut child = vt(&["exec", "-i", "--process", "web", "--", "sh", "-c", "read x; echo got $x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((String::from_utf8_lossy(&out.stdout).as_ref(), out.status.code()), ("got hello\n", Some(0)));

    // A terminal.
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(PTY_DRIVER).arg(env!("CARGO_BIN_EXE_vt")).args(["exec", "-it", &id, "--", "sh"]);
    let isolated = vt(&[]);
    for (k, v) in isolated.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{screen}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(screen.contains("/dev/pts/"), "tty names a pts device: {screen}");
    assert!(screen.contains("24 80") && screen.contains("50 132"), "stty size follows the resize: {screen}");
}
