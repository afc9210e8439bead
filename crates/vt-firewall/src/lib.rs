//! The guest network's isolation (docs/network.md): one nftables table that vt owns,
//! generated whole from state and applied atomically.
//!
//! * [`ruleset`]: pure. A [`Policy`] (the node's networks, its instances and their orgs,
//!   the org peers, the operator's allow and deny lists, the host's LAN) → the `nft -f`
//!   script of the table. Golden-text tests (`tests/golden.rs`).
//! * [`nft`]: the [`Firewall`] trait and [`Nft`], which applies a script with `nft -f -`
//!   (one transaction). Tested against the kernel in a network namespace (`tests/golden.rs`).
//! * [`host`]: forwarding switched on (or a refusal saying what to enable), the host's
//!   LAN prefixes.
//! * [`prefix`]: operators' CIDR prefixes, parsed strictly and checked for overlaps.
//!
//! The node agent owns the table: it applies the ruleset before a VM's tap exists and
//! after it is gone, rebuilds it at start from its records, and removes it at a clean
//! shutdown.

pub mod host;
pub mod nft;
pub mod prefix;
pub mod ruleset;
pub mod testing;

pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use nft::{Firewall, FirewallError, Nft};
pub use ruleset::{Class, Egress, Ipv6Egress, Member, Mesh, NodeNet, Peer, Policy};

/// The table vt owns unless told otherwise (`vt server --nft-table`).
pub const DEFAULT_TABLE: &str = "vt";

/// Whether `name` can name an nftables table: 1-31 characters of `[A-Za-z0-9_-]`, a letter first.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 31
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a table name: 1-31 letters, digits, `-` or `_`, starting with a letter"))
    }
}
