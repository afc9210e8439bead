//! Which control plane runs the reconcilers. Several control planes may share one
//! PostgreSQL: all serve the API, exactly one at a time runs the projector and the
//! scheduler: the one holding the store's [`Leadership`] (a session advisory lock on
//! PostgreSQL; always this one on SQLite). The others stand by, try to take it every
//! [`POLL`], and follow the leader's checkpoints so their reads stay fresh. A leader checks
//! its lock session as often and stops leading the moment it is gone; its scheduler's
//! appends carry the lock as a fence, so a leader that lost it cannot write as one.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use vt_store::{Fence, Lead};

use crate::ControlPlane;

/// How often a standby tries to lead, and a leader checks it still does.
pub const POLL: Duration = Duration::from_millis(500);

/// This control plane's leadership, as its reconcilers see it.
pub struct Leader {
    lead: watch::Sender<Lead>,
    leading: watch::Sender<bool>,
    changes: Mutex<(u64, Option<DateTime<Utc>>)>,
}

impl Default for Leader {
    fn default() -> Self {
        Leader { lead: watch::channel(None).0, leading: watch::channel(false).0, changes: Mutex::default() }
    }
}

impl Leader {
    /// Whether this control plane leads now.
    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// The fence its reconcilers' appends carry while it leads.
    pub fn fence(&self) -> Option<Fence> {
        self.lead.borrow().as_ref().map(|l| l.fence())
    }

    /// Sees every change of [`Leader::leading`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// How often leadership changed here, and when it last did.
    pub fn changes(&self) -> (u64, Option<DateTime<Utc>>) {
        *self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, lead: Lead) {
        let leading = lead.is_some();
        self.lead.send_replace(lead);
        if self.leading.send_replace(leading) != leading {
            let mut c = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            *c = (c.0 + 1, Some(Utc::now()));
        }
    }

    /// Give leadership up (a shutdown): a standby takes over at its next try.
    pub async fn resign(&self) {
        let lead = self.lead.borrow().clone();
        self.set(None);
        if let Some(l) = lead {
            l.resign().await;
        }
    }
}

/// Take, keep, or lose leadership, forever (until the control plane is gone).
pub(crate) async fn run(cp: Weak<ControlPlane>) {
    loop {
        let Some(c) = cp.upgrade() else { return };
        let held = c.leader.lead.borrow().clone();
        match held {
            Some(lead) if !lead.held().await => {
                tracing::warn!("lost the leader lock's session; standing by");
                c.leader.set(None);
            }
            Some(_) => {}
            None if !c.is_closing() => match c.store.try_lead().await {
                Ok(Some(lead)) => {
                    tracing::info!(fence = ?lead.fence(), "leading: this control plane runs the projector and the scheduler");
                    c.leader.set(Some(Arc::new(lead)));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot try to take the leader lock; retrying"),
            },
            None => {}
        }
        drop(c);
        tokio::time::sleep(POLL).await;
    }
}
