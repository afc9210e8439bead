//! `vt org create|list|get`.

use vt_api::{CreateOrg, Org};

use crate::args::OrgCommand;
use crate::printer::{fields, time, Receipt, Table};
use crate::{idempotency_key, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: OrgCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    match cmd {
        OrgCommand::Create { name } => {
            let org = client.org_create(&CreateOrg { name }, &idempotency_key()).await?.value;
            p.receipt(
                &org,
                Receipt {
                    what: format!("Created org `{}`", org.name),
                    ids: vec![("org", org.id.to_string())],
                    details: None,
                    next: vec![format!("vt app create <app> --org {}", org.name)],
                },
            );
        }
        OrgCommand::List => {
            let list = client.org_list().await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "NAME", "CREATED"]);
                for o in &list.items {
                    t.row(vec![o.id.to_string(), o.name.clone(), time(&o.created_at)]);
                }
                t.render()
            });
        }
        OrgCommand::Get { name } => {
            let name = match name {
                Some(n) => n,
                None => ctx.settings.org()?.to_owned(),
            };
            let org = client.org_get(&name).await?;
            p.show(&org, || render(&org));
        }
    }
    Ok(ExitStatus::Success)
}

fn render(o: &Org) -> String {
    fields(&[
        ("id", o.id.to_string()),
        ("name", o.name.clone()),
        ("created", time(&o.created_at)),
        ("updated", time(&o.updated_at)),
    ])
}
