//! The two SQL implementations of [`Store`].
//!
//! Both speak the same SQL (`$n` placeholders work in SQLite too), so the
//! method bodies are written once, in `store_impl!`, and instantiated for each
//! pool type. What differs is how the write lock is taken:
//!
//! - SQLite: one process owns the file; a tokio mutex serializes writers, so a
//!   transaction never has to upgrade a read lock (no SQLITE_BUSY deadlocks).
//! - PostgreSQL: several control planes may share the database; every write
//!   transaction first takes a transaction-scoped advisory lock. Appends hold it
//!   until commit, which is what makes `seq` dense and commit-ordered.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{postgres::PgPoolOptions, sqlite::SqliteConnectOptions, Row};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch, Mutex};
use vt_events::{AggregateType, Envelope};
use vt_views::{ViewKind, ViewRow};

use crate::*;

/// Advisory lock key for writes to the log (PostgreSQL).
const PG_WRITE_LOCK: i64 = 0x7654_0001;
/// Advisory lock key for schema creation (PostgreSQL).
const PG_SCHEMA_LOCK: i64 = 0x7654_0002;

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("timestamp `{s}`: {e}")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}: {v}")))
}

fn json(s: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what} is not JSON: {e}")))
}

/// An aggregate's version as read (or advanced) in this group's transaction.
/// Every aggregate a group touches is read up front by `versions_of`.
fn preloaded(
    versions: &HashMap<(AggregateType, String), u64>,
    key: &(AggregateType, String),
) -> Result<u64, StoreError> {
    versions
        .get(key)
        .copied()
        .ok_or_else(|| StoreError::Corrupt(format!("version of {} `{}` was not read before the append", key.0, key.1)))
}

fn check_expectation(exp: &Expectation, actual: u64) -> Result<(), StoreError> {
    let ok = match exp.expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual == 0,
        ExpectedVersion::Exists => actual > 0,
        ExpectedVersion::Exact(v) => actual == v,
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::VersionConflict {
            aggregate_type: exp.aggregate_type,
            aggregate_id: exp.aggregate_id.clone(),
            expected: exp.expected,
            actual,
        })
    }
}

const EVENT_COLUMNS: &str = "seq, event_id, event_type, schema_version, aggregate_type, aggregate_id, aggregate_version, org_id, request_id, correlation_id, actor, occurred_at, payload";
const VIEW_COLUMNS: &str = "kind, id, org_id, parent_id, name, seq, doc";

fn envelope_from_row<R: Row>(row: &R) -> Result<Envelope, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("event {what}: {e}"));
    let aggregate_type: String = row.try_get("aggregate_type")?;
    let opt_id = |col: &str| -> Result<Option<String>, StoreError> { Ok(row.try_get::<Option<String>, _>(col)?) };
    Ok(Envelope {
        seq: to_u64(row.try_get("seq")?, "seq")?,
        event_id: row.try_get::<String, _>("event_id")?.parse().map_err(|e| corrupt("id", &e))?,
        event_type: row.try_get("event_type")?,
        schema_version: u32::try_from(row.try_get::<i64, _>("schema_version")?)
            .map_err(|e| corrupt("schema version", &e))?,
        aggregate_type: AggregateType::parse(&aggregate_type)
            .ok_or_else(|| corrupt("aggregate type", &aggregate_type))?,
        aggregate_id: row.try_get("aggregate_id")?,
        aggregate_version: to_u64(row.try_get("aggregate_version")?, "aggregate version")?,
        org_id: opt_id("org_id")?.map(|s| s.parse()).transpose().map_err(|e| corrupt("org id", &e))?,
        request_id: opt_id("request_id")?.map(|s| s.parse()).transpose().map_err(|e| corrupt("request id", &e))?,
        correlation_id: row.try_get("correlation_id")?,
        actor: row.try_get("actor")?,
        occurred_at: parse_ts(&row.try_get::<String, _>("occurred_at")?)?,
        payload: json(&row.try_get::<String, _>("payload")?, "event payload")?,
    })
}

fn view_from_row<R: Row>(row: &R) -> Result<ViewRow, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let kind: String = row.try_get("kind")?;
    Ok(ViewRow {
        kind: ViewKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("view kind `{kind}`")))?,
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        parent_id: row.try_get("parent_id")?,
        name: row.try_get("name")?,
        seq: to_u64(row.try_get("seq")?, "view seq")?,
        doc: json(&row.try_get::<String, _>("doc")?, "view document")?,
    })
}

/// Builds `WHERE` clauses with numbered placeholders.
struct Filter {
    clauses: Vec<String>,
    binds: Vec<String>,
}

impl Filter {
    fn new() -> Self {
        Filter { clauses: vec![], binds: vec![] }
    }
    fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.binds.push(v.to_owned());
            self.clauses.push(format!("{column} = ${}", self.binds.len()));
        }
    }
    /// `column` is any of `values` (none: no row).
    fn any_of(&mut self, column: &str, values: Option<&[String]>) {
        let Some(values) = values else { return };
        if values.is_empty() {
            self.clauses.push("1 = 0".into());
            return;
        }
        let mut placeholders = Vec::with_capacity(values.len());
        for v in values {
            self.binds.push(v.clone());
            placeholders.push(format!("${}", self.binds.len()));
        }
        self.clauses.push(format!("{column} IN ({})", placeholders.join(", ")));
    }
    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// A node's disk report in `heartbeats`: its columns, and the rows that have one.
const DISK_COLUMNS: &str = "node_id, disk_at, disk";
const DISK_REPORTED: &str = "disk IS NOT NULL AND disk_at IS NOT NULL";

/// (node id, (when, report JSON)) of a row selected with [`DISK_COLUMNS`].
fn disk_from_row<R: Row>(r: &R) -> Result<(String, (DateTime<Utc>, String)), StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let at = parse_ts(&r.try_get::<String, _>("disk_at")?)?;
    Ok((r.try_get::<String, _>("node_id")?, (at, r.try_get::<String, _>("disk")?)))
}

/// Options of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `synchronous=FULL` (fsync on every commit: survives power loss) or
    /// `NORMAL` (survives process crashes; a power loss may drop the last commits).
    pub full_sync: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions { full_sync: true }
    }
}

/// One append waiting for the group committer.
type Job = (AppendRequest, oneshot::Sender<Result<Appended, StoreError>>);

/// Most appends committed in one transaction.
const MAX_GROUP: usize = 256;

pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    write: Arc<Mutex<()>>,
    head: Arc<watch::Sender<u64>>,
    jobs: mpsc::UnboundedSender<Job>,
}

pub struct PgStore {
    pool: sqlx::PgPool,
    write: Arc<Mutex<()>>,
    head: Arc<watch::Sender<u64>>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path`.
    pub async fn open(path: &std::path::Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(if options.full_sync {
                sqlx::sqlite::SqliteSynchronous::Full
            } else {
                sqlx::sqlite::SqliteSynchronous::Normal
            })
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(false);
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(8).connect_with(connect).await?;
        // One process owns the file: no lock needed around the migrations.
        let mut tx = pool.begin().await?;
        migrate(&mut tx).await?;
        for stmt in schema::SQLITE_TRIGGERS {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let head = Self::head_of(&pool).await?;
        Ok(Self::assemble(pool, head))
    }

    async fn head_of(pool: &sqlx::SqlitePool) -> Result<u64, StoreError> {
        let v: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events").fetch_one(pool).await?;
        to_u64(v, "seq")
    }
}

impl PgStore {
    /// Connect to `url` (`postgres://...`) and create the tables if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new().max_connections(8).connect_with(options).await?;
        let mut tx = pool.begin().await?;
        // Control planes starting together take turns: the first migrates, the rest find it done.
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(PG_SCHEMA_LOCK).execute(&mut *tx).await?;
        migrate(&mut tx).await?;
        for stmt in schema::PG_TRIGGERS {
            sqlx::query(stmt).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let v: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events").fetch_one(&pool).await?;
        Ok(Self::assemble(pool, to_u64(v, "seq")?))
    }

    /// Drop every vt table. For tests that need a clean database.
    pub async fn drop_all(url: &str) -> Result<(), StoreError> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        sqlx::query("DROP TABLE IF EXISTS events, claims, idempotency, views, checkpoints, tokens, heartbeats, secret_keys, secret_values, secret_staged, schema_migrations CASCADE")
            .execute(&pool)
            .await?;
        sqlx::query("DROP FUNCTION IF EXISTS vt_events_append_only CASCADE").execute(&pool).await?;
        Ok(())
    }
}

/// Apply the migrations the database does not have yet, in `tx` (the caller commits).
async fn migrate<'c, DB>(tx: &mut sqlx::Transaction<'c, DB>) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
    String: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query(schema::MIGRATIONS_TABLE).execute(&mut **tx).await?;
    let (applied,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetch_one(&mut **tx).await?;
    for m in schema::MIGRATIONS.iter().filter(|m| m.version > applied) {
        for stmt in m.statements {
            sqlx::query(stmt).execute(&mut **tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(ts(&Utc::now()))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

macro_rules! store_impl {
    ($store:ty, $backend:expr, $db:ty, lock = |$tx:ident| $lock:expr, lead = |$pool:ident| $lead:expr) => {
        impl $store {
            fn assemble(pool: sqlx::Pool<$db>, head: u64) -> Self {
                let (jobs, rx) = mpsc::unbounded_channel();
                let store = Self { pool, write: Arc::new(Mutex::new(())), head: Arc::new(watch::channel(head).0), jobs };
                tokio::spawn(Self::group_committer(store.pool.clone(), store.write.clone(), store.head.clone(), rx));
                store
            }

            /// Begin a write transaction holding the store's write lock.
            async fn begin_write<'a>(pool: &'a sqlx::Pool<$db>, write: &'a Mutex<()>) -> Result<(tokio::sync::MutexGuard<'a, ()>, sqlx::Transaction<'a, $db>), StoreError> {
                let guard = write.lock().await;
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                $lock;
                Ok((guard, $tx))
            }

            /// Group commit: appends queued while a transaction commits go into
            /// the next one together, so concurrent writers share one commit
            /// (and one fsync) without giving up per-append atomicity.
            async fn group_committer(pool: sqlx::Pool<$db>, write: Arc<Mutex<()>>, head: Arc<watch::Sender<u64>>, mut rx: mpsc::UnboundedReceiver<Job>) {
                while let Some(first) = rx.recv().await {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let (requests, replies): (Vec<AppendRequest>, Vec<_>) = jobs.into_iter().unzip();
                    match Self::commit_group(&pool, &write, &requests).await {
                        Ok(results) => {
                            let last = results.iter().filter_map(|r| r.as_ref().ok()).map(|a| a.last_seq).max();
                            if let Some(seq) = last {
                                head.send_if_modified(|h| {
                                    let moved = seq > *h;
                                    *h = (*h).max(seq);
                                    moved
                                });
                            }
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(result);
                            }
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::GroupFailed(msg.clone())));
                            }
                        }
                    }
                }
            }

            /// One transaction for a group of appends. Each append is validated
            /// (reads only) before any of its writes, so a refused append leaves
            /// nothing behind and does not disturb the others; a database error
            /// fails the whole group (nothing of it is committed).
            async fn commit_group(pool: &sqlx::Pool<$db>, write: &Mutex<()>, requests: &[AppendRequest]) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
                let (_guard, mut tx) = Self::begin_write(pool, write).await?;
                let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events").fetch_one(&mut *tx).await?;
                let mut seq = to_u64(head, "seq")?;
                // Aggregate versions read or written in this transaction, all
                // read up front in a few queries rather than one per event.
                let mut versions = Self::versions_of(&mut tx, requests).await?;
                let mut results = Vec::with_capacity(requests.len());
                for req in requests {
                    match Self::validate(&mut tx, req, &versions).await {
                        Ok(()) => {}
                        Err(e) if e.is_conflict() => {
                            results.push(Err(e));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                    let first = seq + 1;
                    Self::write(&mut tx, req, &mut seq, &mut versions).await?;
                    results.push(Ok(Appended { first_seq: first, last_seq: seq }));
                }
                tx.commit().await?;
                Ok(results)
            }

            /// Current versions of every aggregate a group touches (0 for new ones).
            async fn versions_of(tx: &mut sqlx::Transaction<'_, $db>, requests: &[AppendRequest]) -> Result<HashMap<(AggregateType, String), u64>, StoreError> {
                let mut keys: Vec<(AggregateType, String)> = requests
                    .iter()
                    .flat_map(|r| r.events.iter().map(|e| e.event.aggregate()).chain(r.expectations.iter().map(|x| (x.aggregate_type, x.aggregate_id.clone()))))
                    .collect();
                keys.sort();
                keys.dedup();
                let mut versions: HashMap<(AggregateType, String), u64> = keys.iter().cloned().map(|k| (k, 0)).collect();
                for chunk in keys.chunks(200) {
                    let tuples: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
                    let sql = format!(
                        "SELECT aggregate_type, aggregate_id, MAX(aggregate_version) AS version FROM events WHERE (aggregate_type, aggregate_id) IN ({}) GROUP BY aggregate_type, aggregate_id",
                        tuples.join(", ")
                    );
                    let mut q = sqlx::query(&sql);
                    for (t, id) in chunk {
                        q = q.bind(t.as_str()).bind(id);
                    }
                    for row in q.fetch_all(&mut **tx).await? {
                        let t: String = row.try_get("aggregate_type")?;
                        let t = AggregateType::parse(&t).ok_or_else(|| StoreError::Corrupt(format!("aggregate type `{t}`")))?;
                        versions.insert((t, row.try_get("aggregate_id")?), to_u64(row.try_get("version")?, "aggregate version")?);
                    }
                }
                Ok(versions)
            }

            async fn validate(tx: &mut sqlx::Transaction<'_, $db>, req: &AppendRequest, versions: &HashMap<(AggregateType, String), u64>) -> Result<(), StoreError> {
                if let Some(rec) = &req.idempotency {
                    let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency WHERE scope = $1 AND key = $2")
                        .bind(&rec.scope)
                        .bind(&rec.key)
                        .fetch_one(&mut **tx)
                        .await?;
                    if taken > 0 {
                        return Err(StoreError::IdempotencyRace { key: rec.key.clone() });
                    }
                }
                for exp in &req.expectations {
                    let v = preloaded(versions, &(exp.aggregate_type, exp.aggregate_id.clone()))?;
                    check_expectation(exp, v)?;
                }
                for claim in &req.claims {
                    let owner: Option<String> = sqlx::query_scalar("SELECT owner FROM claims WHERE scope = $1 AND name = $2")
                        .bind(claim.scope.key())
                        .bind(&claim.name)
                        .fetch_optional(&mut **tx)
                        .await?;
                    if let Some(owner) = owner.filter(|o| *o != claim.owner) {
                        return Err(StoreError::NameTaken { scope: claim.scope, name: claim.name.clone(), owner });
                    }
                }
                if let Some(pid) = req.fence.and_then(|f| f.pg_backend) {
                    let held: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1 AND pid = $3 AND granted",
                    )
                    .bind(crate::leader::PG_LEADER_LOCK >> 32)
                    .bind(crate::leader::PG_LEADER_LOCK & 0xffff_ffff)
                    .bind(pid)
                    .fetch_one(&mut **tx)
                    .await?;
                    if held == 0 {
                        return Err(StoreError::Fenced);
                    }
                }
                if let Some(r) = req.revocations.iter().find(|r| r.keep_an_admin) {
                    // Active admin tokens that this append leaves (earlier appends of the group are written).
                    let revoked: Vec<String> = req.revocations.iter().map(|r| r.token_id.to_string()).collect();
                    let mut left = 0;
                    let rows = sqlx::query("SELECT token_id FROM tokens WHERE role = 'admin' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)")
                        .bind(ts(&r.at))
                        .fetch_all(&mut **tx)
                        .await?;
                    for row in rows {
                        let id: String = row.try_get("token_id")?;
                        left += usize::from(!revoked.contains(&id));
                    }
                    if left == 0 {
                        return Err(StoreError::Refused(
                            "this is the last active admin token; create another admin token first (`vt token create NAME --role admin`)".into(),
                        ));
                    }
                }
                Ok(())
            }

            async fn write(tx: &mut sqlx::Transaction<'_, $db>, req: &AppendRequest, seq: &mut u64, versions: &mut HashMap<(AggregateType, String), u64>) -> Result<(), StoreError> {
                for claim in &req.releases {
                    sqlx::query("DELETE FROM claims WHERE scope = $1 AND name = $2 AND owner = $3")
                        .bind(claim.scope.key())
                        .bind(&claim.name)
                        .bind(&claim.owner)
                        .execute(&mut **tx)
                        .await?;
                }
                for claim in &req.claims {
                    sqlx::query("INSERT INTO claims (scope, name, owner) VALUES ($1, $2, $3) ON CONFLICT (scope, name) DO NOTHING")
                        .bind(claim.scope.key())
                        .bind(&claim.name)
                        .bind(&claim.owner)
                        .execute(&mut **tx)
                        .await?;
                }
                for new in &req.events {
                    let key = new.event.aggregate();
                    let version = preloaded(versions, &key)? + 1;
                    *seq += 1;
                    sqlx::query(&format!("INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"))
                        .bind(*seq as i64)
                        .bind(new.event_id.to_string())
                        .bind(new.event.event_type())
                        .bind(new.event.schema_version() as i64)
                        .bind(key.0.as_str())
                        .bind(&key.1)
                        .bind(version as i64)
                        .bind(new.event.org_id().map(|o| o.to_string()))
                        .bind(new.request_id.map(|r| r.to_string()))
                        .bind(&new.correlation_id)
                        .bind(&new.actor.0)
                        .bind(ts(&new.occurred_at))
                        .bind(new.event.payload().to_string())
                        .execute(&mut **tx)
                        .await?;
                    versions.insert(key, version);
                }
                for t in &req.tokens {
                    sqlx::query(
                        "INSERT INTO tokens (token_id, hash, name, role, org_id, node_id, expires_at, created_at, revoked_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(t.token_id.to_string())
                    .bind(&t.hash)
                    .bind(&t.name)
                    .bind(t.role.as_str())
                    .bind(t.org_id.map(|o| o.to_string()))
                    .bind(t.node_id.map(|n| n.to_string()))
                    .bind(t.expires_at.as_ref().map(ts))
                    .bind(ts(&t.created_at))
                    .bind(t.revoked_at.as_ref().map(ts))
                    .execute(&mut **tx)
                    .await?;
                }
                for r in &req.revocations {
                    // The first revocation's time stands.
                    sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL")
                        .bind(r.token_id.to_string())
                        .bind(ts(&r.at))
                        .execute(&mut **tx)
                        .await?;
                }
                for w in &req.secrets {
                    match w {
                        SecretWrite::Key { env_id, master_key, wrapped } => {
                            sqlx::query("INSERT INTO secret_keys (env_id, master_key, wrapped) VALUES ($1, $2, $3)")
                                .bind(env_id)
                                .bind(master_key)
                                .bind(wrapped)
                                .execute(&mut **tx)
                                .await?;
                        }
                        SecretWrite::Stage { env_id, name, sealed } => {
                            sqlx::query(
                                "INSERT INTO secret_staged (env_id, name, sealed) VALUES ($1, $2, $3) \
                                 ON CONFLICT (env_id, name) DO UPDATE SET sealed = excluded.sealed",
                            )
                            .bind(env_id)
                            .bind(name)
                            .bind(sealed)
                            .execute(&mut **tx)
                            .await?;
                        }
                        SecretWrite::Version { env_id, version, values, clear_staged } => {
                            for (name, sealed) in values {
                                sqlx::query("INSERT INTO secret_values (env_id, version, name, sealed) VALUES ($1, $2, $3, $4)")
                                    .bind(env_id)
                                    .bind(*version as i64)
                                    .bind(name)
                                    .bind(sealed)
                                    .execute(&mut **tx)
                                    .await?;
                            }
                            if *clear_staged {
                                sqlx::query("DELETE FROM secret_staged WHERE env_id = $1").bind(env_id).execute(&mut **tx).await?;
                            }
                        }
                    }
                }
                if let Some(rec) = &req.idempotency {
                    sqlx::query("INSERT INTO idempotency (scope, key, request_hash, status, body, created_at, last_seq) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                        .bind(&rec.scope)
                        .bind(&rec.key)
                        .bind(&rec.request_hash)
                        .bind(rec.status as i64)
                        .bind(&rec.body)
                        .bind(ts(&rec.created_at))
                        .bind(*seq as i64)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> Backend {
                $backend
            }

            async fn try_lead(&self) -> Result<Option<Leadership>, StoreError> {
                let $pool = &self.pool;
                $lead
            }

            async fn append(&self, req: AppendRequest) -> Result<Appended, StoreError> {
                let (reply, wait) = oneshot::channel();
                self.jobs.send((req, reply)).map_err(|_| StoreError::GroupFailed("the store's writer has stopped".into()))?;
                wait.await.map_err(|_| StoreError::GroupFailed("the store's writer has stopped".into()))?
            }

            async fn head(&self) -> Result<u64, StoreError> {
                let v: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events").fetch_one(&self.pool).await?;
                let v = to_u64(v, "seq")?;
                self.head.send_if_modified(|h| {
                    let moved = v > *h;
                    *h = (*h).max(v);
                    moved
                });
                Ok(v)
            }

            fn subscribe_head(&self) -> watch::Receiver<u64> {
                self.head.subscribe()
            }

            async fn read_events(&self, after: u64, limit: u32) -> Result<Vec<Envelope>, StoreError> {
                // `seq` is stored as a signed 64-bit integer: no event is past i64::MAX.
                let Ok(after) = i64::try_from(after) else { return Ok(vec![]) };
                let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"))
                    .bind(after)
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(envelope_from_row).collect()
            }

            async fn read_org_events(&self, org_id: &str, after: u64, limit: u32) -> Result<Vec<Envelope>, StoreError> {
                let Ok(after) = i64::try_from(after) else { return Ok(vec![]) };
                let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"))
                    .bind(org_id)
                    .bind(after)
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(envelope_from_row).collect()
            }

            async fn read_last_events(&self, org_id: Option<&str>, limit: u32) -> Result<Vec<Envelope>, StoreError> {
                let filter = if org_id.is_some() { "WHERE org_id = $2" } else { "" };
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM (SELECT {EVENT_COLUMNS} FROM events {filter} ORDER BY seq DESC LIMIT $1) AS last ORDER BY seq"
                );
                let mut q = sqlx::query(&sql).bind(limit as i64);
                if let Some(org) = org_id {
                    q = q.bind(org);
                }
                let rows = q.fetch_all(&self.pool).await?;
                rows.iter().map(envelope_from_row).collect()
            }

            async fn aggregate_version(&self, aggregate_type: AggregateType, aggregate_id: &str) -> Result<u64, StoreError> {
                let v: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(aggregate_version), 0) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2")
                    .bind(aggregate_type.as_str())
                    .bind(aggregate_id)
                    .fetch_one(&self.pool)
                    .await?;
                to_u64(v, "aggregate version")
            }

            async fn view_get(&self, kind: ViewKind, id: &str) -> Result<Option<ViewRow>, StoreError> {
                let row = sqlx::query(&format!("SELECT {VIEW_COLUMNS} FROM views WHERE kind = $1 AND id = $2"))
                    .bind(kind.as_str())
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(view_from_row).transpose()
            }

            async fn views_get_many(&self, keys: &[(ViewKind, String)]) -> Result<Vec<ViewRow>, StoreError> {
                let mut by_kind: BTreeMap<ViewKind, Vec<&str>> = BTreeMap::new();
                for (kind, id) in keys {
                    by_kind.entry(*kind).or_default().push(id);
                }
                let mut out = Vec::with_capacity(keys.len());
                for (kind, ids) in by_kind {
                    for chunk in ids.chunks(500) {
                        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                        let sql = format!("SELECT {VIEW_COLUMNS} FROM views WHERE kind = $1 AND id IN ({})", placeholders.join(", "));
                        let mut q = sqlx::query(&sql).bind(kind.as_str());
                        for id in chunk {
                            q = q.bind(*id);
                        }
                        for row in q.fetch_all(&self.pool).await? {
                            out.push(view_from_row(&row)?);
                        }
                    }
                }
                Ok(out)
            }

            async fn view_list(&self, query: &ViewQuery) -> Result<Vec<ViewRow>, StoreError> {
                let mut f = Filter::new();
                f.eq("kind", query.kind.map(|k| k.as_str()));
                f.eq("org_id", query.org_id.as_deref());
                f.eq("parent_id", query.parent_id.as_deref());
                f.any_of("parent_id", query.parent_ids.as_deref());
                f.eq("name", query.name.as_deref());
                let sql = format!("SELECT {VIEW_COLUMNS} FROM views{} ORDER BY kind, id", f.sql());
                let mut q = sqlx::query(&sql);
                for b in &f.binds {
                    q = q.bind(b);
                }
                q.fetch_all(&self.pool).await?.iter().map(view_from_row).collect()
            }

            async fn commit_projection(&self, batch: ProjectionBatch) -> Result<(), StoreError> {
                let (_guard, mut tx) = Self::begin_write(&self.pool, &self.write).await?;
                for cp in &batch.checkpoints {
                    let moved = sqlx::query("UPDATE checkpoints SET seq = $1 WHERE name = $2 AND seq = $3")
                        .bind(cp.to as i64)
                        .bind(&cp.name)
                        .bind(cp.from as i64)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if moved == 0 {
                        let inserted = if cp.from == 0 {
                            sqlx::query("INSERT INTO checkpoints (name, seq) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                                .bind(&cp.name)
                                .bind(cp.to as i64)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected()
                        } else {
                            0
                        };
                        if inserted == 0 {
                            return Err(StoreError::CheckpointRace { name: cp.name.clone() });
                        }
                    }
                }
                for row in &batch.upserts {
                    sqlx::query(&format!(
                        "INSERT INTO views ({VIEW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (kind, id) DO UPDATE SET org_id = excluded.org_id, parent_id = excluded.parent_id,
                         name = excluded.name, seq = excluded.seq, doc = excluded.doc"
                    ))
                    .bind(row.kind.as_str())
                    .bind(&row.id)
                    .bind(&row.org_id)
                    .bind(&row.parent_id)
                    .bind(&row.name)
                    .bind(row.seq as i64)
                    .bind(row.doc.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                for (kind, id) in &batch.deletes {
                    sqlx::query("DELETE FROM views WHERE kind = $1 AND id = $2").bind(kind.as_str()).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn checkpoints(&self) -> Result<BTreeMap<String, u64>, StoreError> {
                let rows = sqlx::query("SELECT name, seq FROM checkpoints").fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok((r.try_get::<String, _>("name")?, to_u64(r.try_get("seq")?, "checkpoint")?))).collect()
            }

            async fn reset_views(&self) -> Result<(), StoreError> {
                let (_guard, mut tx) = Self::begin_write(&self.pool, &self.write).await?;
                sqlx::query("DELETE FROM views").execute(&mut *tx).await?;
                sqlx::query("DELETE FROM checkpoints").execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_owner(&self, scope: ClaimScope, name: &str) -> Result<Option<String>, StoreError> {
                Ok(sqlx::query_scalar("SELECT owner FROM claims WHERE scope = $1 AND name = $2").bind(scope.key()).bind(name).fetch_optional(&self.pool).await?)
            }

            async fn idempotency_get(&self, scope: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
                let row = sqlx::query("SELECT scope, key, request_hash, status, body, created_at, last_seq FROM idempotency WHERE scope = $1 AND key = $2")
                    .bind(scope)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| {
                    Ok(IdempotencyRecord {
                        scope: r.try_get("scope")?,
                        key: r.try_get("key")?,
                        request_hash: r.try_get("request_hash")?,
                        status: u16::try_from(r.try_get::<i64, _>("status")?).map_err(|e| StoreError::Corrupt(format!("status: {e}")))?,
                        body: r.try_get("body")?,
                        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
                        last_seq: to_u64(r.try_get("last_seq")?, "last seq")?,
                    })
                })
                .transpose()
            }

            async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
                let row = sqlx::query(
                    "SELECT token_id, hash, name, role, org_id, node_id, expires_at, created_at, revoked_at FROM tokens WHERE hash = $1",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    let id: String = r.try_get("token_id")?;
                    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("token {id}: {what}: {e}"));
                    let role: String = r.try_get("role")?;
                    let opt_ts = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
                        r.try_get::<Option<String>, _>(col)?.as_deref().map(parse_ts).transpose()
                    };
                    Ok(TokenRecord {
                        token_id: id.parse().map_err(|e| corrupt("id", &e))?,
                        hash: r.try_get("hash")?,
                        name: r.try_get("name")?,
                        role: TokenRole::parse(&role).ok_or_else(|| corrupt("role", &role))?,
                        org_id: r.try_get::<Option<String>, _>("org_id")?.map(|o| o.parse()).transpose().map_err(|e| corrupt("org", &e))?,
                        node_id: r.try_get::<Option<String>, _>("node_id")?.map(|n| n.parse()).transpose().map_err(|e| corrupt("node", &e))?,
                        expires_at: opt_ts("expires_at")?,
                        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
                        revoked_at: opt_ts("revoked_at")?,
                    })
                })
                .transpose()
            }

            async fn token_count(&self) -> Result<u64, StoreError> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens").fetch_one(&self.pool).await?;
                to_u64(n, "token count")
            }

            async fn heartbeat(&self, node_id: &str, at: DateTime<Utc>, disk: Option<&str>) -> Result<(), StoreError> {
                // Under the write lock like every other write: on SQLite a write
                // beside an append's transaction fails it with "database is locked".
                let _guard = self.write.lock().await;
                // One row per node, one write per heartbeat, the disk report with it.
                sqlx::query(
                    "INSERT INTO heartbeats (node_id, at, disk, disk_at) VALUES ($1, $2, $3, $4) ON CONFLICT (node_id) DO UPDATE \
                     SET at = excluded.at, disk = COALESCE(excluded.disk, heartbeats.disk), disk_at = COALESCE(excluded.disk_at, heartbeats.disk_at)",
                )
                .bind(node_id)
                .bind(ts(&at))
                .bind(disk)
                .bind(disk.map(|_| ts(&at)))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn node_disks(&self) -> Result<BTreeMap<String, (DateTime<Utc>, String)>, StoreError> {
                let rows = sqlx::query(&format!("SELECT {DISK_COLUMNS} FROM heartbeats WHERE {DISK_REPORTED}"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(disk_from_row).collect()
            }

            async fn node_disk(&self, node_id: &str) -> Result<Option<(DateTime<Utc>, String)>, StoreError> {
                let row = sqlx::query(&format!("SELECT {DISK_COLUMNS} FROM heartbeats WHERE node_id = $1 AND {DISK_REPORTED}"))
                    .bind(node_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(disk_from_row).transpose()?.map(|(_, report)| report))
            }

            async fn secret_key(&self, env_id: &str) -> Result<Option<SecretKeyRecord>, StoreError> {
                let row = sqlx::query("SELECT env_id, master_key, wrapped FROM secret_keys WHERE env_id = $1").bind(env_id).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(SecretKeyRecord { env_id: r.try_get("env_id")?, master_key: r.try_get("master_key")?, wrapped: r.try_get("wrapped")? })).transpose()
            }

            async fn secret_keys(&self) -> Result<Vec<SecretKeyRecord>, StoreError> {
                let rows = sqlx::query("SELECT env_id, master_key, wrapped FROM secret_keys ORDER BY env_id").fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(SecretKeyRecord { env_id: r.try_get("env_id")?, master_key: r.try_get("master_key")?, wrapped: r.try_get("wrapped")? })).collect()
            }

            async fn rewrap_secret_keys(&self, keys: Vec<SecretKeyRecord>) -> Result<(), StoreError> {
                let (_guard, mut tx) = Self::begin_write(&self.pool, &self.write).await?;
                for k in &keys {
                    let done = sqlx::query("UPDATE secret_keys SET master_key = $2, wrapped = $3 WHERE env_id = $1")
                        .bind(&k.env_id)
                        .bind(&k.master_key)
                        .bind(&k.wrapped)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() != 1 {
                        return Err(StoreError::Corrupt(format!("no secret key of env {} to re-wrap", k.env_id)));
                    }
                }
                // Every env key, or none: one made since the caller read them would stay on the old master key.
                let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secret_keys").fetch_one(&mut *tx).await?;
                if total as usize != keys.len() {
                    return Err(StoreError::Corrupt(format!(
                        "{total} env keys are stored, {} were re-wrapped: one was made during the rotation; rotate with no server running",
                        keys.len()
                    )));
                }
                tx.commit().await?;
                Ok(())
            }

            async fn secret_values(&self, env_id: &str, version: u64) -> Result<Vec<(String, String)>, StoreError> {
                let rows = sqlx::query("SELECT name, sealed FROM secret_values WHERE env_id = $1 AND version = $2 ORDER BY name")
                    .bind(env_id)
                    .bind(version as i64)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Ok((r.try_get("name")?, r.try_get("sealed")?))).collect()
            }

            async fn secret_staged(&self, env_id: &str) -> Result<Vec<(String, Option<String>)>, StoreError> {
                let rows = sqlx::query("SELECT name, sealed FROM secret_staged WHERE env_id = $1 ORDER BY name").bind(env_id).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok((r.try_get("name")?, r.try_get("sealed")?))).collect()
            }

            async fn heartbeats(&self) -> Result<BTreeMap<String, DateTime<Utc>>, StoreError> {
                let rows = sqlx::query("SELECT node_id, at FROM heartbeats").fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok((r.try_get::<String, _>("node_id")?, parse_ts(&r.try_get::<String, _>("at")?)?))).collect()
            }
        }
    };
}

store_impl!(
    SqliteStore,
    Backend::Sqlite,
    sqlx::Sqlite,
    lock = |tx| {},
    lead = |pool| {
        let _ = pool;
        Ok(Some(Leadership::alone()))
    }
);
store_impl!(
    PgStore,
    Backend::Postgres,
    sqlx::Postgres,
    lock = |tx| {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(PG_WRITE_LOCK).execute(&mut *tx).await?;
    },
    lead = |pool| {
        // A session of its own, out of the pool: the lock lives as long as it.
        let conn = pool.acquire().await?.detach();
        Ok(Leadership::try_postgres(conn).await?)
    }
);
