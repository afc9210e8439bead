//! `vt app create|list|get`.

use vt_api::{App, CreateApp};

use crate::args::AppCommand;
use crate::commands::scope_flags;
use crate::printer::{fields, opt, time, Receipt, Table};
use crate::{idempotency_key, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: AppCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let org = ctx.settings.org()?;
    match cmd {
        AppCommand::Create { name, description } => {
            let app = client.app_create(org, &CreateApp { name, description }, &idempotency_key()).await?.value;
            p.receipt(
                &app,
                Receipt {
                    what: format!("Created app `{}` in org `{org}`", app.name),
                    ids: vec![("app", app.id.to_string()), ("org", app.org_id.to_string())],
                    details: None,
                    next: vec![format!("vt env create prod --app {}{}", app.name, scope_flags(ctx, false, false))],
                },
            );
        }
        AppCommand::List => {
            let list = client.app_list(org).await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "NAME", "DESCRIPTION", "CREATED"]);
                for a in &list.items {
                    t.row(vec![a.id.to_string(), a.name.clone(), opt(&a.description), time(&a.created_at)]);
                }
                t.render()
            });
        }
        AppCommand::Get { name } => {
            let name = match name {
                Some(n) => n,
                None => ctx.settings.app()?.to_owned(),
            };
            let app = client.app_get(org, &name).await?;
            p.show(&app, || render(&app));
        }
    }
    Ok(ExitStatus::Success)
}

fn render(a: &App) -> String {
    fields(&[
        ("id", a.id.to_string()),
        ("org", a.org_id.to_string()),
        ("name", a.name.clone()),
        ("description", opt(&a.description)),
        ("created", time(&a.created_at)),
        ("updated", time(&a.updated_at)),
    ])
}
