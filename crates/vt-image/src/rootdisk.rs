//! One read-only ext4 root disk per image digest, built with `mkfs.ext4 -d` (no mounts, no root).
//!
//! On-disk layout under the store root (see docs/images.md):
//! `blobs/sha256/<hex>` verified blobs, `rootdisks/<hex>.ext4` + `<hex>.json` per requested
//! image digest, `tmp/` scratch (emptied on open).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::oci::ImageConfig;
use crate::store::{self, BlobSource, BlobStore, PulledImage};
use crate::unpack::{self, OwnerRecord, UnpackOptions};
use crate::{Digest, Error, Result};

/// Tunables of an [`ImageStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest single blob accepted (checked against the descriptor before download).
    pub max_blob_size: u64,
    pub unpack: UnpackOptions,
    /// `fsync` root disks and their info before they become visible (crash safety). Default
    /// true. (Blobs are not fsynced: they are re-verified on every read.)
    pub fsync: bool,
    /// Where layers are unpacked before `mkfs.ext4 -d` (a tmpfs such as `/dev/shm` is much
    /// faster; the tree is transient). Default: `<root>/tmp`.
    pub scratch_dir: Option<PathBuf>,
    /// The node's disk budget: an unpacked tree and its root disk never take the space it
    /// keeps free (a gzip bomb stops at it). `None`: only `unpack.max_bytes` bounds them.
    pub budget: Option<vt_disk::DiskBudget>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_blob_size: 16 << 30, unpack: UnpackOptions::default(), fsync: true, scratch_dir: None, budget: None }
    }
}

/// What the node agent needs to boot an image, stored beside its root disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The digest that was requested (manifest or index).
    pub digest: Digest,
    /// The resolved linux/amd64 manifest.
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    /// Size of the root disk file in bytes (apparent size; the file is sparse).
    pub disk_size: u64,
}

/// A ready root disk.
#[derive(Debug, Clone)]
pub struct RootDisk {
    pub path: PathBuf,
    pub info: ImageInfo,
    /// False when served from the cache.
    pub built: bool,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_disks: Vec<Digest>,
    pub removed_blobs: Vec<Digest>,
}

/// The node's image cache: blobs, root disks, single-flight builds and gc.
///
/// All methods block; call them from `spawn_blocking` in async code. Share one store per node
/// process (e.g. in an `Arc`): single-flight is per process.
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    opts: StoreOptions,
    locks: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    gc_lock: RwLock<()>,
    builds: AtomicU64,
}

impl ImageStore {
    /// Open (creating) a store at `root`; leftovers of interrupted work in `tmp/` are removed.
    pub fn open(root: &Path, opts: StoreOptions) -> Result<Self> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            unpack::remove_tree(&tmp)?;
        }
        fs::create_dir_all(root.join("rootdisks"))?;
        let blobs = BlobStore::open(&root.join("blobs"), &tmp, opts.max_blob_size)?;
        Ok(Self {
            root: root.to_owned(),
            blobs,
            opts,
            locks: Mutex::new(HashMap::new()),
            gc_lock: RwLock::new(()),
            builds: AtomicU64::new(0),
        })
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Number of root disks this store has built (cache misses) since it was opened.
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::SeqCst)
    }

    pub fn disk_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("rootdisks").join(format!("{}.ext4", digest.hex()))
    }

    fn info_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("rootdisks").join(format!("{}.json", digest.hex()))
    }

    /// Pull (verify and cache) every blob of an image without building its disk.
    pub fn pull(&self, src: &dyn BlobSource, digest: &Digest) -> Result<PulledImage> {
        let _gc = self.gc_lock.read().unwrap_or_else(|e| e.into_inner());
        store::pull(&self.blobs, src, digest)
    }

    /// The cached root disk for `digest`, if built.
    pub fn get(&self, digest: &Digest) -> Result<Option<RootDisk>> {
        let path = self.disk_path(digest);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = fs::read(self.info_path(digest))?;
        let info = serde_json::from_slice(&bytes).map_err(|e| Error::json("root disk info", e))?;
        Ok(Some(RootDisk { path, info, built: false }))
    }

    /// Return the root disk of image `digest`, pulling, unpacking and building it if needed.
    /// Concurrent calls for one digest build once; the others wait and get the cached disk.
    pub fn ensure_rootdisk(&self, src: &dyn BlobSource, digest: &Digest) -> Result<RootDisk> {
        let _gc = self.gc_lock.read().unwrap_or_else(|e| e.into_inner());
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(digest.clone()).or_default().clone()
        };
        let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(disk) = self.get(digest)? {
            // Used now: a gc with a minimum age leaves it to the caller about to boot from it.
            let _ = fs::File::open(self.info_path(digest)).and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(disk);
        }
        let tmp = self.root.join("tmp");
        let scratch = self.opts.scratch_dir.as_deref().unwrap_or(&tmp);
        let mut attempt = 0;
        let (image, tree) = loop {
            let image = store::pull(&self.blobs, src, digest)?;
            // The tree and then its root disk (about as large) share the budget: the tree gets half.
            let mut opts = self.opts.unpack.clone();
            let free = match &self.opts.budget {
                Some(b) => Some(b.available()?),
                None => None,
            };
            if let Some(free) = free {
                opts.max_bytes = opts.max_bytes.min(free / 2);
            }
            match unpack::unpack_image(&self.blobs, &image, scratch, opts) {
                Ok(tree) => break (image, tree),
                // A cached blob went bad (e.g. torn by a crash): it was dropped; fetch it again once.
                Err(Error::DigestMismatch { .. }) if attempt == 0 => attempt += 1,
                Err(Error::UnpackTooLarge { limit }) if limit < self.opts.unpack.max_bytes => {
                    let (budget, free) = (self.opts.budget.as_ref(), free.unwrap_or(0));
                    let what = format!("unpacking image {digest} (its files, then a root disk as large)");
                    return Err(budget.map_or(Error::UnpackTooLarge { limit }, |b| {
                        Error::NoSpace(b.no_space(&what, (limit + 1).saturating_mul(2), free).at_least())
                    }));
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(b) = &self.opts.budget {
            let needed = ext4_size_mib(tree.report.file_bytes) << 20;
            b.check(&format!("the root disk of image {digest}"), needed).map_err(|e| match e {
                vt_disk::BudgetError::NoSpace(e) => Error::NoSpace(e),
                vt_disk::BudgetError::Stat(e) => Error::DiskStat(e),
            })?;
        }
        let disk = tempfile::Builder::new().prefix(&format!("{}.", digest.hex())).suffix(".ext4").tempfile_in(&tmp)?;
        build_ext4(tree.path(), disk.path(), &uuid_for(digest), &tree.report.owners)?;
        drop(tree);
        if self.opts.fsync {
            disk.as_file().sync_all()?;
        }
        fs::set_permissions(disk.path(), std::fs::Permissions::from_mode(0o444))?;
        let info = ImageInfo {
            digest: digest.clone(),
            manifest_digest: image.manifest_digest.clone(),
            config: image.config.clone(),
            disk_size: fs::metadata(disk.path())?.len(),
        };
        let mut info_tmp = tempfile::NamedTempFile::new_in(&tmp)?;
        info_tmp.write_all(&serde_json::to_vec_pretty(&info).map_err(|e| Error::json("root disk info", e))?)?;
        if self.opts.fsync {
            info_tmp.as_file().sync_all()?;
        }
        info_tmp.persist(self.info_path(digest)).map_err(|e| e.error)?;
        let path = self.disk_path(digest);
        disk.persist(&path).map_err(|e| e.error)?;
        if self.opts.fsync {
            fs::File::open(self.root.join("rootdisks"))?.sync_all()?;
        }
        self.builds.fetch_add(1, Ordering::SeqCst);
        Ok(RootDisk { path, info, built: true })
    }

    /// Remove every root disk whose image digest is not in `keep`, and every blob not
    /// referenced by a kept image, but what was written or used less than `min_age` ago (a
    /// root disk that young stays, with the blobs of its image, and so does a young blob: a
    /// pull or a cache hit may have been for an instance the caller did not know of yet).
    /// Waits for in-flight pulls/builds; blocks new ones meanwhile.
    pub fn gc(&self, keep: &[Digest], min_age: Duration) -> Result<GcReport> {
        let _gc = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
        let young = |path: &Path| {
            fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|at| at.elapsed().map_or(true, |age| age < min_age))
        };
        let mut disks = Vec::new();
        for e in fs::read_dir(self.root.join("rootdisks"))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            let Some((hex, _)) = name.split_once('.') else {
                continue;
            };
            if let Ok(d) = Digest::from_hex(hex) {
                disks.push(d);
            }
        }
        disks.sort();
        disks.dedup();
        let mut keep_set: HashSet<Digest> = keep.iter().cloned().collect();
        keep_set.extend(disks.iter().filter(|d| young(&self.disk_path(d)) || young(&self.info_path(d))).cloned());
        let mut report = GcReport::default();
        for d in disks.into_iter().filter(|d| !keep_set.contains(d)) {
            remove_if_exists(&self.disk_path(&d))?;
            remove_if_exists(&self.info_path(&d))?;
            report.removed_disks.push(d);
        }
        let keep_blobs: HashSet<Digest> =
            keep_set.iter().flat_map(|d| store::referenced_blobs(&self.blobs, d)).collect();
        for d in self.blobs.list()? {
            if !keep_blobs.contains(&d) && !young(&self.blobs.path(&d)) {
                self.blobs.remove(&d)?;
                report.removed_blobs.push(d);
            }
        }
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d, l| keep_set.contains(d) || Arc::strong_count(l) > 1);
        report.removed_disks.sort();
        report.removed_blobs.sort();
        Ok(report)
    }
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// A stable filesystem UUID derived from the image digest.
fn uuid_for(digest: &Digest) -> String {
    let h = digest.hex();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Sum of what `dir` needs on ext4: (4 KiB data blocks, inodes).
fn tree_usage(dir: &Path) -> Result<(u64, u64)> {
    let (mut blocks, mut inodes) = (1u64, 1u64);
    let mut seen_links = HashSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let mut dir_bytes = 24u64;
        for e in fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            dir_bytes += 8 + e.file_name().len() as u64 + 4;
            if m.is_dir() {
                stack.push(e.path());
                inodes += 1;
            } else {
                if m.nlink() > 1 && !seen_links.insert((m.dev(), m.ino())) {
                    continue;
                }
                inodes += 1;
                if m.is_file() {
                    // Data plus one extent-tree block per 128 MiB, generously.
                    blocks += m.len().div_ceil(4096) + m.len() / (128 << 20) + 1;
                } else if m.file_type().is_symlink() && m.len() >= 60 {
                    blocks += 1;
                }
            }
        }
        blocks += dir_bytes.div_ceil(4096) + 1;
    }
    Ok((blocks, inodes))
}

/// Build an ext4 image of `dir` at `out` with `mkfs.ext4 -d`; then, if ownership could not
/// be applied while unpacking, set it inside the image with `debugfs -w`.
/// About what a root disk of `file_bytes` of files takes on the host (the file is sparse):
/// what [`build_ext4`] sizes it to without the inode tables.
fn ext4_size_mib(file_bytes: u64) -> u64 {
    (file_bytes + file_bytes / 10).div_ceil(1 << 20) + 16
}

pub fn build_ext4(dir: &Path, out: &Path, uuid: &str, owners: &[OwnerRecord]) -> Result<()> {
    let (blocks, inodes) = tree_usage(dir)?;
    let inodes = inodes + inodes / 8 + 64;
    // Data, inode tables (256 B each), 10 % and 16 MiB for bitmaps, descriptors and slack.
    let bytes = blocks * 4096 + inodes * 256;
    let mut size_mib = (bytes + bytes / 10).div_ceil(1 << 20) + 16;
    for attempt in 0..2 {
        let output = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-I", "256"])
            .args(["-O", "^has_journal,^resize_inode", "-L", "vt-root", "-U", uuid])
            .arg("-N")
            .arg(inodes.to_string())
            .arg("-E")
            .arg(format!("root_owner=0:0,hash_seed={uuid}"))
            .arg("-d")
            .arg(dir)
            .arg(out)
            .arg(format!("{size_mib}M"))
            .env("E2FSPROGS_FAKE_TIME", "1")
            .output()
            .map_err(|e| Error::Tool { tool: "mkfs.ext4".into(), status: "not run".into(), stderr: e.to_string() })?;
        if output.status.success() {
            break;
        }
        if attempt == 1 {
            return Err(Error::Tool {
                tool: "mkfs.ext4".into(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        size_mib *= 2;
    }
    apply_owners(out, owners)
}

fn apply_owners(image: &Path, owners: &[OwnerRecord]) -> Result<()> {
    let me = std::fs::metadata("/proc/self").map(|m| (m.uid() as u64, m.gid() as u64)).unwrap_or((0, 0));
    let mut script = String::new();
    for o in owners {
        if o.path.chars().any(|c| c.is_whitespace() || c == '"') {
            continue; // debugfs cannot address these; documented limitation.
        }
        if o.uid != me.0 {
            script +=
                &format!("sif \"{}\" uid {}\nsif \"{}\" uid_high {}\n", o.path, o.uid & 0xffff, o.path, o.uid >> 16);
        }
        if o.gid != me.1 {
            script +=
                &format!("sif \"{}\" gid {}\nsif \"{}\" gid_high {}\n", o.path, o.gid & 0xffff, o.path, o.gid >> 16);
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    let mut f = tempfile::NamedTempFile::new()?;
    f.write_all(script.as_bytes())?;
    let output =
        Command::new("debugfs").arg("-w").arg("-f").arg(f.path()).arg(image).output().map_err(|e| Error::Tool {
            tool: "debugfs".into(),
            status: "not run".into(),
            stderr: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(Error::Tool {
            tool: "debugfs".into(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}
