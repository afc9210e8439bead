//! `vt events [--follow] [--after SEQ] [--limit N]`: the newest N events, N after a position,
//! or everything after it and then new ones as they come.

use vt_events::Envelope;

use crate::args::EventsArgs;
use crate::printer::{time, Table};
use crate::{CliResult, Ctx, ExitStatus};

const HEADERS: [&str; 5] = ["SEQ", "TIME", "TYPE", "AGGREGATE", "ACTOR"];

fn cells(e: &Envelope) -> Vec<String> {
    vec![e.seq.to_string(), time(&e.occurred_at), e.event_type.clone(), e.aggregate_id.clone(), e.actor.clone()]
}

pub async fn run(ctx: &Ctx, args: EventsArgs) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    if !args.follow {
        let page = client.event_list(args.after, args.limit).await?;
        p.show(&page, || {
            let mut t = Table::new(&HEADERS);
            for e in &page.events {
                t.row(cells(e));
            }
            let mut s = t.render();
            if page.next_after < page.head {
                s.push_str(&format!("(more: vt events --after {})\n", page.next_after));
            }
            s
        });
        return Ok(ExitStatus::Success);
    }
    // Streaming: rows cannot be aligned after the fact, so columns are fixed width.
    let mut stream = client.event_list_follow(args.after.unwrap_or(0)).await?;
    if !p.json_mode() {
        p.text(&row(&HEADERS.map(String::from)));
    }
    let mut last = args.after.unwrap_or(0);
    while let Some(e) = stream.next().await {
        let e = e?;
        last = e.seq;
        if p.json_mode() {
            p.json_line(&e);
        } else {
            p.text(&row(&cells(&e).try_into().unwrap_or_default()));
        }
    }
    p.warning(&format!("the server closed the event stream; resume with `vt events --follow --after {last}`"));
    Ok(ExitStatus::Failure)
}

fn row(c: &[String; 5]) -> String {
    format!("{:<8}  {:<20}  {:<28}  {:<30}  {}\n", c[0], c[1], c[2], c[3], c[4])
}
