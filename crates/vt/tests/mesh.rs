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
//! by B's rules. A third runs an edge-only node (`vt server --role edge --join`), which runs no
//! instances and serves a route from the instances of an agent node through the mesh.
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

/// An edge-only node (`vt server --role edge --join`, docs/nodes.md "Edges"): three namespaces
/// on a hub's bridge (the control plane in the hub, agent node P and edge-only node Q each on
/// its own uplink). Q enrolls, registers as a node that runs no instances and meshes with P; a
/// deploy puts every instance on P (none on Q, though Q registered the same capacity); a TCP
/// route answers through Q's ingress with P's instances, across the tunnel, let in by P's mesh
/// rule; Q has no nftables table of its own; revoked, it leaves P's peers and its token dies;
/// it leaves no interface when it stops. Printed: Q's enrollment → ready.
#[test]
fn an_edge_only_node_serves_instances_of_another_node_through_the_mesh() {
    let Some(()) = ready() else { return };
    if vt_runtime::testing::networked_guest_or_skip("the edge-only node test", &[vt_image::testing::BUSYBOX]).is_none()
    {
        return;
    }
    let Some(hub) = Netns::create_or_skip("vteh") else { return };
    let began = Instant::now();
    hub.ip(&["link", "add", "vtebr", "type", "bridge"]).unwrap();
    hub.ip(&["link", "set", "vtebr", "up"]).unwrap();
    hub.ip(&["addr", "add", "10.78.5.1/24", "dev", "vtebr"]).unwrap();
    let (p, q) = (Netns::create("vtep").unwrap(), Netns::create("vteq").unwrap());
    for (ns, port, uplink, addr) in [(&p, "vtepp", "vtepu", "10.78.5.11/24"), (&q, "vteqp", "vtequ", "10.78.5.12/24")] {
        hub.veth(port, ns, uplink).unwrap();
        hub.ip(&["link", "set", port, "master", "vtebr"]).unwrap();
        ns.ip(&["addr", "add", addr, "dev", uplink]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ingress_port = common::free_port().to_string();
    let range = format!("{ingress_port}-{ingress_port}");
    let listen = format!("10.78.5.1:{}", common::free_port());
    // The control plane alone: no agent, no ingress of its own.
    let (cp, url, admin) =
        control_plane(&hub, dir.path(), "cp", &listen, "control-plane", &["--ingress-tcp-ports", &range]);
    let vt = |args: &[&str]| cli(&hub, dir.path(), &url, &admin, args);
    let (node_p, iface_p) = join(&p, dir.path(), &url, &admin, "node-p", &[]);
    let t = Instant::now();
    let edge_only = ["--role", "edge", "--ingress-listen", "10.78.5.12"];
    let (node_q, iface_q) = join(&q, dir.path(), &url, &admin, "node-q", &edge_only);
    wait_for("node-q ready", Duration::from_secs(30), || vt(&["node", "get", "node-q"])["status"] == "ready");
    let enrolled = t.elapsed();

    // Q is a node that runs no instances, in the mesh like any other.
    let (np, nq) = (vt(&["node", "get", "node-p"]), vt(&["node", "get", "node-q"]));
    assert_eq!((np["runs_instances"].as_bool(), nq["runs_instances"].as_bool()), (Some(true), Some(false)));
    assert_eq!((nq["address"].as_str(), nq["wireguard_port"].as_u64()), (Some("10.78.5.12"), Some(51820)), "{nq}");
    let table =
        run(&mut common::netns::vt_in(&hub, dir.path(), &["--server", &url, "--token", &admin, "node", "list"]))
            .unwrap();
    let row = table.lines().find(|l| l.contains("node-q")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("edge only"), "{table}");
    let key_of = |n: &serde_json::Value| n["wireguard_public_key"].as_str().unwrap().to_owned();
    wait_for("P and Q have each other as their one peer", Duration::from_secs(20), || {
        peers(&p, &iface_p) == Some(vec![key_of(&nq)]) && peers(&q, &iface_q) == Some(vec![key_of(&np)])
    });

    // Every instance lands on P.
    deploy_busybox(&vt, dir.path(), &instance_id_server(2));
    let instances = vt(&["instances"]);
    let items = instances["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i["node_id"] == np["id"]), "an instance off node P: {instances}");
    let on_p: std::collections::BTreeSet<String> =
        items.iter().filter(|i| i["status"] == "running").map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(on_p.len(), 2, "{instances}");

    // Q's ingress serves both of P's instances, through the tunnel (real bytes: their ids).
    let target = format!("http://10.78.5.12:{ingress_port}/");
    let mut seen = std::collections::BTreeSet::new();
    wait_for("both of P's instances answer through Q's ingress", Duration::from_secs(60), || {
        if let Ok(body) = run(hub.command("curl").args(["-sf", "--max-time", "2", &target])) {
            seen.insert(body.trim().to_owned());
        }
        seen == on_p
    });
    wait_for("node Q's listener is reported", Duration::from_secs(20), || {
        let routes = vt(&["route", "list"]);
        routes["items"][0]["listeners"]
            .as_array()
            .is_some_and(|ls| ls.iter().any(|l| l["node"] == "node-q" && l["state"] == "listening"))
    });
    // In through P's WireGuard interface, let in by its mesh rule (Q's overlay address).
    let chain = run(p.command("nft").args(["list", "chain", "inet", &iface_p, "to_instance"])).unwrap();
    let rule = chain.lines().find(|l| l.contains("@mesh_nodes")).unwrap_or_else(|| panic!("{chain}"));
    assert!(rule.contains(&format!("iifname \"{iface_p}\"")) && !rule.contains("packets 0 "), "{rule}");
    let overlay_q = nq["subnet"].as_str().unwrap().replace("::/64", "::1");
    let set = run(p.command("nft").args(["list", "set", "inet", &iface_p, "mesh_nodes"])).unwrap();
    assert!(set.contains(&overlay_q), "Q's overlay address {overlay_q} is in P's mesh_nodes: {set}");
    // Q runs no firewall for instances: no table at all.
    assert_eq!(run(q.command("nft").args(["list", "tables"])).unwrap().trim(), "", "a table on the edge-only node");
    // The scheduler never picked Q.
    let instances = vt(&["instances"]);
    assert!(instances["items"].as_array().unwrap().iter().all(|i| i["node_id"] != nq["id"]), "{instances}");

    // Revoked like any node: out of P's peers (Q's ingress reaches nothing any more), its
    // token dead.
    vt(&["node", "revoke", "node-q"]);
    wait_for("node Q leaves node P's peers", Duration::from_secs(20), || peers(&p, &iface_p) == Some(vec![]));
    assert!(run(hub.command("curl").args(["-sf", "--max-time", "2", &target])).is_err(), "served after revocation");
    let token = std::fs::read_to_string(dir.path().join("node-q/node-token")).unwrap();
    let refused = common::netns::try_cli(&q, dir.path(), &url, token.trim(), &["node", "get", "node-q"]);
    assert!(refused.is_err(), "a revoked edge-only node's token still works: {refused:?}");

    // Q stops cleanly and takes its interface (and boringtun) with it.
    for (child, ns, iface) in [(node_q, Some(&q), iface_q.as_str()), (node_p, None, ""), (cp, None, "")] {
        let mut child = child;
        run(Command::new("kill").args(["-TERM", &child.id().to_string()])).unwrap();
        child.wait().unwrap();
        if let Some(ns) = ns {
            assert_eq!(peers(ns, iface), None, "{iface} outlived its node");
        }
    }
    eprintln!("edge-only node: enrollment -> ready {enrolled:?}; whole test {:?}", began.elapsed());
}
