//! The shared store suite against the embedded SQLite store.

use std::sync::Arc;

use vt_store::{SqliteOptions, SqliteStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    vt_store::suite::run_all(|| {
        let path = dir.path().join(format!("db{}.sqlite", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        async move { Arc::new(SqliteStore::open(&path, SqliteOptions::default()).await.unwrap()) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test]
async fn sqlite_events_are_append_only_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        let ev = vt_events::NewEvent::new(
            vt_events::Event::OrgCreated(vt_events::OrgCreated { org_id: vt_ids::OrgId::new(), name: "acme".into() }),
            vt_events::Actor::system("test"),
            None,
        );
        store.append(vt_store::AppendRequest { events: vec![ev], ..Default::default() }).await.unwrap();
    }
    let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
    assert_eq!(store.head().await.unwrap(), 1);
    assert_eq!(*store.subscribe_head().borrow(), 1);
    let pool = sqlx_pool(&path).await;
    for stmt in ["UPDATE events SET actor = 'x'", "DELETE FROM events"] {
        let err = sqlx::query(stmt).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
}

async fn sqlx_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(path)).await.unwrap()
}

/// A database made before migrations were recorded (the tables of migration 1, no
/// `schema_migrations`, a token without bindings) opens, migrates once, and keeps its data.
#[tokio::test]
async fn an_old_database_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true),
    )
    .await
    .unwrap();
    for stmt in [
        "CREATE TABLE tokens (token_id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL, created_at TEXT NOT NULL)",
        "INSERT INTO tokens VALUES ('tok_01jd8x6k3v9q4m2t7r5w0y1zcj', 'h', 'admin', 'admin', '2026-11-01T00:00:00.000000Z')",
    ] {
        sqlx::query(stmt).execute(&pool).await.unwrap();
    }
    pool.close().await;
    for _ in 0..2 {
        let store = SqliteStore::open(&path, SqliteOptions::default()).await.unwrap();
        let t = store.token_by_hash("h").await.unwrap().unwrap();
        assert_eq!(
            (t.name.as_str(), t.role, t.org_id, t.node_id, t.expires_at, t.revoked_at),
            ("admin", vt_events::TokenRole::Admin, None, None, None, None)
        );
    }
    let pool = sqlx_pool(&path).await;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version").fetch_all(&pool).await.unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5], "each migration once, a second open applies nothing");
}
