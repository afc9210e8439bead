//! `vt instances`.

use crate::printer::{label, opt, time, Table};
use crate::{CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx) -> CliResult {
    let (org, app, env) = ctx.settings.env_scope()?;
    let list = ctx.client().instance_list(org, app, env).await?;
    ctx.printer.show(&list, || {
        let mut t =
            Table::new(&["ID", "PROCESS", "STATUS", "DESIRED", "RELEASE", "SECRETS", "NODE", "CREATED", "REASON"]);
        for i in &list.items {
            t.row(vec![
                i.id.to_string(),
                i.process.clone(),
                label(&i.status),
                label(&i.desired_state),
                i.release_id.to_string(),
                opt(&i.secrets_version),
                i.node_id.to_string(),
                time(&i.created_at),
                opt(&i.reason),
            ]);
        }
        t.render()
    });
    Ok(ExitStatus::Success)
}
