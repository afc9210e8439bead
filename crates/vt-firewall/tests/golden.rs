//! The generated ruleset, held to files (`tests/golden/*.nft`; `VT_UPDATE_GOLDEN=1`
//! rewrites them), and each of those files checked by the kernel's nftables in a network
//! namespace of its own (root only; skipped with a message elsewhere, failed under `CI=true`).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use vt_firewall::testing::Netns;
use vt_firewall::{Class, Egress, IpNet, Ipv6Egress, Member, Mesh, NodeNet, Peer, Policy};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Node 1 of cluster fd12:3456:789a::/48 running three instances: A (org 1, private),
/// B (org 1, private), W (org 1, isolated: a workspace) and C (org 2, private); org 1 also
/// has an instance on another node.
fn busy_node() -> Policy {
    let a = v6("fd12:3456:789a:1:aaaa::1");
    let b = v6("fd12:3456:789a:1:bbbb::1");
    let c = v6("fd12:3456:789a:1:cccc::1");
    let w = v6("fd12:3456:789a:1:eeee::1");
    let remote = v6("fd12:3456:789a:2:dddd::1");
    let m = |tap: &str, ipv6, last: u8, org: &str, class| Member {
        tap: tap.into(),
        ipv6,
        ipv4: Some(Ipv4Addr::new(100, 64, 1, last)),
        org: org.into(),
        class,
    };
    Policy {
        table: "vt".into(),
        node: NodeNet {
            cluster: "fd12:3456:789a::/48".parse().unwrap(),
            subnet: "fd12:3456:789a:1::/64".parse().unwrap(),
            ipv4_range: Some("100.64.1.0/24".parse().unwrap()),
        },
        egress: Egress::On { ipv6: Ipv6Egress::Nat },
        allow: vec![net("10.20.0.5/32"), net("2001:db8:aa::/48")],
        deny: vec![net("203.0.113.0/24"), net("2001:db8:dead::/48")],
        host_lan: vec![net("192.0.2.0/24"), net("10.99.0.0/24"), net("10.99.0.0/24"), net("2001:db8:1::/64")],
        members: vec![
            m("vt00000000000c", c, 4, "org_2", Class::Private),
            m("vt00000000000a", a, 2, "org_1", Class::Private),
            m("vt00000000000b", b, 3, "org_1", Class::Private),
            m("vt00000000000e", w, 5, "org_1", Class::Isolated),
        ],
        peers: vec![
            Peer { org: "org_1".into(), address: a },
            Peer { org: "org_1".into(), address: b },
            Peer { org: "org_1".into(), address: remote },
            Peer { org: "org_2".into(), address: c },
        ],
        mesh: None,
    }
}

/// A node with nothing on it and no egress.
fn idle_node() -> Policy {
    Policy {
        table: "vt".into(),
        node: NodeNet {
            cluster: "fd12:3456:789a::/48".parse().unwrap(),
            subnet: "fd12:3456:789a:1::/64".parse().unwrap(),
            ipv4_range: None,
        },
        egress: Egress::Off,
        allow: vec![],
        deny: vec![],
        host_lan: vec![],
        members: vec![],
        peers: vec![],
        mesh: None,
    }
}

fn routed_node() -> Policy {
    let mut p = busy_node();
    p.egress = Egress::On { ipv6: Ipv6Egress::Routed };
    p.allow.clear();
    p.deny.clear();
    p
}

/// The busy node in a mesh of three: the other two nodes' overlay addresses (its own, listed
/// by mistake, is left out) reach its instances through its WireGuard interface.
fn meshed_node() -> Policy {
    let mut p = busy_node();
    p.mesh = Some(Mesh {
        interface: "vtmesh".into(),
        nodes: vec![v6("fd12:3456:789a:3::1"), v6("fd12:3456:789a:2::1"), v6("fd12:3456:789a:1::1")],
    });
    p
}

fn cases() -> Vec<(&'static str, Policy)> {
    vec![
        ("busy", busy_node()),
        ("idle-no-egress", idle_node()),
        ("routed-ipv6", routed_node()),
        ("meshed", meshed_node()),
    ]
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.nft"))
}

#[test]
fn rulesets_match_their_golden_files() {
    for (name, policy) in cases() {
        let text = policy.render();
        let path = golden(name);
        if std::env::var_os("VT_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, want, "{name}: the ruleset changed; rerun with VT_UPDATE_GOLDEN=1 and review the diff");
    }
}

#[test]
fn the_same_state_gives_the_same_text() {
    let mut p = busy_node();
    let first = p.render();
    p.members.reverse();
    p.peers.reverse();
    p.host_lan.reverse();
    assert_eq!(p.render(), first, "sets are sorted: order of the state does not matter");
}

#[test]
fn who_reaches_whom_is_in_the_org_peers_set() {
    let text = busy_node().render();
    let set = text.split("set org_peers").nth(1).unwrap().split("}\n").next().unwrap();
    // A reaches B and org 1's remote instance; B reaches A; C (org 2) and W (isolated) nothing.
    for pair in [
        "\"vt00000000000a\" . fd12:3456:789a:1:bbbb::1",
        "\"vt00000000000a\" . fd12:3456:789a:2:dddd::1",
        "\"vt00000000000b\" . fd12:3456:789a:1:aaaa::1",
    ] {
        assert!(set.contains(pair), "{pair} in {set}");
    }
    for tap in ["vt00000000000c", "vt00000000000e"] {
        assert!(!set.contains(tap), "{tap} has no peers: {set}");
    }
    assert!(!set.contains("cccc") && !set.contains("eeee"), "nobody reaches C or W: {set}");
}

/// Every golden ruleset is one the kernel accepts, replaces atomically and removes.
#[test]
fn the_kernel_accepts_every_golden_ruleset() {
    let Some(ns) = Netns::create_or_skip("golden") else { return };
    for (name, policy) in cases() {
        let text = std::fs::read_to_string(golden(name)).unwrap();
        ns.nft_apply(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Applying the same script again replaces the table (the idempotent idiom).
        ns.nft_apply(&text).unwrap_or_else(|e| panic!("{name}, again: {e}"));
        let listed = ns.nft(&["list", "table", "inet", &policy.table]).unwrap();
        assert!(listed.contains("chain from_instance"), "{name}: {listed}");
        ns.nft_apply(&vt_firewall::ruleset::removal(&policy.table)).unwrap();
        assert!(ns.nft(&["list", "tables"]).unwrap().trim().is_empty(), "{name}: nothing left");
    }
}
