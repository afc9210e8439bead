//! The workspace origin's side tasks: its routing table followed from the control plane's
//! views (rebuilt whole and swapped at each change of the log), and the last accesses it
//! saw recorded as `workspace.accessed` events (coalesced: one per workspace per period).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use vt_api::{BackgroundTask, TaskState, WorkspaceStatus};
use vt_control_plane::app::workspaces::WorkspaceRoute;
use vt_control_plane::ControlPlane;
use vt_front::{Down, Front, FrontTable, RouteState};
use vt_ids::Name;

const DESCRIPTION: &str = "routes the workspace origin from the workspaces' views; records their last access";
/// A rebuild at least this often, even with a quiet log (an instance's address changes through
/// events too, so this is only a backstop).
const RESYNC: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Status {
    activations: u64,
    last_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

/// Follow the workspaces into `front`'s table, and record accesses every `access_every`.
pub(crate) fn start(cp: &Arc<ControlPlane>, front: &Arc<Front>, access_every: Duration) -> Vec<JoinHandle<()>> {
    let status = Arc::new(Mutex::new(Status::default()));
    {
        let status = status.clone();
        cp.tasks.register("front", move || {
            let s = status.lock().unwrap_or_else(|e| e.into_inner());
            BackgroundTask {
                name: "front".into(),
                description: DESCRIPTION.into(),
                state: if s.last_error.is_some() { TaskState::Failing } else { TaskState::Running },
                activations: s.activations,
                last_activation_at: s.last_at,
                last_error: s.last_error.clone(),
            }
        });
    }
    let follow = tokio::spawn(follow(Arc::downgrade(cp), front.clone(), status));
    let record = tokio::spawn(record(Arc::downgrade(cp), front.clone(), access_every));
    vec![follow, record]
}

async fn follow(cp: std::sync::Weak<ControlPlane>, front: Arc<Front>, status: Arc<Mutex<Status>>) {
    let Some(mut head) = cp.upgrade().map(|c| c.store.subscribe_head()) else { return };
    loop {
        let Some(c) = cp.upgrade() else { return };
        let result = match c.fresh().await {
            Ok(()) => c.workspace_routes().await.map_err(|e| e.internal.unwrap_or(e.message)),
            Err(e) => Err(e.internal.unwrap_or(e.message)),
        };
        drop(c);
        let result = result.and_then(|routes| table(routes).map_err(|e| e.to_string()));
        {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.activations += 1;
            s.last_at = Some(Utc::now());
            match result {
                Ok(table) => {
                    front.apply(table);
                    s.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the workspace origin's table was not rebuilt; keeping the last one");
                    s.last_error = Some(e);
                }
            }
        }
        tokio::select! {
            r = head.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RESYNC) => {}
        }
        // Let a burst of appends settle into one rebuild.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The front's table of the control plane's workspaces.
pub(crate) fn table(routes: Vec<WorkspaceRoute>) -> Result<FrontTable, vt_front::TableError> {
    FrontTable::new(routes.into_iter().filter_map(|r| {
        // Names were checked when the workspace was created; one that does not parse is skipped.
        let name = Name::parse(&r.name).ok()?;
        let address = r.address.as_deref().and_then(|a| a.parse().ok());
        let state = match (r.status, address) {
            (WorkspaceStatus::Running, Some(address)) => RouteState::Serving { address },
            (WorkspaceStatus::Creating | WorkspaceStatus::Starting | WorkspaceStatus::Running, _) => {
                RouteState::Down(Down::Starting)
            }
            (WorkspaceStatus::Stopping | WorkspaceStatus::Suspending | WorkspaceStatus::Deleting, _) => {
                RouteState::Down(Down::Stopping)
            }
            // Suspended is stopped as far as a browser can tell: `vt workspace start` resumes it.
            (WorkspaceStatus::Stopped | WorkspaceStatus::Suspended, _) => RouteState::Down(Down::Stopped),
            (WorkspaceStatus::Failed, _) => {
                RouteState::Down(Down::Failed(r.reason.unwrap_or_else(|| "its IDE failed".to_owned())))
            }
        };
        Some(vt_front::WorkspaceRoute {
            name,
            state,
            ide_port: vt_api::workspaces::IDE_PORT,
            ports: r.ports.into_iter().collect(),
        })
    }))
}

async fn record(cp: std::sync::Weak<ControlPlane>, front: Arc<Front>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = cp.upgrade() else { return };
        record_now(&c, &front).await;
    }
}

/// Record the accesses the front saw since the last time (the server's stop does too).
pub(crate) async fn record_now(cp: &ControlPlane, front: &Front) {
    let taken: BTreeMap<String, DateTime<Utc>> =
        front.accesses().take().into_iter().map(|(name, at)| (name.into_string(), DateTime::from(at))).collect();
    if taken.is_empty() {
        return;
    }
    if let Err(e) = cp.workspaces_accessed(taken).await {
        tracing::warn!(error = %e.internal.unwrap_or(e.message), "last accesses of workspaces not recorded");
    }
}
