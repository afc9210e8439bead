//! Table definitions. The same tables on both backends; only the triggers that
//! make `events` append-only are written in each dialect.
//!
//! The schema is a list of numbered [`MIGRATIONS`]; `schema_migrations` records
//! the ones a database has, and opening a store applies the rest, each in its
//! own transaction. Migration 1 is the schema as it was before versions were
//! recorded: its statements are idempotent, so a database from then takes it
//! as a no-op. Never edit a migration that has shipped; add the next one.

/// A step of the schema, applied once.
pub(crate) struct Migration {
    pub version: i64,
    pub statements: &'static [&'static str],
}

/// Every migration, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, statements: BASELINE },
    // Tokens get their bindings (org of an org role, node of a node token),
    // an expiry and a revocation time.
    Migration {
        version: 2,
        statements: &[
            "ALTER TABLE tokens ADD COLUMN org_id TEXT",
            "ALTER TABLE tokens ADD COLUMN node_id TEXT",
            "ALTER TABLE tokens ADD COLUMN expires_at TEXT",
            "ALTER TABLE tokens ADD COLUMN revoked_at TEXT",
        ],
    },
    // An org's members read its events by cursor.
    Migration { version: 3, statements: &["CREATE INDEX IF NOT EXISTS events_by_org ON events (org_id, seq)"] },
    // Secrets, sealed (vt-secrets): each env's key wrapped by the master key, the
    // values of each version, the values staged for the next version.
    Migration {
        version: 4,
        statements: &[
            "CREATE TABLE secret_keys (
                env_id TEXT PRIMARY KEY,
                master_key TEXT NOT NULL,
                wrapped TEXT NOT NULL
            )",
            "CREATE TABLE secret_values (
                env_id TEXT NOT NULL,
                version BIGINT NOT NULL,
                name TEXT NOT NULL,
                sealed TEXT NOT NULL,
                PRIMARY KEY (env_id, version, name)
            )",
            "CREATE TABLE secret_staged (
                env_id TEXT NOT NULL,
                name TEXT NOT NULL,
                sealed TEXT,
                PRIMARY KEY (env_id, name)
            )",
        ],
    },
    // A node's disk report rides on its heartbeat: current state, kept beside its liveness
    // (the JSON the control plane checked, and when it came), never an event.
    Migration {
        version: 5,
        statements: &["ALTER TABLE heartbeats ADD COLUMN disk TEXT", "ALTER TABLE heartbeats ADD COLUMN disk_at TEXT"],
    },
];

/// The table that records applied migrations (created before any of them).
pub(crate) const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
        version BIGINT PRIMARY KEY,
        applied_at TEXT NOT NULL
    )";

/// Migration 1: the tables, in creation order. Each statement is idempotent.
const BASELINE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS events (
        seq BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        event_type TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        aggregate_version BIGINT NOT NULL,
        org_id TEXT,
        request_id TEXT,
        correlation_id TEXT,
        actor TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        payload TEXT NOT NULL,
        UNIQUE (aggregate_type, aggregate_id, aggregate_version)
    )",
    "CREATE TABLE IF NOT EXISTS claims (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        PRIMARY KEY (scope, name)
    )",
    "CREATE TABLE IF NOT EXISTS idempotency (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status BIGINT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_seq BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
    )",
    "CREATE TABLE IF NOT EXISTS views (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        org_id TEXT,
        parent_id TEXT,
        name TEXT,
        seq BIGINT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    )",
    "CREATE INDEX IF NOT EXISTS views_by_parent ON views (kind, parent_id, name)",
    "CREATE INDEX IF NOT EXISTS views_by_org ON views (kind, org_id)",
    "CREATE TABLE IF NOT EXISTS checkpoints (
        name TEXT PRIMARY KEY,
        seq BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS tokens (
        token_id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS heartbeats (
        node_id TEXT PRIMARY KEY,
        at TEXT NOT NULL
    )",
];

pub(crate) const SQLITE_TRIGGERS: &[&str] = &[
    "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
     BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
     BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
];

pub(crate) const PG_TRIGGERS: &[&str] = &[
    "CREATE OR REPLACE FUNCTION vt_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN RAISE EXCEPTION 'events are append-only'; END $$",
    "DO $$ BEGIN
       IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_append_only') THEN
         CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
         FOR EACH ROW EXECUTE FUNCTION vt_events_append_only();
       END IF;
     END $$",
];
