//! `vt rollback [--wait]`: deploy the env's previous release.

use std::time::Duration;

use crate::args::RollbackArgs;
use crate::commands::scope_flags;
use crate::printer::{label, Receipt};
use crate::{idempotency_key, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, args: RollbackArgs) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let (org, app, env) = (ctx.settings.org()?, ctx.settings.app()?, ctx.settings.env()?);
    let mut d = client.env_rollback(org, app, env, &idempotency_key()).await?.value;
    if args.wait {
        d = super::deploy::wait(ctx, d, Duration::from_secs(args.timeout)).await?;
    }
    let flags = scope_flags(ctx, true, true);
    let from = d.previous_release_id.map(|r| format!(" from {r}")).unwrap_or_default();
    let what = if args.wait {
        format!(
            "Rollback of env `{env}` to release {}{from}: {}{}",
            d.release_id,
            label(&d.status),
            d.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        )
    } else {
        format!("Started rollback of env `{env}` to release {}{from} ({})", d.release_id, label(&d.status))
    };
    let mut ids = vec![("deploy", d.id.to_string()), ("release", d.release_id.to_string())];
    if let Some(prev) = d.previous_release_id {
        ids.push(("previous", prev.to_string()));
    }
    let details = args.wait.then(|| super::deploy::phases(&d));
    p.receipt(
        &d,
        Receipt {
            what,
            ids,
            details,
            next: vec![format!("vt deploy get {}{flags}", d.id), format!("vt describe{flags}")],
        },
    );
    if args.wait {
        return super::deploy::outcome(ctx, &d).await;
    }
    Ok(ExitStatus::Success)
}
