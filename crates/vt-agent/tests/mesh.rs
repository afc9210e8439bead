//! The mesh end to end: a real control plane (`vt_server::Server`, on loopback), two nodes
//! enrolled and registered through its API with their WireGuard keys and endpoints, each node
//! a network namespace this test creates (joined to the other by a veth pair) whose mesh is
//! the agent's [`NodeMesh`] on the real device ([`WgTools`]: the kernel's WireGuard, else
//! boringtun, configured with `wg` and `ip`) applying the peer list the control plane sends.
//! An address of node A's /64 is reached from node B's /64 through the tunnel, and revoking
//! node B cuts it off. Nothing outside the two namespaces is touched.
//!
//! Needs root, `ping`, `wg` (wireguard-tools) and, without a WireGuard kernel module,
//! `boringtun-cli` (`scripts/mesh-tools.sh`). Skipped with a message without them, except
//! under `CI=true`, where it fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vt_agent::mesh::{MeshConfig, NodeMesh};
use vt_api::{Capacity, CreateEnrollToken, EnrollNode, Hostname, RegisterNode};
use vt_client::Client;
use vt_firewall::testing::{run, Netns};
use vt_mesh::{Ensured, WgTools, MTU};
use vt_server::{Server, ServerConfig};

struct Node {
    ns: Netns,
    name: String,
    client: Client,
    mesh: Arc<NodeMesh>,
    wg: Arc<WgTools>,
    interface: String,
    /// An "instance" address of the node's /64 (`<subnet>::5`), local to its namespace.
    instance: String,
}

fn ready() -> Option<()> {
    let why = match WgTools::probe().and_then(|wg| wg.check()) {
        Err(e) => e.to_string(),
        Ok(_) if run(std::process::Command::new("ping").arg("-V")).is_err() => {
            "needs `ping` (`apt-get install iputils-ping`)".into()
        }
        Ok(_) => return Some(()),
    };
    assert!(std::env::var("CI").as_deref() != Ok("true"), "the mesh test: {why}");
    eprintln!("SKIPPED: the mesh test: {why}");
    None
}

/// Enroll `name` at the control plane, register it with its key and `address`, and set up its
/// namespace's mesh (nothing applied yet).
async fn node(admin: &Client, base: &str, dir: &std::path::Path, name: &str, address: &str) -> Node {
    let ns = Netns::create(&format!("mesh{name}")).unwrap();
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&key_file, run(std::process::Command::new("wg").arg("genkey")).unwrap()).unwrap();
    let public = run(std::process::Command::new("sh").arg("-c").arg(format!("wg pubkey < {}", key_file.display())))
        .unwrap()
        .trim()
        .to_owned();
    let enroll = admin.enroll_token_create(&CreateEnrollToken::default()).await.unwrap();
    let hostname = Hostname::parse(name).unwrap();
    let enrolled =
        Client::new(base, Some(enroll.secret)).node_enroll(&EnrollNode { name: hostname.clone() }).await.unwrap();
    let client = Client::new(base, Some(enrolled.secret.clone()));
    let registered = client
        .node_register(
            &RegisterNode {
                name: hostname,
                capacity: Capacity { cpu_millis: 1000, memory_mib: 1024 },
                allocatable: None,
                labels: Default::default(),
                address: Some(address.into()),
                wireguard_public_key: Some(public),
                wireguard_port: Some(vt_mesh::DEFAULT_PORT),
                runs_instances: true,
            },
            &format!("register-{name}"),
        )
        .await
        .unwrap()
        .value;
    let subnet = registered.subnet.unwrap();
    let instance = subnet.replace("::/64", "::5");
    ns.ip(&["-6", "addr", "add", &format!("{instance}/128"), "dev", "lo", "nodad"]).unwrap();
    let interface = format!("vtm{name}{}", std::process::id() % 100_000);
    let cfg = MeshConfig {
        interface: interface.clone(),
        private_key: key_file,
        listen_port: vt_mesh::DEFAULT_PORT,
        address: address.parse().unwrap(),
        log: Some(dir.join(format!("{name}.log"))),
    };
    let wg = Arc::new(WgTools::probe().unwrap().in_netns(&ns.name).log_to(dir.join(format!("{name}.log"))));
    let mesh = NodeMesh::new(wg.clone(), &cfg);
    mesh.set_subnet(Some(&subnet));
    Node { ns, name: name.into(), client, mesh, wg, interface, instance }
}

/// Read the node's list from the control plane, as its agent does, and apply it once.
async fn follow_and_apply(n: &Node) -> vt_agent::mesh::Applied {
    let list = n.client.node_instances(&n.name).await.unwrap();
    n.mesh.follow(&list.mesh);
    let mesh = n.mesh.clone();
    tokio::task::spawn_blocking(move || mesh.apply_once()).await.unwrap().unwrap().unwrap()
}

fn ping(from: &Node, to: &Node, size: u32) -> Result<String, String> {
    run(from.ns.command("ping").args(["-6", "-n", "-q", "-c", "1", "-W", "1", "-M", "do", "-s"]).args([
        &size.to_string(),
        "-I",
        &from.instance,
        &to.instance,
    ]))
}

/// Pings until one answers (the first handshake takes a round trip), within 10 s.
async fn reachable(from: &Node, to: &Node) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match ping(from, to, 56) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > Duration::from_secs(10) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_mesh_with_the_peer_lists_of_the_control_plane() {
    let Some(()) = ready() else { return };
    let Some(probe) = Netns::create_or_skip("meshprobe") else { return };
    drop(probe);
    let began = Instant::now();
    let tmp = tempfile::Builder::new().prefix("vt-mesh-e2e").tempdir_in("/tmp").unwrap();
    let mut config = ServerConfig::new(tmp.path().join("data"), ([127, 0, 0, 1], 0).into());
    config.sqlite = vt_store::SqliteOptions { full_sync: false };
    let server = Server::start(&config).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let admin_token = std::fs::read_to_string(server.data.admin_token()).unwrap().trim().to_owned();
    tokio::spawn(server.run(std::future::pending()));
    let admin = Client::new(&base, Some(admin_token));

    let a = node(&admin, &base, tmp.path(), "node-a", "10.78.0.1").await;
    let b = node(&admin, &base, tmp.path(), "node-b", "10.78.0.2").await;
    a.ns.veth("va", &b.ns, "vb").unwrap();
    a.ns.ip(&["addr", "add", "10.78.0.1/24", "dev", "va"]).unwrap();
    b.ns.ip(&["addr", "add", "10.78.0.2/24", "dev", "vb"]).unwrap();
    assert!(ping(&b, &a, 56).is_err(), "reachable before the mesh");

    for n in [&a, &b] {
        let applied = follow_and_apply(n).await;
        assert_eq!(applied.ensured, Ensured::Created);
        assert_eq!(applied.changes.peers.len(), 1, "{applied:?}");
        assert_eq!(n.wg.mtu(&n.interface).unwrap(), Some(u32::from(MTU)));
    }
    reachable(&b, &a).await.unwrap();
    reachable(&a, &b).await.unwrap();
    // A full-size packet for MTU 1420 (1372 + 8 + 40), unfragmented, counted by the interface.
    let before = a.wg.current(&a.interface).unwrap().unwrap().peers[0].clone();
    ping(&b, &a, 1372).unwrap();
    let after = a.wg.current(&a.interface).unwrap().unwrap().peers[0].clone();
    assert!(after.rx_bytes >= before.rx_bytes + 1420, "not through the tunnel: {before:?} then {after:?}");
    assert!(after.tx_bytes >= before.tx_bytes + 1420, "not through the tunnel: {before:?} then {after:?}");
    // The list again: nothing changes.
    let again = follow_and_apply(&a).await;
    assert_eq!((again.ensured, again.changes.is_empty()), (Ensured::Unchanged, true), "{again:?}");

    // Revoking node B takes it out of A's list: A's interface drops it, and B is cut off.
    admin.node_revoke("node-b", "revoke-b").await.unwrap();
    let applied = follow_and_apply(&a).await;
    assert_eq!((applied.changes.peers.len(), applied.changes.routes_removed.len()), (1, 1), "{applied:?}");
    assert!(a.wg.current(&a.interface).unwrap().unwrap().peers.is_empty());
    assert!(ping(&b, &a, 56).is_err(), "a revoked node still reaches the others' instances");

    for n in [&a, &b] {
        n.mesh.remove().unwrap();
        assert_eq!(n.wg.mtu(&n.interface).unwrap(), None);
        assert_eq!(n.wg.device_pid(), None);
        n.mesh.remove().unwrap();
    }
    eprintln!("mesh end to end: {:?}", began.elapsed());
}
