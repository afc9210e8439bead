//! `vt node list|get`.

use vt_api::Node;

use crate::args::NodeCommand;
use crate::printer::{fields, label, opt, time, Table};
use crate::{CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: NodeCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    match cmd {
        NodeCommand::List => {
            let list = client.node_list().await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "NAME", "STATUS", "CPU", "MEMORY", "HEARTBEAT"]);
                for n in &list.items {
                    t.row(vec![
                        n.id.to_string(),
                        n.name.clone(),
                        label(&n.status),
                        cpu(n.allocatable.cpu_millis),
                        format!("{} MiB", n.allocatable.memory_mib),
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
        ("address", opt(&n.address)),
        ("capacity", format!("{} cpu, {} MiB", cpu(n.capacity.cpu_millis), n.capacity.memory_mib)),
        ("allocatable", format!("{} cpu, {} MiB", cpu(n.allocatable.cpu_millis), n.allocatable.memory_mib)),
        ("labels", if labels.is_empty() { "-".into() } else { labels.join(",") }),
        ("registered", time(&n.registered_at)),
        ("heartbeat", opt(&n.last_heartbeat_at.as_ref().map(time))),
    ])
}
