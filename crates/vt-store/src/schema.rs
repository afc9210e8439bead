//! Table definitions. The same tables on both backends; only the triggers that
//! make `events` append-only are written in each dialect.

/// Tables, in creation order. Each statement is idempotent.
pub(crate) const TABLES: &[&str] = &[
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
