//! Bearer tokens.
//!
//! A token is `vt_<64 hex>`: 32 random bytes. Only its sha256 is stored; the
//! secret exists in the response that created it and, for the first admin
//! token, in `<data-dir>/admin-token` (mode 0600). Nothing logs a token.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vt_events::{Actor, Event, NewEvent, TokenCreated, TokenRole};
use vt_ids::TokenId;
use vt_store::{AppendRequest, Store, StoreError, TokenRecord};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub role: TokenRole,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor(format!("token:{}", self.token_id))
    }
    pub fn is_admin(&self) -> bool {
        self.role == TokenRole::Admin
    }
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("vt_{}", hex::encode(bytes)))
}

/// Look a presented secret up. `None` for unknown or malformed tokens.
pub async fn authenticate(store: &dyn Store, secret: &str) -> Result<Option<Caller>, StoreError> {
    if !secret.starts_with("vt_") || secret.len() != 67 {
        return Ok(None);
    }
    let Some(rec) = store.token_by_hash(&hash(secret)).await? else { return Ok(None) };
    let role = match rec.role.as_str() {
        "admin" => TokenRole::Admin,
        "node" => TokenRole::Node,
        other => return Err(StoreError::Corrupt(format!("token {} has unknown role `{other}`", rec.token_id))),
    };
    Ok(Some(Caller { token_id: rec.token_id, role }))
}

/// A token record and its creation event, to append together.
pub fn issue(name: &str, role: TokenRole) -> Result<(String, TokenRecord, Event), getrandom::Error> {
    let secret = new_secret()?;
    let token_id = TokenId::new();
    let role_str = match role {
        TokenRole::Admin => "admin",
        TokenRole::Node => "node",
    };
    let rec = TokenRecord {
        token_id: token_id.to_string(),
        hash: hash(&secret),
        name: name.into(),
        role: role_str.into(),
        created_at: chrono::Utc::now(),
    };
    Ok((secret, rec, Event::TokenCreated(TokenCreated { token_id, name: name.into(), role })))
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot generate a token: {0}")]
    Random(getrandom::Error),
    #[error("cannot write a token to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// On first start (no tokens yet), create an admin token and write it to
/// `<data_dir>/admin-token` with mode 0600. Returns the path when it wrote one.
pub async fn bootstrap_admin(store: &dyn Store, data_dir: &Path) -> Result<Option<PathBuf>, BootstrapError> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    issue_to_file(store, &data_dir.join("admin-token"), "admin", TokenRole::Admin).await.map(|(_, path)| Some(path))
}

/// The node token of the node agent that runs inside `vt server`: the one in
/// `<data_dir>/node-token` while it is valid, else a new one written there (mode 0600).
/// The agent never holds the admin token.
pub async fn local_node_token(store: &dyn Store, data_dir: &Path) -> Result<String, BootstrapError> {
    let path = data_dir.join("node-token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let secret = text.trim();
        if let Some(c) = authenticate(store, secret).await? {
            if c.role == TokenRole::Node {
                return Ok(secret.to_owned());
            }
        }
    }
    issue_to_file(store, &path, "local-node", TokenRole::Node).await.map(|(secret, _)| secret)
}

/// Issue a token and write its secret to `path` (0600) before appending its
/// record: if we crash in between, the next start issues a new one and
/// overwrites the file.
async fn issue_to_file(
    store: &dyn Store,
    path: &Path,
    name: &str,
    role: TokenRole,
) -> Result<(String, PathBuf), BootstrapError> {
    let (secret, rec, event) = issue(name, role).map_err(BootstrapError::Random)?;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = open_private(&tmp)?;
        f.write_all(secret.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| BootstrapError::Write { path: path.to_owned(), source })?;
    let ev = NewEvent::new(event, Actor::system("bootstrap"), None);
    store.append(AppendRequest { events: vec![ev], tokens: vec![rec], ..Default::default() }).await?;
    Ok((secret, path.to_owned()))
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
