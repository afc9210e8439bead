//! `vt instances`: the env's instances with where they are reachable, their health and
//! age (`-o json` has every field, times as RFC 3339).

use crate::printer::{age, label, opt, Table};
use crate::{CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx) -> CliResult {
    let (org, app, env) = ctx.settings.env_scope()?;
    let list = ctx.client().instance_list(org, app, env).await?;
    let now = chrono::Utc::now();
    ctx.printer.show(&list, || {
        let mut t = Table::new(&[
            "ID", "PROCESS", "STATUS", "HEALTH", "ADDRESS", "DESIRED", "RELEASE", "SECRETS", "NODE", "AGE", "REASON",
        ]);
        for i in &list.items {
            t.row(vec![
                i.id.to_string(),
                i.process.clone(),
                label(&i.status),
                health(i),
                opt(&i.address),
                label(&i.desired_state),
                i.release_id.to_string(),
                opt(&i.secrets_version),
                i.node_id.to_string(),
                age(&i.created_at, now),
                reason(i),
            ]);
        }
        let mut s = t.render();
        if list.items.is_empty() {
            s.push_str("(no instances: `vt deploy` a release, then `vt describe` shows why any are missing)\n");
        }
        s
    });
    Ok(ExitStatus::Success)
}

/// The health check's verdict while the instance runs; `-` otherwise.
pub(crate) fn health(i: &vt_api::Instance) -> String {
    match (&i.status, &i.health) {
        (vt_api::InstanceStatus::Running, Some(h)) => label(h),
        (vt_api::InstanceStatus::Running, None) => "pending".into(),
        _ => "-".into(),
    }
}

/// Why the instance is as it is; for one that runs, how long it took to start (the phases are
/// in `-o json` and `vt system boot-timings`) instead of the agent's whole boot summary.
fn reason(i: &vt_api::Instance) -> String {
    let boot = i.boot.as_ref().filter(|_| i.status == vt_api::InstanceStatus::Running);
    let summary = i.reason.as_deref().is_some_and(|r| r.starts_with("boot: "));
    match (boot.and_then(|b| b.healthy_ms.or(b.running_ms)), summary) {
        (Some(ms), true) => format!("started in {:.1} s", ms as f64 / 1000.0),
        _ => opt(&i.reason),
    }
}
