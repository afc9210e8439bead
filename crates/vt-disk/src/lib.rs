//! A node's disk budget.
//!
//! Every large write on a node (a registry upload, a layer unpacked, a root
//! disk, a scratch disk or a volume) asks the node's [`DiskBudget`] first:
//! `check(what, needed)` passes when the filesystem holding the data
//! directory has `needed` bytes free beyond the [`Reserve`] kept for
//! everything else (the store, logs, the host). A write that does not fit
//! fails with [`NoSpace`], which says what needed how much, what is free and
//! on which node, before anything is written.
//!
//! The budget reads the filesystem's free space at each check (`statvfs`), so
//! it follows whatever else fills the disk; it reserves nothing between a check
//! and the write (two writes checked at once may together not fit: the reserve
//! is what absorbs that).

use std::fmt;
use std::path::{Path, PathBuf};

/// What is kept free on the data directory's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// A share of the filesystem's size, in percent (0-99).
    Percent(u8),
    /// A number of bytes.
    Bytes(u64),
}

impl Default for Reserve {
    /// 5 GiB: room for the store, logs and the host whatever the disk's size.
    fn default() -> Self {
        Reserve::Bytes(5 << 30)
    }
}

impl fmt::Display for Reserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reserve::Percent(p) => write!(f, "{p}%"),
            Reserve::Bytes(b) => f.write_str(&human(*b)),
        }
    }
}

/// Why a reserve did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid disk reserve `{input}`: {why}; write a share like `10%` or a size like `5GiB`, `512MiB`, `0`")]
pub struct ReserveError {
    pub input: String,
    pub why: &'static str,
}

impl std::str::FromStr for Reserve {
    type Err = ReserveError;

    fn from_str(s: &str) -> Result<Self, ReserveError> {
        let err = |why| ReserveError { input: s.to_owned(), why };
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: u8 = p.trim().parse().map_err(|_| err("the share is not a whole number"))?;
            if p >= 100 {
                return Err(err("the share must be below 100%"));
            }
            return Ok(Reserve::Percent(p));
        }
        parse_size(t).map(Reserve::Bytes).map_err(err)
    }
}

/// `0`, `4096`, `512MiB`, `5GiB`, `1TiB` (binary units; `B` optional).
pub fn parse_size(s: &str) -> Result<u64, &'static str> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err("the size does not start with a number");
    }
    let n: u64 = digits.parse().map_err(|_| "the number is too large")?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return Err("the unit is not one of B, KiB, MiB, GiB, TiB"),
    };
    n.checked_mul(1 << shift).ok_or("the size is too large")
}

/// `1.5 GiB`, `512 MiB`, `37 B`: for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value >= 100.0 || value.fract() < 0.05 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A write that does not fit the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} needs {at_least}{needed_h}, {free_h} free on node {node} (beyond the {reserve} kept free on {path}); \
     free space on the node, or lower `--disk-reserve`",
    at_least = if *.at_least { "at least " } else { "" },
    needed_h = human(*.needed),
    free_h = human(*.free),
    path = .path.display()
)]
pub struct NoSpace {
    pub what: String,
    pub needed: u64,
    /// `needed` is a lower bound (the write was stopped when it passed what is free).
    pub at_least: bool,
    /// Free beyond the reserve.
    pub free: u64,
    pub reserve: Reserve,
    pub node: String,
    pub path: PathBuf,
}

impl NoSpace {
    /// The same, with `needed` a lower bound.
    pub fn at_least(self) -> Self {
        NoSpace { at_least: true, ..self }
    }
}

/// Reading the filesystem's free space failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the free space of {path}: {source}")]
pub struct StatError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(transparent)]
    NoSpace(#[from] NoSpace),
    #[error(transparent)]
    Stat(#[from] StatError),
}

/// The free space of one filesystem, minus a reserve, on a named node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskBudget {
    path: PathBuf,
    reserve: Reserve,
    node: String,
}

/// What a filesystem holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    /// Free to unprivileged writers (`f_bavail`).
    pub free: u64,
}

impl DiskBudget {
    /// The budget of the filesystem holding `path` (an existing directory).
    pub fn new(path: impl Into<PathBuf>, reserve: Reserve, node: impl Into<String>) -> Self {
        DiskBudget { path: path.into(), reserve, node: node.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn reserve(&self) -> Reserve {
        self.reserve
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The filesystem's size and free space now.
    pub fn usage(&self) -> Result<Usage, StatError> {
        let st = rustix::fs::statvfs(&self.path)
            .map_err(|e| StatError { path: self.path.clone(), source: std::io::Error::from(e) })?;
        let frsize = st.f_frsize.max(1);
        Ok(Usage { total: st.f_blocks.saturating_mul(frsize), free: st.f_bavail.saturating_mul(frsize) })
    }

    /// Bytes the reserve keeps on a filesystem of `total` bytes.
    pub fn reserved(&self, total: u64) -> u64 {
        match self.reserve {
            Reserve::Percent(p) => total / 100 * u64::from(p),
            Reserve::Bytes(b) => b,
        }
    }

    /// Bytes a write may take now.
    pub fn available(&self) -> Result<u64, StatError> {
        let u = self.usage()?;
        Ok(u.free.saturating_sub(self.reserved(u.total)))
    }

    /// Whether `needed` bytes for `what` fit now.
    pub fn check(&self, what: &str, needed: u64) -> Result<(), BudgetError> {
        let free = self.available()?;
        if needed > free {
            return Err(self.no_space(what, needed, free).into());
        }
        Ok(())
    }

    /// The error for `what` needing `needed` with `free` available.
    pub fn no_space(&self, what: &str, needed: u64, free: u64) -> NoSpace {
        NoSpace {
            what: what.to_owned(),
            needed,
            at_least: false,
            free,
            reserve: self.reserve,
            node: self.node.clone(),
            path: self.path.clone(),
        }
    }
}

/// The bytes `path` takes on its filesystem: the blocks allocated to it and, for a directory,
/// to everything under it (symbolic links not followed, other filesystems included). A sparse
/// file counts what it really takes, not its length. What cannot be read counts 0 (a file
/// removed while it is walked).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    let own = meta.blocks().saturating_mul(512);
    if !meta.is_dir() {
        return own;
    }
    let entries = std::fs::read_dir(path).into_iter().flatten().flatten();
    entries.fold(own, |sum, e| sum.saturating_add(allocated(&e.path())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_parse_or_say_why() {
        assert_eq!("10%".parse(), Ok(Reserve::Percent(10)));
        assert_eq!(" 0% ".parse(), Ok(Reserve::Percent(0)));
        assert_eq!("5GiB".parse(), Ok(Reserve::Bytes(5 << 30)));
        assert_eq!("512 MiB".parse(), Ok(Reserve::Bytes(512 << 20)));
        assert_eq!("0".parse(), Ok(Reserve::Bytes(0)));
        for (bad, why) in [
            ("100%", "below 100%"),
            ("x%", "whole number"),
            ("5GB", "unit"),
            ("GiB", "start with a number"),
            ("", "start with a number"),
            ("99999999999TiB", "too large"),
        ] {
            let e = bad.parse::<Reserve>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn every_prefix_of_a_reserve_parses_or_errs() {
        for input in ["10%", "5GiB", "512 MiB"] {
            for end in 0..=input.len() {
                let _ = input[..end].parse::<Reserve>();
            }
        }
    }

    #[test]
    fn allocated_counts_blocks_not_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("sparse");
        std::fs::File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
        assert!(allocated(&sparse) < 1 << 20, "a sparse file takes next to nothing");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("full"), vec![1u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("link")).unwrap();
        let all = allocated(dir.path());
        assert!((1 << 20..4 << 20).contains(&all), "{all}: the written MiB, not the link's target");
        assert_eq!(allocated(&dir.path().join("missing")), 0);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(37), "37 B");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(512 << 20), "512 MiB");
        assert_eq!(human(5 << 30), "5 GiB");
    }

    #[test]
    fn the_budget_is_the_free_space_beyond_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let all = DiskBudget::new(dir.path(), Reserve::Bytes(0), "n1");
        let usage = all.usage().unwrap();
        assert!(usage.total >= usage.free && usage.free > 0, "{usage:?}");
        let free = all.available().unwrap();
        all.check("a small write", 1).unwrap();
        // A reserve of all but 1 MiB of what is free leaves about 1 MiB.
        let tight = DiskBudget::new(dir.path(), Reserve::Bytes(free.saturating_sub(1 << 20)), "n1");
        let BudgetError::NoSpace(e) = tight.check("unpacking layer sha256:ab", 1 << 30).unwrap_err() else {
            panic!("expected NoSpace")
        };
        assert_eq!((e.needed, e.node.as_str()), (1 << 30, "n1"));
        let msg = e.to_string();
        assert!(msg.starts_with("unpacking layer sha256:ab needs 1 GiB, "), "{msg}");
        assert!(msg.contains("free on node n1") && msg.contains("--disk-reserve"), "{msg}");
        assert_eq!(DiskBudget::new(dir.path(), Reserve::Percent(10), "n1").reserved(1000), 100);
        let missing = DiskBudget::new(dir.path().join("nope"), Reserve::Bytes(0), "n1");
        assert!(missing.available().unwrap_err().to_string().contains("nope"));
    }
}
