//! The registry's storage on disk (blocking I/O; small files, or called from `spawn_blocking`).
//!
//! ```text
//! <root>/layout-version                              `2`: the layout below (written by `open`)
//! <root>/blobs/sha256/<hex>                          blobs and manifests, content-addressed
//! <root>/uploads/<uuid>/data                         bytes of an upload in progress (expires, below)
//! <root>/uploads/<uuid>/repo                         the repository the upload belongs to
//! <root>/repositories/<name>/_layers/sha256/<hex>    empty file: blob <hex> belongs to <name>
//! <root>/repositories/<name>/_manifests/sha256/<hex> media type of a manifest pushed to <name>
//! <root>/repositories/<name>/_tags/<tag>             `sha256:<hex>` the tag points to
//! <root>/tmp/                                        files being written, renamed into place
//! <root>/gc.lock                                      locked by gc (exclusive) and by writes that reference blobs
//! ```
//!
//! Every file appears under its final name complete: it is written aside, fsynced and renamed.
//! An upload becomes a blob only when its sha256 matches the digest the client names.
//!
//! An upload nobody wrote to for the upload TTL ([`DEFAULT_UPLOAD_TTL`], 24 h, by default) is
//! abandoned: it answers as unknown from then on and is deleted, on access, by the sweep at
//! [`Storage::open`], and by a sweep when an upload starts (at most once a minute).
//!
//! The bytes of a blob are stored once, whatever repositories it was pushed to; what a
//! repository may serve is its *blobs*: those linked in its `_layers` (an upload to it finished,
//! or a blob was mounted into it) and its manifests. Repository names cannot collide with the
//! `_layers`, `_manifests` and `_tags` directories: a name component starts with `[a-z0-9]`.
//!
//! Uploads are bounded ([`Limits`]): by the node's disk budget (they never take the space it
//! keeps free) and by a quota per namespace (a repository name's first component: the org).
//! [`Storage::gc`] deletes the blobs no manifest references (past a grace period, so a push in
//! progress keeps its layers) and the abandoned uploads; manifests are never deleted, so a
//! blob an image or a release refers to is never collected.
//!
//! Layout 1 (no `layout-version` file) had no `_layers`: every blob was readable through every
//! repository. [`Storage::open`] migrates it once, linking into each repository the config and
//! layers of the image manifests stored in it, then writes `layout-version`.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};
use vt_disk::{human, DiskBudget, NoSpace, StatError};
use vt_image::oci::{self, ImageIndex, ImageManifest, ManifestKind};
use vt_image::Digest;

/// The layout [`Storage::open`] leaves on disk (see the module docs).
pub const LAYOUT_VERSION: u32 = 2;

/// What [`Storage::referencing`] holds.
pub struct Referencing<'a> {
    _in_process: RwLockReadGuard<'a, ()>,
    _file: Option<std::fs::File>,
}

/// The lock file gc and the writes that reference blobs take (see [`Storage::referencing`]).
const GC_LOCK: &str = "gc.lock";
/// A file in `tmp/` untouched for this long was left by a crash ([`Storage::open`] deletes it).
const TMP_STALE: Duration = Duration::from_secs(3600);
/// Name of the file under the root that records the layout version.
const LAYOUT_FILE: &str = "layout-version";

/// How long an upload may go without a write before it is abandoned and deleted.
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Starting uploads sweeps the abandoned ones at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// On-disk registry storage rooted at `<data-dir>/registry`.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
    upload_ttl: Duration,
    last_sweep: Arc<Mutex<Option<Instant>>>,
    limits: Limits,
    /// Held (shared) by writes that make a blob referenced; [`Storage::gc`] holds it alone.
    gc_lock: Arc<RwLock<()>>,
}

/// What uploads may take.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// The node's disk budget: uploads never take the space it keeps free.
    pub budget: Option<DiskBudget>,
    /// Bytes the blobs of one namespace (the first component of a repository name) may hold.
    pub namespace_quota: Option<u64>,
}

/// Why an upload cannot take more bytes.
#[derive(Debug, thiserror::Error)]
pub enum Full {
    #[error(transparent)]
    Disk(#[from] NoSpace),
    #[error(
        "the registry quota of `{namespace}` is {quota_h}: its repositories hold {used_h} and this upload \
         needs {needed_h}; delete unreferenced blobs with `vt system gc`, or raise `--registry-quota-gib`",
        quota_h = human(*.quota),
        used_h = human(*.used),
        needed_h = human(*.needed)
    )]
    Quota { namespace: String, quota: u64, used: u64, needed: u64 },
    #[error(transparent)]
    Stat(#[from] StatError),
    #[error("reading the registry's usage: {0}")]
    Io(#[from] io::Error),
}

/// What [`Storage::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    /// Blobs a manifest (or the caller) references, or too young to judge.
    pub blobs_kept: u64,
    pub uploads_expired: u64,
}

/// A manifest as stored: its digest, media type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Why finishing an upload failed.
#[derive(Debug)]
pub enum FinishError {
    /// The upload's content hashes to `actual`, not to the digest asked for. The upload is gone.
    DigestMismatch {
        actual: Digest,
    },
    Io(io::Error),
}

impl From<io::Error> for FinishError {
    fn from(e: io::Error) -> Self {
        FinishError::Io(e)
    }
}

fn not_found<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// fsync a directory, so the renames done in it survive a crash.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A random 128-bit id as 32 hex digits (upload ids and temp file names).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    hex::encode(b)
}

impl Storage {
    /// Open (creating the directories), clear abandoned temp files, and migrate a layout 1
    /// store to per-repository blob links (once; see the module docs).
    ///
    /// Fails when `layout-version` names a layout this build does not know (a newer one).
    pub fn open(root: &Path) -> io::Result<Self> {
        for d in ["blobs/sha256", "uploads", "repositories", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        // Files a crash left half-written. Only old ones: another process sharing the storage
        // (control planes on one database) may be writing the young ones now.
        if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
            let stale = SystemTime::now().checked_sub(TMP_STALE).unwrap_or(SystemTime::UNIX_EPOCH);
            for e in entries.flatten() {
                if e.metadata().and_then(|m| m.modified()).is_ok_and(|at| at < stale) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let st = Storage::at(root);
        st.migrate()?;
        st.sweep_uploads(true);
        Ok(st)
    }

    /// Storage at `root` without touching the disk (for readers; writers use [`Storage::open`]).
    pub fn at(root: &Path) -> Self {
        Storage {
            root: root.to_owned(),
            upload_ttl: DEFAULT_UPLOAD_TTL,
            last_sweep: Arc::default(),
            limits: Limits::default(),
            gc_lock: Arc::default(),
        }
    }

    /// The same storage with uploads bounded by `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Held while a write makes a blob referenced (a manifest put, a mount): [`Storage::gc`]
    /// waits for it, so it never deletes a blob between its check and its use. Across the
    /// processes sharing the storage too (control planes on one database): a shared lock on
    /// `<root>/gc.lock`, which gc takes exclusively.
    pub fn referencing(&self) -> Referencing<'_> {
        let in_process = self.gc_lock.read().unwrap_or_else(|e| e.into_inner());
        Referencing { _in_process: in_process, _file: self.lock_file(false) }
    }

    /// `<root>/gc.lock`, locked shared or exclusive (released when dropped); `None` when the
    /// filesystem refuses (the in-process lock still holds).
    fn lock_file(&self, exclusive: bool) -> Option<std::fs::File> {
        let path = self.root.join(GC_LOCK);
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path);
        let locked = file.and_then(|f| if exclusive { f.lock() } else { f.lock_shared() }.map(|()| f));
        locked
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "cannot lock the registry's gc lock"))
            .ok()
    }

    /// How many more bytes upload `id` of repository `name`, now `size` bytes long, may take:
    /// the disk budget's room and the rest of the namespace's quota. `Err` when not one more
    /// (`needed`: what the request wants, at least 1).
    pub fn room(&self, name: &str, size: u64, needed: u64) -> Result<u64, Full> {
        let needed = needed.max(1);
        let mut room = u64::MAX;
        if let Some(budget) = &self.limits.budget {
            let free = budget.available()?;
            if needed > free {
                return Err(budget.no_space(&format!("an upload to {name}"), needed, free).into());
            }
            room = free;
        }
        if let Some(quota) = self.limits.namespace_quota {
            let namespace = name.split('/').next().unwrap_or(name);
            let used = self.namespace_usage(namespace)?.saturating_add(size);
            let left = quota.saturating_sub(used);
            if needed > left {
                return Err(Full::Quota { namespace: namespace.to_owned(), quota, used, needed });
            }
            room = room.min(left);
        }
        Ok(room)
    }

    /// Bytes of the distinct blobs (layers, configs, manifests) of the repositories of `namespace`.
    pub fn namespace_usage(&self, namespace: &str) -> io::Result<u64> {
        let mut digests = BTreeSet::new();
        for (_, dir) in self.link_dirs(&self.root.join("repositories").join(namespace))? {
            digests.extend(self.linked(&dir)?);
        }
        let mut used = 0u64;
        for d in &digests {
            used = used.saturating_add(self.blob_size(d)?.unwrap_or(0));
        }
        Ok(used)
    }

    /// The `_layers/sha256` and `_manifests/sha256` directories under `dir`, at any depth
    /// (a repository with blobs but no manifest yet has only `_layers`), with their kind.
    fn link_dirs(&self, dir: &Path) -> io::Result<Vec<(&'static str, PathBuf)>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            let Some(entries) = not_found(std::fs::read_dir(&dir))? else { continue };
            for e in entries {
                let e = e?;
                if !e.file_type()?.is_dir() {
                    continue;
                }
                match e.file_name().to_str() {
                    Some("_layers") => out.push(("_layers", e.path().join("sha256"))),
                    Some("_manifests") => out.push(("_manifests", e.path().join("sha256"))),
                    Some(n) if !n.starts_with('_') => stack.push(e.path()),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Digests named by the files of a `_layers/sha256` or `_manifests/sha256` directory.
    fn linked(&self, dir: &Path) -> io::Result<Vec<Digest>> {
        let Some(entries) = not_found(std::fs::read_dir(dir))? else { return Ok(vec![]) };
        let mut out = Vec::new();
        for e in entries {
            if let Ok(d) = format!("sha256:{}", e?.file_name().to_string_lossy()).parse::<Digest>() {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Delete the blobs no stored manifest references and `keep` does not name, when older
    /// than `grace` (a push in progress uploads its layers before its manifest), with their
    /// repository links; and the abandoned uploads.
    pub fn gc(&self, keep: &[Digest], grace: Duration, now: SystemTime) -> io::Result<GcReport> {
        let _alone = self.gc_lock.write().unwrap_or_else(|e| e.into_inner());
        let _alone_everywhere = self.lock_file(true);
        let mut report = GcReport { uploads_expired: self.expire_uploads(now)? as u64, ..Default::default() };
        let mut repos = Vec::new();
        self.find_repositories(&self.root.join("repositories"), "", &mut repos)?;
        let mut referenced: BTreeSet<Digest> = keep.iter().cloned().collect();
        for name in &repos {
            for digest in self.linked(&self.repo_dir(name).join("_manifests/sha256"))? {
                referenced.insert(digest.clone());
                let Some(m) = self.manifest(name, &digest)? else { continue };
                match referenced_by(&m) {
                    Some(blobs) => referenced.extend(blobs),
                    None => {
                        // Unreadable: keep every blob of the repository rather than guess.
                        tracing::warn!(repository = %name, %digest, "stored manifest does not parse; gc keeps the repository's blobs");
                        referenced.extend(self.linked(&self.repo_dir(name).join("_layers/sha256"))?);
                    }
                }
            }
        }
        let mut removed = Vec::new();
        for digest in self.linked(&self.root.join("blobs/sha256"))? {
            let path = self.blob_path(&digest);
            let Some(meta) = not_found(std::fs::metadata(&path))? else { continue };
            let young = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_none_or(|age| age < grace);
            if referenced.contains(&digest) || young {
                report.blobs_kept += 1;
                continue;
            }
            removed.push((digest, path, meta.len()));
        }
        // The links first (of every repository, with a manifest or not): a blob is never
        // linked without its bytes.
        let layer_dirs = self.link_dirs(&self.root.join("repositories"))?;
        for (digest, path, len) in removed {
            for (_, dir) in layer_dirs.iter().filter(|(kind, _)| *kind == "_layers") {
                match std::fs::remove_file(dir.join(digest.hex())) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            // Another process sharing the storage may have collected it first.
            if not_found(std::fs::remove_file(&path))?.is_none() {
                continue;
            }
            report.blobs_removed += 1;
            report.bytes_freed += len;
        }
        if report.blobs_removed > 0 {
            sync_dir(&self.root.join("blobs/sha256"))?;
        }
        Ok(report)
    }

    /// The same storage with abandoned uploads expiring after `ttl` without a write.
    pub fn with_upload_ttl(mut self, ttl: Duration) -> Self {
        self.upload_ttl = ttl;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Size of blob `digest`, if stored.
    pub fn blob_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        Ok(not_found(std::fs::metadata(self.blob_path(digest)))?.map(|m| m.len()))
    }

    fn repo_dir(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }

    fn layer_link(&self, name: &str, digest: &Digest) -> PathBuf {
        self.repo_dir(name).join("_layers/sha256").join(digest.hex())
    }

    /// Size of blob `digest` if it is a blob of repository `name`: linked in it (pushed or
    /// mounted there), or one of its manifests. `None` for blobs of other repositories.
    pub fn blob_size_in(&self, name: &str, digest: &Digest) -> io::Result<Option<u64>> {
        if !self.layer_link(name, digest).is_file() && !self.has_manifest(name, digest) {
            return Ok(None);
        }
        self.blob_size(digest)
    }

    /// Link blob `digest` (already stored) into repository `name`; a no-op when it is linked.
    pub fn link_blob(&self, name: &str, digest: &Digest) -> io::Result<()> {
        let link = self.layer_link(name, digest);
        if link.is_file() {
            return Ok(());
        }
        self.write_atomic(&link, b"")
    }

    /// Whether anything was ever pushed to repository `name`.
    pub fn repo_exists(&self, name: &str) -> bool {
        self.repo_dir(name).join("_manifests").is_dir()
    }

    /// Write `bytes` to `path` atomically (temp file in `tmp/`, fsync, rename).
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = self.root.join("tmp").join(random_id());
        let res = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    // ---- uploads ----

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// Path of an upload's data file.
    pub fn upload_data(&self, id: &str) -> PathBuf {
        self.upload_dir(id).join("data")
    }

    /// Start an upload for repository `name`; returns its id. Sweeps abandoned uploads first
    /// (at most once a minute).
    pub fn start_upload(&self, name: &str) -> io::Result<String> {
        self.sweep_uploads(false);
        let id = random_id();
        let dir = self.upload_dir(&id);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("repo"), name)?;
        std::fs::File::create(dir.join("data"))?;
        Ok(id)
    }

    /// Bytes received so far by upload `id` of repository `name`; `None` if there is no such
    /// upload, or it was abandoned (then it is deleted).
    pub fn upload_size(&self, name: &str, id: &str) -> io::Result<Option<u64>> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(repo) = not_found(std::fs::read_to_string(self.upload_dir(id).join("repo")))? else { return Ok(None) };
        if repo != name {
            return Ok(None);
        }
        let Some(meta) = not_found(std::fs::metadata(self.upload_data(id)))? else { return Ok(None) };
        if self.abandoned(&meta, SystemTime::now()) {
            self.cancel_upload(id)?;
            return Ok(None);
        }
        Ok(Some(meta.len()))
    }

    /// Whether an upload whose data file has `meta` was last written more than the TTL ago.
    fn abandoned(&self, meta: &std::fs::Metadata, now: SystemTime) -> bool {
        meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|idle| idle > self.upload_ttl)
    }

    /// Delete every upload not written to for the upload TTL (as of `now`); returns how many.
    /// An upload directory without its data file (a start cut short) counts from the directory's time.
    pub fn expire_uploads(&self, now: SystemTime) -> io::Result<usize> {
        let Some(entries) = not_found(std::fs::read_dir(self.root.join("uploads")))? else { return Ok(0) };
        let mut expired = 0;
        for e in entries {
            let e = e?;
            let meta = match not_found(std::fs::metadata(e.path().join("data")))? {
                Some(m) => m,
                None => e.metadata()?,
            };
            if self.abandoned(&meta, now) {
                match std::fs::remove_dir_all(e.path()) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                    _ => expired += 1,
                }
            }
        }
        Ok(expired)
    }

    /// [`Storage::expire_uploads`] now, unless a sweep ran within the last minute (`force`: anyway).
    /// A failure is logged: a sweep that fails leaves uploads to the next one.
    fn sweep_uploads(&self, force: bool) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.expire_uploads(SystemTime::now()) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(expired = n, ttl_secs = self.upload_ttl.as_secs(), "abandoned registry uploads deleted")
            }
            Err(e) => tracing::warn!(error = %e, "sweeping abandoned registry uploads failed"),
        }
    }

    pub fn cancel_upload(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.upload_dir(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Hash upload `id`; when it matches `digest`, rename it into `blobs/` (atomically) and link
    /// it into the upload's repository. Either way the upload is gone afterwards.
    pub fn finish_upload(&self, id: &str, digest: &Digest) -> Result<u64, FinishError> {
        let data = self.upload_data(id);
        let res = (|| {
            let repo = std::fs::read_to_string(self.upload_dir(id).join("repo"))?;
            let mut f = std::fs::File::open(&data)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut len = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                len += n as u64;
            }
            let actual = Digest::from_sha256(h.finalize().into());
            if &actual != digest {
                return Err(FinishError::DigestMismatch { actual });
            }
            f.sync_all()?;
            std::fs::rename(&data, self.blob_path(digest))?;
            self.link_blob(&repo, digest)?;
            Ok(len)
        })();
        let _ = self.cancel_upload(id);
        res
    }

    // ---- manifests and tags ----

    fn manifest_link(&self, name: &str, digest: &Digest) -> PathBuf {
        self.repo_dir(name).join("_manifests/sha256").join(digest.hex())
    }

    fn tag_path(&self, name: &str, tag: &str) -> PathBuf {
        self.repo_dir(name).join("_tags").join(tag)
    }

    /// Whether manifest `digest` was pushed to repository `name`.
    pub fn has_manifest(&self, name: &str, digest: &Digest) -> bool {
        self.manifest_link(name, digest).is_file()
    }

    /// Store a manifest (already validated) in `name`, and point `tag` at it.
    pub fn put_manifest(&self, name: &str, media_type: &str, bytes: &[u8], tag: Option<&str>) -> io::Result<Digest> {
        let digest = Digest::of(bytes);
        if self.blob_size(&digest)? != Some(bytes.len() as u64) {
            self.write_atomic(&self.blob_path(&digest), bytes)?;
        }
        self.write_atomic(&self.manifest_link(name, &digest), media_type.as_bytes())?;
        if let Some(tag) = tag {
            self.write_atomic(&self.tag_path(name, tag), digest.to_string().as_bytes())?;
        }
        Ok(digest)
    }

    /// Import the image of an OCI image layout (a directory with `index.json` and
    /// `blobs/sha256/`, as `vt image build` and scripts/workspace-template.sh write) into
    /// repository `name` under `tag`: its index's first manifest and the config and layers that
    /// manifest names. Each blob is checked against its digest while it is copied; blobs
    /// already stored are linked, not copied again. Returns the manifest's digest.
    pub fn import_layout(&self, layout: &Path, name: &str, tag: &str) -> io::Result<Digest> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let index_path = layout.join("index.json");
        let index: ImageIndex = serde_json::from_slice(&std::fs::read(&index_path)?)
            .map_err(|e| invalid(format!("{}: not an OCI image index: {e}", index_path.display())))?;
        let top = index.manifests.first().ok_or_else(|| invalid(format!("{}: no manifest", index_path.display())))?;
        let bytes = std::fs::read(layout_blob(layout, &top.digest))?;
        if Digest::of(&bytes) != top.digest {
            return Err(invalid(format!("{}: the manifest's bytes do not match its digest", layout.display())));
        }
        let stored = StoredManifest { digest: top.digest.clone(), media_type: top.media_type.clone(), bytes };
        let blobs = referenced_by(&stored)
            .ok_or_else(|| invalid(format!("{}: manifest {} does not parse", layout.display(), top.digest)))?;
        let _gc = self.referencing();
        for digest in &blobs {
            if self.blob_size(digest)?.is_none() {
                self.copy_blob(&layout_blob(layout, digest), digest)?;
            }
            self.link_blob(name, digest)?;
        }
        self.put_manifest(name, &stored.media_type, &stored.bytes, Some(tag))
    }

    /// Copy the file at `from` into the store as blob `digest`, refusing other bytes.
    fn copy_blob(&self, from: &Path, digest: &Digest) -> io::Result<()> {
        let tmp = self.root.join("tmp").join(random_id());
        let res = (|| {
            let mut src = std::fs::File::open(from)?;
            let mut dst = std::fs::File::create(&tmp)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                dst.write_all(&buf[..n])?;
            }
            if Digest::from_sha256(h.finalize().into()) != *digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: its bytes do not match its digest {digest}", from.display()),
                ));
            }
            dst.sync_all()?;
            std::fs::rename(&tmp, self.blob_path(digest))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// The digest tag `tag` of `name` points to.
    pub fn tag(&self, name: &str, tag: &str) -> io::Result<Option<Digest>> {
        let Some(s) = not_found(std::fs::read_to_string(self.tag_path(name, tag)))? else { return Ok(None) };
        s.trim()
            .parse()
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("tag {name}:{tag}: {e}")))
    }

    /// Manifest `digest` of repository `name`.
    pub fn manifest(&self, name: &str, digest: &Digest) -> io::Result<Option<StoredManifest>> {
        let Some(media_type) = not_found(std::fs::read_to_string(self.manifest_link(name, digest)))? else {
            return Ok(None);
        };
        let Some(bytes) = not_found(std::fs::read(self.blob_path(digest)))? else { return Ok(None) };
        Ok(Some(StoredManifest { digest: digest.clone(), media_type, bytes }))
    }

    /// A manifest by tag or by digest (`sha256:...`).
    pub fn resolve(&self, name: &str, reference: &str) -> io::Result<Option<StoredManifest>> {
        let digest = if reference.contains(':') {
            match reference.parse::<Digest>() {
                Ok(d) => d,
                Err(_) => return Ok(None),
            }
        } else {
            match self.tag(name, reference)? {
                Some(d) => d,
                None => return Ok(None),
            }
        };
        self.manifest(name, &digest)
    }

    /// Tags of `name`, sorted; `None` when the repository does not exist.
    pub fn tags(&self, name: &str) -> io::Result<Option<Vec<String>>> {
        if !self.repo_exists(name) {
            return Ok(None);
        }
        let mut tags = Vec::new();
        if let Some(entries) = not_found(std::fs::read_dir(self.repo_dir(name).join("_tags")))? {
            for e in entries {
                if let Some(n) = e?.file_name().to_str() {
                    tags.push(n.to_owned());
                }
            }
        }
        tags.sort();
        Ok(Some(tags))
    }

    // ---- migration ----

    /// Bring a layout 1 store to layout 2 (see the module docs). Idempotent and crash-safe:
    /// links are written (and their directories fsynced) before `layout-version`, so a crash
    /// leaves a store that is migrated again, from the start, on the next open.
    fn migrate(&self) -> io::Result<()> {
        let marker = self.root.join(LAYOUT_FILE);
        if let Some(s) = not_found(std::fs::read_to_string(&marker))? {
            let found = s.trim();
            let why = match found.parse::<u32>() {
                Ok(LAYOUT_VERSION) => return Ok(()),
                Ok(1) => None,
                Ok(v) if v > LAYOUT_VERSION => Some(format!(
                    "registry storage layout {v} is newer than this build's ({LAYOUT_VERSION}); \
                     run a newer vt, or restore the storage from before the upgrade"
                )),
                _ => Some(format!(
                    "expected layout version {LAYOUT_VERSION}, found {found:?}; remove the file to migrate the \
                     storage again (safe: it only links into each repository the blobs of its stored images)"
                )),
            };
            if let Some(why) = why {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", marker.display())));
            }
        }
        let mut repos = Vec::new();
        self.find_repositories(&self.root.join("repositories"), "", &mut repos)?;
        let mut linked = 0;
        for name in &repos {
            linked += self.link_manifest_blobs(name)?;
        }
        self.write_atomic(&marker, format!("{LAYOUT_VERSION}\n").as_bytes())?;
        sync_dir(&self.root)?;
        if !repos.is_empty() {
            tracing::info!(
                repositories = repos.len(),
                links = linked,
                "registry storage migrated to layout {LAYOUT_VERSION}: blobs of stored image manifests linked into their repositories"
            );
        }
        Ok(())
    }

    /// Names of the repositories under `dir` (those with a `_manifests` directory), recursively.
    fn find_repositories(&self, dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
        let Some(entries) = not_found(std::fs::read_dir(dir))? else { return Ok(()) };
        for e in entries {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            let Some(component) = e.file_name().to_str().map(str::to_owned) else { continue };
            if component.starts_with('_') {
                continue;
            }
            let name = if prefix.is_empty() { component } else { format!("{prefix}/{component}") };
            if e.path().join("_manifests").is_dir() {
                out.push(name.clone());
            }
            self.find_repositories(&e.path(), &name, out)?;
        }
        Ok(())
    }

    /// Link into `name` the config and layers of every image manifest stored in it; returns how
    /// many links were written. Unreadable manifests are skipped with a warning.
    fn link_manifest_blobs(&self, name: &str) -> io::Result<usize> {
        let dir = self.repo_dir(name).join("_manifests/sha256");
        let Some(entries) = not_found(std::fs::read_dir(&dir))? else { return Ok(0) };
        let mut linked = 0;
        for e in entries {
            let e = e?;
            let file = e.file_name();
            let Ok(digest) = format!("sha256:{}", file.to_string_lossy()).parse::<Digest>() else {
                tracing::warn!(repository = name, file = %e.path().display(), "not a manifest link; skipped");
                continue;
            };
            let Some(m) = self.manifest(name, &digest)? else { continue };
            if oci::manifest_kind(m.media_type.trim()) != Some(ManifestKind::Manifest) {
                continue; // an index's children are manifests of the same repository
            }
            let manifest: ImageManifest = match serde_json::from_slice(&m.bytes) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(repository = name, %digest, error = %e, "stored image manifest does not parse; its blobs are not linked");
                    continue;
                }
            };
            for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
                if self.layer_link(name, &d.digest).is_file() || self.blob_size(&d.digest)?.is_none() {
                    continue;
                }
                self.write_atomic(&self.layer_link(name, &d.digest), b"")?;
                linked += 1;
            }
        }
        // Make the links durable before the marker is written, including those of an earlier,
        // interrupted run (skipped above as already linked).
        let layers = self.repo_dir(name).join("_layers");
        if layers.is_dir() {
            for d in [layers.join("sha256"), layers, self.repo_dir(name)] {
                if d.is_dir() {
                    sync_dir(&d)?;
                }
            }
        }
        Ok(linked)
    }
}

/// Where an OCI image layout keeps blob `digest`.
fn layout_blob(layout: &Path, digest: &Digest) -> PathBuf {
    layout.join("blobs/sha256").join(digest.hex())
}

/// The blobs a stored manifest refers to: an image's config and layers, an index's manifests;
/// `None` when it does not parse.
fn referenced_by(m: &StoredManifest) -> Option<Vec<Digest>> {
    Some(match oci::manifest_kind(m.media_type.trim())? {
        ManifestKind::Manifest => {
            let im: ImageManifest = serde_json::from_slice(&m.bytes).ok()?;
            std::iter::once(im.config).chain(im.layers).map(|d| d.digest).collect()
        }
        ManifestKind::Index => {
            let ix: ImageIndex = serde_json::from_slice(&m.bytes).ok()?;
            ix.manifests.into_iter().map(|d| d.digest).collect()
        }
    })
}
