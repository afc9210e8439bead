//! Applying a ruleset: the [`Firewall`] trait and its one real implementation, [`Nft`],
//! which feeds the script to Debian's `nft -f -` (one netlink transaction: all of it or
//! nothing). Tests of code above it may use a recording fake behind the same trait; the
//! real one is tested against the kernel (`tests/golden.rs`, and end to end from real guests in `crates/vt/tests/network.rs`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a ruleset could not be applied, or nftables cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "nftables is not installed (no `nft` on PATH): install Debian's `nftables` package \
         (`apt-get install nftables`); instances are not started without their isolation rules"
    )]
    Missing,
    #[error("cannot run {nft}: {source}")]
    Spawn { nft: PathBuf, source: std::io::Error },
    #[error(
        "nftables refused the ruleset of table `{table}`: {detail}{}",
        if detail.contains("Operation not permitted") { " (nftables needs root or CAP_NET_ADMIN)" } else { "" }
    )]
    Refused { table: String, detail: String },
}

/// Something that holds a node's ruleset: the kernel through `nft` ([`Nft`]), or a fake.
pub trait Firewall: Send + Sync {
    /// Replace the table with this script (`Policy::render`), atomically.
    fn apply(&self, table: &str, script: &str) -> Result<(), FirewallError>;
    /// Remove the table (nothing to do when it is absent).
    fn remove(&self, table: &str) -> Result<(), FirewallError> {
        self.apply(table, &crate::ruleset::removal(table))
    }
}

/// The kernel's nftables, through the `nft` binary.
#[derive(Debug, Clone)]
pub struct Nft {
    bin: PathBuf,
}

impl Nft {
    /// `nft` from `PATH`, checked by running it: a
    /// host where it is missing or cannot change the ruleset (no root, no nf_tables) says
    /// so here, before any instance starts.
    pub fn probe() -> Result<Nft, FirewallError> {
        let bin = find("nft").ok_or(FirewallError::Missing)?;
        let nft = Nft { bin };
        // A table that is created and deleted in one transaction: checks permission and
        // kernel support without leaving anything behind.
        let probe = "vt-probe";
        nft.apply(probe, &format!("table inet {probe}\ndelete table inet {probe}\n"))?;
        Ok(nft)
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `nft list table inet <table>`: the ruleset as the kernel holds it (`None`: no such table).
    pub fn list(&self, table: &str) -> Result<Option<String>, FirewallError> {
        let out = Command::new(&self.bin)
            .args(["list", "table", "inet", table])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| FirewallError::Spawn { nft: self.bin.clone(), source })?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let detail = String::from_utf8_lossy(&out.stderr);
        if detail.contains("No such file or directory") {
            return Ok(None);
        }
        Err(FirewallError::Refused { table: table.to_owned(), detail: detail.trim().to_owned() })
    }
}

impl Firewall for Nft {
    fn apply(&self, table: &str, script: &str) -> Result<(), FirewallError> {
        let spawn = |source| FirewallError::Spawn { nft: self.bin.clone(), source };
        let mut child = Command::new(&self.bin)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(spawn)?;
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(FirewallError::Refused { table: table.to_owned(), detail });
        }
        tracing::debug!(table, bytes = script.len(), "ruleset applied");
        Ok(())
    }
}

/// A program on `PATH` (the agent runs as root, whose PATH has `/usr/sbin`, where Debian puts `nft`).
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
