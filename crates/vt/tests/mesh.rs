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

use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{
    cli, control_plane, deploy_busybox, instance_id_server, join, mesh_tools_or_skip as ready, ping, wait_for,
    wg_peers as peers,
};
use vt_firewall::testing::{run, Netns};

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
    let (_cp, url, admin) = control_plane(&a, dir.path(), "cp", &listen, "control-plane", &[]);
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

/// The ingress beside the control plane (namespace A) and node X's own edge (`--role
/// agent,edge`, following the control plane over HTTP) serve a route from instances on both
/// nodes: node X's through its tap, node Y's (namespace B) through the WireGuard mesh, where
/// Y's rules let X's overlay address in on its interface (docs/network.md). (Other names than
/// the first test's: boringtun's control sockets are per interface name, host-wide.)
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
    let (cp, url, admin) = control_plane(&a, dir.path(), "cp", &listen, "control-plane,edge", &extra);
    let cli = |args: &[&str]| cli(&a, dir.path(), &url, &admin, args);
    // Node X also runs an edge (`--role agent,edge`), on a second address of namespace A.
    a.ip(&["addr", "add", "10.78.2.3/24", "dev", "vtmiva"]).unwrap();
    let (node_a, _) =
        join(&a, dir.path(), &url, &admin, "node-x", &["--role", "agent,edge", "--ingress-listen", "10.78.2.3"]);
    let (node_b, iface_b) = join(&b, dir.path(), &url, &admin, "node-y", &[]);

    deploy_busybox(&cli, dir.path(), &instance_id_server(2));

    // One instance on each node (the scheduler spreads a process over equal nodes).
    let node_b_id = cli(&["node", "get", "node-y"])["id"].clone();
    let instances = cli(&["instances"]);
    let running: Vec<&serde_json::Value> =
        instances["items"].as_array().unwrap().iter().filter(|i| i["status"] == "running").collect();
    assert_eq!(running.len(), 2, "{instances}");
    let on_b: Vec<&str> =
        running.iter().filter(|i| i["node_id"] == node_b_id).map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(on_b.len(), 1, "one instance on node Y: {instances}");

    // Through the ingress beside the control plane and through node X's own edge (which
    // follows the control plane over HTTP), both answer; node Y's through the tunnel.
    for edge in ["10.78.2.1", "10.78.2.3"] {
        let mut seen = std::collections::BTreeSet::new();
        let target = format!("http://{edge}:{ingress_port}/");
        wait_for(&format!("both instances answer through the ingress on {edge}"), Duration::from_secs(60), || {
            if let Ok(body) = run(a.command("curl").args(["-sf", "--max-time", "2", &target])) {
                seen.insert(body.trim().to_owned());
            }
            seen.len() == 2
        });
        assert!(seen.contains(on_b[0]), "node Y's instance answered: {seen:?}");
    }
    // Node X's edge reported its listener (under its node name) to the control plane.
    wait_for("node X's listener is reported", Duration::from_secs(20), || {
        let routes = cli(&["route", "list"]);
        routes["items"][0]["listeners"]
            .as_array()
            .is_some_and(|ls| ls.iter().any(|l| l["node"] == "node-x" && l["state"] == "listening"))
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
