//! `vt volume create|list|get|extend|delete`: the env's volumes, each a local disk on one node.

use std::io::IsTerminal;

use vt_api::{CreateVolume, ExtendVolume, Volume};

use crate::args::VolumeCommand;
use crate::commands::scope_flags;
use crate::error::CliError;
use crate::printer::{fields, opt, time, Receipt, Table};
use crate::{idempotency_key, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: VolumeCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let (org, app, env) = ctx.settings.env_scope()?;
    let list_next = format!("vt volume list{}", scope_flags(ctx, true, true));
    match cmd {
        VolumeCommand::Create(a) => {
            let req = CreateVolume { name: a.name, size_gib: a.size_gib, node: a.node };
            let v = client.volume_create(org, app, env, &req, &idempotency_key()).await?.value;
            p.receipt(
                &v,
                Receipt {
                    what: format!("Created volume `{}` ({} GiB) on node {}", v.name, v.size_gib, v.node),
                    ids: vec![("volume", v.id.to_string()), ("env", v.env_id.to_string())],
                    details: Some(format!(
                        "an instance of a process whose manifest mounts `{}` takes it, and runs on {}\n",
                        v.name, v.node
                    )),
                    next: vec![list_next],
                },
            );
        }
        VolumeCommand::List => {
            let list = client.volume_list(org, app, env).await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "NAME", "SIZE", "NODE", "ATTACHED TO", "CREATED"]);
                for v in &list.items {
                    t.row(vec![
                        v.id.to_string(),
                        v.name.clone(),
                        format!("{} GiB", v.size_gib),
                        v.node.clone(),
                        opt(&v.attached_to),
                        time(&v.created_at),
                    ]);
                }
                t.render()
            });
        }
        VolumeCommand::Get { volume } => {
            let v = client.volume_get(org, app, env, &volume).await?;
            p.show(&v, || details(&v));
        }
        VolumeCommand::Extend { volume, size_gib } => {
            let req = ExtendVolume { size_gib };
            let v = client.volume_extend(org, app, env, &volume, &req, &idempotency_key()).await?.value;
            let when = match v.attached_to {
                Some(i) => format!("its disk grows when instance {i} next starts"),
                None => "its disk grows before the next instance that takes it boots".to_owned(),
            };
            p.receipt(
                &v,
                Receipt {
                    what: format!("Extended volume `{}` to {} GiB; {when}", v.name, v.size_gib),
                    ids: vec![("volume", v.id.to_string())],
                    details: None,
                    next: vec![list_next],
                },
            );
        }
        VolumeCommand::Delete { volume, yes } => {
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(CliError::usage(
                        "deleting a volume destroys its data, and stdin is not a terminal to ask",
                        Some(format!("pass --yes to delete volume {volume}")),
                    ));
                }
                let v = client.volume_get(org, app, env, &volume).await?;
                let answer = p.ask(&format!(
                    "Delete volume `{}` ({}, {} GiB on {}) and everything on it? Type its name to confirm:",
                    v.name, v.id, v.size_gib, v.node
                ))?;
                if answer != v.name {
                    return Err(CliError::failed("not deleted: the answer was not the volume's name", None));
                }
            }
            let v = client.volume_delete(org, app, env, &volume, &idempotency_key()).await?.value;
            p.receipt(
                &v,
                Receipt {
                    what: format!("Deleted volume `{}`; node {} removes its disk", v.name, v.node),
                    ids: vec![("volume", v.id.to_string())],
                    details: None,
                    next: vec![list_next],
                },
            );
        }
    }
    Ok(ExitStatus::Success)
}

fn details(v: &Volume) -> String {
    fields(&[
        ("volume", v.id.to_string()),
        ("name", v.name.clone()),
        ("size", format!("{} GiB", v.size_gib)),
        ("node", v.node.clone()),
        ("attached to", opt(&v.attached_to)),
        ("created", time(&v.created_at)),
        ("updated", time(&v.updated_at)),
    ])
}
