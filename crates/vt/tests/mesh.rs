//! The mesh with real `vt server` processes (docs/nodes.md, "The mesh"): two network
//! namespaces this test creates, joined by a veth pair; a control plane in the first; a
//! `vt server --role agent --join` node in each (their addresses found toward the control
//! plane, their WireGuard interfaces made by their agents: the kernel's or boringtun). Each
//! node's agent follows its peer list and configures its interface; an address of node A's /64
//! is reached from node B's /64 through the tunnel; `vt node revoke node-b` takes B out of A's
//! interface; a stopped node leaves no interface. Nothing outside the namespaces is touched.
//!
//! A second test deploys two instances over the nodes and reaches node B's through the
//! ingress beside the control plane and through node A's own edge: through the tunnel, let in
//! by B's rules.
//!
//! Needs root, `ping`, `wg` and, without a WireGuard kernel module, `boringtun-cli`
//! (`scripts/mesh-tools.sh`). Skipped with a message without them, except under `CI=true`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ServerChild;
use vt_firewall::testing::{run, Netns};

fn ready() -> Option<()> {
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
    assert!(std::env::var("CI").as_deref() != Ok("true"), "the mesh test: {why}");
    eprintln!("SKIPPED: the mesh test: {why}");
    None
}

/// `vt ARGS` in namespace `ns`, isolated like `common::vt_isolated`.
fn vt_in(ns: &Netns, dir: &Path, args: &[&str]) -> Command {
    let mut c = ns.command(env!("CARGO_BIN_EXE_vt"));
    c.args(args).current_dir(dir).env("VT_CONFIG", dir.join("config.toml")).env("HOME", dir);
    for k in ["VT_SERVER", "VT_TOKEN", "VT_ORG", "VT_APP", "VT_ENV", "VT_DATA_DIR", "VT_DATABASE_URL", "RUST_LOG"] {
        c.env_remove(k);
    }
    c.env("VT_NO_EGRESS", "true");
    c
}

/// Start `vt ARGS` in `ns` (with `env`) and wait for a stderr line containing `ready`.
fn spawn_until(ns: &Netns, dir: &Path, args: &[&str], env: &[(&str, &str)], ready: &str) -> ServerChild {
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

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The peers' public keys on `iface` in `ns` (`None`: no such interface).
fn peers(ns: &Netns, iface: &str) -> Option<Vec<String>> {
    let dump = run(ns.command("wg").args(["show", iface, "dump"])).ok()?;
    Some(dump.lines().skip(1).filter_map(|l| l.split('\t').next()).map(str::to_owned).collect())
}

fn ping(ns: &Netns, from: &str, to: &str) -> Result<String, String> {
    run(ns.command("ping").args(["-6", "-n", "-q", "-c", "1", "-W", "1", "-I", from, to]))
}

/// A control plane in `ns` on `listen` (with `roles` and `extra` flags): the child, its URL
/// and the admin token.
fn control_plane(ns: &Netns, dir: &Path, listen: &str, roles: &str, extra: &[&str]) -> (ServerChild, String, String) {
    let data = dir.join("cp");
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
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    (child, format!("http://{listen}"), admin)
}

/// `vt --server URL --token ADMIN ARGS -o json` in `ns`, in org acme, app web, env prod.
fn cli(ns: &Netns, dir: &Path, url: &str, admin: &str, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--server", url, "--token", admin];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let mut vt = vt_in(ns, dir, &full);
    vt.env("VT_ORG", "acme").env("VT_APP", "web").env("VT_ENV", "prod");
    let out = run(&mut vt).unwrap_or_else(|e| panic!("vt {}: {e}", args.join(" ")));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vt {}: {e}: {out}", args.join(" ")))
}

/// `vt server --role agent --join URL` in `ns` as node `name` (`node-X`), enrolled with a
/// fresh token; its nftables table and WireGuard interface are `vtmX`. The child once ready,
/// and its interface.
fn join(ns: &Netns, dir: &Path, url: &str, admin: &str, name: &str, extra: &[&str]) -> (ServerChild, String) {
    let token = cli(ns, dir, url, admin, &["node", "enroll-token", "create"])["secret"].as_str().unwrap().to_owned();
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

/// Two namespaces joined by a veth pair: `a` at 10.78.N.1, `b` at 10.78.N.2.
fn two_hosts(what: &str, n: u8) -> Option<(Netns, Netns)> {
    let a = Netns::create_or_skip(&format!("{what}a"))?;
    let b = Netns::create(&format!("{what}b")).unwrap();
    a.veth(&format!("{what}va"), &b, &format!("{what}vb")).unwrap();
    a.ip(&["addr", "add", &format!("10.78.{n}.1/24"), "dev", &format!("{what}va")]).unwrap();
    b.ip(&["addr", "add", &format!("10.78.{n}.2/24"), "dev", &format!("{what}vb")]).unwrap();
    Some((a, b))
}

#[test]
fn joined_nodes_mesh_and_a_revoked_one_is_cut_off() {
    let Some(()) = ready() else { return };
    let Some((a, b)) = two_hosts("vtmesh", 1) else { return };
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();

    let listen = format!("10.78.1.1:{}", common::free_port());
    let (_cp, url, admin) = control_plane(&a, dir.path(), &listen, "control-plane", &[]);
    let cli = |args: &[&str]| cli(&a, dir.path(), &url, &admin, args);
    let (node_a, iface_a) = join(&a, dir.path(), &url, &admin, "node-a", &[]);
    let (node_b, iface_b) = join(&b, dir.path(), &url, &admin, "node-b", &[]);

    // Each registered where the other reaches it (found toward the control plane), and port 51820.
    let na = cli(&["node", "get", "node-a"]);
    let nb = cli(&["node", "get", "node-b"]);
    assert_eq!((na["address"].as_str(), na["wireguard_port"].as_u64()), (Some("10.78.1.1"), Some(51820)), "{na}");
    assert_eq!((nb["address"].as_str(), nb["wireguard_port"].as_u64()), (Some("10.78.1.2"), Some(51820)), "{nb}");
    // Each agent gives its interface the other as its one peer.
    let key_of = |n: &serde_json::Value| n["wireguard_public_key"].as_str().unwrap().to_owned();
    wait_for("each node has the other as its peer", Duration::from_secs(20), || {
        peers(&a, &iface_a) == Some(vec![key_of(&nb)]) && peers(&b, &iface_b) == Some(vec![key_of(&na)])
    });
    let mtu = run(a.command("cat").arg(format!("/sys/class/net/{iface_a}/mtu"))).unwrap();
    assert_eq!(mtu.trim(), "1420");

    // An "instance" address of each node's /64 (the namespace's loopback holds it).
    let inst = |n: &serde_json::Value| n["subnet"].as_str().unwrap().replace("::/64", "::5");
    let (inst_a, inst_b) = (inst(&na), inst(&nb));
    a.ip(&["-6", "addr", "add", &format!("{inst_a}/128"), "dev", "lo", "nodad"]).unwrap();
    b.ip(&["-6", "addr", "add", &format!("{inst_b}/128"), "dev", "lo", "nodad"]).unwrap();
    wait_for("node B's /64 reaches node A's through the tunnel", Duration::from_secs(15), || {
        ping(&b, &inst_b, &inst_a).is_ok()
    });

    // Revoked: node B leaves A's interface, and its packets are refused.
    cli(&["node", "revoke", "node-b"]);
    wait_for("node B leaves node A's peers", Duration::from_secs(20), || peers(&a, &iface_a) == Some(vec![]));
    assert!(ping(&b, &inst_b, &inst_a).is_err(), "a revoked node still reaches another node's instances");

    // A node that stops takes its interface (and its boringtun) with it.
    for (child, ns, iface) in [(node_a, &a, &iface_a), (node_b, &b, &iface_b)] {
        let mut child = child;
        run(Command::new("kill").args(["-TERM", &child.id().to_string()])).unwrap();
        child.wait().unwrap();
        assert_eq!(peers(ns, iface), None, "{iface} outlived its node");
    }
    eprintln!("mesh with vt server processes: {:?}", began.elapsed());
}

const SPREAD: &str = r#"schema_version = 1

[processes.web]
command = ["/bin/sh", "-c", "mkdir -p /www && echo $VT_INSTANCE_ID > /www/index.html && exec httpd -f -p 8080 -h /www"]
ports = [{ name = "http", port = 8080 }]
resources = { cpu = 0.5, memory_mib = 128 }
scaling = { min = 2, max = 2 }

[processes.web.healthcheck]
type = "http"
port = "http"
path = "/"
interval = "1s"
timeout = "500ms"
"#;

/// The ingress beside the control plane (namespace A) and node A's own edge (`--role
/// agent,edge`, following the control plane over HTTP) serve a route from instances on both
/// nodes: node A's through its tap, node B's (namespace B) through the WireGuard mesh, where
/// B's rules let A's overlay address in on its interface (docs/network.md).
#[test]
fn the_ingress_reaches_instances_on_another_node_through_the_mesh() {
    let Some(()) = ready() else { return };
    if vt_runtime::testing::networked_guest_or_skip("the mesh ingress test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let Some((a, b)) = two_hosts("vtmi", 2) else { return };
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ingress_port = common::free_port().to_string();
    let listen = format!("10.78.2.1:{}", common::free_port());
    let range = format!("{ingress_port}-{ingress_port}");
    let extra = ["--ingress-listen", "10.78.2.1", "--ingress-tcp-ports", &range];
    let (cp, url, admin) = control_plane(&a, dir.path(), &listen, "control-plane,edge", &extra);
    let cli = |args: &[&str]| cli(&a, dir.path(), &url, &admin, args);
    // Node A also runs an edge (`--role agent,edge`), on a second address of namespace A.
    a.ip(&["addr", "add", "10.78.2.3/24", "dev", "vtmiva"]).unwrap();
    let (node_a, _) =
        join(&a, dir.path(), &url, &admin, "node-a", &["--role", "agent,edge", "--ingress-listen", "10.78.2.3"]);
    let (node_b, iface_b) = join(&b, dir.path(), &url, &admin, "node-b", &[]);

    cli(&["org", "create", "acme"]);
    cli(&["app", "create", "web"]);
    cli(&["env", "create", "prod"]);
    let build = dir.path().join("build");
    vt_image::testing::busybox_rootfs(&build.join("rootfs")).unwrap();
    let img = vt_image::layout::write_image(
        &build.join("rootfs"),
        &build.join("layout"),
        Default::default(),
        vt_image::layout::LayerFormat::Uncompressed,
    )
    .unwrap();
    cli(&["image", "push", build.join("layout").to_str().unwrap(), "--repo", "acme/web", "--tag", "v1"]);
    cli(&["route", "create", "--tcp", "--process", "web", "--backend-port", "8080"]);
    let manifest = dir.path().join("vt.toml");
    std::fs::write(&manifest, SPREAD).unwrap();
    let image = format!("acme/web@{}", img.manifest.digest);
    cli(&["deploy", "--wait", "--image", &image, "--manifest", manifest.to_str().unwrap()]);

    // One instance on each node (the scheduler spreads a process over equal nodes).
    let node_b_id = cli(&["node", "get", "node-b"])["id"].clone();
    let instances = cli(&["instances"]);
    let running: Vec<&serde_json::Value> =
        instances["items"].as_array().unwrap().iter().filter(|i| i["status"] == "running").collect();
    assert_eq!(running.len(), 2, "{instances}");
    let on_b: Vec<&str> =
        running.iter().filter(|i| i["node_id"] == node_b_id).map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(on_b.len(), 1, "one instance on node B: {instances}");

    // Through the ingress beside the control plane and through node A's own edge (which
    // follows the control plane over HTTP), both answer; node B's through the tunnel.
    for edge in ["10.78.2.1", "10.78.2.3"] {
        let mut seen = std::collections::BTreeSet::new();
        let target = format!("http://{edge}:{ingress_port}/");
        wait_for(&format!("both instances answer through the ingress on {edge}"), Duration::from_secs(60), || {
            if let Ok(body) = run(a.command("curl").args(["-sf", "--max-time", "2", &target])) {
                seen.insert(body.trim().to_owned());
            }
            seen.len() == 2
        });
        assert!(seen.contains(on_b[0]), "node B's instance answered: {seen:?}");
    }
    // Node A's edge reported its listener (under its node name) to the control plane.
    wait_for("node A's listener is reported", Duration::from_secs(20), || {
        let routes = cli(&["route", "list"]);
        routes["items"][0]["listeners"]
            .as_array()
            .is_some_and(|ls| ls.iter().any(|l| l["node"] == "node-a" && l["state"] == "listening"))
    });
    // It came in through B's WireGuard interface, let in by the mesh's rule (its counter grew).
    let chain = run(b.command("nft").args(["list", "chain", "inet", &iface_b, "to_instance"])).unwrap();
    let rule = chain.lines().find(|l| l.contains("@mesh_nodes")).unwrap_or_else(|| panic!("{chain}"));
    assert!(rule.contains(&format!("iifname \"{iface_b}\"")) && !rule.contains("packets 0 "), "{rule}");

    for child in [node_a, node_b, cp] {
        let mut child = child;
        run(Command::new("kill").args(["-TERM", &child.id().to_string()])).unwrap();
        child.wait().unwrap();
    }
    eprintln!("the ingress through the mesh: {:?}", began.elapsed());
}
