//! The registry's storage on disk (blocking I/O; small files, or called from `spawn_blocking`).
//!
//! ```text
//! <root>/blobs/sha256/<hex>                          blobs and manifests, content-addressed
//! <root>/uploads/<uuid>/data                         bytes of an upload in progress
//! <root>/uploads/<uuid>/repo                         the repository the upload belongs to
//! <root>/repositories/<name>/_manifests/sha256/<hex> media type of a manifest pushed to <name>
//! <root>/repositories/<name>/_tags/<tag>             `sha256:<hex>` the tag points to
//! <root>/tmp/                                        files being written, renamed into place
//! ```
//!
//! Every file appears under its final name complete: it is written aside, fsynced and renamed.
//! An upload becomes a blob only when its sha256 matches the digest the client names.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use vt_image::Digest;

/// On-disk registry storage rooted at `<data-dir>/registry`.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
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

/// A random 128-bit id as 32 hex digits (upload ids and temp file names).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    hex::encode(b)
}

impl Storage {
    /// Open (creating the directories) and clear abandoned temp files.
    pub fn open(root: &Path) -> io::Result<Self> {
        for d in ["blobs/sha256", "uploads", "repositories", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        if let Ok(entries) = std::fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Storage { root: root.to_owned() })
    }

    /// Storage at `root` without touching the disk (for readers; writers use [`Storage::open`]).
    pub fn at(root: &Path) -> Self {
        Storage { root: root.to_owned() }
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

    /// Start an upload for repository `name`; returns its id.
    pub fn start_upload(&self, name: &str) -> io::Result<String> {
        let id = random_id();
        let dir = self.upload_dir(&id);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("repo"), name)?;
        std::fs::File::create(dir.join("data"))?;
        Ok(id)
    }

    /// Bytes received so far by upload `id` of repository `name`; `None` if there is no such upload.
    pub fn upload_size(&self, name: &str, id: &str) -> io::Result<Option<u64>> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(repo) = not_found(std::fs::read_to_string(self.upload_dir(id).join("repo")))? else { return Ok(None) };
        if repo != name {
            return Ok(None);
        }
        Ok(not_found(std::fs::metadata(self.upload_data(id)))?.map(|m| m.len()))
    }

    pub fn cancel_upload(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.upload_dir(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Hash upload `id`; when it matches `digest`, rename it into `blobs/` (atomically).
    /// Either way the upload is gone afterwards.
    pub fn finish_upload(&self, id: &str, digest: &Digest) -> Result<u64, FinishError> {
        let data = self.upload_data(id);
        let res = (|| {
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
}
