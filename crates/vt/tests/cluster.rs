//! Many nodes on one machine (docs/nodes.md, "A cluster on one machine"): a PostgreSQL, two
//! control planes sharing it in a "hub" network namespace, and three nodes, each a `vt server
//! --role agent --join` in its own namespace with its own uplink (a veth on the hub's bridge)
//! and its own data directory, connected only by those links and the WireGuard mesh over them.
//! The control planes share one registry directory (`--registry-dir`, standing for a shared
//! filesystem); the nodes join both (`--join URL1,URL2`) and follow the first, the leader.
//!
//! In one run: three enrollments (timed); a deploy of three instances spread over the nodes (the
//! image pushed through the standby, pulled through the leader); exec into an instance on node 2
//! through the standby (each node keeps a channel to both); a TCP route on node 1's own ingress
//! (`--role agent,edge`) serving from the instances on nodes 2 and 3 through the mesh; node 3's
//! agent SIGKILLed with its VMs and its instance placed again within the heartbeat timeout and a
//! boot; the leading control plane SIGKILLed, the lease moving to the other, the nodes turning to
//! it, and a deploy of an image pushed through the dead one completing through it, with exec into
//! the new instance on node 2; a used enrollment token refused; node 3 revoked and gone from the
//! others' WireGuard peers. Printed: enrollment → ready, the overlay's ping RTT and TCP throughput
//! between two nodes against their direct link, and the lease's failover time.
//!
//! Needs root, `VT_TEST_DATABASE_SOCKET_URL` (scripts/test-postgres.sh), the mesh's tools and a
//! guest kernel; skipped with a message without them, except under `CI=true`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{
    cli, control_plane, deploy_busybox, instance_id_server, join, mesh_tools_or_skip, try_cli, wait_for, wg_peers,
};
use common::ServerChild;
use serde_json::Value;
use vt_firewall::testing::{run, Netns};

fn database_url() -> Option<String> {
    match std::env::var("VT_TEST_DATABASE_SOCKET_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI is set but VT_TEST_DATABASE_SOCKET_URL is not");
            eprintln!("SKIPPED: the cluster test needs VT_TEST_DATABASE_SOCKET_URL (scripts/test-postgres.sh start)");
            None
        }
    }
}

/// Every process left in `ns` (a killed node's VMs, its boringtun), SIGKILLed.
fn kill_all(ns: &Netns) {
    if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", &ns.name])) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// The instances running and meant to (an unreachable node's stay `running` as last reported,
/// replaced and desired `stopped`): `(id, node id)`.
fn running(vt: &dyn Fn(&[&str]) -> Value) -> Vec<(String, String)> {
    let list = vt(&["instances"]);
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "running" && i["desired_state"] == "running")
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i["node_id"].as_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

/// The instance ids answering through the ingress at `target`, from `ns`, until `want` all did.
fn answered_by(ns: &Netns, target: &str, want: &BTreeSet<String>, within: Duration) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    wait_for(&format!("{want:?} answer through {target}"), within, || {
        if let Ok(body) = run(ns.command("curl").args(["-sf", "--max-time", "2", target])) {
            seen.insert(body.trim().to_owned());
        }
        want.is_subset(&seen)
    });
    seen
}

/// `ping -c 20` from `ns`: the average RTT in ms.
fn rtt_ms(ns: &Netns, args: &[&str]) -> f64 {
    let mut all = vec!["-n", "-q", "-c", "20", "-i", "0.05"];
    all.extend_from_slice(args);
    let out = run(ns.command("ping").args(&all)).unwrap();
    // rtt min/avg/max/mdev = 0.041/0.052/0.081/0.009 ms
    let stats = out.lines().find(|l| l.contains("min/avg/max")).unwrap_or_else(|| panic!("{out}"));
    stats.split('=').nth(1).unwrap().trim().split('/').nth(1).unwrap().parse().unwrap()
}

/// TCP throughput from `from` to `to` (listening in `server`), in Mbit/s: 64 MiB sent once.
fn throughput_mbit(server: &Netns, from: &Netns, to: &str) -> f64 {
    let port = "5201";
    let listener = format!(
        "import socket\ns=socket.socket(socket.AF_INET6 if ':' in '{to}' else socket.AF_INET)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('{to}', {port}))\ns.listen(1)\n\
         c,_=s.accept()\nwhile c.recv(1<<20): pass\nc.close()\n"
    );
    let mut sink = server.command("python3").args(["-c", &listener]).spawn().unwrap();
    let sender = format!(
        "import socket,time\nfor _ in range(50):\n  try:\n    c=socket.create_connection(('{to}', {port})); break\n  \
         except OSError: time.sleep(0.1)\nb=b'x'*(1<<20)\nt=time.monotonic()\nfor _ in range(64): c.sendall(b)\n\
         c.shutdown(socket.SHUT_WR)\nc.recv(1)\nprint(time.monotonic()-t)\n"
    );
    let secs: f64 = run(from.command("python3").args(["-c", &sender])).unwrap().trim().parse().unwrap();
    let _ = sink.wait();
    64.0 * 8.0 * 1.048576 / secs
}

#[test]
fn three_nodes_two_control_planes_one_postgresql() {
    let Some(db) = database_url() else { return };
    let Some(()) = mesh_tools_or_skip() else { return };
    if vt_runtime::testing::networked_guest_or_skip("the cluster test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let Some(hub) = Netns::create_or_skip("vtch") else { return };
    let began = Instant::now();
    let plain = std::env::var("VT_TEST_DATABASE_URL").unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(vt_store::PgStore::drop_all(&plain)).unwrap();

    // The hub's bridge, and each node's uplink on it.
    hub.ip(&["link", "add", "vtcbr", "type", "bridge"]).unwrap();
    hub.ip(&["link", "set", "vtcbr", "up"]).unwrap();
    hub.ip(&["addr", "add", "10.79.0.1/24", "dev", "vtcbr"]).unwrap();
    let nodes: Vec<Netns> = (1..=3).map(|i| Netns::create(&format!("vtc{i}")).unwrap()).collect();
    for (i, ns) in nodes.iter().enumerate() {
        let (port, uplink) = (format!("vtcp{}", i + 1), format!("vtcu{}", i + 1));
        hub.veth(&port, ns, &uplink).unwrap();
        hub.ip(&["link", "set", &port, "master", "vtcbr"]).unwrap();
        ns.ip(&["addr", "add", &format!("10.79.0.1{}/24", i + 1), "dev", &uplink]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ingress_port = common::free_port().to_string();
    let range = format!("{ingress_port}-{ingress_port}");

    // Two control planes on one PostgreSQL; the first leads.
    let registry = dir.path().join("registry").to_str().unwrap().to_owned();
    let cp_args = |key: Option<String>| {
        let mut a = vec!["--database-url".to_owned(), db.clone(), "--ingress-tcp-ports".into(), range.clone()];
        a.extend(["--registry-dir".into(), registry.clone()]);
        a.extend(["--heartbeat-timeout".into(), "10s".into()]);
        a.extend(key.map(|k| ["--master-key-file".to_owned(), k]).into_iter().flatten());
        a
    };
    let listen1 = format!("10.79.0.1:{}", common::free_port());
    let args1 = cp_args(None);
    let args1: Vec<&str> = args1.iter().map(String::as_str).collect();
    let (mut cp1, url1, admin) = control_plane(&hub, dir.path(), "cp1", &listen1, "control-plane", &args1);
    let listen2 = format!("10.79.0.1:{}", common::free_port());
    let args2 = cp_args(Some(dir.path().join("cp1/master.key").to_str().unwrap().to_owned()));
    let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
    let (_cp2, url2, _) = control_plane(&hub, dir.path(), "cp2", &listen2, "control-plane", &args2);
    // The admin uses the second (the standby): it serves the API while the first leads.
    let vt = |args: &[&str]| cli(&hub, dir.path(), &url2, &admin, args);
    let task = |url: &str, name: &str| {
        let tasks = cli(&hub, dir.path(), url, &admin, &["system", "tasks"]);
        let items = tasks["items"].as_array().unwrap().clone();
        items.iter().find(|t| t["name"] == name).map(|t| t["state"].as_str().unwrap().to_owned()).unwrap()
    };
    wait_for("the second control plane stands by", Duration::from_secs(10), || task(&url2, "scheduler") == "standby");
    assert_eq!(task(&url1, "scheduler"), "running");

    // Three nodes enroll, joining both control planes (they use the first); node 1 also runs an
    // edge on its uplink.
    let both = format!("{url1},{url2}");
    let mut enrolled = vec![];
    let mut children: Vec<ServerChild> = vec![];
    for (i, ns) in nodes.iter().enumerate() {
        let name = format!("node-{}", i + 1);
        let edge = format!("10.79.0.1{}", i + 1);
        let extra: Vec<&str> = if i == 0 { vec!["--role", "agent,edge", "--ingress-listen", &edge] } else { vec![] };
        let t = Instant::now();
        let (child, _) = join(ns, dir.path(), &both, &admin, &name, &extra);
        wait_for(&format!("{name} ready"), Duration::from_secs(30), || {
            try_cli(&hub, dir.path(), &url2, &admin, &["node", "get", &name]).is_ok_and(|n| n["status"] == "ready")
        });
        enrolled.push(t.elapsed());
        children.push(child);
    }
    let keys: Vec<String> = (1..=3)
        .map(|i| vt(&["node", "get", &format!("node-{i}")])["wireguard_public_key"].as_str().unwrap().into())
        .collect();
    wait_for("every node has the two others as peers", Duration::from_secs(30), || {
        (0..3).all(|i| wg_peers(&nodes[i], &format!("vtm{}", i + 1)).map(|p| p.len()) == Some(2))
    });

    // A deploy of three instances spreads over the three nodes.
    let (_, manifest) = deploy_busybox(&vt, dir.path(), &instance_id_server(3));
    let node_ids: Vec<String> =
        (1..=3).map(|i| vt(&["node", "get", &format!("node-{i}")])["id"].as_str().unwrap().to_owned()).collect();
    let placed = running(&vt);
    let on: BTreeSet<&str> = placed.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(on, node_ids.iter().map(String::as_str).collect(), "one instance on each node: {placed:?}");

    // The standby serves exec into an instance on node 2 too: the node keeps a channel to each
    // control plane it joined.
    let sh = |url: &str, instance: &str, script: &str| {
        let args = ["--server", url, "--token", &admin, "exec", instance, "--", "sh", "-c", script];
        run(&mut common::netns::vt_in(&hub, dir.path(), &args)).unwrap().trim().to_owned()
    };
    let exec = |url: &str, instance: &str, path: &str| sh(url, instance, &format!("cat {path}"));
    let (on_1, _) = placed.iter().find(|(_, n)| *n == node_ids[0]).unwrap();
    let (on_2, _) = placed.iter().find(|(_, n)| *n == node_ids[1]).unwrap();
    assert_eq!(exec(&url2, on_2, "/www/index.html"), *on_2, "exec through the standby");

    // Instance to instance across the mesh (their org's private network): node 1's reaches
    // node 2's (a guest's own clock ticks too coarsely under emulation to time it from inside).
    let address = |id: &str| {
        let all = vt(&["instances"]);
        let item = all["items"].as_array().unwrap().iter().find(|i| i["id"] == id).cloned().unwrap();
        item["address"].as_str().unwrap_or_else(|| panic!("no address: {item}")).to_owned()
    };
    let a2 = address(on_2);
    assert!(sh(&url1, on_1, &format!("ping -c 3 {a2}")).contains("3 packets received"), "instance 1 → instance 2");

    // Node 1's ingress serves the instances of nodes 2 and 3, through the mesh.
    let target = format!("http://10.79.0.11:{ingress_port}/");
    let remote: BTreeSet<String> = placed.iter().filter(|(_, n)| *n != node_ids[0]).map(|(i, _)| i.clone()).collect();
    answered_by(&hub, &target, &remote, Duration::from_secs(60));

    // The overlay between nodes 1 and 2 against their direct link.
    let overlay =
        |i: usize| vt(&["node", "get", &format!("node-{i}")])["subnet"].as_str().unwrap().replace("::/64", "::1");
    let (o1, o2) = (overlay(1), overlay(2));
    let rtt_direct = rtt_ms(&nodes[0], &["10.79.0.12"]);
    let rtt_overlay = rtt_ms(&nodes[0], &["-6", "-I", &o1, &o2]);
    // To an instance: node 2's from node 1 through the overlay, against node 2 to its own.
    let rtt_instance_local = rtt_ms(&nodes[1], &["-6", &a2]);
    let rtt_instance_overlay = rtt_ms(&nodes[0], &["-6", "-I", &o1, &a2]);
    let tput_direct = throughput_mbit(&nodes[1], &nodes[0], "10.79.0.12");
    let tput_overlay = throughput_mbit(&nodes[1], &nodes[0], &o2);

    // Node 3's agent dies with its VMs: its instance is placed again within the timeout + a boot.
    let killed = children.pop().unwrap();
    run(Command::new("kill").args(["-KILL", &killed.id().to_string()])).unwrap();
    drop(killed);
    kill_all(&nodes[2]);
    let t = Instant::now();
    wait_for("node 3's instance placed again", Duration::from_secs(90), || {
        let now = running(&vt);
        now.len() == 3 && now.iter().all(|(_, n)| *n != node_ids[2])
    });
    let replaced_in = t.elapsed();
    assert_eq!(vt(&["node", "get", "node-3"])["status"], "unreachable");

    // An image pushed through the leader, which then dies: the other takes the lease, the
    // nodes turn to it, and a deploy of that image (pulled through the survivor, from the
    // registry they share) completes.
    let through_leader = |args: &[&str]| cli(&hub, dir.path(), &url1, &admin, args);
    let v2 = common::push_busybox(through_leader, dir.path(), "v2", &[("www/v2", "v2\n")]);
    run(Command::new("kill").args(["-KILL", &cp1.id().to_string()])).unwrap();
    cp1.wait().unwrap();
    let t = Instant::now();
    wait_for("the second control plane leads", Duration::from_secs(20), || task(&url2, "scheduler") == "running");
    let failover = t.elapsed();
    std::fs::write(&manifest, instance_id_server(3).replace("memory_mib = 96", "memory_mib = 112")).unwrap();
    vt(&["deploy", "--wait", "--image", &v2, "--manifest", manifest.to_str().unwrap()]);
    let now = running(&vt);
    assert_eq!(now.len(), 3);
    // Exec reaches a node's new instance through the survivor.
    let (instance, _) = now.iter().find(|(_, n)| *n == node_ids[1]).unwrap();
    assert_eq!(exec(&url2, instance, "/www/v2"), "v2", "exec through the survivor into node 2's instance");

    // A used enrollment token is refused.
    let token = vt(&["node", "enroll-token", "create"])["secret"].as_str().unwrap().to_owned();
    let enroll = |name: &str| {
        run(hub.command("curl").args([
            "-s",
            "-H",
            &format!("authorization: Bearer {token}"),
            "-H",
            "content-type: application/json",
            "-d",
            &format!("{{\"name\": \"{name}\"}}"),
            &format!("{url2}/v1/nodes/enroll"),
        ]))
        .unwrap()
    };
    assert!(enroll("node-4").contains("node-4"), "the first use enrolls");
    let again = enroll("node-5");
    assert!(again.contains("single-use"), "{again}");

    // Node 3 revoked: it leaves the others' WireGuard peers.
    vt(&["node", "revoke", "node-3"]);
    wait_for("node 3 leaves every peer list", Duration::from_secs(20), || {
        (0..2).all(|i| wg_peers(&nodes[i], &format!("vtm{}", i + 1)).is_some_and(|p| !p.contains(&keys[2])))
    });

    for child in children {
        drop(child);
    }
    for ns in &nodes {
        kill_all(ns);
    }
    let ms = |d: Duration| d.as_millis();
    eprintln!(
        "cluster: enrollment -> ready {:?} ms; overlay RTT {rtt_overlay:.3} ms vs direct {rtt_direct:.3} ms; \
         TCP {tput_overlay:.0} Mbit/s over the overlay vs {tput_direct:.0} Mbit/s direct; RTT to node 2's \
         instance {rtt_instance_overlay:.3} ms from node 1 (overlay) vs {rtt_instance_local:.3} ms from node 2; node lost -> instance \
         running elsewhere {} ms (heartbeat timeout 10 s); lease failover {} ms; whole test {:?}",
        enrolled.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        ms(replaced_in),
        ms(failover),
        began.elapsed()
    );
}
