//! `vt logs [--instance I] [--follow] [--tail N]`: an instance's output, or every
//! instance of the env, each line prefixed by its instance id (instances in a stable
//! order: by process, then id).

use serde::Serialize;

use crate::args::LogsArgs;
use crate::{CliResult, Ctx, ExitStatus};

#[derive(Serialize)]
struct Line<'a> {
    instance: &'a str,
    time: &'a str,
    stream: &'a str,
    text: &'a str,
}

fn print(ctx: &Ctx, instance: &str, prefixed: bool, line: &str) {
    let p = &ctx.printer;
    if p.json_mode() {
        let (time, rest) = line.split_once(' ').unwrap_or(("", line));
        let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
        p.json_line(&Line { instance, time, stream, text });
    } else if prefixed {
        p.text(&format!("{instance} {line}\n"));
    } else {
        p.text(&format!("{line}\n"));
    }
}

pub async fn run(ctx: &Ctx, args: LogsArgs) -> CliResult {
    let client = ctx.client();
    let ids: Vec<String> = match &args.instance {
        Some(i) => vec![i.clone()],
        None => {
            let (org, app, env) = ctx.settings.env_scope()?;
            let mut items = client.instance_list(org, app, env).await?.items;
            items.sort_by(|a, b| (&a.process, a.id).cmp(&(&b.process, b.id)));
            items.into_iter().map(|i| i.id.to_string()).collect()
        }
    };
    if ids.is_empty() {
        ctx.printer.hint("the env has no instances yet");
        return Ok(ExitStatus::Success);
    }
    let prefixed = args.instance.is_none();
    if !args.follow {
        for id in &ids {
            let mut s = client.instance_logs(id, false, args.tail).await?;
            while let Some(line) = s.next_line().await {
                print(ctx, id, prefixed, &line?);
            }
        }
        return Ok(ExitStatus::Success);
    }
    // Follow every instance at once; lines are printed as they arrive.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Result<String, vt_client::Error>)>(256);
    for id in ids {
        let mut s = client.instance_logs(&id, true, args.tail).await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(line) = s.next_line().await {
                if tx.send((id.clone(), line)).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    while let Some((id, line)) = rx.recv().await {
        print(ctx, &id, prefixed, &line?);
    }
    Ok(ExitStatus::Success)
}
