//! `vt volume create|list|get|extend|delete`: the env's volumes, each a local disk on one node.

use vt_api::{Backup, CreateVolume, ExtendVolume, RestoreBackup, RestoreSnapshot, Snapshot, SnapshotStatus, Volume};

use crate::args::VolumeCommand;
use crate::commands::{confirm_name, require_terminal, scope_flags};
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
        VolumeCommand::Restore { from, name, node } => {
            let (v, what) = if from.starts_with("snap_") {
                if node.is_some() {
                    return Err(CliError::usage(
                        "a snapshot is restored on its own node: drop --node",
                        Some("snapshots are node-local; a backup can be restored on any node".to_owned()),
                    ));
                }
                let req = RestoreSnapshot { name };
                (client.snapshot_restore(org, app, env, &from, &req, &idempotency_key()).await?.value, "snapshot")
            } else {
                let req = RestoreBackup { name, node };
                (client.backup_restore(org, app, env, &from, &req, &idempotency_key()).await?.value, "backup")
            };
            p.receipt(
                &v,
                Receipt {
                    what: format!(
                        "Restored {what} {from} as new volume `{}` ({} GiB) on node {}; its node makes the disk when an instance first takes it",
                        v.name, v.size_gib, v.node
                    ),
                    ids: vec![("volume", v.id.to_string())],
                    details: None,
                    next: vec![list_next],
                },
            );
        }
        VolumeCommand::Backup { volume, no_wait } => {
            let mut v = client.backup_create(org, app, env, &volume, &idempotency_key()).await?.value;
            if !no_wait {
                p.progress(&format!("backing up volume `{}` on node {}", v.name, v.node));
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
                while v.backups.pending.is_some() && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    v = client.volume_get(org, app, env, &v.id.to_string()).await?;
                }
            }
            let b = &v.backups;
            let what = match (&b.pending, &b.last_error, &b.last_success_id) {
                (Some(_), _, _) => format!("Asked node {} for a backup of volume `{}`", v.node, v.name),
                (None, Some(e), _) => {
                    return Err(CliError::failed(format!("the backup of volume `{}` failed: {e}", v.name), None))
                }
                (None, None, Some(id)) => format!(
                    "Backed up volume `{}` as {id} ({} read, {} added to the repository, in {})",
                    v.name,
                    size(b.last_bytes_processed),
                    size(b.last_bytes_added),
                    b.last_took_ms.map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
                ),
                (None, None, None) => format!("Backed up volume `{}`", v.name),
            };
            p.receipt(
                &v,
                Receipt {
                    what,
                    ids: vec![("volume", v.id.to_string())],
                    details: None,
                    next: vec![format!("vt volume backups {}{}", v.name, scope_flags(ctx, true, true))],
                },
            );
        }
        VolumeCommand::Backups { volume } => {
            let list = client.backup_list(org, app, env, &volume).await?;
            p.show(&list, || backups(&list.items));
        }
        VolumeCommand::Delete { volume, yes } => {
            if !yes {
                require_terminal(
                    "deleting a volume destroys its data",
                    format!("pass --yes to delete volume {volume}"),
                )?;
                let v = client.volume_get(org, app, env, &volume).await?;
                let question = format!(
                    "Delete volume `{}` ({}, {} GiB on {}) and everything on it? Type its name to confirm:",
                    v.name, v.id, v.size_gib, v.node
                );
                confirm_name(p, &question, &v.name, "volume")?;
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

fn backups(items: &[Backup]) -> String {
    let mut t = Table::new(&["ID", "TIME", "VOLUME", "SIZE", "NODE"]);
    for b in items {
        t.row(vec![
            b.id.clone(),
            b.time.clone(),
            format!("{} ({})", b.volume, b.volume_id),
            format!("{} GiB", b.size_gib),
            b.node.clone(),
        ]);
    }
    t.render()
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
        (
            "restored from",
            v.from_snapshot.map(|s| s.to_string()).or(v.from_backup.clone()).unwrap_or_else(|| "-".into()),
        ),
        (
            "backup",
            match &v.backups.pending {
                Some(p) => format!("running since {} ({})", time(&p.requested_at), p.id),
                None => "-".into(),
            },
        ),
        (
            "last backup",
            match (&v.backups.last_success_at, &v.backups.last_success_id) {
                (Some(at), Some(id)) => format!("{} {id} ({} added)", time(at), size(v.backups.last_bytes_added)),
                _ => "never".into(),
            },
        ),
        (
            "last backup error",
            match (&v.backups.last_error_at, &v.backups.last_error) {
                (Some(at), Some(e)) => format!("{} {e}", time(at)),
                _ => "-".into(),
            },
        ),
        ("created", time(&v.created_at)),
        ("updated", time(&v.updated_at)),
    ])
}
