//! Applying layers into a directory, whiteouts included, refusing hostile layers.
//!
//! Policy (see docs/images.md): entry paths must be relative and free of `..`; parents are
//! resolved component by component inside the root, following symlinks with chroot semantics
//! (an absolute target restarts at the root) and refusing any that climbs above the root; the
//! final component is never followed (an existing entry is unlinked and recreated); hard-link
//! targets obey the same rules and must exist and not be directories; character and block
//! devices are refused; FIFOs are skipped; the total size written is bounded.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;
use fs_err as fs;

use crate::digest::Hasher;
use crate::oci::{layer_compression, LayerCompression};
use crate::store::{BlobStore, PulledImage};
use crate::{Digest, Error, Result};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const MAX_SYMLINK_HOPS: u32 = 40;

/// Limits and behaviour of an unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Upper bound on the bytes of regular-file content written over all layers.
    pub max_bytes: u64,
    /// Apply tar ownership with `lchown`/`fchown`. `None`: only when running as root. When
    /// not applied, ownership is recorded in [`UnpackReport::owners`] instead.
    pub apply_ownership: Option<bool>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self { max_bytes: 64 << 30, apply_ownership: None }
    }
}

/// Ownership the unpacker could not apply (non-root); `path` is absolute within the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    pub path: String,
    pub uid: u64,
    pub gid: u64,
}

/// What an unpack produced.
#[derive(Debug, Clone, Default)]
pub struct UnpackReport {
    pub entries: u64,
    pub file_bytes: u64,
    /// Ownership to apply later (only filled when ownership was not applied directly).
    pub owners: Vec<OwnerRecord>,
    /// Entries skipped by policy (FIFOs), as image paths.
    pub skipped: Vec<String>,
}

/// True when this process runs with effective uid 0.
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Applies layers, in order, into `root`.
pub struct Unpacker {
    root: PathBuf,
    opts: UnpackOptions,
    chown: bool,
    report: UnpackReport,
    dir_modes: BTreeMap<PathBuf, u32>,
    parent_cache: HashMap<Vec<u8>, PathBuf>,
    buf: Vec<u8>,
}

/// Owner of an entry, captured from its header.
#[derive(Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl Unpacker {
    /// Unpack into `root`, which must exist (normally an empty directory).
    pub fn new(root: &Path, opts: UnpackOptions) -> Result<Self> {
        let chown = opts.apply_ownership.unwrap_or_else(running_as_root);
        Ok(Self {
            root: fs::canonicalize(root)?,
            opts,
            chown,
            report: UnpackReport::default(),
            dir_modes: BTreeMap::new(),
            parent_cache: HashMap::new(),
            buf: vec![0; 1 << 18],
        })
    }

    /// Apply one layer blob. `diff_id`, when given, is checked against the uncompressed tar.
    /// gzip is decoded (and the diff_id hashed) on a helper thread, overlapping with writes.
    pub fn apply_layer(
        &mut self,
        layer: &Digest,
        reader: impl Read + Send,
        compression: LayerCompression,
        diff_id: Option<&Digest>,
    ) -> Result<()> {
        let reader = BufReader::with_capacity(1 << 20, reader);
        let actual = match compression {
            LayerCompression::None => {
                let mut hashing = HashingReader { inner: reader, hasher: Hasher::default() };
                self.apply_tar(layer, &mut hashing)?;
                diff_id.map(|_| hashing.hasher.finish())
            }
            LayerCompression::Gzip => std::thread::scope(|scope| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
                let want_hash = diff_id.is_some();
                let producer = scope.spawn(move || {
                    let mut gz = MultiGzDecoder::new(reader);
                    let mut hasher = Hasher::default();
                    loop {
                        let mut chunk = vec![0u8; 1 << 20];
                        let mut filled = 0;
                        while filled < chunk.len() {
                            match gz.read(&mut chunk[filled..]) {
                                Ok(0) => break,
                                Ok(n) => filled += n,
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(e) => {
                                    let _ = tx.send(Err(e));
                                    return None;
                                }
                            }
                        }
                        let eof = filled < chunk.len();
                        chunk.truncate(filled);
                        if want_hash {
                            hasher.update(&chunk);
                        }
                        // Returning drops `tx`, which tells the reader the stream ended.
                        if filled > 0 && tx.send(Ok(chunk)).is_err() {
                            return None;
                        }
                        if eof {
                            return want_hash.then(|| hasher.finish());
                        }
                    }
                });
                let applied = self.apply_tar(layer, ChannelReader { rx, chunk: Vec::new(), pos: 0 });
                let digest = producer.join().unwrap_or(None);
                applied.map(|()| digest)
            })?,
        };
        if let (Some(expected), Some(actual)) = (diff_id, actual) {
            if &actual != expected {
                return Err(Error::InvalidImage(format!(
                    "layer {layer}: uncompressed content {actual} does not match diff_id {expected}"
                )));
            }
        }
        Ok(())
    }

    /// Apply the entries of a tar stream, then read it to its end.
    fn apply_tar(&mut self, layer: &Digest, tar_stream: impl Read) -> Result<()> {
        let mut archive = tar::Archive::new(tar_stream);
        let mut created = LayerPaths::default();
        for entry in archive.entries()? {
            let mut entry = entry?;
            self.apply_entry(layer, &mut entry, &mut created)?;
        }
        io::copy(&mut archive.into_inner(), &mut io::sink())?;
        Ok(())
    }

    /// Fix directory modes (deferred so read-only dirs can be filled) and return the report.
    pub fn finish(mut self) -> Result<UnpackReport> {
        for (dir, mode) in self.dir_modes.iter().rev() {
            if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))?;
            }
        }
        let root = self.root.clone();
        self.report.owners.retain(|o| fs::symlink_metadata(root.join(&o.path[1..])).is_ok());
        Ok(self.report)
    }

    fn apply_entry<R: Read>(
        &mut self,
        layer: &Digest,
        entry: &mut tar::Entry<'_, R>,
        created: &mut LayerPaths,
    ) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let hostile =
            |reason: &str| Error::HostileLayer { layer: layer.clone(), path: shown.clone(), reason: reason.into() };
        let comps = normalize(&raw).map_err(hostile)?;
        let header = entry.header();
        let kind = header.entry_type();
        let meta = Meta {
            mode: header.mode().map_err(|_| hostile("bad mode"))? & 0o7777,
            uid: header.uid().map_err(|_| hostile("bad uid"))?,
            gid: header.gid().map_err(|_| hostile("bad gid"))?,
            mtime: header.mtime().unwrap_or(0),
        };
        self.report.entries += 1;
        let Some((name, parents)) = comps.split_last() else {
            // The root directory itself ("./").
            if kind.is_dir() {
                self.dir_modes.insert(self.root.clone(), meta.mode);
                self.own(&self.root.clone(), "/".into(), meta)?;
            }
            return Ok(());
        };
        let name: &[u8] = name;

        if let Some(victim) = name.strip_prefix(WHITEOUT_PREFIX) {
            let Some(parent) = self.resolve_dir(parents, false).map_err(hostile)? else {
                return Ok(());
            };
            if name == OPAQUE {
                self.opaque(&parent, created)?;
            } else {
                if victim.is_empty() || victim == b"." || victim == b".." || victim.starts_with(WHITEOUT_PREFIX) {
                    return Err(hostile("whiteout names no sibling"));
                }
                let target = parent.join(OsStr::from_bytes(victim));
                if created.touched.contains(&target) && !created.created.contains(&target) {
                    // A lower directory this layer also writes into: drop only the lower content.
                    self.opaque(&target, created)?;
                } else if !created.created.contains(&target) {
                    self.remove(&target)?;
                }
            }
            return Ok(());
        }

        match kind {
            tar::EntryType::Char | tar::EntryType::Block => return Err(hostile("device nodes are refused")),
            tar::EntryType::Fifo => {
                self.report.skipped.push(format!("/{shown}"));
                return Ok(());
            }
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::GNUSparse
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link => {}
            // Metadata-only entries (PAX globals, unknown types) are ignored.
            _ => return Ok(()),
        }

        let parent = self
            .resolve_dir_in(parents, true, Some(created))
            .map_err(hostile)?
            .ok_or_else(|| hostile("parent missing"))?;
        let path = parent.join(OsStr::from_bytes(name));
        let image_path = image_path(&self.root, &path);

        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.remove(&path)?;
                        fs::create_dir(&path)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&path)?,
                    Err(e) => return Err(e.into()),
                }
                fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.mode | 0o700))?;
                self.dir_modes.insert(path.clone(), meta.mode);
                self.own(&path, image_path, meta)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| hostile("symlink without target"))?;
                if target.is_empty() {
                    return Err(hostile("symlink without target"));
                }
                self.remove(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|e| io::Error::new(e.kind(), format!("symlink {}: {e}", path.display())))?;
                self.own(&path, image_path, meta)?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| hostile("hard link without target"))?;
                let tcomps = normalize(&target).map_err(|r| hostile(&format!("hard link target: {r}")))?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(hostile("hard link to the root"));
                };
                let tparent = self
                    .resolve_dir(tparents, false)
                    .map_err(|r| hostile(&format!("hard link target: {r}")))?
                    .ok_or_else(|| hostile("hard link target does not exist"))?;
                let tpath = tparent.join(OsStr::from_bytes(tname));
                match fs::symlink_metadata(&tpath) {
                    Ok(m) if m.is_dir() => return Err(hostile("hard link to a directory")),
                    Ok(_) => {}
                    Err(_) => return Err(hostile("hard link target does not exist")),
                }
                if tpath != path {
                    self.remove(&path)?;
                    fs::hard_link(&tpath, &path)?;
                }
            }
            _ => {
                self.remove(&path)?;
                let size = entry.size();
                if self.report.file_bytes.saturating_add(size) > self.opts.max_bytes {
                    return Err(Error::UnpackTooLarge { limit: self.opts.max_bytes });
                }
                let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e.into()),
                    };
                    self.report.file_bytes += n as u64;
                    if self.report.file_bytes > self.opts.max_bytes {
                        return Err(Error::UnpackTooLarge { limit: self.opts.max_bytes });
                    }
                    file.write_all(&self.buf[..n])?;
                }
                if self.chown {
                    std::os::unix::fs::fchown(file.file(), Some(meta.uid as u32), Some(meta.gid as u32))?;
                } else {
                    self.report.owners.push(OwnerRecord { path: image_path, uid: meta.uid, gid: meta.gid });
                }
                file.file().set_permissions(std::fs::Permissions::from_mode(meta.mode))?;
                file.file().set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(meta.mtime))?;
            }
        }
        created.insert(&self.root, path);
        Ok(())
    }

    fn own(&mut self, path: &Path, image_path: String, meta: Meta) -> Result<()> {
        if self.chown {
            std::os::unix::fs::lchown(path, Some(meta.uid as u32), Some(meta.gid as u32))
                .map_err(|e| io::Error::new(e.kind(), format!("lchown {}: {e}", path.display())))?;
        } else {
            self.report.owners.push(OwnerRecord { path: image_path, uid: meta.uid, gid: meta.gid });
        }
        Ok(())
    }

    /// Remove whatever is at `path` (never following a final symlink).
    fn remove(&mut self, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                self.parent_cache.clear();
                remove_tree(path)
            }
            Ok(m) => {
                if m.is_symlink() {
                    self.parent_cache.clear();
                }
                Ok(fs::remove_file(path)?)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Opaque whiteout: drop everything under `dir` that this layer did not create.
    fn opaque(&mut self, dir: &Path, created: &LayerPaths) -> Result<()> {
        for child in fs::read_dir(dir)? {
            let child = child?.path();
            let is_dir = fs::symlink_metadata(&child).is_ok_and(|m| m.is_dir());
            if is_dir && created.touched.contains(&child) {
                self.opaque(&child, created)?;
            } else if !created.created.contains(&child) {
                self.remove(&child)?;
            }
        }
        Ok(())
    }

    /// Resolve parent components inside the root, following symlinks chroot-style and
    /// creating missing directories when `create` (else `Ok(None)` when something is missing).
    fn resolve_dir(&mut self, comps: &[&[u8]], create: bool) -> Result<Option<PathBuf>, &'static str> {
        self.resolve_dir_in(comps, create, None)
    }

    /// [`Self::resolve_dir`], recording directories it creates as this layer's in `created`.
    fn resolve_dir_in(
        &mut self,
        comps: &[&[u8]],
        create: bool,
        mut created: Option<&mut LayerPaths>,
    ) -> Result<Option<PathBuf>, &'static str> {
        let key = comps.join(&b'/');
        if let Some(p) = self.parent_cache.get(&key) {
            return Ok(Some(p.clone()));
        }
        let mut resolved = self.root.clone();
        let mut depth = 0usize;
        let mut pending: VecDeque<OsString> = comps.iter().map(|c| OsStr::from_bytes(c).to_owned()).collect();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            let cb = c.as_bytes();
            if cb.is_empty() || cb == b"." {
                continue;
            }
            if cb == b".." {
                if depth == 0 {
                    return Err("a symlink escapes the root");
                }
                resolved.pop();
                depth -= 1;
                continue;
            }
            let next = resolved.join(&c);
            match std::fs::symlink_metadata(&next) {
                Ok(m) if m.is_dir() => {
                    resolved = next;
                    depth += 1;
                }
                Ok(m) if m.is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err("too many levels of symlinks");
                    }
                    let target =
                        std::fs::read_link(&next).map_err(|_| "unreadable symlink")?.into_os_string().into_vec();
                    if target.starts_with(b"/") {
                        resolved = self.root.clone();
                        depth = 0;
                    }
                    for t in target.split(|b| *b == b'/').rev() {
                        pending.push_front(OsString::from_vec(t.to_vec()));
                    }
                }
                Ok(_) => return Err("a parent path component is not a directory"),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&next).map_err(|_| "cannot create parent directory")?;
                    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755))
                        .map_err(|_| "cannot create parent directory")?;
                    if let Some(c) = created.as_deref_mut() {
                        c.insert(&self.root, next.clone());
                    }
                    resolved = next;
                    depth += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(_) => return Err("cannot inspect parent path"),
            }
        }
        self.parent_cache.insert(key, resolved.clone());
        Ok(Some(resolved))
    }
}

/// Split an entry path into components: relative, no `..`; `.` and empty ones dropped.
fn normalize(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute path");
    }
    let comps: Vec<&[u8]> = raw.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".").collect();
    if comps.iter().any(|c| *c == b"..") {
        return Err("path traversal (..)");
    }
    Ok(comps)
}

fn image_path(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    format!("/{}", rel.display())
}

/// Remove a tree even when it holds read-only directories (as a non-root user).
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            make_writable(path);
            fs::remove_dir_all(path).map_err(|_| first.into())
        }
    }
}

fn make_writable(path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            if let Ok(rd) = std::fs::read_dir(path) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

/// Reads the chunks a decoder thread sends; an empty channel means end of stream.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Paths one layer wrote (`created`: never hidden by that layer's own whiteouts) and their
/// ancestors (`touched`: an opaque whiteout descends into them instead of removing them).
#[derive(Default)]
struct LayerPaths {
    created: HashSet<PathBuf>,
    touched: HashSet<PathBuf>,
}

impl LayerPaths {
    fn insert(&mut self, root: &Path, path: PathBuf) {
        let mut p = path.parent();
        while let Some(dir) = p {
            if dir == root || !self.touched.insert(dir.to_owned()) {
                break;
            }
            p = dir.parent();
        }
        self.touched.insert(path.clone());
        self.created.insert(path);
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A directory holding an unpacked image; removed (even if read-only) when dropped.
#[derive(Debug)]
pub struct UnpackedTree {
    path: PathBuf,
    pub report: UnpackReport,
}

impl UnpackedTree {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnpackedTree {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// Unpack every layer of a pulled image (blobs from `blobs`) into a fresh temporary directory
/// under `parent`. Each cached blob is hashed again while it is read (and its `diff_id`
/// checked); a blob found corrupt is deleted from the cache and reported as
/// [`Error::DigestMismatch`]. On any error nothing is left behind.
pub fn unpack_image(
    blobs: &BlobStore,
    image: &PulledImage,
    parent: &Path,
    opts: UnpackOptions,
) -> Result<UnpackedTree> {
    let dir = tempfile::Builder::new().prefix(".unpack-").tempdir_in(parent)?;
    let mut tree = UnpackedTree { path: dir.keep(), report: UnpackReport::default() };
    let mut unpacker = Unpacker::new(&tree.path, opts)?;
    for (i, layer) in image.manifest.layers.iter().enumerate() {
        let compression = layer_compression(&layer.media_type)?;
        let file = fs::File::open(blobs.path(&layer.digest))?;
        let mut diff_id = image.config.rootfs.diff_ids.get(i);
        if compression == LayerCompression::None {
            // An uncompressed layer's diff_id is its blob digest, which is verified anyway.
            if diff_id.is_some_and(|d| d != &layer.digest) {
                return Err(Error::InvalidImage(format!(
                    "layer {}: uncompressed layer whose diff_id differs from its digest",
                    layer.digest
                )));
            }
            diff_id = None;
        }
        if image.fetched.contains(&layer.digest) {
            // Verified moments ago by the pull that fetched it.
            unpacker.apply_layer(&layer.digest, file, compression, diff_id)?;
            continue;
        }
        let mut raw = HashingReader { inner: file, hasher: Hasher::default() };
        let applied = unpacker.apply_layer(&layer.digest, &mut raw, compression, diff_id);
        io::copy(&mut raw, &mut io::sink())?;
        let size = raw.hasher.len;
        let actual = raw.hasher.finish();
        if actual != layer.digest || size != layer.size {
            blobs.remove(&layer.digest)?;
            return Err(Error::DigestMismatch { digest: layer.digest.clone(), actual });
        }
        applied?;
    }
    tree.report = unpacker.finish()?;
    Ok(tree)
}
