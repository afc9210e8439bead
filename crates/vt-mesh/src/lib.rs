//! The WireGuard configuration of a node (docs/nodes.md, "The mesh").
//!
//! A node has one WireGuard interface. [`Wireguard`] is what the agent asks of it: that it
//! exists with the node's private key, listen port, MTU 1420 and overlay address
//! ([`Wireguard::ensure`]), that its peers and the routes to their allowed IPs are exactly a
//! given list ([`Wireguard::set_peers`]), and that it goes ([`Wireguard::remove`]). Both are
//! idempotent: applying the same list twice changes nothing, a changed list changes only
//! what differs ([`plan`], pure, computes it from what the interface holds).
//!
//! The one real implementation, [`WgTools`], uses the kernel's WireGuard where
//! `ip link add type wireguard` works and a userspace device otherwise (`boringtun-cli`, run
//! as a supervised child), and configures either with Debian's `wg` and `ip` (iproute2).
//! Tests of code above it may use [`testing::Recorder`] behind the same trait.
//!
//! Nothing here filters packets: ICMPv6 Packet Too Big crosses the interface like anything
//! else (the node's firewall passes it too: docs/network.md), so paths through the 1420-byte
//! MTU are discovered, never black-holed.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::{IpNet, Ipv6Net};

mod plan;
pub mod testing;
mod wg;

pub use plan::{plan, Changes, Current, CurrentPeer, PeerChange};
pub use wg::{check_name, Backend, WgTools, BORINGTUN_ENV, BORINGTUN_VERSION};

/// The MTU of every mesh interface: 1500 less WireGuard's overhead over IPv6 (80 bytes).
pub const MTU: u16 = 1420;

/// WireGuard's usual port; `vt server --wireguard-port`'s default.
pub const DEFAULT_PORT: u16 = 51820;

/// Every peer is kept alive this often (seconds), so a node behind NAT stays reachable.
pub const KEEPALIVE_SECS: u16 = 25;

/// The node's own interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (at most 15 bytes: a Linux interface name).
    pub name: String,
    /// The node's private key, base64, in a file (`<data-dir>/wireguard.key`).
    pub private_key: PathBuf,
    pub listen_port: u16,
    /// The node's overlay address (`<subnet>::1/128`), once the node has a subnet.
    pub address: Option<Ipv6Net>,
}

/// Another node, as the interface holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// Its public key, base64 (44 characters).
    pub public_key: String,
    pub endpoint: SocketAddr,
    /// What is routed to it, and accepted from it: its instances' /64.
    pub allowed_ips: Vec<IpNet>,
}

impl Peer {
    /// A peer from the control plane's strings (`vt_api::MeshPeer`): the key checked, the
    /// endpoint parsed, the allowed IPs parsed and sorted.
    pub fn parse(public_key: &str, endpoint: &str, allowed_ips: &[String]) -> Result<Peer, MeshError> {
        let bad = |detail: String| MeshError::InvalidPeer { key: public_key.to_owned(), detail };
        if !is_key(public_key) {
            return Err(bad("the public key is not 32 bytes of base64 (44 characters ending in `=`)".into()));
        }
        let endpoint = endpoint.parse().map_err(|_| bad(format!("the endpoint `{endpoint}` is not address:port")))?;
        let mut ips = allowed_ips
            .iter()
            .map(|a| a.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| bad(format!("`{a}` is not a prefix"))))
            .collect::<Result<Vec<_>, _>>()?;
        ips.sort();
        ips.dedup();
        Ok(Peer { public_key: public_key.to_owned(), endpoint, allowed_ips: ips })
    }
}

/// A WireGuard key as `wg` prints it: 32 bytes in base64.
pub fn is_key(s: &str) -> bool {
    s.len() == 44 && s.ends_with('=') && s[..43].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// What [`Wireguard::ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// The interface was there, as configured.
    Unchanged,
    /// The interface was there; its key, port, MTU, state or address were set again.
    Reconfigured,
    /// The interface was made (first start, or its device had died): it has no peers yet.
    Created,
}

/// The node's WireGuard interface, whichever device holds it.
pub trait Wireguard: Send + Sync {
    /// The interface exists, is up, with the key, port, MTU [`MTU`] and address of `iface`.
    fn ensure(&self, iface: &Interface) -> Result<Ensured, MeshError>;
    /// Its peers are exactly `peers`, and a route to each peer's allowed IPs goes over it.
    fn set_peers(&self, iface: &Interface, peers: &[Peer]) -> Result<Changes, MeshError>;
    /// The interface is gone, with its routes (and its device process). Nothing to do when absent.
    fn remove(&self, iface: &Interface) -> Result<(), MeshError>;
}

/// Why the mesh could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("`{tool}` is not installed: {install}")]
    Missing { tool: &'static str, install: String },
    #[error("cannot run `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error(
        "`{command}` failed: {detail}{}",
        if detail.contains("Operation not permitted") { " (the mesh needs root or CAP_NET_ADMIN)" } else { "" }
    )]
    Failed { command: String, detail: String },
    #[error("boringtun for interface `{interface}` exited ({status}) before its interface was ready: {output}")]
    DeviceExited { interface: String, status: String, output: String },
    #[error("interface `{interface}` was not ready within {secs} s")]
    NotReady { interface: String, secs: u64 },
    #[error("cannot read the output of `{command}`: {detail}")]
    Unparsable { command: String, detail: String },
    #[error("mesh peer {key}: {detail}")]
    InvalidPeer { key: String, detail: String },
    #[error("cannot read the WireGuard private key {}: {source}", path.display())]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("`{0}` is not a usable interface name (1 to 15 letters, digits, `-`, `_`, `.`)")]
    InterfaceName(String),
}
