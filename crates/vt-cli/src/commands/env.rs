//! `vt env create|list|get`.

use vt_api::{CreateEnv, Env};

use crate::args::EnvCommand;
use crate::commands::scope_flags;
use crate::printer::{fields, opt, time, Receipt, Table};
use crate::{idempotency_key, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: EnvCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let (org, app) = (ctx.settings.org()?, ctx.settings.app()?);
    match cmd {
        EnvCommand::Create { name } => {
            let env = client.env_create(org, app, &CreateEnv { name }, &idempotency_key()).await?.value;
            p.receipt(
                &env,
                Receipt {
                    what: format!("Created env `{}` of app `{app}`", env.name),
                    ids: vec![
                        ("env", env.id.to_string()),
                        ("app", env.app_id.to_string()),
                        ("org", env.org_id.to_string()),
                    ],
                    details: None,
                    next: vec![format!(
                        "vt deploy --image <repo>@sha256:<digest> --manifest vt.toml --env {}{}",
                        env.name,
                        scope_flags(ctx, true, false)
                    )],
                },
            );
        }
        EnvCommand::List => {
            let list = client.env_list(org, app).await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "NAME", "RELEASE", "DEPLOY", "CREATED"]);
                for e in &list.items {
                    t.row(vec![
                        e.id.to_string(),
                        e.name.clone(),
                        opt(&e.desired_release_id),
                        opt(&e.current_deploy_id),
                        time(&e.created_at),
                    ]);
                }
                t.render()
            });
        }
        EnvCommand::Get { name } => {
            let name = match name {
                Some(n) => n,
                None => ctx.settings.env()?.to_owned(),
            };
            let env = client.env_get(org, app, &name).await?;
            p.show(&env, || render(&env));
        }
    }
    Ok(ExitStatus::Success)
}

fn render(e: &Env) -> String {
    fields(&[
        ("id", e.id.to_string()),
        ("org", e.org_id.to_string()),
        ("app", e.app_id.to_string()),
        ("name", e.name.clone()),
        ("release", opt(&e.desired_release_id)),
        ("deploy", opt(&e.current_deploy_id)),
        ("created", time(&e.created_at)),
        ("updated", time(&e.updated_at)),
    ])
}
