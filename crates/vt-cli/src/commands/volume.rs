//! `vt volume create|list|get|extend|delete`: the env's volumes, each a local disk on one node.

use std::io::IsTerminal;

use vt_api::{CreateVolume, ExtendVolume, RestoreSnapshot, Snapshot, SnapshotStatus, Volume};

use crate::args::VolumeCommand;
use crate::commands::scope_flags;
use crate::error::CliError;
use crate::printer::{fields, label, opt, time, Receipt, Table};
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
        VolumeCommand::Snapshot { volume, no_wait } => {
            let mut s = client.snapshot_create(org, app, env, &volume, &idempotency_key()).await?.value;
            if !no_wait {
                p.progress(&format!("taking snapshot {} on node {}", s.id, s.node));
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
                while s.status == SnapshotStatus::Pending && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    let list = client.snapshot_list(org, app, env, &s.volume_id.to_string()).await?;
                    if let Some(now) = list.items.into_iter().find(|x| x.id == s.id) {
                        s = now;
                    }
                }
            }
            let what = match s.status {
                SnapshotStatus::Pending => {
                    format!("Asked node {} for a snapshot of volume `{}`", s.node, s.volume_name)
                }
                SnapshotStatus::Completed => format!(
                    "Took a snapshot of volume `{}` on node {} ({}; the VM paused {} ms)",
                    s.volume_name,
                    s.node,
                    size(s.bytes),
                    s.paused_ms.unwrap_or(0)
                ),
                SnapshotStatus::Failed => {
                    return Err(CliError::failed(
                        format!(
                            "snapshot {} of volume `{}` failed: {}",
                            s.id,
                            s.volume_name,
                            s.reason.as_deref().unwrap_or("no reason reported")
                        ),
                        None,
                    ))
                }
            };
            p.receipt(
                &s,
                Receipt {
                    what,
                    ids: vec![("snapshot", s.id.to_string()), ("volume", s.volume_id.to_string())],
                    details: None,
                    next: vec![
                        format!("vt volume snapshots {}{}", s.volume_name, scope_flags(ctx, true, true)),
                        format!("vt volume restore {} --as NEW_NAME{}", s.id, scope_flags(ctx, true, true)),
                    ],
                },
            );
        }
        VolumeCommand::Snapshots { volume } => {
            let list = client.snapshot_list(org, app, env, &volume).await?;
            p.show(&list, || snapshots(&list.items));
        }
        VolumeCommand::Restore { snapshot, name } => {
            let req = RestoreSnapshot { name };
            let v = client.snapshot_restore(org, app, env, &snapshot, &req, &idempotency_key()).await?.value;
            p.receipt(
                &v,
                Receipt {
                    what: format!(
                        "Restored snapshot {snapshot} as new volume `{}` ({} GiB) on node {}; its node copies the disk when an instance first takes it",
                        v.name, v.size_gib, v.node
                    ),
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

fn snapshots(items: &[Snapshot]) -> String {
    let mut t = Table::new(&["ID", "VOLUME", "SIZE", "NODE", "STATUS", "BYTES", "PAUSED", "CREATED"]);
    for s in items {
        t.row(vec![
            s.id.to_string(),
            format!("{} ({})", s.volume_name, s.volume_id),
            format!("{} GiB", s.size_gib),
            s.node.clone(),
            label(&s.status),
            size(s.bytes),
            s.paused_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            time(&s.created_at),
        ]);
    }
    let mut out = t.render();
    for s in items.iter().filter(|s| s.status == SnapshotStatus::Failed) {
        out.push_str(&format!("snapshot {} failed: {}\n", s.id, s.reason.as_deref().unwrap_or("-")));
    }
    out
}

/// Bytes for people: `104.9 MB`, `-` when unknown.
fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".into(),
        Some(b) if b < 1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        Some(b) if b < 1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        Some(b) => format!("{:.2} GB", b as f64 / 1e9),
    }
}

fn details(v: &Volume) -> String {
    fields(&[
        ("volume", v.id.to_string()),
        ("name", v.name.clone()),
        ("size", format!("{} GiB", v.size_gib)),
        ("node", v.node.clone()),
        ("attached to", opt(&v.attached_to)),
        ("restored from", opt(&v.from_snapshot)),
        ("created", time(&v.created_at)),
        ("updated", time(&v.updated_at)),
    ])
}
