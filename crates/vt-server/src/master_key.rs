//! The master key: found (or made, on first start) and checked against the
//! store before anything serves, and rotated offline.
//!
//! The store records, with each env's key, the fingerprint of the master key
//! that wraps it. A server starts only with the key those fingerprints name:
//! a wrong or missing key is refused with what to do, never served as
//! garbage.
//!
//! Rotation, crash-safe in this order: the new key is written aside
//! (`<key>.new`, synced); every env key is re-wrapped with it in one
//! transaction; the new key is renamed over the old. A crash before the
//! transaction leaves the old key in force (the next rotation or start
//! removes the stray `.new`); a crash after it leaves the store on the new key
//! with the new key still aside, which the next start (or rotation) moves into
//! place.

use std::path::{Path, PathBuf};

use vt_secrets::{MasterKey, SecretsError};
use vt_store::{SecretKeyRecord, Store, StoreError};

use crate::{DataDir, Notice, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(transparent)]
    Key(#[from] SecretsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the master key file {path} does not exist, and the store holds secrets wrapped by master key {wanted}: \
         restore that key file (or name it with --master-key-file); without it the secrets cannot be read"
    )]
    Missing { path: PathBuf, wanted: String },
    #[error("the master key file {path} does not exist; --master-key-file names a key that is there")]
    MissingNamed { path: PathBuf },
    #[error(
        "the master key in {path} ({have}) is not the one the store's secrets are wrapped by ({wanted}): \
         start with the key file of this data directory (--master-key-file)"
    )]
    Wrong { path: PathBuf, have: String, wanted: String },
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

/// Where the master key of `config` lives.
pub fn path(config: &ServerConfig, data: &DataDir) -> PathBuf {
    config.master_key_file.clone().unwrap_or_else(|| data.master_key())
}

fn aside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".new");
    path.with_file_name(name)
}

/// The one fingerprint the store's env keys are wrapped by (`None`: no env has secrets).
/// Several mean a rotation was interrupted inside the store, which one transaction rules out.
fn wanted(keys: &[SecretKeyRecord]) -> Option<&str> {
    keys.first().map(|k| k.master_key.as_str())
}

/// The master key the server runs with: read and checked against the store,
/// finishing an interrupted rotation, or made on first start at the default path.
pub async fn load(
    config: &ServerConfig,
    data: &DataDir,
    store: &dyn Store,
    notices: &mut Vec<Notice>,
) -> Result<MasterKey, MasterKeyError> {
    let path = path(config, data);
    let keys = store.secret_keys().await?;
    if let Some(k) = keys.iter().find(|k| Some(k.master_key.as_str()) != wanted(&keys)) {
        return Err(MasterKeyError::Wrong {
            path,
            have: k.master_key.clone(),
            wanted: wanted(&keys).unwrap_or_default().to_owned(),
        });
    }
    let wanted = wanted(&keys);
    let new = aside(&path);
    if new.exists() {
        let candidate = MasterKey::read(&new)?;
        if Some(candidate.fingerprint().as_str()) == wanted {
            rename(&new, &path)?;
            notices.push(Notice::Warning(format!(
                "finished an interrupted master key rotation: {} is now {}",
                path.display(),
                candidate.fingerprint()
            )));
        } else {
            remove(&new)?;
            notices.push(Notice::Warning(format!(
                "removed {}, a key an interrupted rotation made and never used",
                new.display()
            )));
        }
    }
    if !path.exists() {
        if let Some(wanted) = wanted {
            return Err(MasterKeyError::Missing { path, wanted: wanted.to_owned() });
        }
        if config.master_key_file.is_some() {
            return Err(MasterKeyError::MissingNamed { path });
        }
        let key = MasterKey::generate()?;
        key.write_new(&path)?;
        notices.push(Notice::Info(format!(
            "wrote a new master key ({}) to {}; back it up apart from the data: without it no secret can be read",
            key.fingerprint(),
            path.display()
        )));
        return Ok(key);
    }
    let key = MasterKey::read(&path)?;
    if let Some(wanted) = wanted {
        if key.fingerprint() != wanted {
            return Err(MasterKeyError::Wrong { path, have: key.fingerprint(), wanted: wanted.to_owned() });
        }
    }
    Ok(key)
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub path: PathBuf,
    pub old: String,
    pub new: String,
    /// Env keys re-wrapped (values are not touched).
    pub env_keys: usize,
    /// What loading the old key found (an interrupted rotation finished, say).
    pub notices: Vec<Notice>,
}

/// Replace the master key, re-wrapping every env key with the new one (see the module docs).
pub async fn rotate(config: &ServerConfig, data: &DataDir, store: &dyn Store) -> Result<Rotation, MasterKeyError> {
    let mut notices = vec![];
    let old = load(config, data, store, &mut notices).await?;
    let path = path(config, data);
    let new = MasterKey::generate()?;
    let new_path = aside(&path);
    new.write_new(&new_path)?;
    let keys = store.secret_keys().await?;
    let mut rewrapped = Vec::with_capacity(keys.len());
    for k in &keys {
        let what = format!("the key of env {}", k.env_id);
        let env_key = old.unwrap(&k.env_id, &vt_secrets::Sealed::from_text(&k.wrapped, &what)?)?;
        rewrapped.push(SecretKeyRecord {
            env_id: k.env_id.clone(),
            master_key: new.fingerprint(),
            wrapped: new.wrap(&k.env_id, &env_key)?.to_text(),
        });
    }
    store.rewrap_secret_keys(rewrapped).await?;
    rename(&new_path, &path)?;
    Ok(Rotation { path, old: old.fingerprint(), new: new.fingerprint(), env_keys: keys.len(), notices })
}

fn rename(from: &Path, to: &Path) -> Result<(), MasterKeyError> {
    std::fs::rename(from, to).map_err(|source| MasterKeyError::Io {
        what: "move a new master key to",
        path: to.to_owned(),
        source,
    })?;
    if let Some(dir) = to.parent() {
        // The rename itself durable.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn remove(path: &Path) -> Result<(), MasterKeyError> {
    std::fs::remove_file(path).map_err(|source| MasterKeyError::Io { what: "remove", path: path.to_owned(), source })
}
