//! The shared store suite against a real PostgreSQL.
//!
//! Needs `VT_TEST_DATABASE_URL` (`.ci/run` starts a server and sets it). Without
//! it the test is skipped locally but fails under CI, so CI cannot pass silently
//! without PostgreSQL.

use std::sync::Arc;

use vt_store::{PgStore, Store};

fn database_url() -> Option<String> {
    match std::env::var("VT_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but VT_TEST_DATABASE_URL is not: the PostgreSQL suite must run in CI")
        }
        Err(_) => {
            eprintln!("skipping: set VT_TEST_DATABASE_URL=postgres://... to run the PostgreSQL store suite");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_suite() {
    let Some(url) = database_url() else { return };
    vt_store::suite::run_all(|| {
        let url = url.clone();
        async move {
            PgStore::drop_all(&url).await.unwrap();
            Arc::new(PgStore::connect(&url).await.unwrap()) as Arc<dyn Store>
        }
    })
    .await;
    // Events are append-only in PostgreSQL too.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for stmt in ["UPDATE events SET actor = 'x'", "DELETE FROM events"] {
        let err = sqlx::query(stmt).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{stmt}: {err}");
    }
}
