//! `vt describe`: desired versus current per process (running and ready),
//! with the differences: placement, health checks, a rolling or failed
//! deploy, a crash loop.

use vt_api::EnvDescription;

use crate::commands::route;
use crate::printer::{fields, label, opt, Table};
use crate::{CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx) -> CliResult {
    let (org, app, env) = ctx.settings.env_scope()?;
    let d = ctx.client().env_describe(org, app, env).await?;
    ctx.printer.show(&d, || render(&d));
    Ok(ExitStatus::Success)
}

fn render(d: &EnvDescription) -> String {
    let deploy = d.current_deploy.as_ref().map(|c| format!("{} ({})", c.id, label(&c.status)));
    let mut s = fields(&[
        ("env", format!("{} ({})", d.env.name, d.env.id)),
        ("desired release", opt(&d.env.desired_release_id)),
        ("desired secrets", d.env.desired_secrets_version.map_or("none".into(), |v| format!("version {v}"))),
        ("current deploy", opt(&deploy)),
    ]);
    s.push('\n');
    let mut t = Table::new(&["PROCESS", "DESIRED", "RUNNING", "READY", "INSTANCES", "SECRETS", "DIFFERENCES"]);
    for p in &d.processes {
        let by_status: Vec<String> = p.instances_by_status.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![
            p.process.clone(),
            p.desired_instances.to_string(),
            p.running_desired_release.to_string(),
            p.ready_desired_release.to_string(),
            if by_status.is_empty() { "-".into() } else { by_status.join(",") },
            secrets(&p.instances_by_secrets_version),
            if p.differences.is_empty() { "none".into() } else { p.differences.join("; ") },
        ]);
    }
    s.push_str(&t.render());
    if d.processes.is_empty() {
        s.push_str("(no processes: deploy a release first)\n");
    }
    if !d.routes.is_empty() {
        s.push('\n');
        let mut t = Table::new(&["ROUTE", "LISTENER", "PROCESS", "BACKEND PORT", "STATUS"]);
        for r in &d.routes {
            let status = route::status(r);
            t.row(vec![r.id.to_string(), route::listener(r), r.process.clone(), r.backend_port.to_string(), status]);
        }
        s.push_str(&t.render());
    }
    s
}

/// Live instances by the secrets version they run: `v2=1,v3=2`, `none=1`.
fn secrets(by_version: &std::collections::BTreeMap<String, u32>) -> String {
    if by_version.is_empty() {
        return "-".into();
    }
    let label = |k: &str| if k == "none" { k.to_owned() } else { format!("v{k}") };
    by_version.iter().map(|(k, n)| format!("{}={n}", label(k))).collect::<Vec<_>>().join(",")
}
