//! Leadership: which of the control planes sharing a store runs its reconcilers (the
//! projector and the scheduler). API serving works on every one of them.
//!
//! - **PostgreSQL**: a session-level advisory lock (`pg_try_advisory_lock`) held on a
//!   connection of its own. The lock lives exactly as long as that session: a leader whose
//!   process dies frees it at once (its socket closes), one whose host vanishes within
//!   about 8 s (the session's TCP keepalives), and a standby polling for it takes over. A leader checks its session now and then ([`Leadership::held`])
//!   and stops leading the moment it is gone.
//! - **Fencing**: an append may carry the leader's [`Fence`] (the backend pid of its lock
//!   session); the store checks, in the append's own transaction and under the write lock,
//!   that this session still holds the lock, and refuses it otherwise
//!   ([`crate::StoreError::Fenced`]). A leader that lost its lock without noticing yet
//!   (paused, partitioned) cannot write as the leader after a standby took over.
//! - **SQLite**: one process owns the file (the data directory's lock), so it always leads.

use std::sync::Arc;

use sqlx::Connection;

/// Advisory lock key of the leader (PostgreSQL).
pub(crate) const PG_LEADER_LOCK: i64 = 0x7654_0003;

/// Proof of leadership an append carries (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The PostgreSQL backend pid of the session holding the leader lock; `None`: SQLite.
    pub(crate) pg_backend: Option<i32>,
}

/// Leadership held by this process, until dropped (or its session is lost).
pub struct Leadership {
    inner: Inner,
}

enum Inner {
    /// The only process on its store.
    Alone,
    Postgres {
        conn: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
        pid: i32,
    },
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership").field("fence", &self.fence()).finish()
    }
}

impl Leadership {
    pub(crate) fn alone() -> Leadership {
        Leadership { inner: Inner::Alone }
    }

    /// Leadership through the advisory lock on `conn`, if this session could take it.
    pub(crate) async fn try_postgres(mut conn: sqlx::PgConnection) -> Result<Option<Leadership>, sqlx::Error> {
        // A leader whose host vanishes without closing its connection: the server probes the
        // idle session and drops it (and the lock) within about 8 s, not the OS's 2 h.
        for setting in ["tcp_keepalives_idle = 5", "tcp_keepalives_interval = 1", "tcp_keepalives_count = 3"] {
            sqlx::query(&format!("SET {setting}")).execute(&mut conn).await?;
        }
        let taken: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(PG_LEADER_LOCK).fetch_one(&mut conn).await?;
        if !taken {
            let _ = conn.close().await;
            return Ok(None);
        }
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await?;
        Ok(Some(Leadership { inner: Inner::Postgres { conn: tokio::sync::Mutex::new(Some(conn)), pid } }))
    }

    pub fn fence(&self) -> Fence {
        match &self.inner {
            Inner::Alone => Fence { pg_backend: None },
            Inner::Postgres { pid, .. } => Fence { pg_backend: Some(*pid) },
        }
    }

    /// Whether this process still leads: its lock session answers. Once it does not, it
    /// never leads again through this value (take a new one).
    pub async fn held(&self) -> bool {
        match &self.inner {
            Inner::Alone => true,
            Inner::Postgres { conn, .. } => {
                let mut conn = conn.lock().await;
                let Some(c) = conn.as_mut() else { return false };
                let alive = tokio::time::timeout(std::time::Duration::from_secs(2), c.ping()).await;
                if !matches!(alive, Ok(Ok(()))) {
                    *conn = None;
                    return false;
                }
                true
            }
        }
    }

    /// Give leadership up now (a standby may take it at once).
    pub async fn resign(&self) {
        if let Inner::Postgres { conn, .. } = &self.inner {
            if let Some(c) = conn.lock().await.take() {
                let _ = c.close().await;
            }
        }
    }
}

/// Shared leadership, as the reconcilers see it.
pub type Lead = Option<Arc<Leadership>>;
