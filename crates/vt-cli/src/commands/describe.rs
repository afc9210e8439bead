//! `vt describe`: desired versus current per process (running and ready),
//! with the differences: placement, health checks, a rolling or failed
//! deploy, a crash loop; then the live instances of each process, and what to
//! run next when something differs. `-o json` is the API's env description
//! alone (the instances are `vt instances -o json`).

use vt_api::{EnvDescription, Health, Instance, InstanceStatus};

use crate::commands::instances::health;
use crate::commands::route;
use crate::printer::{age, fields, label, opt, Table};
use crate::{CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx) -> CliResult {
    let (org, app, env) = ctx.settings.env_scope()?;
    let d = ctx.client().env_describe(org, app, env).await?;
    if ctx.printer.json_mode() {
        ctx.printer.json(&d);
        return Ok(ExitStatus::Success);
    }
    let instances = ctx.client().instance_list(org, app, env).await?.items;
    ctx.printer.show(&d, || {
        let mut s = render(&d);
        s.push_str(&render_instances(&d, &instances, chrono::Utc::now()));
        s
    });
    Ok(ExitStatus::Success)
}

/// The live instances, grouped by process in the description's order, and the next steps.
fn render_instances(d: &EnvDescription, instances: &[Instance], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut s = String::new();
    let live: Vec<&Instance> = instances.iter().filter(|i| !i.status.is_terminal()).collect();
    if !live.is_empty() {
        let mut t = Table::new(&["PROCESS", "INSTANCE", "STATUS", "HEALTH", "ADDRESS", "RELEASE", "AGE"]);
        let order = |i: &Instance| d.processes.iter().position(|p| p.process == i.process).unwrap_or(usize::MAX);
        let mut sorted = live.clone();
        sorted.sort_by_key(|i| (order(i), i.process.clone()));
        for i in sorted {
            t.row(vec![
                i.process.clone(),
                i.id.to_string(),
                label(&i.status),
                health(i),
                opt(&i.address),
                i.release_id.to_string(),
                age(&i.created_at, now),
            ]);
        }
        s.push('\n');
        s.push_str(&t.render());
    }
    let next = next_steps(d, instances);
    if !next.is_empty() {
        s.push('\n');
        for n in next {
            s.push_str(&format!("next: {n}\n"));
        }
    }
    s
}

/// What to run for each process whose desired and current state differ.
fn next_steps(d: &EnvDescription, instances: &[Instance]) -> Vec<String> {
    let mut next = Vec::new();
    for p in d.processes.iter().filter(|p| !p.differences.is_empty()) {
        let mine = || instances.iter().filter(|i| i.process == p.process);
        let unhealthy = mine().find(|i| i.status == InstanceStatus::Running && i.health == Some(Health::Failing));
        let not_ready =
            mine().find(|i| i.status == InstanceStatus::Running && i.health.is_none_or(|h| h == Health::Pending));
        let failed = mine().filter(|i| i.status == InstanceStatus::Failed).max_by_key(|i| i.updated_at);
        let step = if let Some(i) = unhealthy {
            format!("vt logs --instance {}   # {} fails its health check", i.id, p.process)
        } else if let Some(i) = not_ready {
            format!("vt logs --instance {}   # {} has not passed its health check yet", i.id, p.process)
        } else if let Some(i) = failed {
            format!("vt logs --instance {}   # why {}'s latest instance failed", i.id, p.process)
        } else if let Some(r) = d.routes.iter().find(|r| r.process == p.process && !route::failures(r).is_empty()) {
            format!("vt route get {}   # why the ingress cannot listen on its port", r.id)
        } else if p.differences.iter().any(|d| d.contains("no node")) {
            "vt node list   # start a node agent (`vt server`) so instances can be placed".to_owned()
        } else {
            "vt events --follow   # watch the scheduler and the node agents converge".to_owned()
        };
        if !next.contains(&step) {
            next.push(step);
        }
    }
    next
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
