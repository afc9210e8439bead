//! The control plane's storage.
//!
//! One trait, [`Store`], and two implementations that pass one shared test suite
//! ([`suite`]): [`SqliteStore`] (embedded, the single-host default) and
//! [`PgStore`] (PostgreSQL, for multi-node control planes). Both keep the same
//! tables with the same SQL (see `schema.rs`):
//!
//! - `events`: the append-only log. `seq` is dense and assigned under the
//!   store's write lock, so commit order is `seq` order and a reader following by
//!   cursor never skips an event that commits late. Triggers refuse UPDATE and
//!   DELETE: events are never rewritten.
//! - `claims`: unique names (`org` names, app names within an org, ...), taken in
//!   the same transaction as the event that creates the named thing.
//! - `idempotency`: the response of each keyed mutation, written in the same
//!   transaction as its events, so a retry after a crash replays instead of acting twice.
//! - `views` + `checkpoints`: materialized views, written only by the
//!   [`Projector`], with one checkpoint per projection.
//! - `tokens`, `heartbeats`: API token hashes with their roles and revocation
//!   (what authentication reads), and node liveness (not events: a heartbeat
//!   that changes nothing is not a state change).
//! - `schema_migrations`: which of `schema.rs`'s migrations a database has.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vt_events::{AggregateType, Envelope, NewEvent, TokenRole};
use vt_ids::{AppId, NodeId, OrgId, TokenId};
use vt_views::{ViewKind, ViewRow};

mod leader;
mod projector;
mod schema;
mod sql;
pub mod suite;

pub use leader::{Fence, Lead, Leadership};
pub use projector::{ProjectionStatus, Projector, WaitError};
pub use sql::{PgStore, SqliteOptions, SqliteStore};

/// What an append expects of an aggregate's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The aggregate has no events yet.
    NoStream,
    /// The aggregate has at least one event (it exists).
    Exists,
    /// The aggregate is at exactly this version.
    Exact(u64),
}

/// A precondition checked inside the append transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub aggregate_type: AggregateType,
    pub aggregate_id: String,
    pub expected: ExpectedVersion,
}

/// What a claimed name is unique within. Stored as [`ClaimScope::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimScope {
    /// Org names, cluster-wide.
    Org,
    /// App names within an org.
    App(OrgId),
    /// Env names within an app.
    Env(AppId),
    /// Node names, cluster-wide.
    Node,
    /// Node /64 subnets, cluster-wide.
    Subnet,
    /// Node IPv4 ranges, cluster-wide.
    Ipv4Range,
    /// TCP route listener ports.
    RoutePort,
    /// TLS route host names on one listener port.
    RouteHost(u16),
    /// Host names, owned by the org whose routes use them.
    Hostname,
    /// Workspace names, platform-wide (they are paths on the one workspace origin).
    Workspace,
}

impl ClaimScope {
    /// The stored form: `org`, `app:<org id>`, `route-host:443`, ...
    pub fn key(&self) -> String {
        match self {
            Self::Org => "org".into(),
            Self::App(org) => format!("app:{org}"),
            Self::Env(app) => format!("env:{app}"),
            Self::Node => "node".into(),
            Self::Subnet => "subnet".into(),
            Self::Ipv4Range => "ipv4-range".into(),
            Self::RoutePort => "route-port".into(),
            Self::RouteHost(port) => format!("route-host:{port}"),
            Self::Hostname => "hostname".into(),
            Self::Workspace => "workspace".into(),
        }
    }
}

impl std::fmt::Display for ClaimScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// A unique name taken by `owner` within `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub scope: ClaimScope,
    pub name: String,
    pub owner: String,
}

/// The stored response of a keyed mutation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Who may replay it (the actor), so keys of different callers never collide.
    pub scope: String,
    pub key: String,
    /// sha256 of method, path and body: the same key with another request is refused.
    pub request_hash: String,
    pub status: u16,
    pub body: String,
    pub created_at: DateTime<Utc>,
    /// Last event seq written by the original request (0 if none).
    pub last_seq: u64,
}

/// An API token as authentication reads it: only the hash of its secret is
/// stored, with the role and what the role is bound to. Written in the same
/// transaction as its `token.created` event; `revoked_at` in the same
/// transaction as its `token.revoked` event, so a revocation holds from the
/// next request on, whatever the views' lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token_id: TokenId,
    pub hash: String,
    pub name: String,
    pub role: TokenRole,
    pub org_id: Option<OrgId>,
    pub node_id: Option<NodeId>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token revoked at `at` (see [`TokenRecord::revoked_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRevocation {
    pub token_id: TokenId,
    pub at: DateTime<Utc>,
    /// Refuse the append ([`StoreError::Refused`]) if it would leave no active
    /// admin token: checked in the append's transaction, so two revocations
    /// racing for the last two admin tokens cannot both commit.
    pub keep_an_admin: bool,
}

/// A write of sealed secrets (`vt-secrets`), with the events that record it.
/// Values are opaque text here: the store never sees a key or a value.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretWrite {
    /// An env's key, wrapped by the master key `master_key` (a fingerprint).
    Key { env_id: String, master_key: String, wrapped: String },
    /// A change staged for the env's next version: a sealed value, or `None` to remove the secret.
    Stage { env_id: String, name: String, sealed: Option<String> },
    /// A new version: every secret of it; `clear_staged` empties the staging.
    Version { env_id: String, version: u64, values: Vec<(String, String)>, clear_staged: bool },
}

/// Never shows sealed bytes (they say nothing, but nothing needs them in a log).
impl std::fmt::Debug for SecretWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key { env_id, master_key, .. } => write!(f, "Key {{ env_id: {env_id}, master_key: {master_key} }}"),
            Self::Stage { env_id, name, sealed } => {
                write!(f, "Stage {{ env_id: {env_id}, name: {name}, set: {} }}", sealed.is_some())
            }
            Self::Version { env_id, version, values, clear_staged } => {
                let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
                write!(f, "Version {{ env_id: {env_id}, version: {version}, names: {names:?}, clear_staged: {clear_staged} }}")
            }
        }
    }
}

/// An env's key as stored: which master key wraps it, and the wrapped key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRecord {
    pub env_id: String,
    pub master_key: String,
    pub wrapped: String,
}

/// Everything one command writes, atomically: all or nothing.
#[derive(Debug, Clone, Default)]
pub struct AppendRequest {
    pub events: Vec<NewEvent>,
    pub expectations: Vec<Expectation>,
    pub claims: Vec<Claim>,
    /// Claims given up (matched on scope, name and owner): their names are free
    /// again once the append commits. A release of a claim held by another
    /// owner, or not held at all, does nothing.
    pub releases: Vec<Claim>,
    pub idempotency: Option<IdempotencyRecord>,
    pub tokens: Vec<TokenRecord>,
    pub revocations: Vec<TokenRevocation>,
    pub secrets: Vec<SecretWrite>,
    /// Append only while this leader still leads (see [`Leadership`]).
    pub fence: Option<Fence>,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Seq of the first event appended (`last_seq + 1` if none were).
    pub first_seq: u64,
    /// Seq of the last event appended (the head before the append if none were).
    pub last_seq: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewQuery {
    pub kind: Option<ViewKind>,
    pub org_id: Option<String>,
    pub parent_id: Option<String>,
    /// Any of these parents (none: no row), at most [`ViewQuery::MAX_PARENTS`].
    pub parent_ids: Option<Vec<String>>,
    pub name: Option<String>,
}

impl ViewQuery {
    pub fn kind(kind: ViewKind) -> Self {
        ViewQuery { kind: Some(kind), ..Default::default() }
    }
    /// How many parents one query should name at most ([`ViewQuery::parents`]; each is a
    /// bound parameter, which databases limit): ask in chunks for more.
    pub const MAX_PARENTS: usize = 500;

    pub fn parent(mut self, parent: impl ToString) -> Self {
        self.parent_id = Some(parent.to_string());
        self
    }
    /// Rows whose parent is any of `parents` (at most [`ViewQuery::MAX_PARENTS`]).
    pub fn parents<P: ToString>(mut self, parents: impl IntoIterator<Item = P>) -> Self {
        self.parent_ids = Some(parents.into_iter().map(|p| p.to_string()).collect());
        self
    }
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    pub fn org(mut self, org: impl ToString) -> Self {
        self.org_id = Some(org.to_string());
        self
    }
}

/// One projection's move from one checkpoint to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMove {
    pub name: String,
    pub from: u64,
    pub to: u64,
}

/// What the projector writes in one transaction.
#[derive(Debug, Clone, Default)]
pub struct ProjectionBatch {
    pub upserts: Vec<ViewRow>,
    pub deletes: Vec<(ViewKind, String)>,
    pub checkpoints: Vec<CheckpointMove>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{aggregate_type} `{aggregate_id}` is at version {actual}, expected {expected:?}")]
    VersionConflict { aggregate_type: AggregateType, aggregate_id: String, expected: ExpectedVersion, actual: u64 },
    #[error("the name `{name}` is already taken in {scope} (by {owner})")]
    NameTaken { scope: ClaimScope, name: String, owner: String },
    #[error("idempotency key `{key}` was recorded concurrently")]
    IdempotencyRace { key: String },
    #[error("checkpoint of projection `{name}` moved concurrently")]
    CheckpointRace { name: String },
    #[error("the transaction this append was grouped in failed: {0}")]
    GroupFailed(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A rule the append itself checks would break (the last active admin token revoked).
    #[error("{0}")]
    Refused(String),
    /// The append was fenced by a leadership this process no longer holds.
    #[error("this control plane no longer leads (another one took over); its reconcilers stand by")]
    Fenced,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True for conflicts that a caller resolves by re-reading (not failures of the store).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::VersionConflict { .. }
                | Self::NameTaken { .. }
                | Self::IdempotencyRace { .. }
                | Self::CheckpointRace { .. }
                | Self::Refused(_)
                | Self::Fenced
        )
    }
}

/// Which implementation a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Append events with their preconditions, claims, idempotency record and
    /// token records in one transaction. Preconditions are checked under the
    /// store's write lock; on any failure nothing is written.
    async fn append(&self, request: AppendRequest) -> Result<Appended, StoreError>;

    /// Leadership of the control planes sharing this store, if this process can take it
    /// now (see [`Leadership`]); `None`: another one leads.
    async fn try_lead(&self) -> Result<Option<Leadership>, StoreError>;

    /// The seq of the last committed event (0 for an empty log).
    async fn head(&self) -> Result<u64, StoreError>;

    /// A receiver that sees the head move for appends made through this handle.
    /// Other processes' appends are seen by polling [`Store::head`].
    fn subscribe_head(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Up to `limit` events with `seq > after`, in order.
    async fn read_events(&self, after: u64, limit: u32) -> Result<Vec<Envelope>, StoreError>;

    /// Up to `limit` events of one org with `seq > after`, in order (what the org's members may read).
    async fn read_org_events(&self, org_id: &str, after: u64, limit: u32) -> Result<Vec<Envelope>, StoreError>;

    /// The last `limit` events (of one org, when given), in order.
    async fn read_last_events(&self, org_id: Option<&str>, limit: u32) -> Result<Vec<Envelope>, StoreError>;

    /// Current version of an aggregate (0 if it has no events).
    async fn aggregate_version(&self, aggregate_type: AggregateType, aggregate_id: &str) -> Result<u64, StoreError>;

    async fn view_get(&self, kind: ViewKind, id: &str) -> Result<Option<ViewRow>, StoreError>;
    async fn views_get_many(&self, keys: &[(ViewKind, String)]) -> Result<Vec<ViewRow>, StoreError>;
    /// Rows matching the query, ordered by kind then id.
    async fn view_list(&self, query: &ViewQuery) -> Result<Vec<ViewRow>, StoreError>;
    /// Apply a projection batch; fails with `CheckpointRace` if a checkpoint is not at `from`.
    async fn commit_projection(&self, batch: ProjectionBatch) -> Result<(), StoreError>;
    async fn checkpoints(&self) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Drop every view row and checkpoint in one transaction (rebuild starts from here).
    async fn reset_views(&self) -> Result<(), StoreError>;

    async fn claim_owner(&self, scope: ClaimScope, name: &str) -> Result<Option<String>, StoreError>;
    async fn idempotency_get(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    async fn token_count(&self) -> Result<u64, StoreError>;

    /// An env's key, if it has secrets.
    async fn secret_key(&self, env_id: &str) -> Result<Option<SecretKeyRecord>, StoreError>;
    /// Every env's key (for checking and rotating the master key).
    async fn secret_keys(&self) -> Result<Vec<SecretKeyRecord>, StoreError>;
    /// Replace every env key with its re-wrapped form, in one transaction (master key rotation).
    async fn rewrap_secret_keys(&self, keys: Vec<SecretKeyRecord>) -> Result<(), StoreError>;
    /// The sealed secrets of one version of an env, by name.
    async fn secret_values(&self, env_id: &str, version: u64) -> Result<Vec<(String, String)>, StoreError>;
    /// The changes staged for an env's next version, by name (`None`: removal).
    async fn secret_staged(&self, env_id: &str) -> Result<Vec<(String, Option<String>)>, StoreError>;

    /// A node's heartbeat at `at`, with its disk report (JSON) when it sent one; without, the
    /// last report stays.
    async fn heartbeat(&self, node_id: &str, at: DateTime<Utc>, disk: Option<&str>) -> Result<(), StoreError>;
    async fn heartbeats(&self) -> Result<BTreeMap<String, DateTime<Utc>>, StoreError>;
    /// Each node's last disk report (JSON, as given to [`Store::heartbeat`]) and when it came.
    async fn node_disks(&self) -> Result<BTreeMap<String, (DateTime<Utc>, String)>, StoreError>;
    /// One node's last disk report, as [`Store::node_disks`] has it.
    async fn node_disk(&self, node_id: &str) -> Result<Option<(DateTime<Utc>, String)>, StoreError>;
}
