//! Writing deterministic OCI image layouts (`oci-layout`, `index.json`, `blobs/sha256/...`).
//!
//! [`write_image`] turns a directory tree plus a [`RuntimeConfig`] into a one-layer image:
//! tar entries sorted by name, mtime 0, uid/gid 0, no user/group names, hard links preserved,
//! sockets/devices/fifos skipped, gzip header with mtime 0 and OS "unknown". The same input
//! (and the same build of this crate) gives the same digests.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use fs_err as fs;
use serde::Serialize;

use crate::digest::{Hasher, HashingWriter};
use crate::oci::{media, Descriptor, ImageConfig, ImageIndex, ImageManifest, Platform, RootFs, RuntimeConfig};
use crate::{Digest, Error, Result};

/// How the single layer of [`write_image`] is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerFormat {
    /// `tar+gzip` at the given level (0-9).
    Gzip(u32),
    /// Plain `tar` (fastest to unpack, largest to move).
    Uncompressed,
}

impl Default for LayerFormat {
    fn default() -> Self {
        Self::Gzip(6)
    }
}

/// An image written by [`write_image`].
#[derive(Debug, Clone)]
pub struct WrittenImage {
    /// Descriptor of the image manifest (its digest is what vt pins and pulls).
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layer: Descriptor,
    /// sha256 of the uncompressed layer tar.
    pub diff_id: Digest,
}

/// Write `rootfs` as a one-layer linux/amd64 image into a new (or existing) layout at `out`,
/// and make `index.json` list exactly that manifest.
pub fn write_image(rootfs: &Path, out: &Path, runtime: RuntimeConfig, format: LayerFormat) -> Result<WrittenImage> {
    let w = LayoutWriter::create(out)?;
    let (layer, diff_id) = w.put_layer_from_dir(rootfs, format)?;
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: runtime,
        rootfs: RootFs { kind: "layers".into(), diff_ids: vec![diff_id.clone()] },
    };
    let (manifest, config) = w.put_image(std::slice::from_ref(&layer), &config)?;
    w.write_index(std::slice::from_ref(&manifest))?;
    Ok(WrittenImage { manifest, config, layer, diff_id })
}

/// Low-level writer of an OCI image layout; also used by tests to assemble hand-built images.
pub struct LayoutWriter {
    dir: PathBuf,
}

impl LayoutWriter {
    /// Create the layout skeleton (`oci-layout`, `blobs/sha256/`) if missing.
    pub fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir.join("blobs/sha256"))?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Self { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Store `bytes` as a blob; returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        if !path.exists() {
            let tmp = tempfile::NamedTempFile::new_in(self.dir.join("blobs/sha256"))?;
            fs::write(tmp.path(), bytes)?;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
            tmp.persist(&path).map_err(|e| e.error)?;
        }
        Ok(digest)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// Store a JSON document as a blob and return its descriptor.
    pub fn put_json<T: Serialize>(&self, media_type: &str, value: &T) -> Result<Descriptor> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::json(media_type, e))?;
        let digest = self.put_blob(&bytes)?;
        Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
    }

    /// Store a layer tar (given uncompressed) as a blob in `format`; returns (descriptor, diff_id).
    pub fn put_layer_tar(&self, tar: &[u8], format: LayerFormat) -> Result<(Descriptor, Digest)> {
        self.put_layer_with(format, |w| w.write_all(tar).map_err(Error::from))
    }

    /// Tar `rootfs` deterministically into a layer blob; returns (descriptor, diff_id).
    pub fn put_layer_from_dir(&self, rootfs: &Path, format: LayerFormat) -> Result<(Descriptor, Digest)> {
        self.put_layer_with(format, |w| tar_dir(rootfs, w))
    }

    fn put_layer_with(
        &self,
        format: LayerFormat,
        fill: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<(Descriptor, Digest)> {
        let tmp = tempfile::NamedTempFile::new_in(self.dir.join("blobs/sha256"))?;
        let file = io::BufWriter::with_capacity(1 << 20, tmp.as_file().try_clone()?);
        let outer = HashingWriter { inner: file, hasher: Hasher::default() };
        let (media_type, diff_id, outer) = match format {
            LayerFormat::Gzip(level) => {
                let gz = GzEncoder::new(outer, Compression::new(level.min(9)));
                let mut inner = HashingWriter { inner: gz, hasher: Hasher::default() };
                fill(&mut inner)?;
                let outer = inner.inner.finish()?;
                (media::OCI_LAYER_TAR_GZIP, inner.hasher.finish(), outer)
            }
            LayerFormat::Uncompressed => {
                let mut outer = outer;
                fill(&mut outer)?;
                let diff_id = outer.hasher.clone().finish();
                (media::OCI_LAYER_TAR, diff_id, outer)
            }
        };
        let HashingWriter { inner: mut file, hasher } = outer;
        file.flush()?;
        let size = hasher.len;
        let digest = hasher.finish();
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.persist(self.blob_path(&digest)).map_err(|e| e.error)?;
        Ok((Descriptor::new(media_type, digest, size), diff_id))
    }

    /// Store `config` and a manifest referencing it and `layers`; returns (manifest, config).
    pub fn put_image(&self, layers: &[Descriptor], config: &ImageConfig) -> Result<(Descriptor, Descriptor)> {
        let config = self.put_json(media::OCI_CONFIG, config)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: config.clone(),
            layers: layers.to_vec(),
            annotations: Default::default(),
        };
        let mut desc = self.put_json(media::OCI_MANIFEST, &manifest)?;
        desc.platform = Some(Platform { architecture: "amd64".into(), os: "linux".into(), variant: None });
        Ok((desc, config))
    }

    /// Write `index.json` listing `manifests`.
    pub fn write_index(&self, manifests: &[Descriptor]) -> Result<()> {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests: manifests.to_vec(),
            annotations: Default::default(),
        };
        let bytes = serde_json::to_vec(&index).map_err(|e| Error::json("index.json", e))?;
        fs::write(self.dir.join("index.json"), bytes)?;
        Ok(())
    }
}

/// Write a deterministic tar of the tree under `root` (root itself not included).
pub fn tar_dir(root: &Path, out: &mut dyn Write) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    tar_walk(root, Path::new(""), &mut builder, &mut links)?;
    builder.finish()?;
    Ok(())
}

fn base_header(meta: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.permissions().mode() & 0o7777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    h
}

fn tar_walk(
    abs: &Path,
    rel: &Path,
    b: &mut tar::Builder<&mut dyn Write>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(abs)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = abs.join(&name);
        let rel = rel.join(&name);
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = base_header(&meta, tar::EntryType::Directory);
            b.append_data(&mut h, &rel, io::empty())?;
            tar_walk(&path, &rel, b, links)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&path)?;
            let mut h = base_header(&meta, tar::EntryType::Symlink);
            h.set_mode(0o777);
            b.append_link(&mut h, &rel, &target)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    let mut h = base_header(&meta, tar::EntryType::Link);
                    b.append_link(&mut h, &rel, first)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), rel.clone());
            }
            let mut h = base_header(&meta, tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = fs::File::open(&path)?;
            b.append_data(&mut h, &rel, f.take(meta.len()))?;
        }
        // Sockets, fifos and device nodes are skipped.
    }
    Ok(())
}
