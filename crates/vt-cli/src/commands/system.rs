//! `vt system boot-timings|tasks|gc`.

use vt_api::{BootTimingSummary, BootTimingsQuery};

use crate::args::{BootTimingsArgs, SystemCommand};
use crate::printer::{label, opt, time, Receipt, Table};
use crate::{CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: SystemCommand) -> CliResult {
    match cmd {
        SystemCommand::BootTimings(args) => boot_timings(ctx, args).await,
        SystemCommand::Tasks => tasks(ctx).await,
        SystemCommand::Gc => gc(ctx).await,
    }
}

/// Collect the registry now; the receipt says what went and what stayed.
async fn gc(ctx: &Ctx) -> CliResult {
    let r = ctx.client().system_gc().await?;
    ctx.printer.receipt(
        &r,
        Receipt {
            what: format!(
                "Collected the registry: {} unreferenced blob(s) deleted ({} freed), {} kept, {} abandoned upload(s) deleted",
                r.blobs_removed,
                vt_disk::human(r.bytes_freed),
                r.blobs_kept,
                r.uploads_expired
            ),
            ids: vec![],
            details: None,
            next: vec!["vt system tasks".into()],
        },
    );
    Ok(ExitStatus::Success)
}

/// One row per background task, in the server's order; the error of a failing one below.
async fn tasks(ctx: &Ctx) -> CliResult {
    let list = ctx.client().system_tasks().await?;
    ctx.printer.show(&list, || {
        let mut t = Table::new(&["TASK", "STATE", "ACTIVATIONS", "LAST ACTIVATION", "DOES"]);
        for task in &list.items {
            t.row(vec![
                task.name.clone(),
                label(&task.state),
                task.activations.to_string(),
                opt(&task.last_activation_at.as_ref().map(time)),
                task.description.clone(),
            ]);
        }
        let mut s = t.render();
        for task in list.items.iter().filter(|t| t.last_error.is_some()) {
            s.push_str(&format!("{}: {}\n", task.name, task.last_error.as_deref().unwrap_or_default()));
        }
        s
    });
    Ok(ExitStatus::Success)
}

async fn boot_timings(ctx: &Ctx, args: BootTimingsArgs) -> CliResult {
    let q = BootTimingsQuery { node: args.node, ..Default::default() };
    let summary = ctx.client().system_boot_timings(&q).await?;
    ctx.printer.show(&summary, || render(&summary));
    Ok(ExitStatus::Success)
}

/// One row per phase, in boot order, then how many instances it covers.
fn render(s: &BootTimingSummary) -> String {
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
    let mut t = Table::new(&["PHASE", "COUNT", "P50", "P95", "P99", "MAX"]);
    for p in &s.phases {
        t.row(vec![label(&p.phase), p.count.to_string(), ms(p.p50_ms), ms(p.p95_ms), ms(p.p99_ms), ms(p.max_ms)]);
    }
    format!(
        "{}{} of {} instance(s) reported boot timings; percentiles are nearest-rank\n",
        t.render(),
        s.with_timings,
        s.instances
    )
}
