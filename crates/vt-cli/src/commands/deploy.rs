//! `vt deploy [--release R | --image REF --manifest FILE] [--wait]`, `vt deploy list|get`.
//!
//! `--wait` (here and in `vt rollback`) follows the deploy through its
//! phases; the receipt carries their timings, and a failed deploy names the
//! instance that failed it, with its last log lines.

use std::time::{Duration, Instant};

use vt_api::{CreateDeploy, Deploy, DeployPhase, DeployStatus};

use crate::args::{DeployArgs, DeployCommand, ReleaseSource};
use crate::commands::scope_flags;
use crate::printer::{fields, label, opt, time, Receipt, Table};
use crate::{idempotency_key, CliError, CliResult, Ctx, ExitStatus};

/// Log lines of the failed instance shown with a failed deploy.
const FAILED_LOG_LINES: usize = 20;

pub async fn run(ctx: &Ctx, args: DeployArgs) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let (org, app, env) = ctx.settings.env_scope()?;
    match args.command {
        Some(DeployCommand::List) => {
            let list = client.deploy_list(org, app, env).await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "RELEASE", "KIND", "STATUS", "CREATED", "REASON"]);
                for d in &list.items {
                    t.row(vec![
                        d.id.to_string(),
                        d.release_id.to_string(),
                        label(&d.kind),
                        label(&d.status),
                        time(&d.created_at),
                        opt(&d.reason),
                    ]);
                }
                t.render()
            });
            return Ok(ExitStatus::Success);
        }
        Some(DeployCommand::Get { deploy }) => {
            let d = client.deploy_get(org, app, env, &deploy).await?;
            p.show(&d, || render(&d));
            return Ok(ExitStatus::Success);
        }
        None => {}
    }
    let release_id = match (&args.release, &args.image, &args.manifest) {
        (Some(r), _, _) => client.release_get(org, app, r).await?.id,
        (None, Some(image), Some(manifest)) => {
            let r = super::release::create(ctx, &ReleaseSource { image: image.clone(), manifest: manifest.clone() })
                .await?;
            p.progress(&format!("created release {}", r.id));
            r.id
        }
        _ => {
            return Err(CliError::usage(
                "say what to deploy",
                Some("pass `--release R`, or `--image REF --manifest FILE`; `vt release list` shows releases".into()),
            ))
        }
    };
    let mut d = client.deploy_create(org, app, env, &CreateDeploy { release_id }, &idempotency_key()).await?.value;
    if args.wait {
        d = wait(ctx, d, Duration::from_secs(args.timeout)).await?;
    }
    let flags = scope_flags(ctx, true, true);
    let what = if args.wait {
        format!(
            "Deploy of release {} to env `{env}`: {}{}",
            d.release_id,
            label(&d.status),
            d.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        )
    } else {
        format!("Started deploy of release {} to env `{env}` ({})", d.release_id, label(&d.status))
    };
    let next = if args.wait { format!("vt describe{flags}") } else { format!("vt deploy get {}{flags}", d.id) };
    p.receipt(
        &d,
        Receipt {
            what,
            ids: vec![("deploy", d.id.to_string()), ("release", d.release_id.to_string())],
            details: args.wait.then(|| phases(&d)),
            next: vec![next],
        },
    );
    if args.wait {
        return outcome(ctx, &d).await;
    }
    Ok(ExitStatus::Success)
}

/// The exit status of a deploy waited for; for a failed one, the error names
/// the instance that failed it and shows its last log lines.
pub(crate) async fn outcome(ctx: &Ctx, d: &Deploy) -> CliResult {
    let p = &ctx.printer;
    let flags = scope_flags(ctx, true, true);
    let reason = d.reason.as_deref().unwrap_or("no reason recorded");
    match d.status {
        DeployStatus::Succeeded => return Ok(ExitStatus::Success),
        DeployStatus::Failed => {}
        _ => {
            p.error(&CliError::failed(
                format!("deploy {} is {}: {reason}", d.id, label(&d.status)),
                Some(format!("see `vt describe{flags}` and `vt events`")),
            ));
            return Ok(ExitStatus::Failure);
        }
    }
    let Some(instance) = d.failed_instance_id.map(|i| i.to_string()) else {
        p.error(&CliError::failed(
            format!("deploy {} failed: {reason}", d.id),
            Some(format!("see `vt describe{flags}` and `vt events`")),
        ));
        return Ok(ExitStatus::Failure);
    };
    p.error(&CliError::failed(format!("deploy {} failed: {reason}", d.id), None));
    match last_log_lines(ctx, &instance).await {
        Ok(lines) => p.excerpt(&format!("last log lines of {instance}:"), &lines),
        Err(e) => p.warning(&format!("could not read the logs of {instance}: {e}")),
    }
    p.hint(&format!("`vt logs --instance {instance}` shows all its output; `vt describe{flags}` shows the env"));
    Ok(ExitStatus::Failure)
}

async fn last_log_lines(ctx: &Ctx, instance: &str) -> Result<Vec<String>, vt_client::Error> {
    let mut stream = ctx.client().instance_logs(instance, false, Some(FAILED_LOG_LINES)).await?;
    let mut lines = vec![];
    while let Some(line) = stream.next_line().await {
        lines.push(line?);
    }
    Ok(lines)
}

/// A phase's name for people.
fn phase_label(phase: DeployPhase) -> &'static str {
    match phase {
        DeployPhase::Scheduled => "scheduled",
        DeployPhase::ImageReady => "image ready",
        DeployPhase::Booted => "booted",
        DeployPhase::Healthy => "healthy",
    }
}

/// Milliseconds as seconds to a tenth: `+1.4s`.
fn after(ms: u64) -> String {
    format!("+{}.{}s", ms / 1000, ms % 1000 / 100)
}

/// The per-phase timings block of the receipt: accepted, then each phase
/// reached, timed from acceptance.
pub(crate) fn phases(d: &Deploy) -> String {
    let mut rows = vec![("accepted", after(0))];
    rows.extend(d.phases.iter().map(|t| (phase_label(t.phase), after(t.after_ms))));
    let mut s = String::from("phases:\n");
    for (name, at) in rows {
        s.push_str(&format!("  {name:<11}  {at}\n"));
    }
    s
}

/// Poll until the deploy reaches a terminal status; progress (each status
/// and phase as it is reached) only on a TTY.
pub(crate) async fn wait(ctx: &Ctx, mut d: Deploy, timeout: Duration) -> CliResult<Deploy> {
    let client = ctx.client();
    let (org, app, env) = ctx.settings.env_scope()?;
    let started = Instant::now();
    let mut last = String::new();
    let mut shown = 0;
    loop {
        for t in d.phases.iter().skip(shown) {
            ctx.printer.progress(&format!(
                "[{:>4}s] deploy {}: {} ({} after accepted)",
                started.elapsed().as_secs(),
                d.id,
                phase_label(t.phase),
                after(t.after_ms)
            ));
        }
        shown = d.phases.len();
        let status = label(&d.status);
        if status != last {
            ctx.printer.progress(&format!("[{:>4}s] deploy {}: {status}", started.elapsed().as_secs(), d.id));
            last = status;
        }
        if d.status.is_terminal() {
            return Ok(d);
        }
        if started.elapsed() >= timeout {
            return Err(CliError::failed(
                format!("deploy {} is still {} after {}s", d.id, label(&d.status), timeout.as_secs()),
                Some(format!("it keeps going; follow it with `vt deploy get {}`", d.id)),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        d = client.deploy_get(org, app, env, &d.id.to_string()).await?;
    }
}

fn render(d: &Deploy) -> String {
    fields(&[
        ("id", d.id.to_string()),
        ("env", d.env_id.to_string()),
        ("release", d.release_id.to_string()),
        ("previous", opt(&d.previous_release_id)),
        ("kind", label(&d.kind)),
        ("status", label(&d.status)),
        ("reason", opt(&d.reason)),
        ("failed instance", opt(&d.failed_instance_id)),
        ("reverted to", opt(&d.reverted_to_release_id)),
        ("created", time(&d.created_at)),
        (
            "phases",
            if d.phases.is_empty() {
                "-".into()
            } else {
                d.phases
                    .iter()
                    .map(|t| format!("{} {}", phase_label(t.phase), after(t.after_ms)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("updated", time(&d.updated_at)),
    ])
}
