//! Volume backups with restic (Debian's `restic`): deduplicated, encrypted, incremental, any
//! restic backend (a local or mounted directory, SFTP, S3-compatible).
//!
//! A backup is one restic snapshot holding one file, `volume.ext4` (a crash-consistent copy of
//! the volume's disk, made by the agent), tagged with where it came from
//! (`vt`, `org=`, `app=`, `env=`, `volume=`, `volume_id=`, `size_gib=`): a fresh control plane
//! with the same names finds its backups by tags alone. [`Restic`] runs the `restic` binary;
//! its failures are told apart ([`Error::WrongPassword`], [`Error::Unreachable`]) so the
//! error says which.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;

/// The file name inside every backup.
pub const FILE: &str = "volume.ext4";

/// Why restic failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the backup repository {repo} refused the password in {password_file}: wrong password (or no key)")]
    WrongPassword { repo: String, password_file: PathBuf },
    #[error("the backup repository {repo} is unreachable or not initialized (`restic init` it first): {detail}")]
    Unreachable { repo: String, detail: String },
    #[error("restic is not installed (apt-get install restic): {0}")]
    NotInstalled(std::io::Error),
    #[error("restic {what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("no backup {0} in the repository")]
    NotFound(String),
}

/// Where backups go, and how many are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Any restic repository string (`/srv/backups`, `sftp:host:/path`, `s3:https://…/bucket`).
    pub repo: String,
    pub password_file: PathBuf,
    /// Retention: `(unit, n)` for `restic forget --keep-<unit> n` (daily, weekly, …).
    pub keep: Vec<(String, u32)>,
}

/// The retention units `--backup-keep` takes.
pub const KEEP_UNITS: &[&str] = &["last", "hourly", "daily", "weekly", "monthly", "yearly"];

/// Parse `daily=7,weekly=4`.
pub fn parse_keep(s: &str) -> Result<Vec<(String, u32)>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (unit, n) = p.split_once('=').ok_or_else(|| format!("`{p}`: expected UNIT=N, e.g. daily=7"))?;
            if !KEEP_UNITS.contains(&unit) {
                return Err(format!("`{unit}`: the units are {}", KEEP_UNITS.join(", ")));
            }
            let n: u32 = n.parse().map_err(|_| format!("`{p}`: N must be a positive whole number"))?;
            if n == 0 {
                return Err(format!("`{p}`: N must be at least 1"));
            }
            Ok((unit.to_owned(), n))
        })
        .collect()
}

/// Where a backup came from (its tags).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub org: String,
    pub app: String,
    pub env: String,
    pub volume: String,
    pub volume_id: String,
    pub size_gib: u32,
    pub node: String,
}

impl Origin {
    fn tags(&self) -> Vec<String> {
        vec![
            "vt".into(),
            format!("org={}", self.org),
            format!("app={}", self.app),
            format!("env={}", self.env),
            format!("volume={}", self.volume),
            format!("volume_id={}", self.volume_id),
            format!("size_gib={}", self.size_gib),
        ]
    }

    fn from_tags(tags: &[String], host: &str) -> Option<Origin> {
        let get = |k: &str| tags.iter().find_map(|t| t.strip_prefix(&format!("{k}="))).map(str::to_owned);
        Some(Origin {
            org: get("org")?,
            app: get("app")?,
            env: get("env")?,
            volume: get("volume")?,
            volume_id: get("volume_id")?,
            size_gib: get("size_gib")?.parse().ok()?,
            node: host.to_owned(),
        })
    }
}

/// One backup in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// restic's snapshot id (64 hex digits).
    pub id: String,
    pub time: String,
    pub origin: Origin,
}

/// What one backup run added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub bytes_added: u64,
    pub bytes_processed: u64,
}

#[derive(Deserialize)]
struct SnapshotJson {
    id: String,
    time: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// The `restic` binary against one repository.
#[derive(Debug, Clone)]
pub struct Restic {
    target: Target,
}

impl Restic {
    pub fn new(target: Target) -> Self {
        Restic { target }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("restic");
        c.arg("--repo")
            .arg(&self.target.repo)
            .arg("--password-file")
            .arg(&self.target.password_file)
            .arg("--no-cache")
            .stdin(Stdio::null());
        c
    }

    async fn run(&self, what: &str, mut c: Command) -> Result<Vec<u8>, Error> {
        let out = c.output().await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotInstalled(e),
            _ => Error::Failed { what: what.into(), detail: e.to_string() },
        })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(self.classify(what, &String::from_utf8_lossy(&out.stderr)))
    }

    fn classify(&self, what: &str, stderr: &str) -> Error {
        let detail = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_owned();
        if stderr.contains("wrong password") || stderr.contains("no key found") {
            Error::WrongPassword { repo: self.target.repo.clone(), password_file: self.target.password_file.clone() }
        } else if stderr.contains("does not exist")
            || stderr.contains("unable to open config file")
            || stderr.contains("Is there a repository")
            || stderr.contains("connection refused")
            || stderr.contains("no such host")
        {
            Error::Unreachable { repo: self.target.repo.clone(), detail }
        } else {
            Error::Failed { what: what.into(), detail }
        }
    }

    /// Back up `image` (a disk image file) as [`FILE`], tagged with `origin`; then apply the
    /// retention to that volume's backups. Returns the new backup's id and what it added.
    pub async fn backup(&self, image: &Path, origin: &Origin) -> Result<(String, Summary), Error> {
        // A run cut short (a node killed mid-backup) leaves its lock: remove the stale ones
        // (restic removes only locks whose process is gone, or that are old), or the
        // retention below would refuse to run.
        let mut c = self.cmd();
        c.arg("unlock");
        self.run("unlock", c).await?;
        let file = std::fs::File::open(image)
            .map_err(|e| Error::Failed { what: "backup".into(), detail: format!("open {}: {e}", image.display()) })?;
        let mut c = self.cmd();
        c.args(["backup", "--json", "--stdin", "--stdin-filename", FILE, "--host", &origin.node]);
        for t in origin.tags() {
            c.arg("--tag").arg(t);
        }
        c.stdin(Stdio::from(file));
        let out = self.run("backup", c).await?;
        let mut found = None;
        for line in String::from_utf8_lossy(&out).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if v["message_type"] == "summary" {
                let id = v["snapshot_id"].as_str().unwrap_or_default().to_owned();
                let summary = Summary {
                    bytes_added: v["data_added"].as_u64().unwrap_or(0),
                    bytes_processed: v["total_bytes_processed"].as_u64().unwrap_or(0),
                };
                found = Some((id, summary));
            }
        }
        let (short, summary) = found
            .ok_or_else(|| Error::Failed { what: "backup".into(), detail: "no summary in restic's output".into() })?;
        if !self.target.keep.is_empty() {
            let mut c = self.cmd();
            c.args(["forget", "--prune", "--tag", &format!("volume_id={}", origin.volume_id)]);
            for (unit, n) in &self.target.keep {
                c.arg(format!("--keep-{unit}")).arg(n.to_string());
            }
            self.run("forget", c).await?;
        }
        // The summary may carry a short id: answer the full one.
        let id = self.find(&short).await.map(|b| b.id).unwrap_or(short);
        Ok((id, summary))
    }

    /// Every backup of vt in the repository, oldest first.
    pub async fn list(&self) -> Result<Vec<Backup>, Error> {
        let mut c = self.cmd();
        c.args(["snapshots", "--json", "--tag", "vt"]);
        let out = self.run("snapshots", c).await?;
        let all: Vec<SnapshotJson> = serde_json::from_slice(&out)
            .map_err(|e| Error::Failed { what: "snapshots".into(), detail: format!("unexpected output: {e}") })?;
        let mut backups: Vec<Backup> = all
            .into_iter()
            .filter_map(|s| {
                let origin = Origin::from_tags(&s.tags, &s.hostname)?;
                Some(Backup { id: s.id, time: s.time, origin })
            })
            .collect();
        backups.sort_by(|a, b| (&a.time, &a.id).cmp(&(&b.time, &b.id)));
        Ok(backups)
    }

    /// The backup whose id is or starts with `id` (at least 8 hex digits).
    pub async fn find(&self, id: &str) -> Result<Backup, Error> {
        if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::NotFound(id.to_owned()));
        }
        let mut matching: Vec<Backup> = self.list().await?.into_iter().filter(|b| b.id.starts_with(id)).collect();
        match matching.len() {
            1 => Ok(matching.remove(0)),
            _ => Err(Error::NotFound(id.to_owned())),
        }
    }

    /// Write the backup's disk image to `to` (created; the caller renames it into place).
    pub async fn dump(&self, id: &str, to: &Path) -> Result<(), Error> {
        let file = std::fs::File::create(to)
            .map_err(|e| Error::Failed { what: "dump".into(), detail: format!("create {}: {e}", to.display()) })?;
        let mut c = self.cmd();
        c.args(["dump", id, &format!("/{FILE}")]).stdout(Stdio::from(file)).stderr(Stdio::piped());
        // Not `output()`: it would capture stdout instead of writing the file.
        let child = c.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotInstalled(e),
            _ => Error::Failed { what: "dump".into(), detail: e.to_string() },
        })?;
        let out =
            child.wait_with_output().await.map_err(|e| Error::Failed { what: "dump".into(), detail: e.to_string() })?;
        if out.status.success() {
            return Ok(());
        }
        Err(self.classify("dump", &String::from_utf8_lossy(&out.stderr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses_and_names_the_bad_part() {
        assert_eq!(parse_keep("daily=7,weekly=4").unwrap(), vec![("daily".into(), 7), ("weekly".into(), 4)]);
        assert!(parse_keep("dayly=7").unwrap_err().contains("the units are"));
        assert!(parse_keep("daily=0").unwrap_err().contains("at least 1"));
        assert!(parse_keep("daily").unwrap_err().contains("UNIT=N"));
    }

    fn has_restic() -> bool {
        std::process::Command::new("restic").arg("version").output().is_ok_and(|o| o.status.success())
    }

    #[tokio::test]
    async fn a_backup_lists_dumps_the_same_bytes_and_wrong_passwords_and_missing_repos_are_told_apart() {
        if !has_restic() {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "restic is missing");
            eprintln!("SKIPPED: needs restic (apt-get install restic)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let init = std::process::Command::new("restic")
            .arg("--repo")
            .arg(&repo)
            .arg("--password-file")
            .arg(&pw)
            .arg("init")
            .output()
            .unwrap();
        assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
        let target =
            Target { repo: repo.to_str().unwrap().into(), password_file: pw.clone(), keep: vec![("last".into(), 2)] };
        let r = Restic::new(target.clone());
        let image = dir.path().join("img");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        std::fs::write(&image, &data).unwrap();
        let origin = Origin {
            org: "acme".into(),
            app: "web".into(),
            env: "prod".into(),
            volume: "data".into(),
            volume_id: "vol_x".into(),
            size_gib: 1,
            node: "node-1".into(),
        };
        let (id, s) = r.backup(&image, &origin).await.unwrap();
        assert_eq!(id.len(), 64);
        assert!(s.bytes_added > 0 && s.bytes_processed == 3_000_000, "{s:?}");
        // The same bytes again add (almost) nothing; retention keeps the last 2 of 3.
        let (_, again) = r.backup(&image, &origin).await.unwrap();
        assert!(again.bytes_added < 10_000, "{again:?}");
        r.backup(&image, &origin).await.unwrap();
        let list = r.list().await.unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].origin, origin);
        let last = list[1].id.clone();
        let out = dir.path().join("out");
        r.dump(&last[..12], &out).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == data, "the dump differs from what was backed up");
        assert!(matches!(r.find("deadbeef").await, Err(Error::NotFound(_))));

        std::fs::write(&pw, "wrong\n").unwrap();
        let e = r.list().await.unwrap_err();
        assert!(matches!(e, Error::WrongPassword { .. }), "{e}");
        assert!(e.to_string().contains("wrong password"), "{e}");
        let missing = Restic::new(Target { repo: dir.path().join("nope").to_str().unwrap().into(), ..target });
        let e = missing.list().await.unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    }
}
