//! The ruleset, pure: a [`Policy`] (what the node runs and what its operator allows) in, the
//! text of one nftables table out. No I/O: the same policy always gives the same text
//! (sets sorted), which `tests/golden.rs` holds to files under `tests/golden/`.
//!
//! The script replaces the whole table in one transaction (`nft -f`): it creates the table
//! if it is missing, deletes it, and creates it again with every set and chain. A packet
//! sees the old table or the new one, never none: a change, or a restarted agent rebuilding
//! the table from its state, opens no window where isolation is off. docs/network.md says
//! the same rules in words.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The prefixes no instance reaches (unless the operator allows one with `--egress-allow`):
/// "this network", private (RFC 1918), shared (CGNAT, RFC 6598), loopback, link-local,
/// IETF protocol assignments, benchmarking, multicast, reserved and broadcast.
pub const BLOCKED_V4: [&str; 10] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
];

/// The same for IPv6: unspecified, loopback, IPv4-mapped, discard, unique local (any ULA
/// but the cluster's own, which is decided before), link-local and multicast.
pub const BLOCKED_V6: [&str; 7] =
    ["::/127", "::ffff:0.0.0.0/96", "100::/64", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"];

/// How instances reach the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Not at all (`vt server --no-egress`): instances reach their org's private network only.
    Off,
    /// IPv4 is masqueraded to the node's uplink address; IPv6 as `ipv6` says.
    On { ipv6: Ipv6Egress },
}

/// What happens to instances' IPv6 traffic to the internet (`vt server --egress-ipv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Egress {
    /// Masqueraded to the node's uplink address: the cluster's addresses are a ULA, which
    /// the internet does not route (the default).
    Nat,
    /// Forwarded with the instance's own address: the network upstream routes the cluster's
    /// prefix to this node.
    Routed,
}

/// Where an instance sits in its org's private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Reaches its org's other private instances over IPv6 on any port, and is reached by them.
    Private,
    /// Reaches the internet only; no instance reaches it (workspaces).
    Isolated,
}

/// One instance on this node: its tap and the addresses it may send from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub tap: String,
    pub ipv6: Ipv6Addr,
    /// Its private IPv4 for egress (none without egress).
    pub ipv4: Option<Ipv4Addr>,
    /// Its org (any stable key: the org id).
    pub org: String,
    pub class: Class,
}

/// A private-network instance of an org with instances here, on any node (this one included).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub org: String,
    pub address: Ipv6Addr,
}

/// The node's own networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    /// The cluster's ULA /48 (every node's /64 is in it).
    pub cluster: Ipv6Net,
    /// This node's /64.
    pub subnet: Ipv6Net,
    /// This node's IPv4 range (with egress).
    pub ipv4_range: Option<Ipv4Net>,
}

impl NodeNet {
    /// The node's IPv6 address in its /64 (`<subnet>::1`), on every tap: the guests' resolver.
    pub fn gateway6(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.subnet.network()) | 1)
    }

    /// The node's IPv4 address in its range (`.1`), on every tap: the guests' IPv4 gateway and resolver.
    pub fn gateway4(&self) -> Option<Ipv4Addr> {
        self.ipv4_range.map(|r| Ipv4Addr::from(u32::from(r.network()) | 1))
    }
}

/// The node's WireGuard mesh (docs/nodes.md): the other nodes reach this node's instances
/// through it from their overlay addresses, as this host reaches them (the ingress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    /// The node's WireGuard interface. Only packets that came in through it count: the
    /// tunnel checked their source against the sending peer's allowed IPs.
    pub interface: String,
    /// The other nodes' overlay addresses (`<their subnet>::1`).
    pub nodes: Vec<Ipv6Addr>,
}

/// Everything the ruleset is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The table's name (family `inet`): `vt`, unless more than one agent shares a host.
    pub table: String,
    pub node: NodeNet,
    pub egress: Egress,
    /// `--egress-allow`: reachable although in a blocked range or the host's LAN.
    pub allow: Vec<IpNet>,
    /// `--egress-deny`: never reachable.
    pub deny: Vec<IpNet>,
    /// The prefixes of the host's own interfaces (its LAN), taps excepted.
    pub host_lan: Vec<IpNet>,
    pub members: Vec<Member>,
    pub peers: Vec<Peer>,
    /// `None`: the node is not in a mesh (a single host).
    pub mesh: Option<Mesh>,
}

/// The script that removes the table (nothing to do when it is not there).
pub fn removal(table: &str) -> String {
    format!("table inet {table}\ndelete table inet {table}\n")
}

/// An nftables set of `kind` with these elements (none: no `elements` line).
fn set(out: &mut String, name: &str, kind: &str, interval: bool, comment: &str, elements: &[String]) {
    let _ = writeln!(out, "\tset {name} {{");
    let _ = writeln!(out, "\t\ttype {kind}");
    if interval {
        let _ = writeln!(out, "\t\tflags interval");
    }
    let _ = writeln!(out, "\t\tcomment \"{comment}\"");
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
    }
    let _ = writeln!(out, "\t}}");
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// Interval elements, merged (nftables refuses overlapping intervals in one set).
fn prefixes<T: Into<IpNet> + Copy>(nets: impl IntoIterator<Item = T>) -> Vec<String> {
    IpNet::aggregate(&nets.into_iter().map(Into::into).collect()).iter().map(ToString::to_string).collect()
}

fn v4(nets: &[IpNet]) -> Vec<IpNet> {
    nets.iter().filter(|n| matches!(n, IpNet::V4(_))).copied().collect()
}

fn v6(nets: &[IpNet]) -> Vec<IpNet> {
    nets.iter().filter(|n| matches!(n, IpNet::V6(_))).copied().collect()
}

fn constants(list: &[&str]) -> Vec<IpNet> {
    list.iter().filter_map(|s| s.parse().ok()).collect()
}

impl Policy {
    /// The `nft -f` script: the whole table, replacing the one there.
    pub fn render(&self) -> String {
        let t = &self.table;
        let node = &self.node;
        let members: BTreeSet<&Member> = self.members.iter().collect();
        let mut out = String::new();
        let _ = writeln!(out, "# The guest network's isolation, generated by vt from its state (docs/network.md).");
        let _ = writeln!(out, "# Replaced whole, atomically, on every change: do not edit.");
        out.push_str(&removal(t));
        let _ = writeln!(out, "table inet {t} {{");

        let taps: Vec<String> = members.iter().map(|m| quoted(&m.tap)).collect();
        set(&mut out, "taps", "ifname", false, "this node's instance taps", &taps);
        let ip6: Vec<String> = members.iter().map(|m| format!("{} . {}", quoted(&m.tap), m.ipv6)).collect();
        set(&mut out, "tap_ip6", "ifname . ipv6_addr", false, "the IPv6 source each tap may use", &ip6);
        let ip4: Vec<String> =
            members.iter().filter_map(|m| Some(format!("{} . {}", quoted(&m.tap), m.ipv4?))).collect();
        set(&mut out, "tap_ip4", "ifname . ipv4_addr", false, "the IPv4 source each tap may use", &ip4);
        let mut same_org = BTreeSet::new();
        for m in members.iter().filter(|m| m.class == Class::Private) {
            for p in self.peers.iter().filter(|p| p.org == m.org && p.address != m.ipv6) {
                same_org.insert(format!("{} . {}", quoted(&m.tap), p.address));
            }
        }
        let same_org: Vec<String> = same_org.into_iter().collect();
        set(
            &mut out,
            "org_peers",
            "ifname . ipv6_addr",
            false,
            "a private instance's tap and an address of its org's private network",
            &same_org,
        );
        set(
            &mut out,
            "gateways6",
            "ipv6_addr",
            false,
            "the node's address on every tap",
            &[node.gateway6().to_string()],
        );
        let gw4: Vec<String> = node.gateway4().into_iter().map(|a| a.to_string()).collect();
        set(&mut out, "gateways4", "ipv4_addr", false, "the node's IPv4 address on every tap", &gw4);
        set(&mut out, "deny4", "ipv4_addr", true, "--egress-deny", &prefixes(v4(&self.deny)));
        set(&mut out, "deny6", "ipv6_addr", true, "--egress-deny", &prefixes(v6(&self.deny)));
        set(&mut out, "allow4", "ipv4_addr", true, "--egress-allow", &prefixes(v4(&self.allow)));
        set(&mut out, "allow6", "ipv6_addr", true, "--egress-allow", &prefixes(v6(&self.allow)));
        set(&mut out, "blocked4", "ipv4_addr", true, "private and special-purpose", &prefixes(constants(&BLOCKED_V4)));
        set(
            &mut out,
            "blocked6",
            "ipv6_addr",
            true,
            "special-purpose and unique local",
            &prefixes(constants(&BLOCKED_V6)),
        );
        set(&mut out, "lan4", "ipv4_addr", true, "the host's LAN", &prefixes(v4(&self.host_lan)));
        set(&mut out, "lan6", "ipv6_addr", true, "the host's LAN", &prefixes(v6(&self.host_lan)));
        if let Some(mesh) = &self.mesh {
            let nodes: BTreeSet<String> =
                mesh.nodes.iter().filter(|a| **a != node.gateway6()).map(|a| a.to_string()).collect();
            let nodes: Vec<String> = nodes.into_iter().collect();
            set(&mut out, "mesh_nodes", "ipv6_addr", false, "the other nodes' overlay addresses", &nodes);
        }

        // To the host itself: the resolver on the gateway addresses, neighbour discovery,
        // Packet Too Big, a ping of the gateway, and answers to what the host opened (health
        // checks, the ingress). Nothing else of the host's, whatever its address.
        let _ = writeln!(out, "\tchain input {{");
        let _ = writeln!(out, "\t\ttype filter hook input priority filter; policy accept;");
        let _ = writeln!(out, "\t\tiifname @taps jump instance_to_host");
        let _ = writeln!(out, "\t}}");
        let _ = writeln!(out, "\tchain instance_to_host {{");
        let _ = writeln!(
            out,
            "\t\ticmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} ip6 hoplimit 255 accept"
        );
        let _ = writeln!(out, "\t\ticmpv6 type packet-too-big accept");
        let _ = writeln!(out, "\t\tiifname . ip6 saddr != @tap_ip6 counter drop comment \"spoofed\"");
        let _ = writeln!(out, "\t\tiifname . ip saddr != @tap_ip4 counter drop comment \"spoofed\"");
        let _ = writeln!(out, "\t\tct state established,related accept");
        let _ = writeln!(out, "\t\tip6 daddr @gateways6 meta l4proto {{ tcp, udp }} th dport 53 accept");
        let _ = writeln!(out, "\t\tip daddr @gateways4 meta l4proto {{ tcp, udp }} th dport 53 accept");
        let _ = writeln!(out, "\t\tip6 daddr @gateways6 icmpv6 type echo-request accept");
        let _ = writeln!(out, "\t\tip daddr @gateways4 icmp type echo-request accept");
        let _ = writeln!(out, "\t\tcounter drop comment \"the host\"");
        let _ = writeln!(out, "\t}}");

        // Through the host: checks on the way out of an instance, then on the way into one.
        let _ = writeln!(out, "\tchain forward {{");
        let _ = writeln!(out, "\t\ttype filter hook forward priority filter; policy accept;");
        let _ = writeln!(out, "\t\tiifname @taps jump from_instance");
        let _ = writeln!(out, "\t\toifname @taps jump to_instance");
        let _ = writeln!(out, "\t}}");
        let _ = writeln!(out, "\tchain from_instance {{");
        let _ = writeln!(out, "\t\tiifname . ip6 saddr != @tap_ip6 counter drop comment \"spoofed\"");
        let _ = writeln!(out, "\t\tiifname . ip saddr != @tap_ip4 counter drop comment \"spoofed\"");
        let _ = writeln!(out, "\t\ticmpv6 type packet-too-big accept");
        let _ = writeln!(out, "\t\tct state established,related accept");
        let _ = writeln!(out, "\t\tct state invalid counter drop");
        let _ = writeln!(out, "\t\tiifname . ip6 daddr @org_peers return comment \"its org's private network\"");
        let _ = writeln!(
            out,
            "\t\tip6 daddr {} counter drop comment \"another org's instance, or an isolated one\"",
            node.cluster
        );
        if let Some(r) = node.ipv4_range {
            let _ = writeln!(out, "\t\tip daddr {r} counter drop comment \"instances' IPv4 is for egress only\"");
        }
        let _ = writeln!(out, "\t\tip daddr @deny4 counter drop comment \"--egress-deny\"");
        let _ = writeln!(out, "\t\tip6 daddr @deny6 counter drop comment \"--egress-deny\"");
        let _ = writeln!(out, "\t\tip daddr @allow4 accept comment \"--egress-allow\"");
        let _ = writeln!(out, "\t\tip6 daddr @allow6 accept comment \"--egress-allow\"");
        let _ = writeln!(out, "\t\tip daddr @blocked4 counter drop comment \"private or special-purpose\"");
        let _ = writeln!(out, "\t\tip6 daddr @blocked6 counter drop comment \"special-purpose or another ULA\"");
        let _ = writeln!(out, "\t\tip daddr @lan4 counter drop comment \"the host's LAN\"");
        let _ = writeln!(out, "\t\tip6 daddr @lan6 counter drop comment \"the host's LAN\"");
        match self.egress {
            Egress::On { .. } => {
                let _ = writeln!(out, "\t\taccept comment \"the internet\"");
            }
            Egress::Off => {
                let _ = writeln!(out, "\t\tcounter drop comment \"no egress (--no-egress)\"");
            }
        }
        let _ = writeln!(out, "\t}}");
        let _ = writeln!(out, "\tchain to_instance {{");
        let _ = writeln!(out, "\t\ticmpv6 type packet-too-big accept");
        let _ = writeln!(out, "\t\tct state established,related accept");
        let _ = writeln!(out, "\t\toifname . ip6 saddr @org_peers accept comment \"its org's private network\"");
        if let Some(mesh) = &self.mesh {
            let _ = writeln!(
                out,
                "\t\tiifname {} ip6 saddr @mesh_nodes counter accept comment \"another node (its ingress), through the mesh\"",
                quoted(&mesh.interface)
            );
        }
        let _ = writeln!(out, "\t\tcounter drop");
        let _ = writeln!(out, "\t}}");

        // Out of the uplink: IPv4 (and IPv6 unless routed) under the node's address.
        if let Egress::On { ipv6 } = self.egress {
            let _ = writeln!(out, "\tchain postrouting {{");
            let _ = writeln!(out, "\t\ttype nat hook postrouting priority srcnat; policy accept;");
            if let Some(r) = node.ipv4_range {
                let _ = writeln!(out, "\t\tip saddr {r} oifname != @taps masquerade");
            }
            if ipv6 == Ipv6Egress::Nat {
                let _ = writeln!(
                    out,
                    "\t\tip6 saddr {} ip6 daddr != {} oifname != @taps masquerade",
                    node.subnet, node.cluster
                );
            }
            let _ = writeln!(out, "\t}}");
        }
        let _ = writeln!(out, "}}");
        out
    }
}
