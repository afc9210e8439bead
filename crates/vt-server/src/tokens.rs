//! The tokens `vt server` makes for itself: the first admin token, the console user's
//! password, and the in-process agent's node token. Each secret is written to its file (mode
//! 0600) before its record is appended: a crash in between leaves a file
//! whose token is unknown, and the next start makes a new one.

use std::path::{Path, PathBuf};

use vt_control_plane::auth::{self, Issued, TokenSpec};
use vt_control_plane::authz::Caller;
use vt_control_plane::ControlPlane;
use vt_events::{Actor, NewEvent, TokenRole};
use vt_ids::{Hostname, Name, NodeId, TokenId};
use vt_store::{AppendRequest, Store, StoreError};
use vt_views::TokenView;

use crate::DataDir;

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot generate a token: {0}")]
    Random(String),
    #[error("cannot write a token to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the views did not catch up with the log: {0}")]
    Views(String),
}

fn issue(spec: TokenSpec) -> Result<Issued, TokenFileError> {
    auth::issue(spec, chrono::Utc::now()).map_err(|e| TokenFileError::Random(e.to_string()))
}

/// On first start (no tokens at all): an admin token, written to
/// `<data-dir>/admin-token`. Returns the path when it wrote one.
pub async fn bootstrap_admin(store: &dyn Store, data: &DataDir) -> Result<Option<PathBuf>, TokenFileError> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    let spec = TokenSpec {
        name: name("admin"),
        role: TokenRole::Admin,
        org: None,
        node: None,
        expires_at: None,
        labels: Default::default(),
    };
    let issued = issue(spec)?;
    let path = data.admin_token();
    write_private(&path, &issued.secret)?;
    append(store, issued, None).await?;
    Ok(Some(path))
}

/// The console user's password (user `vt`, on both origins): the secret of an admin token
/// named `console`, in `<data-dir>/console-password`. The one there is kept while it is a
/// valid admin token; else (first start, or it was revoked to change it) a new one is made
/// and written there. Returns the token's id and whether it is new.
pub async fn console_password(cp: &ControlPlane, data: &DataDir) -> Result<(TokenId, bool), TokenFileError> {
    let path = data.console_password();
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(Caller::Admin { token }) =
            auth::authenticate(cp.store.as_ref(), text.trim(), chrono::Utc::now()).await?
        {
            return Ok((token, false));
        }
    }
    let spec = TokenSpec {
        name: name("console"),
        role: TokenRole::Admin,
        org: None,
        node: None,
        expires_at: None,
        labels: Default::default(),
    };
    let issued = issue(spec)?;
    let token = issued.record.token_id;
    write_private(&path, &issued.secret)?;
    append(cp.store.as_ref(), issued, None).await?;
    Ok((token, true))
}

/// The node token of the agent running in this server: the one in
/// `<data-dir>/node-token` while it is valid and issued for the node named
/// `node`; else a new one bound to that node (a registered node of that name,
/// or the id the node will register under), written there. A valid token it
/// replaces (the node was renamed) is revoked in the same append. The agent
/// never holds the admin token.
pub async fn local_node_token(cp: &ControlPlane, data: &DataDir, node: &Hostname) -> Result<String, TokenFileError> {
    // Decide from views that show everything committed (a token issued a moment ago included).
    cp.fresh().await.map_err(|e| TokenFileError::Views(e.internal.unwrap_or(e.message)))?;
    let path = data.node_token();
    let mut replaced = None;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let secret = text.trim();
        if let Ok(Caller::Node { token, .. }) =
            auth::authenticate(cp.store.as_ref(), secret, chrono::Utc::now()).await?
        {
            let view: Option<TokenView> =
                cp.store.view_get(vt_views::ViewKind::Token, &token.to_string()).await?.and_then(|r| r.decode().ok());
            if view.is_some_and(|v| v.node_name.as_deref() == Some(node.as_str())) {
                return Ok(secret.to_owned());
            }
            replaced = Some(token);
        }
    }
    let id = match cp.lookup_node(node).await {
        Ok(existing) => existing.id,
        Err(_) => NodeId::new(),
    };
    let spec = TokenSpec {
        name: name("local-node"),
        role: TokenRole::Node,
        org: None,
        node: Some((id, node.clone())),
        expires_at: None,
        labels: Default::default(),
    };
    let issued = issue(spec)?;
    let secret = issued.secret.clone();
    write_private(&path, &secret)?;
    append(cp.store.as_ref(), issued, replaced).await?;
    Ok(secret)
}

fn name(s: &str) -> Name {
    Name::parse(s).unwrap_or_else(|e| unreachable!("`{s}` is a valid name: {e}"))
}

async fn append(store: &dyn Store, issued: Issued, revoke: Option<TokenId>) -> Result<(), StoreError> {
    let actor = Actor::system("bootstrap");
    let mut request = AppendRequest {
        events: vec![NewEvent::new(issued.event, actor.clone(), None)],
        tokens: vec![issued.record],
        ..Default::default()
    };
    if let Some(old) = revoke {
        let (event, revocation) = auth::revoke(old, TokenRole::Node, None, chrono::Utc::now());
        request.events.push(NewEvent::new(event, actor, None));
        request.revocations.push(revocation);
    }
    store.append(request).await.map(|_| ())
}

/// Write `secret` to `path` with mode 0600: aside, synced, renamed into place.
/// Write a node's token (a joined node's, from its enrollment) to `path`, 0600.
pub(crate) fn write_node_token(path: &Path, secret: &str) -> Result<(), TokenFileError> {
    write_private(path, secret)
}

fn write_private(path: &Path, secret: &str) -> Result<(), TokenFileError> {
    vt_secrets::write_private(path, format!("{secret}\n").as_bytes())
        .map_err(|source| TokenFileError::Write { path: path.to_owned(), source })
}
