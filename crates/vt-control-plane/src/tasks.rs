//! The background tasks of `vt server`, each with its published status
//! (`GET /v1/system/tasks`, `vt system tasks`).
//!
//! A task registers a function that reads its status on demand; the task's
//! own loop keeps that status (the projector's checkpoints, the scheduler's
//! [`vt_api::SchedulerStatus`], the edge's `EdgeStatus`, the agent's). The
//! control plane registers its own two; the server assembly registers the rest.

use std::sync::{Arc, RwLock};

use vt_api::{BackgroundTask, TaskState};

use crate::ControlPlane;

type StatusFn = Box<dyn Fn() -> BackgroundTask + Send + Sync>;

/// The registry of background tasks, in registration order.
#[derive(Default)]
pub struct Tasks {
    entries: RwLock<Vec<(String, StatusFn)>>,
}

impl Tasks {
    /// Register (or replace) the task `name`; `status` is called for each listing.
    pub fn register(&self, name: &str, status: impl Fn() -> BackgroundTask + Send + Sync + 'static) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(n, _)| n != name);
        entries.push((name.to_owned(), Box::new(status)));
    }

    /// Every task's status now, in registration order.
    pub fn list(&self) -> Vec<BackgroundTask> {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, f)| f()).collect()
    }
}

/// A task that is switched off (a `--no-...` flag): listed, so nobody wonders where it is.
pub fn off(name: &str, description: &str, why: &str) -> BackgroundTask {
    BackgroundTask {
        name: name.into(),
        description: description.into(),
        state: TaskState::Off,
        activations: 0,
        last_activation_at: None,
        last_error: Some(why.into()),
    }
}

pub(crate) fn register_control_plane(cp: &Arc<ControlPlane>) {
    let weak = Arc::downgrade(cp);
    cp.tasks.register("projector", move || {
        let description = "applies new events to the views";
        let Some(cp) = weak.upgrade() else { return off("projector", description, "stopped") };
        let status = cp.projector.status();
        let error = status.iter().find_map(|p| p.error.as_ref().map(|e| format!("projection {}: {e}", p.name)));
        let state = match (cp.leader.leading(), &error) {
            (false, _) => TaskState::Standby,
            (true, Some(_)) => TaskState::Failing,
            (true, None) => TaskState::Running,
        };
        BackgroundTask {
            name: "projector".into(),
            description: description.into(),
            state,
            activations: cp.projector.progress(),
            last_activation_at: None,
            last_error: error,
        }
    });
    let weak = Arc::downgrade(cp);
    cp.tasks.register("scheduler", move || {
        let description = "places instances, rolls deploys, fails them fast, restarts crash loops";
        let Some(cp) = weak.upgrade() else { return off("scheduler", description, "stopped") };
        let s = cp.scheduler.status();
        let state = match (cp.scheduler.settings().enabled, cp.leader.leading(), &s.last_error) {
            (false, _, _) => TaskState::Off,
            (true, false, _) => TaskState::Standby,
            (true, true, Some(_)) => TaskState::Failing,
            (true, true, None) => TaskState::Running,
        };
        BackgroundTask {
            name: "scheduler".into(),
            description: description.into(),
            state,
            activations: s.runs,
            last_activation_at: s.last_run_at,
            last_error: s.last_error,
        }
    });
}
