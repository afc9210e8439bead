//! `vt route create|list|get|delete`: ingress routes of the current env, with
//! whether each node's ingress listens on them.

use vt_api::{CreateRoute, ListenerState, Route, RouteProtocol};

use crate::args::{RouteCommand, RouteCreateArgs};
use crate::commands::scope_flags;
use crate::printer::{fields, label, time, Receipt, Table};
use crate::{idempotency_key, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: RouteCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let (org, app, env) = ctx.settings.env_scope()?;
    match cmd {
        RouteCommand::Create(args) => {
            let req = request(args);
            let route = client.route_create(org, app, env, &req, &idempotency_key()).await?.value;
            p.receipt(
                &route,
                Receipt {
                    what: format!(
                        "Created {} route {} → process `{}` port {}",
                        label(&route.protocol),
                        listener(&route),
                        route.process,
                        route.backend_port
                    ),
                    ids: vec![("route", route.id.to_string()), ("env", route.env_id.to_string())],
                    details: details(&route),
                    next: vec![
                        format!("vt route list{}", scope_flags(ctx, true, true)),
                        format!("vt instances{}", scope_flags(ctx, true, true)),
                    ],
                },
            );
        }
        RouteCommand::List => {
            let list = client.route_list(org, app, env).await?;
            p.show(&list, || {
                let mut t = Table::new(&[
                    "ID",
                    "PROTOCOL",
                    "LISTENER",
                    "PROCESS",
                    "BACKEND PORT",
                    "PROXY",
                    "STATUS",
                    "CREATED",
                ]);
                for r in &list.items {
                    t.row(vec![
                        r.id.to_string(),
                        label(&r.protocol),
                        listener(r),
                        r.process.clone(),
                        r.backend_port.to_string(),
                        if r.proxy_protocol { "v2".into() } else { "-".into() },
                        status(r),
                        time(&r.created_at),
                    ]);
                }
                let mut out = t.render();
                for r in &list.items {
                    for why in failures(r) {
                        out.push_str(&format!("route {} ({}): {why}\n", r.id, listener(r)));
                    }
                }
                out
            });
        }
        RouteCommand::Get { route } => {
            let r = client.route_get(org, app, env, &route).await?;
            p.show(&r, || {
                let mut s = fields(&[
                    ("route", r.id.to_string()),
                    ("protocol", label(&r.protocol)),
                    ("listener", listener(&r)),
                    ("process", r.process.clone()),
                    ("backend port", r.backend_port.to_string()),
                    ("proxy protocol", if r.proxy_protocol { "v2".into() } else { "off".into() }),
                    ("status", status(&r)),
                    ("created", time(&r.created_at)),
                ]);
                if !r.listeners.is_empty() {
                    s.push('\n');
                    let mut t = Table::new(&["NODE", "LISTENER", "SINCE", "REASON"]);
                    for l in &r.listeners {
                        let reason = l.reason.clone().unwrap_or_else(|| "-".into());
                        t.row(vec![l.node.clone(), label(&l.state), time(&l.since), reason]);
                    }
                    s.push_str(&t.render());
                }
                s
            });
        }
        RouteCommand::Delete { route } => {
            let route = client.route_delete(org, app, env, &route, &idempotency_key()).await?.value;
            p.receipt(
                &route,
                Receipt {
                    what: format!("Deleted route {}; new connections to it are refused", listener(&route)),
                    ids: vec![("route", route.id.to_string())],
                    details: None,
                    next: vec![format!("vt route list{}", scope_flags(ctx, true, true))],
                },
            );
        }
    }
    Ok(ExitStatus::Success)
}

/// What a created route's receipt adds: the server's notes (say, a route made before the env
/// has a release), and the PROXY protocol when it is on.
fn details(route: &Route) -> Option<String> {
    let mut lines: Vec<String> = route.notes.iter().map(|n| format!("note: {n}\n")).collect();
    if route.proxy_protocol {
        lines.push("a PROXY protocol v2 header with the client's address goes first to the backend\n".to_owned());
    }
    (!lines.is_empty()).then(|| lines.concat())
}

fn request(a: RouteCreateArgs) -> CreateRoute {
    CreateRoute {
        protocol: if a.tcp { RouteProtocol::Tcp } else { RouteProtocol::Tls },
        hostname: a.hostname,
        port: a.port,
        process: a.process,
        backend_port: a.backend_port,
        proxy_protocol: a.proxy_protocol,
    }
}

/// `listening` when every node that reported listens, `failed on NODE,..`
/// when some cannot, `pending` before any ingress reported.
pub(crate) fn status(r: &Route) -> String {
    let failed: Vec<&str> =
        r.listeners.iter().filter(|l| l.state == ListenerState::Failed).map(|l| l.node.as_str()).collect();
    match (r.listeners.is_empty(), failed.is_empty()) {
        (true, _) => "pending".into(),
        (false, true) => "listening".into(),
        (false, false) => format!("failed on {}", failed.join(",")),
    }
}

/// Why the route is not served, per node that failed: `on NODE since T: REASON`.
pub(crate) fn failures(r: &Route) -> Vec<String> {
    let failed = r.listeners.iter().filter(|l| l.state == ListenerState::Failed);
    failed
        .map(|l| format!("failed on {} since {}: {}", l.node, time(&l.since), l.reason.as_deref().unwrap_or("-")))
        .collect()
}

/// `host:port` for TLS routes, `:port` for TCP routes.
pub(crate) fn listener(r: &Route) -> String {
    format!("{}:{}", r.hostname.as_deref().unwrap_or(""), r.port)
}
