//! `vt node list|get|enroll-token create|revoke`.

use vt_api::{CreateEnrollToken, DiskReport, Node};
use vt_disk::human;

use crate::args::{EnrollTokenCommand, NodeCommand};
use crate::printer::{fields, label, opt, time, Receipt, Table};
use crate::{CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: NodeCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    match cmd {
        NodeCommand::List => {
            let list = client.node_list().await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "NAME", "STATUS", "RUNS", "CPU", "MEMORY", "DISK FREE", "HEARTBEAT"]);
                for n in &list.items {
                    // An edge-only node's capacity is nobody's to use: not shown.
                    let (runs, cpu, memory) = match n.runs_instances {
                        true => (
                            "instances".to_owned(),
                            cpu(n.allocatable.cpu_millis),
                            format!("{} MiB", n.allocatable.memory_mib),
                        ),
                        false => ("edge only".to_owned(), "-".to_owned(), "-".to_owned()),
                    };
                    t.row(vec![
                        n.id.to_string(),
                        n.name.clone(),
                        label(&n.status),
                        runs,
                        cpu,
                        memory,
                        // What large writes may still take there (free beyond the reserve).
                        opt(&n.disk.map(|d| human(d.budget_free_bytes))),
                        opt(&n.last_heartbeat_at.as_ref().map(time)),
                    ]);
                }
                t.render()
            });
        }
        NodeCommand::Get { node } => {
            let n = client.node_get(&node).await?;
            p.show(&n, || render(&n));
        }
        NodeCommand::EnrollToken(EnrollTokenCommand::Create(args)) => {
            let req = CreateEnrollToken { ttl_secs: Some(args.ttl), labels: args.labels.into_iter().collect() };
            let issued = client.enroll_token_create(&req).await?;
            let t = &issued.token;
            let expires = t.expires_at.as_ref().map(time).unwrap_or_default();
            p.receipt(
                &issued,
                Receipt {
                    what: format!("Created an enrollment token; it enrolls one node, once, until {expires}"),
                    ids: vec![("token", t.id.to_string())],
                    details: Some(format!(
                        "secret: {}\nThe secret is shown this once. On the new host (VT_ENROLL_TOKEN keeps it out of `ps`):\n",
                        issued.secret
                    )),
                    next: vec![
                        format!("VT_ENROLL_TOKEN=<secret> vt server --role agent --join {} --node-name NAME", client.base()),
                        format!("vt token revoke {}", t.id),
                    ],
                },
            );
        }
        NodeCommand::Revoke { node } => {
            let n = client.node_revoke(&node, &crate::idempotency_key()).await?.value;
            p.receipt(
                &n,
                Receipt {
                    what: format!(
                        "Revoked node `{}`: its tokens are dead, its instances are placed elsewhere, its name is free",
                        n.name
                    ),
                    ids: vec![("node", n.id.to_string())],
                    details: None,
                    next: vec!["vt node list".into(), "vt instances".into()],
                },
            );
        }
    }
    Ok(ExitStatus::Success)
}

fn cpu(millis: u32) -> String {
    format!("{}.{:03}", millis / 1000, millis % 1000)
}

fn render(n: &Node) -> String {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    fields(&[
        ("id", n.id.to_string()),
        ("name", n.name.clone()),
        ("status", label(&n.status)),
        ("status reason", opt(&n.status_reason)),
        (
            "runs",
            match n.runs_instances {
                true => "instances".into(),
                false => "no instances: an edge-only node (the ingress, in the mesh)".into(),
            },
        ),
        ("address", opt(&n.address)),
        ("capacity", format!("{} cpu, {} MiB", cpu(n.capacity.cpu_millis), n.capacity.memory_mib)),
        ("allocatable", format!("{} cpu, {} MiB", cpu(n.allocatable.cpu_millis), n.allocatable.memory_mib)),
        ("labels", if labels.is_empty() { "-".into() } else { labels.join(",") }),
        ("wireguard key", opt(&n.wireguard_public_key)),
        ("wireguard port", opt(&n.wireguard_port.map(|p| p.to_string()))),
        ("registered", time(&n.registered_at)),
        ("heartbeat", opt(&n.last_heartbeat_at.as_ref().map(time))),
        ("disk", n.disk.as_ref().map_or_else(|| "- (not reported)".into(), disk)),
        ("disk used", n.disk.as_ref().map_or_else(|| "-".into(), disk_used)),
        ("disk reported", opt(&n.disk_reported_at.as_ref().map(time))),
    ])
}

/// `55 GiB free for vt of 60 GiB free (5 GiB kept free), 100 GiB in all`.
fn disk(d: &DiskReport) -> String {
    format!(
        "{} free for vt of {} free ({} kept free), {} in all",
        human(d.budget_free_bytes),
        human(d.free_bytes),
        human(d.reserve_bytes),
        human(d.total_bytes)
    )
}

/// What vt's data holds, by what holds it; the snapshots with how many suspended instances.
fn disk_used(d: &DiskReport) -> String {
    let u = &d.used;
    let s = if u.snapshots == 1 { "" } else { "s" };
    format!(
        "images {}, scratch disks {}, volumes {}, snapshots {} ({} suspended instance{s}), logs {}",
        human(u.images_bytes),
        human(u.scratch_bytes),
        human(u.volumes_bytes),
        human(u.snapshots_bytes),
        u.snapshots,
        human(u.logs_bytes)
    )
}
