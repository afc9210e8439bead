//! The guest network end to end (issue #12, docs/network.md): real microVM guests (QEMU,
//! TCG) of a real `vt server` whose node lives in a network namespace this test creates,
//! with two more beside it:
//!
//! ```text
//!   guests ── taps ── [node] uplink 192.0.2.2, 2001:db8:1::2 ─── [inet] 192.0.2.1, 2001:db8:1::1
//!                       │                                       lo: 198.51.100.1, 2001:db8:100::1
//!                       lan0 10.99.0.1 ─── [lan] 10.99.0.2       (HTTP, and DNS for example.test)
//! ```
//!
//! The "internet" host (198.51.100.1) serves HTTP (answering with the client's address) and
//! DNS; the "LAN" host and the node itself serve HTTP too, so that a probe that fails there
//! fails because of the ruleset. Every guest runs busybox: an httpd on port 80 and a loop
//! that fetches its next script from the internet host and prints what it prints, which the
//! test reads with `vt logs`. Nothing here touches the host's own namespace: the server's
//! taps, nftables table and forwarding sysctls are the node namespace's.
//!
//! Skipped with a message without root, nftables, the guest kernel or busybox; fails instead
//! under `CI=true`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Run, ServerChild};
use vt_firewall::testing::Netns;

const INTERNET4: &str = "198.51.100.1";
const INTERNET6: &str = "2001:db8:100::1";
const NODE_UPLINK4: &str = "192.0.2.2";
const NODE_UPLINK6: &str = "2001:db8:1::2";
const NODE_LAN4: &str = "10.99.0.1";
const LAN_HOST: &str = "10.99.0.2";

/// The program of the hosts in the namespaces (not a test: `network_helper` runs it there).
/// Serves `GET /whoami` (the client's address), `GET /big` (4 MiB) and the files of
/// `VT_NET_HELPER_DIR` on port 80 (IPv4 and IPv6), keeps the body of `POST /report/NAME`
/// as the file `report-NAME` there (what a guest printed), and with `VT_NET_HELPER_DNS` an
/// authoritative `example.test.` on that address's port 53.
#[test]
#[ignore = "the hosts of `guests_reach_the_internet_and_only_their_orgs_instances`, run in its namespaces"]
fn network_helper() {
    let Ok(dir) = std::env::var("VT_NET_HELPER_DIR") else { return };
    let dns = std::env::var("VT_NET_HELPER_DNS").ok();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let _dns = match dns {
            Some(addr) => Some(dns_server(addr.parse().unwrap()).await),
            None => None,
        };
        let l = tokio::net::TcpListener::bind("[::]:80").await.unwrap();
        println!("ready");
        loop {
            let Ok((s, peer)) = l.accept().await else { continue };
            let dir = PathBuf::from(&dir);
            tokio::spawn(async move {
                let _ = serve(s, peer, &dir).await;
            });
        }
    });
}

async fn serve(mut s: tokio::net::TcpStream, peer: SocketAddr, dir: &Path) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
        let m = s.read(&mut buf[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
    }
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if let Some(name) = path.strip_prefix("/report/") {
        let end = head.find("\r\n\r\n").map_or(n, |i| i + 4);
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[end..n].to_vec();
        while body.len() < length {
            let mut chunk = vec![0u8; length - body.len()];
            let m = s.read(&mut chunk).await?;
            if m == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..m]);
        }
        let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        std::fs::write(dir.join(format!("report-{name}")), body)?;
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").await?;
        return s.shutdown().await;
    }
    let body: Option<Vec<u8>> = match path.as_str() {
        "/whoami" => {
            let ip = match peer.ip() {
                IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
                v4 => v4,
            };
            Some(format!("{ip}\n").into_bytes())
        }
        "/big" => Some(vec![b'x'; 4 << 20]),
        p => std::fs::read(dir.join(p.trim_start_matches('/').replace("..", ""))).ok(),
    };
    let head = match &body {
        Some(b) => format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len()),
        None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
    };
    s.write_all(head.as_bytes()).await?;
    if let Some(b) = body {
        s.write_all(&b).await?;
    }
    s.shutdown().await
}

/// `www.example.test.` A 198.51.100.1 and AAAA 2001:db8:100::1, on `ip`:53 (UDP and TCP).
async fn dns_server(ip: IpAddr) -> hickory_server::server::Server<hickory_server::zone_handler::Catalog> {
    let www = [("www.example.test.", INTERNET4.parse().unwrap()), ("www.example.test.", INTERNET6.parse().unwrap())];
    vt_dns::testing::authoritative(SocketAddr::new(ip, 53), "example.test.", &www).await.0
}

/// A helper host running in a namespace; killed when dropped.
struct Helper(std::process::Child);

impl Helper {
    fn start(ns: &Netns, dir: &Path, dns: Option<&str>) -> Helper {
        std::fs::create_dir_all(dir).unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut c = ns.command(exe.to_str().unwrap());
        c.args(["--exact", "network_helper", "--ignored", "--nocapture", "--test-threads=1"])
            .env("VT_NET_HELPER_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(d) = dns {
            c.env("VT_NET_HELPER_DNS", d);
        }
        let mut child = c.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the helper in {} did not start", ns.name);
            if line.trim_end().ends_with("ready") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Helper(child)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills the VMs of the data directory it names when dropped (a failed test leaves none).
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().into_owned();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
                .into_owned();
            if cmd.starts_with("qemu-system") && cmd.contains(&needle) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
    }
}

/// The three namespaces, addressed and routed (module docs).
fn topology() -> Option<(Netns, Netns, Netns)> {
    let node = Netns::create_or_skip("node")?;
    let inet = Netns::create("inet").unwrap();
    let lan = Netns::create("lan").unwrap();
    node.veth("uplink", &inet, "rt").unwrap();
    node.veth("lan0", &lan, "eth0").unwrap();
    for (ns, args) in [
        (&node, &["addr", "add", "192.0.2.2/24", "dev", "uplink"][..]),
        (&node, &["-6", "addr", "add", "2001:db8:1::2/64", "dev", "uplink", "nodad"]),
        (&node, &["addr", "add", "10.99.0.1/24", "dev", "lan0"]),
        (&node, &["route", "add", "default", "via", "192.0.2.1"]),
        (&node, &["-6", "route", "add", "default", "via", "2001:db8:1::1"]),
        (&inet, &["addr", "add", "192.0.2.1/24", "dev", "rt"]),
        (&inet, &["-6", "addr", "add", "2001:db8:1::1/64", "dev", "rt", "nodad"]),
        (&inet, &["addr", "add", "198.51.100.1/32", "dev", "lo"]),
        (&inet, &["-6", "addr", "add", "2001:db8:100::1/128", "dev", "lo"]),
        (&lan, &["addr", "add", "10.99.0.2/24", "dev", "eth0"]),
        (&lan, &["route", "add", "default", "via", "10.99.0.1"]),
    ] {
        ns.ip(args).unwrap_or_else(|e| panic!("{e}"));
    }
    // The node resolves through the internet's resolver (`ip netns exec` binds this over /etc/resolv.conf).
    node.etc_file("resolv.conf", &format!("nameserver {INTERNET4}\n")).unwrap();
    Some((node, inet, lan))
}

/// `vt ARGS` run in the node's namespace, isolated from the user's settings.
fn vt_in(ns: &Netns, dir: &Path, args: &[&str]) -> Command {
    let mut c = ns.command(env!("CARGO_BIN_EXE_vt"));
    c.args(args)
        .current_dir(dir)
        .env("VT_CONFIG", dir.join("config.toml"))
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME");
    for k in [
        "VT_SERVER",
        "VT_TOKEN",
        "VT_ORG",
        "VT_APP",
        "VT_ENV",
        "VT_DATA_DIR",
        "VT_DATABASE_URL",
        "VT_NO_EGRESS",
        "VT_NFT_TABLE",
    ] {
        c.env_remove(k);
    }
    c
}

/// `vt server` in the node's namespace with its defaults (egress on, table `vt`): the
/// child and its URL once ready; its output is kept in `log`.
fn start_server(ns: &Netns, dir: &Path, data: &Path, log: &Arc<Mutex<Vec<u8>>>) -> (ServerChild, String) {
    let mut child = vt_in(
        ns,
        dir,
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--workspace-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--sqlite-sync",
            "normal",
            "--no-ingress",
            "--node-name",
            "node-1",
        ],
    )
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = Vec::new();
    let url = loop {
        line.clear();
        let n = stderr.read_until(b'\n', &mut line).unwrap();
        log.lock().unwrap().extend_from_slice(&line);
        assert!(n > 0, "server exited before it was ready: {}", String::from_utf8_lossy(&log.lock().unwrap()));
        if let Some(url) = String::from_utf8_lossy(&line).trim_end().strip_prefix("vt server ready on ") {
            break url.to_owned();
        }
    };
    let out = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            out.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (ServerChild(child), url)
}

/// The probe loop every guest runs: its script from the internet host, run once per round.
fn guest_command(me: &str) -> String {
    format!(
        "mkdir -p /tmp/w && echo {me}-here > /tmp/w/index.html && head -c 4194304 /dev/zero > /tmp/w/big \
         && httpd -p 80 -h /tmp/w; last=; \
         while true; do \
           if timeout 3 wget -q -O /tmp/cmd http://{INTERNET4}/cmd-{me} 2>/dev/null; then \
             r=$(head -n 1 /tmp/cmd | cut -c3-); \
             if [ \"$r\" != \"$last\" ]; then last=$r; sh /tmp/cmd 2>&1 | sed \"s/^/@$r /\" | tee /tmp/out; \
               timeout 3 wget -q -O /dev/null --post-file /tmp/out http://{INTERNET4}/report/{me}; fi; \
           fi; sleep 1; \
         done"
    )
}

fn manifest(processes: &[(&str, bool)]) -> String {
    let mut m = String::from("schema_version = 1\n");
    for (name, isolated) in processes {
        m.push_str(&format!(
            "\n[processes.{name}]\ncommand = [\"/bin/sh\", \"-c\", {:?}]\nresources = {{ cpu = 0.25, memory_mib = 128 }}\n",
            guest_command(name)
        ));
        if *isolated {
            m.push_str("network = \"isolated\"\n");
        }
    }
    m
}

struct Cluster<'a> {
    ns: &'a Netns,
    dir: PathBuf,
    data: PathBuf,
    url: String,
}

impl Cluster<'_> {
    fn vt(&self, org: &str, args: &[&str]) -> Run {
        let mut c = vt_in(self.ns, &self.dir, args);
        c.env("VT_SERVER", &self.url)
            .env("VT_DATA_DIR", &self.data)
            .env("VT_ORG", org)
            .env("VT_APP", "app")
            .env("VT_ENV", "prod");
        let r = Run::of(c.output().unwrap(), &self.dir);
        assert_eq!(r.code, 0, "{args:?}: {}", r.text);
        r
    }

    /// Org `org` with app `app`, env `prod`, the busybox image and a deploy of `processes`, one instance each.
    fn deploy(&self, org: &str, processes: &[(&str, bool)]) {
        use vt_image::layout::{write_image, LayerFormat};
        self.vt(org, &["org", "create", org]);
        self.vt(org, &["app", "create", "app"]);
        self.vt(org, &["env", "create", "prod"]);
        let build = self.dir.join(format!("build-{org}"));
        vt_image::testing::busybox_rootfs(&build.join("rootfs")).unwrap();
        for applet in ["httpd", "nslookup", "ping", "sed", "head", "tail", "cut", "grep", "tr", "timeout", "time"] {
            std::os::unix::fs::symlink("busybox", build.join("rootfs/bin").join(applet)).unwrap();
        }
        let img =
            write_image(&build.join("rootfs"), &build.join("layout"), Default::default(), LayerFormat::Uncompressed)
                .unwrap();
        let repo = format!("{org}/app");
        self.vt(org, &["image", "push", build.join("layout").to_str().unwrap(), "--repo", &repo, "--tag", "v1"]);
        let m = self.dir.join(format!("{org}.toml"));
        std::fs::write(&m, manifest(processes)).unwrap();
        let image = format!("{repo}@{}", img.manifest.digest);
        self.vt(org, &["deploy", "--image", &image, "--manifest", m.to_str().unwrap()]);
        let scale: Vec<String> = processes.iter().map(|(p, _)| format!("{p}=1")).collect();
        let mut args = vec!["scale"];
        args.extend(scale.iter().map(String::as_str));
        self.vt(org, &args);
    }

    /// The org's running instances by process: (id, IPv6 address).
    fn running(&self, org: &str) -> BTreeMap<String, (String, Ipv6Addr)> {
        let r = self.vt(org, &["instances", "-o", "json"]);
        r.json()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|i| i["status"] == "running")
            .filter_map(|i| {
                let addr = i["address"].as_str()?.parse().ok()?;
                Some((i["process"].as_str()?.to_owned(), (i["id"].as_str()?.to_owned(), addr)))
            })
            .collect()
    }

    /// The lines the guest `id` printed for `round`, as `key → rest`, once `done` is among them.
    fn results(&self, org: &str, id: &str, round: u32, secs: u64) -> BTreeMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let prefix = format!("@{round} ");
        loop {
            let r = self.vt(org, &["logs", "--instance", id, "-o", "json"]);
            let lines: Vec<String> = r
                .stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["text"].as_str()?.strip_prefix(&prefix).map(str::to_owned))
                .collect();
            if lines.iter().any(|l| l == "done") {
                return lines
                    .iter()
                    .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_owned(), v.trim().to_owned())))
                    .collect();
            }
            assert!(Instant::now() < deadline, "{id} never finished round {round}: {}", r.text);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// What guest process `me` reported for `round` to the internet host (its `/report/`), as
/// `key → rest`, once `done` is among it: the guests' channel that survives a restart of the
/// server, whose agent does not capture an adopted VM's output.
fn reported(dir: &Path, me: &str, round: u32, secs: u64) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let prefix = format!("@{round} ");
    loop {
        let text = std::fs::read_to_string(dir.join(format!("report-{me}"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(&prefix)).collect();
        if lines.contains(&"done") {
            return lines
                .iter()
                .filter_map(|l| l.split_once(' '))
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect();
        }
        assert!(Instant::now() < deadline, "{me} never reported round {round}: {text}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One probe line: `KEY <what wget got, or FAIL>`.
fn fetch(key: &str, url: &str) -> String {
    // `timeout`, not wget's `-T` (which crashes Debian 12's static busybox).
    format!("echo {key} $(timeout 3 wget -q -O - '{url}' 2>/dev/null || echo FAIL)\n")
}

/// One lookup line: `KEY <1 if NAME resolved to WANT, else 0>`. Tried for up to 10 s: a new
/// instance's name appears at its node agent's next resync, and the first forwarded query
/// of a cold cache may be slow under TCG.
fn lookup(key: &str, name: &str, want: &str) -> String {
    format!(
        "n=0; for i in 1 2 3 4 5 6 7 8 9 10; do n=$(nslookup {name} 2>&1 | grep -c '{want}'); \
         [ \"$n\" -gt 0 ] && break; sleep 1; done; echo {key} $n\n"
    )
}

fn url6(a: impl std::fmt::Display, path: &str) -> String {
    format!("http://[{a}]{path}")
}

fn nft_table(ns: &Netns) -> Option<String> {
    ns.nft(&["list", "table", "inet", "vt"]).ok()
}

/// The set `name`'s elements in a listing (the text between `elements = {` and `}`).
fn set_elements(listing: &str, name: &str) -> String {
    let after = listing.split(&format!("set {name} {{")).nth(1).unwrap_or_default();
    let body = after.split("\n\t}").next().unwrap_or_default();
    body.split_once("elements = {").map(|(_, e)| e.split('}').next().unwrap_or_default().to_owned()).unwrap_or_default()
}

#[test]
fn guests_reach_the_internet_and_only_their_orgs_instances() {
    if vt_runtime::testing::guest_or_skip("the guest network test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let Some((node, inet, lan)) = topology() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let cmds = dir.join("www-inet");
    let _inet_host = Helper::start(&inet, &cmds, Some(INTERNET4));
    let _lan_host = Helper::start(&lan, &dir.join("www-lan"), None);
    let _node_host = Helper::start(&node, &dir.join("www-node"), None);
    let data = dir.join("data");
    let _reaper = Reaper(data.clone());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (mut server, url) = start_server(&node, &dir, &data, &log);
    let mut c = Cluster { ns: &node, dir: dir.clone(), data: data.clone(), url };
    assert!(nft_table(&node).is_none(), "no table before any instance");

    // Org 1: `web` (B), `probe` (A) and `ws` (W, isolated: the workspace stand-in). Org 2: `spy` (C).
    c.deploy("one", &[("web", false), ("probe", false), ("ws", true)]);
    c.deploy("two", &[("spy", false)]);
    let deadline = Instant::now() + Duration::from_secs(300);
    let (one, two) = loop {
        let (one, two) = (c.running("one"), c.running("two"));
        if one.len() == 3 && two.len() == 1 {
            break (one, two);
        }
        assert!(Instant::now() < deadline, "instances not running: {one:?} {two:?}");
        std::thread::sleep(Duration::from_secs(1));
    };
    let (a, b, w, cc) = (&one["probe"], &one["web"], &one["ws"], &two["spy"]);
    let seg = b.1.segments();
    let gw6 = Ipv6Addr::new(seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 1);
    let gw4 = Ipv4Addr::new(100, 64, 0, 1);
    eprintln!("A {a:?} B {b:?} W {w:?} C {cc:?}; gateways {gw6} {gw4}");

    // Round 1: what each guest reaches.
    let common = |round: u32| {
        let mut s = format!("# {round}\n");
        s += &fetch("internet4", &format!("http://{INTERNET4}/whoami"));
        s += &fetch("internet6", &url6(INTERNET6, "/whoami"));
        s += &fetch("lan", &format!("http://{LAN_HOST}/whoami"));
        s += &fetch("host-uplink4", &format!("http://{NODE_UPLINK4}/whoami"));
        s += &fetch("host-uplink6", &url6(NODE_UPLINK6, "/whoami"));
        s += &fetch("host-lan", &format!("http://{NODE_LAN4}/whoami"));
        s += &fetch("host-gw6", &url6(gw6, "/whoami"));
        s += &fetch("host-gw4", &format!("http://{gw4}/whoami"));
        s += &fetch("to-a", &url6(a.1, "/"));
        s += &fetch("to-b", &url6(b.1, "/"));
        s += &fetch("to-c", &url6(cc.1, "/"));
        s += &lookup("name-b", "web.prod.app.internal", &b.1.to_string());
        s += &lookup("name-public", "www.example.test", "198.51.100.1");
        // After the lookup above has seen the name: B by its private name, over HTTP.
        s += &fetch("to-b-by-name", "http://web.prod.app.internal/");
        s
    };
    let r1 = common(1);
    let a_script = format!(
        "{r1}echo ping-nat $(ping -c 20 -i 0.2 -q {INTERNET4} | tail -n 1)\n\
         echo ping-host $(ping -c 20 -i 0.2 -q {gw4} | tail -n 1)\n\
         echo tcp-nat $({{ time -p wget -q -O /dev/null http://{INTERNET4}/big; }} 2>&1 | grep real | cut -d' ' -f2)\n\
         echo tcp-routed $({{ time -p wget -q -O /dev/null {b_big}; }} 2>&1 | grep real | cut -d' ' -f2)\n\
         echo done\n",
        b_big = url6(b.1, "/big")
    );
    std::fs::write(cmds.join("cmd-probe"), a_script).unwrap();
    for p in ["web", "ws", "spy"] {
        std::fs::write(cmds.join(format!("cmd-{p}")), format!("{r1}echo done\n")).unwrap();
    }
    let ra = c.results("one", &a.0, 1, 240);
    let rb = c.results("one", &b.0, 1, 240);
    let rw = c.results("one", &w.0, 1, 240);
    let rc = c.results("two", &cc.0, 1, 240);
    eprintln!("A: {ra:#?}\nB: {rb:#?}\nW: {rw:#?}\nC: {rc:#?}");
    eprintln!(
        "NAT path vs the host (guest ping RTT min/avg/max): {} | {}",
        ra.get("ping-nat").cloned().unwrap_or_default(),
        ra.get("ping-host").cloned().unwrap_or_default()
    );
    eprintln!(
        "4 MiB over HTTP from guest A: through the NAT to the internet host {} s | routed to B, no NAT {} s",
        ra.get("tcp-nat").cloned().unwrap_or_default(),
        ra.get("tcp-routed").cloned().unwrap_or_default()
    );

    let get = |r: &BTreeMap<String, String>, k: &str| r.get(k).cloned().unwrap_or_else(|| "(missing)".into());
    for (who, r) in [("A", &ra), ("B", &rb), ("W", &rw), ("C", &rc)] {
        // The internet over IPv4 and IPv6, under the node's uplink address (NAT).
        assert_eq!(get(r, "internet4"), NODE_UPLINK4, "{who}: {r:?}");
        assert_eq!(get(r, "internet6"), NODE_UPLINK6, "{who}: {r:?}");
        // Never the LAN nor any of the host's own addresses (the resolver excepted).
        for k in ["lan", "host-uplink4", "host-uplink6", "host-lan", "host-gw6", "host-gw4"] {
            assert_eq!(get(r, k), "FAIL", "{who} reached {k}: {r:?}");
        }
        // Public names through the node's resolver, forwarded to the internet's.
        assert_eq!(get(r, "name-public"), "1", "{who}: {r:?}");
    }
    // Org 1's private network: A and B reach each other, and A finds B by name.
    assert_eq!(get(&ra, "to-b"), "web-here", "{ra:?}");
    assert_eq!(get(&rb, "to-a"), "probe-here", "{rb:?}");
    assert_eq!(get(&ra, "name-b"), "1", "{ra:?}");
    assert_eq!(get(&ra, "to-b-by-name"), "web-here", "{ra:?}");
    assert_eq!(get(&rc, "to-b-by-name"), "FAIL", "{rc:?}");
    // Org 2 reaches neither, and has no such name.
    assert_eq!((get(&rc, "to-a"), get(&rc, "to-b"), get(&rc, "name-b")), ("FAIL".into(), "FAIL".into(), "0".into()));
    // Nor does org 1 reach org 2.
    assert_eq!((get(&ra, "to-c"), get(&rb, "to-c")), ("FAIL".into(), "FAIL".into()));
    // The isolated instance reaches no instance, is reached by none, and has no private names.
    assert_eq!((get(&rw, "to-a"), get(&rw, "to-b"), get(&rw, "name-b")), ("FAIL".into(), "FAIL".into(), "0".into()));

    // SIGKILL of the server: the VMs and their rules stay; the restarted server rebuilds the
    // same ruleset from its records before it starts anything, and isolation holds throughout.
    let before = nft_table(&node).expect("the table while instances run");
    let taps = set_elements(&before, "taps");
    assert_eq!(taps.matches("\"vt").count(), 4, "{before}");
    server.kill().unwrap();
    let _ = server.wait();
    assert_eq!(nft_table(&node).map(|t| set_elements(&t, "taps")), Some(taps.clone()), "the kernel keeps the table");
    let (server2, url) = start_server(&node, &dir, &data, &log);
    c.url = url;
    let deadline = Instant::now() + Duration::from_secs(60);
    while String::from_utf8_lossy(&log.lock().unwrap()).matches("adopting a VM").count() < 4 {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = nft_table(&node).expect("the table after the restart");
    assert_eq!(set_elements(&after, "taps"), taps, "{after}");
    assert_eq!(set_elements(&after, "org_peers"), set_elements(&before, "org_peers"), "{after}");
    let r2 = format!(
        "# 2\n{}{}echo done\n",
        fetch("to-b", &url6(b.1, "/")),
        fetch("internet4", &format!("http://{INTERNET4}/whoami"))
    );
    std::fs::write(cmds.join("cmd-probe"), &r2).unwrap();
    std::fs::write(cmds.join("cmd-spy"), &r2).unwrap();
    let (ra2, rc2) = (reported(&cmds, "probe", 2, 120), reported(&cmds, "spy", 2, 120));
    assert_eq!((get(&ra2, "to-b"), get(&ra2, "internet4")), ("web-here".into(), NODE_UPLINK4.into()), "{ra2:?}");
    assert_eq!((get(&rc2, "to-b"), get(&rc2, "internet4")), ("FAIL".into(), NODE_UPLINK4.into()), "{rc2:?}");

    // A clean shutdown stops every VM and leaves nothing of vt's in the ruleset.
    let mut server2 = server2;
    let _ = Command::new("kill").args(["-TERM", &server2.id().to_string()]).status();
    let status = server2.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", String::from_utf8_lossy(&log.lock().unwrap()));
    let tables = node.nft(&["list", "tables"]).unwrap();
    assert!(tables.trim().is_empty(), "nothing of vt's left: {tables}");
    drop(server);
}
