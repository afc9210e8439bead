//! The projector: turns the log into views.
//!
//! One activation ([`Projector::step`]) takes no input but the store: it reads
//! the checkpoints, reads the events after the lowest one, loads the rows they
//! touch, runs each projection over the events past its own checkpoint, and
//! commits rows and checkpoints together. Activations are idempotent: a crash
//! between two leaves the views at the last committed checkpoint, and two
//! projectors racing on one database cannot both move a checkpoint
//! (`CheckpointRace`); the loser simply runs again.
//!
//! A projection that fails on an event stops there (its checkpoint stays before
//! that event) and publishes the error in its status; the others go on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use vt_events::{Envelope, Event};
use vt_views::{projections, Projection, ViewKind, ViewRow};

use crate::{CheckpointMove, ProjectionBatch, Store, StoreError};

/// Events read per activation.
const BATCH: u32 = 1000;

/// What a projection is doing, for `GET /v1/system/projections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub checkpoint: u64,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("views did not reach seq {wanted} within {timeout:?} (at {reached})")]
    Timeout { wanted: u64, reached: u64, timeout: Duration },
    #[error("projection `{name}` is stuck at seq {checkpoint}: {error}")]
    Stuck { name: String, checkpoint: u64, error: String },
}

pub struct Projector {
    store: Arc<dyn Store>,
    projections: Vec<Box<dyn Projection>>,
    /// The lowest checkpoint over all projections: every view is at least this fresh.
    progress: watch::Sender<u64>,
    status: Mutex<Vec<ProjectionStatus>>,
}

impl Projector {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        let projections = projections();
        let status = projections
            .iter()
            .map(|p| ProjectionStatus { name: p.name().into(), checkpoint: 0, error: None })
            .collect();
        Arc::new(Projector { store, projections, progress: watch::channel(0).0, status: Mutex::new(status) })
    }

    pub fn status(&self) -> Vec<ProjectionStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The seq every view has reached.
    pub fn progress(&self) -> u64 {
        *self.progress.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Run activations forever: woken by appends through this process's store
    /// handle, and at least every `poll` for appends made by other processes.
    pub async fn run(self: Arc<Self>, poll: Duration) {
        self.run_led(poll, watch::channel(true).1).await
    }

    /// [`Projector::run`] while `leading` says this process leads; otherwise stand by:
    /// only follow the leader's checkpoints (every `poll`), so what waits for fresh views
    /// (`Vt-Min-Seq`, reads after writes) works on a standby too.
    pub async fn run_led(self: Arc<Self>, poll: Duration, mut leading: watch::Receiver<bool>) {
        let mut head = self.store.subscribe_head();
        loop {
            if !*leading.borrow_and_update() {
                if let Err(e) = self.observe().await {
                    tracing::warn!(error = %e, "reading the leader's checkpoints failed; retrying");
                }
                tokio::select! {
                    _ = leading.changed() => {}
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            match self.step().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) if e.is_conflict() => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "projector activation failed; retrying");
                    tokio::time::sleep(poll).await;
                }
            }
            let behind = *head.borrow_and_update() > self.progress();
            if !behind {
                tokio::select! {
                    _ = head.changed() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }

    /// On a standby: publish the checkpoints the leader's projector reached.
    pub async fn observe(&self) -> Result<(), StoreError> {
        let stored = self.store.checkpoints().await?;
        let checkpoints: Vec<u64> =
            self.projections.iter().map(|p| stored.get(p.name()).copied().unwrap_or(0)).collect();
        self.publish(&checkpoints, &BTreeMap::new());
        Ok(())
    }

    /// One activation. Returns how many events it consumed.
    pub async fn step(&self) -> Result<usize, StoreError> {
        let stored = self.store.checkpoints().await?;
        let mut checkpoints: Vec<u64> =
            self.projections.iter().map(|p| stored.get(p.name()).copied().unwrap_or(0)).collect();
        let low = checkpoints.iter().copied().min().unwrap_or(0);
        let events = self.store.read_events(low, BATCH).await?;
        if events.is_empty() {
            self.publish(&checkpoints, &BTreeMap::new());
            return Ok(0);
        }
        let decoded: Vec<(Envelope, Result<Event, String>)> = events
            .into_iter()
            .map(|env| {
                let ev = env.decode().map_err(|e| format!("event {} at seq {}: {e}", env.event_id, env.seq));
                (env, ev)
            })
            .collect();

        // Load every row any projection will touch.
        let mut keys: Vec<(ViewKind, String)> = vec![];
        for (i, p) in self.projections.iter().enumerate() {
            for (env, ev) in &decoded {
                if let (true, Ok(ev)) = (env.seq > checkpoints[i], ev) {
                    keys.extend(p.touches(ev).into_iter().map(|id| (p.kind(), id)));
                }
            }
        }
        keys.sort();
        keys.dedup();
        let mut rows: BTreeMap<(ViewKind, String), Option<ViewRow>> = keys.iter().cloned().map(|k| (k, None)).collect();
        for row in self.store.views_get_many(&keys).await? {
            rows.insert((row.kind, row.id.clone()), Some(row));
        }
        let before = rows.clone();

        let mut errors: BTreeMap<usize, String> = BTreeMap::new();
        let mut moves = vec![];
        let last_seq = decoded.last().map(|(e, _)| e.seq).unwrap_or(low);
        for (i, p) in self.projections.iter().enumerate() {
            let from = checkpoints[i];
            let mut reached = from;
            for (env, ev) in decoded.iter().filter(|(e, _)| e.seq > from) {
                match apply_one(p.as_ref(), env, ev, &mut rows) {
                    Ok(()) => reached = env.seq,
                    Err(e) => {
                        errors.insert(i, e);
                        break;
                    }
                }
            }
            if !errors.contains_key(&i) {
                reached = last_seq;
            }
            if reached != from {
                moves.push(CheckpointMove { name: p.name().into(), from, to: reached });
                checkpoints[i] = reached;
            }
        }
        let mut batch = ProjectionBatch { checkpoints: moves, ..Default::default() };
        for (key, row) in rows {
            if before.get(&key) == Some(&row) {
                continue;
            }
            match row {
                Some(r) => batch.upserts.push(r),
                None => batch.deletes.push(key),
            }
        }
        // Progress is what some checkpoint moved by; a stuck projection alone is no progress.
        let advanced = batch.checkpoints.iter().map(|m| m.to - m.from).max().unwrap_or(0);
        self.store.commit_projection(batch).await?;
        self.publish(&checkpoints, &errors);
        Ok(advanced as usize)
    }

    fn publish(&self, checkpoints: &[u64], errors: &BTreeMap<usize, String>) {
        if let Ok(mut status) = self.status.lock() {
            for (i, s) in status.iter_mut().enumerate() {
                s.checkpoint = checkpoints[i];
                s.error = errors.get(&i).cloned();
                if let Some(e) = &s.error {
                    tracing::error!(projection = %s.name, checkpoint = s.checkpoint, error = %e, "projection stuck");
                }
            }
        }
        let low = checkpoints.iter().copied().min().unwrap_or(0);
        self.progress.send_if_modified(|p| {
            let moved = low > *p;
            *p = (*p).max(low);
            moved
        });
    }

    /// Wait until every view reflects `seq` (read-your-writes).
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<(), WaitError> {
        let mut rx = self.progress.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= seq)).await;
        match res {
            Ok(Ok(_)) => Ok(()),
            _ => {
                if let Some(s) = self.status().into_iter().find(|s| s.error.is_some() && s.checkpoint < seq) {
                    return Err(WaitError::Stuck {
                        name: s.name,
                        checkpoint: s.checkpoint,
                        error: s.error.unwrap_or_default(),
                    });
                }
                Err(WaitError::Timeout { wanted: seq, reached: self.progress(), timeout })
            }
        }
    }
}

fn apply_one(
    p: &dyn Projection,
    env: &Envelope,
    ev: &Result<Event, String>,
    rows: &mut BTreeMap<(ViewKind, String), Option<ViewRow>>,
) -> Result<(), String> {
    let ev = ev.as_ref().map_err(Clone::clone)?;
    for id in p.touches(ev) {
        let key = (p.kind(), id);
        let current = rows.get(&key).cloned().flatten();
        let new = p.apply(env, ev, &key.1, current.as_ref()).map_err(|e| format!("seq {}: {e}", env.seq))?;
        rows.insert(key, new);
    }
    Ok(())
}
