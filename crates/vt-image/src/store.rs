//! Content-addressed blob cache, blob sources and verified pulls.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::digest::Hasher;
use crate::oci::{self, Descriptor, ImageConfig, ImageIndex, ImageManifest, ManifestKind};
use crate::{Digest, Error, Result};

/// Largest manifest or index accepted (4 MiB, as registries commonly enforce).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// Where blobs come from: an OCI layout directory ([`OciLayoutSource`]) or, later, a registry.
///
/// Implementations only fetch; the caller verifies digest and size of everything it reads,
/// so a source never needs to be trusted. Methods block; an HTTP implementation may
/// `block_on` its async client (the store is driven from `spawn_blocking`).
pub trait BlobSource: Send + Sync {
    /// Open the raw bytes of blob `desc` (`desc.size` is the size the caller expects; the
    /// caller stops reading one byte past it).
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>>;
    /// Fetch a manifest or index by digest: (media type if the source knows it, raw bytes).
    /// The caller bounds the size by [`MAX_MANIFEST_SIZE`] and verifies the digest.
    fn fetch_manifest(&self, digest: &Digest) -> Result<(Option<String>, Vec<u8>)>;
}

/// A [`BlobSource`] reading an OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayoutSource {
    dir: PathBuf,
}

impl OciLayoutSource {
    /// Open a layout; fails unless `oci-layout` is present and valid.
    pub fn open(dir: &Path) -> Result<Self> {
        let bytes = fs::read(dir.join("oci-layout"))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::json("oci-layout", e))?;
        if !v.get("imageLayoutVersion").is_some_and(|v| v.is_string()) {
            return Err(Error::InvalidImage("oci-layout has no imageLayoutVersion".into()));
        }
        Ok(Self { dir: dir.to_owned() })
    }

    /// The manifests listed in `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let bytes = fs::read(self.dir.join("index.json"))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::json("index.json", e))
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }
}

fn open_or_not_found(path: &Path, digest: &Digest) -> Result<fs::File> {
    match fs::File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound(digest.clone())),
        Err(e) => Err(e.into()),
    }
}

impl BlobSource for OciLayoutSource {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(open_or_not_found(&self.path(&desc.digest), &desc.digest)?))
    }

    fn fetch_manifest(&self, digest: &Digest) -> Result<(Option<String>, Vec<u8>)> {
        let mut buf = Vec::new();
        open_or_not_found(&self.path(digest), digest)?.take(MAX_MANIFEST_SIZE + 1).read_to_end(&mut buf)?;
        Ok((None, buf))
    }
}

/// The content-addressed blob cache: `<dir>/sha256/<hex>`; temp files in a sibling `tmp` dir.
/// A blob file appears only once fully written and verified (temp file, then rename).
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
    max_blob_size: u64,
    fsync: bool,
}

impl BlobStore {
    pub fn open(dir: &Path, tmp: &Path, max_blob_size: u64) -> Result<Self> {
        fs::create_dir_all(dir.join("sha256"))?;
        fs::create_dir_all(tmp)?;
        Ok(Self { dir: dir.to_owned(), tmp: tmp.to_owned(), max_blob_size, fsync: false })
    }

    /// Whether blobs are fsynced before being renamed into place. Default false: blobs are
    /// re-hashed on every read ([`crate::unpack::unpack_image`]), so one damaged by a crash is
    /// detected, dropped and fetched again. Manifests are always fsynced.
    pub fn set_fsync(&mut self, fsync: bool) {
        self.fsync = fsync;
    }

    /// Whether blob `desc` is cached (with the right size).
    pub fn contains(&self, desc: &Descriptor) -> bool {
        fs::metadata(self.path(&desc.digest)).is_ok_and(|m| m.len() == desc.size)
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(digest.hex())
    }

    /// Digests of all cached blobs.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.dir.join("sha256"))? {
            if let Ok(d) = Digest::from_hex(&e?.file_name().to_string_lossy()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub fn remove(&self, digest: &Digest) -> Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Ensure blob `desc` is cached, streaming it from `src` and verifying size and sha256.
    /// Truncated, oversized or mismatching content is rejected and leaves nothing behind.
    pub fn fetch(&self, src: &dyn BlobSource, desc: &Descriptor) -> Result<PathBuf> {
        let dst = self.path(&desc.digest);
        if self.contains(desc) {
            return Ok(dst);
        }
        if desc.size > self.max_blob_size {
            return Err(Error::TooLarge { digest: desc.digest.clone(), size: desc.size, limit: self.max_blob_size });
        }
        let mut reader = src.open_blob(desc)?.take(desc.size.saturating_add(1));
        let tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if hasher.len + n as u64 > desc.size {
                return Err(Error::Oversized { digest: desc.digest.clone(), expected: desc.size });
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        if hasher.len < desc.size {
            return Err(Error::Truncated { digest: desc.digest.clone(), expected: desc.size, actual: hasher.len });
        }
        let actual = hasher.finish();
        if actual != desc.digest {
            return Err(Error::DigestMismatch { digest: desc.digest.clone(), actual });
        }
        out.flush()?;
        drop(out);
        if self.fsync {
            tmp.as_file().sync_all()?;
        }
        tmp.persist(&dst).map_err(|e| e.error)?;
        Ok(dst)
    }

    /// Read a cached blob, or fetch it (verified) first; bounded by `limit`.
    fn read_small(&self, src: &dyn BlobSource, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(Error::TooLarge { digest: desc.digest.clone(), size: desc.size, limit });
        }
        let path = self.fetch(src, desc)?;
        Ok(fs::read(path)?)
    }

    /// A manifest/index by digest: from the cache, or fetched, verified and cached.
    fn manifest(&self, src: &dyn BlobSource, digest: &Digest) -> Result<(Option<String>, Vec<u8>)> {
        let path = self.path(digest);
        if let Ok(bytes) = fs::read(&path) {
            return Ok((None, bytes));
        }
        let (media_type, bytes) = src.fetch_manifest(digest)?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::TooLarge { digest: digest.clone(), size: bytes.len() as u64, limit: MAX_MANIFEST_SIZE });
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(Error::DigestMismatch { digest: digest.clone(), actual });
        }
        let tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
        fs::write(tmp.path(), &bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok((media_type, bytes))
    }
}

/// A pulled image: every blob is in the [`BlobStore`] and verified.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The digest that was asked for (manifest or index).
    pub digest: Digest,
    /// The linux/amd64 image manifest's digest (equal to `digest` unless that was an index).
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config: ImageConfig,
    /// Layer blobs this pull downloaded and verified (the others were already cached; those
    /// are verified again when read).
    pub fetched: Vec<Digest>,
}

fn kind_of(media_type: Option<&str>, bytes: &[u8], digest: &Digest) -> Result<ManifestKind> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::json(digest.to_string(), e))?;
    let mt = media_type.map(str::to_owned).or_else(|| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_owned));
    match mt {
        Some(mt) => oci::manifest_kind(&mt).ok_or(Error::UnsupportedMediaType(mt)),
        None if v.get("manifests").is_some() => Ok(ManifestKind::Index),
        None if v.get("config").is_some() => Ok(ManifestKind::Manifest),
        None => Err(Error::InvalidImage(format!("{digest} is neither a manifest nor an index"))),
    }
}

/// Resolve a manifest (an index resolves to its linux/amd64 manifest) without fetching layers.
pub fn resolve(store: &BlobStore, src: &dyn BlobSource, digest: &Digest) -> Result<PulledImage> {
    let (mt, bytes) = store.manifest(src, digest)?;
    let (manifest_digest, bytes) = match kind_of(mt.as_deref(), &bytes, digest)? {
        ManifestKind::Manifest => (digest.clone(), bytes),
        ManifestKind::Index => {
            let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| Error::json(digest.to_string(), e))?;
            let desc = index.linux_amd64().ok_or_else(|| Error::NoMatchingPlatform(digest.clone()))?;
            let (mt, bytes) = store.manifest(src, &desc.digest)?;
            let mt = mt.unwrap_or_else(|| desc.media_type.clone());
            if kind_of(Some(&mt), &bytes, &desc.digest)? != ManifestKind::Manifest {
                return Err(Error::InvalidImage(format!("index {digest} points to another index")));
            }
            (desc.digest.clone(), bytes)
        }
    };
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::json(manifest_digest.to_string(), e))?;
    if manifest.schema_version != 2 {
        return Err(Error::InvalidImage(format!("{manifest_digest}: schemaVersion {}", manifest.schema_version)));
    }
    for layer in &manifest.layers {
        oci::layer_compression(&layer.media_type)?;
    }
    let cbytes = store.read_small(src, &manifest.config, MAX_CONFIG_SIZE)?;
    let config: ImageConfig =
        serde_json::from_slice(&cbytes).map_err(|e| Error::json(manifest.config.digest.to_string(), e))?;
    if !config.architecture.is_empty() && config.architecture != "amd64"
        || !config.os.is_empty() && config.os != "linux"
    {
        return Err(Error::InvalidImage(format!(
            "config is for {}/{}, not linux/amd64",
            config.os, config.architecture
        )));
    }
    if !config.rootfs.diff_ids.is_empty() && config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidImage("config diff_ids do not match the manifest's layers".into()));
    }
    Ok(PulledImage { digest: digest.clone(), manifest_digest, manifest, config, fetched: Vec::new() })
}

/// Pull an image by digest: resolve it and fetch (verify, cache) every layer.
pub fn pull(store: &BlobStore, src: &dyn BlobSource, digest: &Digest) -> Result<PulledImage> {
    let mut image = resolve(store, src, digest)?;
    for layer in &image.manifest.layers {
        if !store.contains(layer) {
            store.fetch(src, layer)?;
            image.fetched.push(layer.digest.clone());
        }
    }
    Ok(image)
}

/// Every blob digest an already-cached image references (itself, platform manifest, config, layers).
/// Missing or unreadable documents just end the walk.
pub fn referenced_blobs(store: &BlobStore, digest: &Digest) -> Vec<Digest> {
    let mut out = vec![digest.clone()];
    let Ok(bytes) = fs::read(store.path(digest)) else {
        return out;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return out;
    };
    if v.get("manifests").is_some() {
        if let Ok(index) = serde_json::from_value::<ImageIndex>(v) {
            for m in &index.manifests {
                out.extend(referenced_blobs(store, &m.digest).into_iter().filter(|d| d != digest));
            }
        }
    } else if let Ok(m) = serde_json::from_value::<ImageManifest>(v) {
        out.push(m.config.digest);
        out.extend(m.layers.into_iter().map(|l| l.digest));
    }
    out
}
