//! Test harness: a real control plane on 127.0.0.1:0 in a tempdir (on its own
//! runtime thread), and the real `vt` binary run against it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vt_server::{Server, ServerConfig};

pub mod netns;

pub const DIGEST_IMAGE: &str = "acme/web@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

pub struct TestServer {
    pub url: String,
    pub token: String,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("data"), SocketAddr::from(([127, 0, 0, 1], 0)));
        config.sqlite = vt_store::SqliteOptions { full_sync: false };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let server = Server::start(&config).await.unwrap();
                let addr = server.local_addr().unwrap();
                let token = std::fs::read_to_string(server.admin_token_written.clone().unwrap()).unwrap();
                tx.send((addr, token.trim().to_owned())).unwrap();
                server.run(std::future::pending()).await.unwrap();
            });
        });
        let (addr, token) = rx.recv().unwrap();
        TestServer { url: format!("http://{addr}"), token, dir }
    }

    /// The `vt` command against this server, isolated from the user's
    /// environment and config.
    pub fn vt(&self, args: &[&str]) -> Command {
        let mut c = vt_isolated(self.dir.path(), args);
        c.env("VT_SERVER", &self.url).env("VT_TOKEN", &self.token);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::of(self.vt(args).output().unwrap(), self.dir.path())
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.vt(args);
        c.envs(env.iter().copied());
        Run::of(c.output().unwrap(), self.dir.path())
    }

    /// Create org `acme`, app `web`, env `prod` and save them in the context.
    pub fn seed(&self) {
        for args in [
            &["org", "create", "acme"][..],
            &["app", "create", "web", "--org", "acme"],
            &["env", "create", "prod", "--org", "acme", "--app", "web"],
            &["context", "set", "--org", "acme", "--app", "web", "--env", "prod"],
        ] {
            let r = self.run(args);
            assert_eq!(r.code, 0, "{args:?}: {}", r.text);
        }
    }

    pub fn manifest(&self) -> PathBuf {
        let p = self.dir.path().join("vt.toml");
        std::fs::write(&p, include_str!("../../../vt-manifest/tests/full.toml")).unwrap();
        p
    }
}

/// `vt` with no server settings, a private config file and a private cwd.
pub fn vt_isolated(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vt"));
    c.args(args)
        .current_dir(dir)
        .env("VT_CONFIG", dir.join("config.toml"))
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME");
    for k in ["VT_SERVER", "VT_TOKEN", "VT_ORG", "VT_APP", "VT_ENV", "VT_DATA_DIR", "VT_DATABASE_URL", "RUST_LOG"] {
        c.env_remove(k);
    }
    // A server started here runs its instances in the host's own network namespace, beside
    // other tests' servers: no egress (the host's forwarding sysctls stay as they are) and an
    // nftables table of its own, named for its directory (the same across restarts).
    c.env("VT_NO_EGRESS", "true").env("VT_NFT_TABLE", test_table(dir));
    c
}

/// The nftables table of the test server in `dir`: `vtt` and 8 hex digits.
pub fn test_table(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("vtt{:08x}", h.finish() as u32)
}

/// One run: exit code, stdout, stderr, and all three as snapshot text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub text: String,
}

impl Run {
    pub fn of(o: Output, tmp: &Path) -> Run {
        let tmp = tmp.display().to_string();
        let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&tmp, "[TMP]");
        let (stdout, stderr) = (clean(&o.stdout), clean(&o.stderr));
        let code = o.status.code().unwrap_or(-1);
        let text = format!("exit: {code}\n----- stdout -----\n{stdout}----- stderr -----\n{stderr}");
        Run { code, stdout, stderr, text }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.text))
    }
}

/// Volatile values: ids, times, ports, request ids. Replacements keep the
/// width of what they replace, so table columns stay aligned.
pub fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"\b(org|app|env|rel|dep|inst|node|evt|req|tok|route|vol|snap)_[0-9a-z]{26}\b",
            "${1}_xxxxxxxxxxxxxxxxxxxxxxxxxx",
        ),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "YYYY-MM-DDTHH:MM:SSZ"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        // Phase timings of deploys (`+1.4s`).
        (r"\+\d+\.\ds\b", "+N.Ns"),
        (r"vt-cli-[0-9a-z]{26}", "[key]"),
        // Ages in tables (`AGE` columns): a test runs in seconds.
        (r"(  )\d{1,2}s\b", "${1}Ns"),
        // Token secrets.
        (r"vt_[0-9a-f]{64}", "vt_[secret]"),
    ]
}

#[macro_export]
macro_rules! snap {
    ($name:expr, $run:expr) => {
        insta::with_settings!({ filters => common::filters(), prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!($name, $run.text);
        })
    };
}

/// A `vt server` child process that is stopped (SIGTERM, then SIGKILL after
/// 10 s) when dropped, so a failing test leaves no server (and no VM) behind.
pub struct ServerChild(pub std::process::Child);

impl std::ops::Deref for ServerChild {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServerChild {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `vt server ARGS...` as a child process and wait for its ready line.
/// Returns the child and the server's URL; the rest of its stderr is drained.
#[allow(dead_code)]
pub fn spawn_vt_server(dir: &Path, args: &[&str]) -> (ServerChild, String) {
    let (child, url, _) = spawn_vt_server_captured(dir, args);
    (child, url)
}

/// [`spawn_vt_server`], keeping everything the server writes (stdout and stderr).
#[allow(dead_code)]
pub fn spawn_vt_server_captured(
    dir: &Path,
    args: &[&str],
) -> (ServerChild, String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{BufRead, Read};
    let mut full = vec!["server"];
    full.extend_from_slice(args);
    let mut child = vt_isolated(dir, &full)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = capture(child.stdout.take().unwrap());
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = Vec::new();
    let url = loop {
        line.clear();
        let n = stderr.read_until(b'\n', &mut line).unwrap();
        assert!(n > 0, "server exited before it was ready: {}", String::from_utf8_lossy(&output.lock().unwrap()));
        output.lock().unwrap().extend_from_slice(&line);
        if let Some(url) = String::from_utf8_lossy(&line).trim_end().strip_prefix("vt server ready on ") {
            break url.to_owned();
        }
    };
    let out = output.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            out.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (ServerChild(child), url, output)
}

/// [`spawn_vt_server_captured`], and where the server says its workspace origin listens
/// (`127.0.0.1:PORT`, from its `workspaces on http://...` line).
#[allow(dead_code)]
pub fn spawn_vt_server_with_origin(
    dir: &Path,
    args: &[String],
) -> (ServerChild, String, String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let (child, url, output) = spawn_vt_server_captured(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    let origin = text
        .lines()
        .find_map(|l| l.split("workspaces on http://").nth(1))
        .and_then(|l| l.split('/').next())
        .unwrap_or_else(|| panic!("no workspace origin announced: {text}"))
        .to_owned();
    (child, url, origin, output)
}

/// The flags of a test `vt server` with everything on loopback: the API on a
/// free port, `data`, fast SQLite, the ingress on 127.0.0.1 with TCP routes on
/// `port` only, the in-process agent as node `node-1`.
#[allow(dead_code)]
pub fn ingress_server_args(data: &Path, port: u16) -> Vec<String> {
    let range = format!("{port}-{port}");
    loopback_args(data, &["--ingress-listen", "127.0.0.1", "--ingress-tcp-ports", &range, "--node-name", "node-1"])
}

/// The flags every test `vt server` starts with: both origins on free loopback ports, its
/// data directory `data`, fast SQLite; then `extra`.
#[allow(dead_code)]
pub fn loopback_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let data = data.to_str().unwrap();
    let base =
        ["--listen", "127.0.0.1:0", "--workspace-listen", "127.0.0.1:0", "--data-dir", data, "--sqlite-sync", "normal"];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// The flags of a test `vt server` without the ingress: both origins on free loopback
/// ports, `data`, fast SQLite, the in-process agent as node `node-1`; then `extra`.
#[allow(dead_code)]
pub fn plain_server_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = loopback_args(data, &["--no-ingress", "--node-name", "node-1"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A loopback port free a moment ago (for a route's listener).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.0 GET of `path` through the ingress on `port`: the body, or why not.
#[allow(dead_code)]
pub fn http_get(port: u16, path: &str) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: web\r\n\r\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut r = vec![];
    s.read_to_end(&mut r).map_err(|e| format!("read: {e}"))?;
    let end = r.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&r[..end]);
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200: {head:?}"));
    }
    Ok(r[end + 4..].to_vec())
}

/// `vt ARGS...` against `url` in the scope acme/web/prod, asserting it succeeds.
#[allow(dead_code)]
pub fn vt_at(dir: &Path, data: &Path, url: &str, args: &[&str]) -> Run {
    let mut c = vt_isolated(dir, args);
    c.env("VT_SERVER", url).env("VT_DATA_DIR", data).env("VT_ORG", "acme").env("VT_APP", "web").env("VT_ENV", "prod");
    let r = Run::of(c.output().unwrap(), dir);
    assert_eq!(r.code, 0, "{args:?}: {}", r.text);
    r
}

/// org acme, app web, env prod, and a busybox image (no entrypoint) pushed as
/// `acme/web:v1` with `vt image push`. Returns `acme/web@<digest>`.
#[allow(dead_code)]
pub fn acme_with_busybox(dir: &Path, data: &Path, url: &str) -> String {
    let vt = |args: &[&str]| vt_at(dir, data, url, args);
    vt(&["org", "create", "acme"]);
    vt(&["app", "create", "web"]);
    vt(&["env", "create", "prod"]);
    push_busybox(vt, dir, "v1", &[])
}

/// The busybox image (no entrypoint) with `files` (path in the image, content) added, built
/// under `dir` and pushed as `acme/web:TAG` through `vt` (which asserts it succeeds): its
/// reference by digest.
#[allow(dead_code)]
pub fn push_busybox<R>(vt: impl Fn(&[&str]) -> R, dir: &Path, tag: &str, files: &[(&str, &str)]) -> String {
    use vt_image::layout::{write_image, LayerFormat};
    let build = dir.join(format!("build-{tag}"));
    let rootfs = build.join("rootfs");
    vt_image::testing::busybox_rootfs(&rootfs).unwrap();
    for (path, content) in files {
        std::fs::create_dir_all(rootfs.join(path).parent().unwrap()).unwrap();
        std::fs::write(rootfs.join(path), content).unwrap();
    }
    let layout = build.join("layout");
    let img = write_image(&rootfs, &layout, Default::default(), LayerFormat::Uncompressed).unwrap();
    vt(&["image", "push", layout.to_str().unwrap(), "--repo", "acme/web", "--tag", tag]);
    format!("acme/web@{}", img.manifest.digest)
}

/// Everything `from` writes, gathered by a thread as it comes.
#[allow(dead_code)]
pub fn capture(mut from: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = output.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            out.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    output
}

/// The template's layout: a cache hit of the script, or its build (as root; minutes).
#[allow(dead_code)]
pub fn workspace_template() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/workspace-template.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("VT", env!("CARGO_BIN_EXE_vt"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !path.is_empty() {
        return Some(PathBuf::from(path));
    }
    let why = format!(
        "the workspace template could not be built ({}): run scripts/workspace-template.sh as root",
        out.status
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}
