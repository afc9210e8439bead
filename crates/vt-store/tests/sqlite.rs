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
