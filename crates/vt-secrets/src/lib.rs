//! Secrets at rest.
//!
//! - A [`MasterKey`] (32 random bytes) lives in `<data-dir>/master.key`
//!   (mode 0600, 64 hex digits) or in the file `--master-key-file` names. It
//!   never encrypts a value: it wraps the env keys.
//! - Each env has an [`EnvKey`] (32 random bytes), stored wrapped by the
//!   master key ([`MasterKey::wrap`]); rotating the master key re-wraps the
//!   env keys and touches no value.
//! - Each value is sealed with its env's key ([`EnvKey::seal`]):
//!   XChaCha20-Poly1305 with a random 24-byte nonce, the env id and the
//!   secret's name as associated data (a sealed value moved to another name
//!   or env does not open).
//!
//! [`Sealed::to_text`] is what the store keeps: `v1:` and the base64 of the
//! nonce and ciphertext. Keys never appear in `Debug` output, and are wiped
//! from memory when dropped. Errors name what failed (an env, a name, a
//! file), never a value or a key.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

pub mod limits;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const TEXT_PREFIX: &str = "v1:";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("the master key file {path}: {why}")]
    KeyFile { path: PathBuf, why: String },
    /// Authentication failed: the wrong key, or bytes that were changed.
    #[error("{what} does not decrypt: wrong key, or the stored bytes were changed")]
    Decrypt { what: String },
    #[error("{what} is not a sealed value ({why})")]
    Malformed { what: String, why: String },
}

fn random<const N: usize>() -> Result<[u8; N], SecretsError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| SecretsError::Random(e.to_string()))?;
    Ok(b)
}

fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

/// A value encrypted with a key: the nonce and the ciphertext (tag included).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(<{} bytes>)", self.ciphertext.len())
    }
}

impl Sealed {
    fn seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        let nonce: [u8; NONCE_LEN] = random()?;
        let ciphertext = cipher(key)
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| SecretsError::Random("the cipher refused to encrypt".into()))?;
        Ok(Sealed { nonce, ciphertext })
    }

    fn open(
        &self,
        key: &[u8; KEY_LEN],
        aad: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        cipher(key)
            .decrypt(XNonce::from_slice(&self.nonce), Payload { msg: &self.ciphertext, aad })
            .map(Zeroizing::new)
            .map_err(|_| SecretsError::Decrypt { what: what() })
    }

    /// How many bytes the value has (what limits count), known without opening it.
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len().saturating_sub(TAG_LEN)
    }

    /// The stored form: `v1:` + base64(nonce ‖ ciphertext).
    pub fn to_text(&self) -> String {
        let mut raw = self.nonce.to_vec();
        raw.extend_from_slice(&self.ciphertext);
        format!("{TEXT_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// Parse [`Sealed::to_text`]'s form; `what` names it in errors.
    pub fn from_text(s: &str, what: &str) -> Result<Sealed, SecretsError> {
        let bad = |why: &str| SecretsError::Malformed { what: what.to_owned(), why: why.to_owned() };
        let b64 = s.strip_prefix(TEXT_PREFIX).ok_or_else(|| bad("unknown format"))?;
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad("not base64"))?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(bad("too short"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        Ok(Sealed { nonce, ciphertext: raw[NONCE_LEN..].to_vec() })
    }
}

/// The key that wraps every env key.
pub struct MasterKey([u8; KEY_LEN]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

fn key_file_err(path: &Path, why: impl Into<String>) -> SecretsError {
    SecretsError::KeyFile { path: path.to_owned(), why: why.into() }
}

impl MasterKey {
    pub fn generate() -> Result<MasterKey, SecretsError> {
        Ok(MasterKey(random()?))
    }

    /// Read a master key file: 64 hex digits and an optional newline, readable by its owner only.
    pub fn read(path: &Path) -> Result<MasterKey, SecretsError> {
        let meta = std::fs::metadata(path).map_err(|e| key_file_err(path, e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(key_file_err(path, format!("mode {mode:o} lets others read it; `chmod 600` it")));
            }
        }
        if meta.len() > 200 {
            return Err(key_file_err(path, "too large to be a master key (64 hex digits)"));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| key_file_err(path, e.to_string()))?);
        let hex_key = text.strip_suffix('\n').unwrap_or(&text);
        let mut key = [0u8; KEY_LEN];
        if hex_key.len() != 2 * KEY_LEN || hex::decode_to_slice(hex_key, &mut key).is_err() {
            key.zeroize();
            return Err(key_file_err(path, "must hold 64 hex digits (32 bytes)"));
        }
        Ok(MasterKey(key))
    }

    /// Write a new key to `path` (mode 0600, never over an existing file): aside, synced, renamed.
    pub fn write_new(&self, path: &Path) -> Result<(), SecretsError> {
        if path.exists() {
            return Err(key_file_err(path, "already exists; a master key is never overwritten"));
        }
        let text = Zeroizing::new(format!("{}\n", hex::encode(self.0)));
        write_private(path, text.as_bytes()).map_err(|e| key_file_err(path, e.to_string()))
    }

    /// A name for this key that says nothing about it: `mk_` and 16 hex digits
    /// of a hash. The store records which key wraps its env keys by it.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"vt master key fingerprint\n");
        h.update(self.0);
        format!("mk_{}", &hex::encode(h.finalize())[..16])
    }

    fn env_key_aad(env: &str) -> Vec<u8> {
        [b"vt env key\n".as_slice(), env.as_bytes()].concat()
    }

    /// Seal an env's key for storage.
    pub fn wrap(&self, env: &str, key: &EnvKey) -> Result<Sealed, SecretsError> {
        Sealed::seal(&self.0, &Self::env_key_aad(env), &key.0)
    }

    /// Open an env's key from storage.
    pub fn unwrap(&self, env: &str, sealed: &Sealed) -> Result<EnvKey, SecretsError> {
        let raw = sealed.open(&self.0, &Self::env_key_aad(env), || format!("the key of env {env}"))?;
        let mut key = [0u8; KEY_LEN];
        if raw.len() != KEY_LEN {
            return Err(SecretsError::Malformed { what: format!("the key of env {env}"), why: "wrong length".into() });
        }
        key.copy_from_slice(&raw);
        Ok(EnvKey(key))
    }

    /// A key derived for one purpose (`purpose` names it), e.g. to hash
    /// requests that carry secret values with a key only this server has.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(purpose.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

/// An env's data key.
pub struct EnvKey([u8; KEY_LEN]);

impl Drop for EnvKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for EnvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvKey(<redacted>)")
    }
}

impl EnvKey {
    pub fn generate() -> Result<EnvKey, SecretsError> {
        Ok(EnvKey(random()?))
    }

    fn value_aad(env: &str, name: &str) -> Vec<u8> {
        [b"vt secret\n".as_slice(), env.as_bytes(), b"\n", name.as_bytes()].concat()
    }

    /// Seal the value of secret `name` of `env`.
    pub fn seal(&self, env: &str, name: &str, value: &[u8]) -> Result<Sealed, SecretsError> {
        Sealed::seal(&self.0, &Self::value_aad(env, name), value)
    }

    /// Open the value of secret `name` of `env` (`version` names it in errors).
    pub fn open(
        &self,
        env: &str,
        name: &str,
        version: u64,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        sealed
            .open(&self.0, &Self::value_aad(env, name), || format!("secret `{name}` of env {env} (version {version})"))
    }
}

/// HMAC-SHA256 of `parts` under `key`, hex: what a request carrying secrets is remembered by.
pub fn keyed_hash(key: &[u8; 32], parts: &[&[u8]]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Write `bytes` to `path`, readable by its owner only (mode 0600): aside
/// (`<path>.tmp`), synced, renamed into place, the directory synced. A crash
/// leaves the old file or the new one, never a part. For key and token files.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = open_private(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_seal_and_open_only_where_they_were_sealed() {
        let key = EnvKey::generate().unwrap();
        let sealed = key.seal("env_a", "DB", b"p\x00ss").unwrap();
        assert_eq!(key.open("env_a", "DB", 1, &sealed).unwrap().as_slice(), b"p\x00ss");
        let text = sealed.to_text();
        assert!(text.starts_with("v1:") && !text.contains("ss"));
        let back = Sealed::from_text(&text, "x").unwrap();
        assert_eq!(back.plaintext_len(), 4);
        assert_eq!(key.open("env_a", "DB", 1, &back).unwrap().as_slice(), b"p\x00ss");
        // Another name, env or key: no.
        for (env, name) in [("env_a", "DB2"), ("env_b", "DB")] {
            let err = key.open(env, name, 7, &sealed).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("version 7") && !err.contains("ss"), "{err}");
        }
        assert!(EnvKey::generate().unwrap().open("env_a", "DB", 1, &sealed).is_err());
        // A flipped bit: no.
        let mut raw = base64::engine::general_purpose::STANDARD.decode(&text[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let flipped = format!("v1:{}", base64::engine::general_purpose::STANDARD.encode(raw));
        assert!(key.open("env_a", "DB", 1, &Sealed::from_text(&flipped, "x").unwrap()).is_err());
        for bad in ["", "v2:AAAA", "v1:%%%", "v1:AAAA"] {
            assert!(Sealed::from_text(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn env_keys_are_wrapped_by_the_master_key() {
        let master = MasterKey::generate().unwrap();
        let env_key = EnvKey::generate().unwrap();
        let value = env_key.seal("env_a", "K", b"v").unwrap();
        let wrapped = master.wrap("env_a", &env_key).unwrap();
        let again = master.unwrap("env_a", &wrapped).unwrap();
        assert_eq!(again.open("env_a", "K", 1, &value).unwrap().as_slice(), b"v");
        assert!(master.unwrap("env_b", &wrapped).is_err(), "bound to its env");
        let other = MasterKey::generate().unwrap();
        assert!(other.unwrap("env_a", &wrapped).is_err());
        assert_ne!(master.fingerprint(), other.fingerprint());
        assert!(master.fingerprint().starts_with("mk_") && master.fingerprint().len() == 19);
        assert!(!format!("{master:?} {env_key:?}").contains(&hex::encode(master.0)));
        assert_ne!(*master.derive("a"), *master.derive("b"));
    }

    #[test]
    fn key_files_are_private_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate().unwrap();
        key.write_new(&path).unwrap();
        assert!(key.write_new(&path).is_err(), "never overwritten");
        let read = MasterKey::read(&path).unwrap();
        assert_eq!(read.fingerprint(), key.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = MasterKey::read(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "abc\n").unwrap();
        let err = MasterKey::read(&path).unwrap_err().to_string();
        assert!(err.contains("64 hex digits") && !err.contains("abc"), "{err}");
        assert!(MasterKey::read(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn keyed_hashes_separate_their_parts() {
        let k = [7u8; 32];
        assert_ne!(keyed_hash(&k, &[b"ab", b"c"]), keyed_hash(&k, &[b"a", b"bc"]));
        assert_ne!(keyed_hash(&k, &[b"x"]), keyed_hash(&[8u8; 32], &[b"x"]));
    }
}
