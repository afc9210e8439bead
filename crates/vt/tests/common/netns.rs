//! Real `vt` processes in network namespaces a test creates (the mesh and cluster tests).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vt_firewall::testing::{run, Netns};

use super::ServerChild;

/// `Some` where the mesh tests can run (root, `wg`, `ping`, `boringtun-cli`); else why not,
/// printed (a failure under `CI=true`).
pub fn mesh_tools_or_skip() -> Option<()> {
    let missing = |p: &str, arg: &str| run(Command::new(p).arg(arg)).is_err();
    let why = if missing("wg", "--version") {
        "needs `wg` (`apt-get install wireguard-tools`)"
    } else if missing("ping", "-V") {
        "needs `ping` (`apt-get install iputils-ping`)"
    } else if missing("boringtun-cli", "--version") {
        "needs `boringtun-cli` on PATH (scripts/mesh-tools.sh)"
    } else {
        return Some(());
    };
    assert!(std::env::var("CI").as_deref() != Ok("true"), "the mesh tests: {why}");
    eprintln!("SKIPPED: the mesh tests: {why}");
    None
}

/// `vt ARGS` in namespace `ns`, isolated like `common::vt_isolated`.
pub fn vt_in(ns: &Netns, dir: &Path, args: &[&str]) -> Command {
    let mut c = ns.command(env!("CARGO_BIN_EXE_vt"));
    c.args(args).current_dir(dir).env("VT_CONFIG", dir.join("config.toml")).env("HOME", dir);
    for k in ["VT_SERVER", "VT_TOKEN", "VT_ORG", "VT_APP", "VT_ENV", "VT_DATA_DIR", "VT_DATABASE_URL", "RUST_LOG"] {
        c.env_remove(k);
    }
    c.env("VT_NO_EGRESS", "true");
    c
}

/// Start `vt ARGS` in `ns` (with `env`) and wait for a stderr line containing `ready`.
pub fn spawn_until(ns: &Netns, dir: &Path, args: &[&str], env: &[(&str, &str)], ready: &str) -> ServerChild {
    let mut c = vt_in(ns, dir, args);
    c.envs(env.iter().copied());
    let mut child = ServerChild(c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "`vt {}` exited: {seen}", args.join(" "));
        seen.push_str(&line);
        if line.contains(ready) {
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return child;
        }
    }
}

pub fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The peers' public keys on `iface` in `ns` (`None`: no such interface).
pub fn wg_peers(ns: &Netns, iface: &str) -> Option<Vec<String>> {
    let dump = run(ns.command("wg").args(["show", iface, "dump"])).ok()?;
    Some(dump.lines().skip(1).filter_map(|l| l.split('\t').next()).map(str::to_owned).collect())
}

pub fn ping(ns: &Netns, from: &str, to: &str) -> Result<String, String> {
    run(ns.command("ping").args(["-6", "-n", "-q", "-c", "1", "-W", "1", "-I", from, to]))
}

/// A control plane in `ns` on `listen` with its data in `dir/data` (with `roles` and `extra`
/// flags): the child, its URL and the admin token (when it wrote one).
pub fn control_plane(
    ns: &Netns,
    dir: &Path,
    data: &str,
    listen: &str,
    roles: &str,
    extra: &[&str],
) -> (ServerChild, String, String) {
    let data = dir.join(data);
    let mut args = vec![
        "server",
        "--role",
        roles,
        "--listen",
        listen,
        "--no-workspace-origin",
        "--data-dir",
        data.to_str().unwrap(),
        "--sqlite-sync",
        "normal",
    ];
    args.extend_from_slice(extra);
    let child = spawn_until(ns, dir, &args, &[], "vt server ready on");
    // Empty for a second control plane on the same database: the first wrote the admin token.
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap_or_default().trim().to_owned();
    (child, format!("http://{listen}"), admin)
}

/// `vt --server URL --token ADMIN ARGS -o json` in `ns`, in org acme, app web, env prod.
pub fn cli(ns: &Netns, dir: &Path, url: &str, admin: &str, args: &[&str]) -> serde_json::Value {
    try_cli(ns, dir, url, admin, args).unwrap_or_else(|e| panic!("vt {}: {e}", args.join(" ")))
}

/// [`cli`], its failure returned.
pub fn try_cli(ns: &Netns, dir: &Path, url: &str, admin: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut full = vec!["--server", url, "--token", admin];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let mut vt = vt_in(ns, dir, &full);
    vt.env("VT_ORG", "acme").env("VT_APP", "web").env("VT_ENV", "prod");
    let out = run(&mut vt)?;
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

/// `vt server --role agent --join URL[,URL2]` in `ns` as node `name` (`node-X`), enrolled with a
/// fresh token; its nftables table and WireGuard interface are `vtmX`. The child once ready,
/// and its interface.
pub fn join(ns: &Netns, dir: &Path, url: &str, admin: &str, name: &str, extra: &[&str]) -> (ServerChild, String) {
    // `url` may list several control planes (`--join URL1,URL2`): the token from the first.
    let first = url.split(',').next().unwrap_or(url);
    let token = cli(ns, dir, first, admin, &["node", "enroll-token", "create"])["secret"].as_str().unwrap().to_owned();
    let iface = format!("vtm{}", &name[5..]);
    let data = dir.join(name);
    let mut args = vec![
        "server",
        "--join",
        url,
        "--node-name",
        name,
        "--data-dir",
        data.to_str().unwrap(),
        "--nft-table",
        &iface,
        "--mesh-interface",
        &iface,
    ];
    if !extra.contains(&"--role") {
        args.extend_from_slice(&["--role", "agent"]);
    }
    args.extend_from_slice(extra);
    let ready = format!("vt node `{name}` ready");
    (spawn_until(ns, dir, &args, &[("VT_ENROLL_TOKEN", &token)], &ready), iface)
}

/// `replicas` instances of process `web`, each answering its instance id on port 8080 (busybox
/// httpd), checked over HTTP every second.
pub fn instance_id_server(replicas: u32) -> String {
    format!(
        r#"schema_version = 1

[processes.web]
command = ["/bin/sh", "-c", "mkdir -p /www && echo $VT_INSTANCE_ID > /www/index.html && exec httpd -f -p 8080 -h /www"]
ports = [{{ name = "http", port = 8080 }}]
resources = {{ cpu = 0.25, memory_mib = 96 }}
scaling = {{ min = {replicas}, max = {replicas} }}

[processes.web.healthcheck]
type = "http"
port = "http"
path = "/"
interval = "1s"
timeout = "500ms"
"#
    )
}

/// Through `vt`: org acme, app web, env prod, a busybox image pushed as `acme/web:v1`, a TCP
/// route to port 8080 of `web`, and `manifest` deployed (`--wait`). The image's reference and
/// the manifest's file.
pub fn deploy_busybox(vt: &dyn Fn(&[&str]) -> serde_json::Value, dir: &Path, manifest: &str) -> (String, PathBuf) {
    vt(&["org", "create", "acme"]);
    vt(&["app", "create", "web"]);
    vt(&["env", "create", "prod"]);
    let image = super::push_busybox(vt, dir, "v1", &[]);
    vt(&["route", "create", "--tcp", "--process", "web", "--backend-port", "8080"]);
    let file = dir.join("vt.toml");
    std::fs::write(&file, manifest).unwrap();
    vt(&["deploy", "--wait", "--image", &image, "--manifest", file.to_str().unwrap()]);
    (image, file)
}
