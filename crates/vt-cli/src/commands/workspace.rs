//! `vt workspace create|list|get|start|stop|delete|port|open`: browser IDEs, one microVM each
//! with a home disk that persists (docs/workspaces.md).
//!
//! Workspace names are unique on the platform, so only `create` (and `list`, as a filter)
//! needs an org; every other command takes the workspace's name or id.
//!
//! `--wait` polls the workspace every second until it reaches the status asked for
//! (`running`, `stopped` for `stop`, `suspended` for `stop --suspend`), fails (its reason and last log lines, exit 1) or
//! `--timeout` passes (exit 1; it keeps going). Progress (each status) goes to stderr on a
//! terminal.

use std::time::{Duration, Instant};

use vt_api::{AddWorkspacePort, CreateWorkspace, List, Workspace, WorkspacePort, WorkspaceStatus};

use crate::args::{WorkspaceCommand, WorkspacePortCommand, WorkspaceWait};
use crate::commands::{confirm_name, require_terminal, scope_flags};
use crate::printer::{fields, opt, time, Printer, Receipt, Table};
use crate::{idempotency_key, CliError, CliResult, Ctx, ExitStatus};

/// The console user: the workspace origin's basic auth (docs/front.md).
const CONSOLE_USER: &str = "vt";

pub async fn run(ctx: &Ctx, cmd: WorkspaceCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    match cmd {
        WorkspaceCommand::Create(a) => {
            let req = CreateWorkspace {
                name: a.name,
                org: ctx.settings.org()?.to_owned(),
                cpus: a.cpus,
                memory_mib: a.memory_mib,
                disk_gib: a.disk_gib,
                image: a.image,
            };
            let w = client.workspace_create(&req, &idempotency_key()).await?.value;
            let w = match waited(ctx, w, WorkspaceStatus::Running, a.wait).await? {
                Ok(w) => w,
                Err(failed) => return Ok(failure(p, &failed)),
            };
            p.receipt(&w, created(&w, &req.org, a.wait.wait));
        }
        WorkspaceCommand::List => {
            let list = client.workspace_list(ctx.settings.org.value.as_deref()).await?;
            p.show(&list, || list_table(&list.items));
        }
        WorkspaceCommand::Get { workspace } => {
            let w = client.workspace_get(&workspace).await?;
            p.show(&w, || details(&w));
        }
        WorkspaceCommand::Start { workspace, wait } => {
            let w = client.workspace_start(&workspace, &idempotency_key()).await?.value;
            let w = match waited(ctx, w, WorkspaceStatus::Running, wait).await? {
                Ok(w) => w,
                Err(failed) => return Ok(failure(p, &failed)),
            };
            p.receipt(&w, started(&w, wait.wait));
        }
        WorkspaceCommand::Stop { workspace, suspend, wait } => {
            // A workspace that fails while it stops is not running either: done.
            let w = client.workspace_stop(&workspace, suspend, &idempotency_key()).await?.value;
            // Suspending a stopped workspace leaves it stopped: done too.
            let target = match (suspend, w.status) {
                (true, WorkspaceStatus::Stopped) | (false, _) => WorkspaceStatus::Stopped,
                (true, _) => WorkspaceStatus::Suspended,
            };
            let w = waited(ctx, w, target, wait).await?.unwrap_or_else(|failed| failed);
            p.receipt(&w, stopped(&w));
        }
        WorkspaceCommand::Delete { workspace, yes } => {
            if !yes {
                require_terminal(
                    "deleting a workspace removes its home disk for good",
                    format!("pass --yes to delete workspace {workspace}"),
                )?;
                let w = client.workspace_get(&workspace).await?;
                let question = format!(
                    "Delete workspace `{}` ({}) and its {} GiB home disk on {}? This cannot be undone: \
                     everything in {} is removed. Type its name to confirm:",
                    w.name,
                    w.id,
                    w.disk_gib,
                    w.node,
                    vt_api::workspaces::HOME
                );
                confirm_name(p, &question, &w.name, "workspace")?;
            }
            let w = client.workspace_delete(&workspace, &idempotency_key()).await?.value;
            p.receipt(&w, deleted(&w, &scope_flags(ctx, false, false)));
        }
        WorkspaceCommand::Port(cmd) => return port(ctx, cmd).await,
        WorkspaceCommand::Open { workspace } => {
            let w = client.workspace_get(&workspace).await?;
            if p.json_mode() {
                p.json(&w);
                return Ok(ExitStatus::Success);
            }
            if w.status != WorkspaceStatus::Running {
                p.warning(&format!(
                    "workspace `{}` is {}: start it first (`vt workspace start {} --wait`)",
                    w.name,
                    w.status.as_str(),
                    w.name
                ));
            }
            if w.url.is_none() {
                p.hint("the server does not know its workspace origin's address: open this path there (`vt server --workspace-listen`, 127.0.0.1:7412 by default)");
            }
            p.text(&open(&w));
        }
    }
    Ok(ExitStatus::Success)
}

async fn port(ctx: &Ctx, cmd: WorkspacePortCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    match cmd {
        WorkspacePortCommand::Add { workspace, port } => {
            let list =
                client.workspace_port_add(&workspace, &AddWorkspacePort { port }, &idempotency_key()).await?.value;
            p.receipt(&list, port_added(&workspace, port, &list));
        }
        WorkspacePortCommand::Remove { workspace, port } => {
            let list = client.workspace_port_remove(&workspace, port, &idempotency_key()).await?.value;
            p.receipt(&list, port_removed(&workspace, port, &list));
        }
        WorkspacePortCommand::List { workspace } => {
            let list = client.workspace_port_list(&workspace).await?;
            p.show(&list, || ports_table(&list.items));
        }
    }
    Ok(ExitStatus::Success)
}

/// With `--wait`: poll until the workspace is `target` (`Ok`) or `failed` (`Err`, the
/// workspace), or the timeout passes (an error). Without: the workspace as it is.
async fn waited(
    ctx: &Ctx,
    mut w: Workspace,
    target: WorkspaceStatus,
    wait: WorkspaceWait,
) -> CliResult<Result<Workspace, Workspace>> {
    if !wait.wait {
        return Ok(Ok(w));
    }
    let client = ctx.client();
    let timeout = Duration::from_secs(wait.timeout);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let now = progress(&w);
        if now != last {
            ctx.printer.progress(&format!("[{:>4}s] workspace `{}`: {now}", started.elapsed().as_secs(), w.name));
            last = now;
        }
        match w.status {
            s if s == target => return Ok(Ok(w)),
            WorkspaceStatus::Failed => return Ok(Err(w)),
            WorkspaceStatus::Deleting => {
                return Err(CliError::failed(format!("workspace `{}` is being deleted", w.name), None))
            }
            _ => {}
        }
        if started.elapsed() >= timeout {
            return Err(CliError::failed(
                format!("workspace `{}` is still {} after {}s", w.name, w.status.as_str(), timeout.as_secs()),
                Some(format!("it keeps going; follow it with `vt workspace get {}`", w.name)),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        w = client.workspace_get(&w.id.to_string()).await?;
    }
}

/// A status with its reason, as a progress line shows it.
fn progress(w: &Workspace) -> String {
    match &w.reason {
        Some(r) => format!("{} ({r})", w.status.as_str()),
        None => w.status.as_str().to_owned(),
    }
}

/// A workspace that failed while waited for: the error, its last log lines, what to do.
fn failure(p: &Printer, w: &Workspace) -> ExitStatus {
    let reason = w.reason.as_deref().unwrap_or("no reason recorded");
    p.error(&CliError::failed(format!("workspace `{}` failed: {reason}", w.name), None));
    p.excerpt(&format!("last log lines of workspace `{}`:", w.name), &w.last_log_lines);
    p.hint(&format!("`vt workspace get {0}` shows its activity; `vt workspace start {0} --wait` tries again", w.name));
    ExitStatus::Failure
}

/// `2 vCPUs, 4096 MiB, 10 GiB home disk`
fn resources(w: &Workspace) -> String {
    let s = if w.cpus == 1 { "" } else { "s" };
    format!("{} vCPU{s}, {} MiB, {} GiB home disk", w.cpus, w.memory_mib, w.disk_gib)
}

fn created(w: &Workspace, org: &str, waited: bool) -> Receipt {
    let mut next = vec![];
    if !waited {
        next.push(format!("vt workspace get {}", w.name));
    }
    next.push(format!("vt workspace open {}", w.name));
    Receipt {
        what: format!(
            "Created workspace `{}` in org `{org}` ({}) on node {}; it is {}",
            w.name,
            resources(w),
            w.node,
            w.status.as_str()
        ),
        ids: vec![("workspace", w.id.to_string()), ("org", w.org_id.to_string())],
        details: None,
        next,
    }
}

fn started(w: &Workspace, waited: bool) -> Receipt {
    let what = match w.status {
        WorkspaceStatus::Running => format!("Workspace `{}` is running on node {}", w.name, w.node),
        s => format!("Starting workspace `{}` on node {} ({})", w.name, w.node, s.as_str()),
    };
    let mut next = vec![];
    if !waited {
        next.push(format!("vt workspace get {}", w.name));
    }
    next.push(format!("vt workspace open {}", w.name));
    Receipt { what, ids: vec![("workspace", w.id.to_string())], details: None, next }
}

fn stopped(w: &Workspace) -> Receipt {
    let what = match w.status {
        WorkspaceStatus::Stopped => {
            format!("Stopped workspace `{}`; its home disk stays on node {}", w.name, w.node)
        }
        WorkspaceStatus::Suspended => format!(
            "Suspended workspace `{}`: its VM is saved to a snapshot on node {}, its home disk stays there",
            w.name, w.node
        ),
        WorkspaceStatus::Suspending => {
            format!("Suspending workspace `{}`: saving its VM to a snapshot on node {}", w.name, w.node)
        }
        WorkspaceStatus::Failed => format!(
            "Workspace `{}` is not running: it failed ({}); its home disk stays on node {}",
            w.name,
            w.reason.as_deref().unwrap_or("no reason recorded"),
            w.node
        ),
        s => format!("Stopping workspace `{}` ({}); its home disk stays on node {}", w.name, s.as_str(), w.node),
    };
    Receipt {
        what,
        ids: vec![("workspace", w.id.to_string())],
        details: None,
        next: vec![format!("vt workspace start {}", w.name)],
    }
}

fn deleted(w: &Workspace, list_flags: &str) -> Receipt {
    Receipt {
        what: format!(
            "Deleting workspace `{}`: its VM stops, then node {} removes its {} GiB home disk",
            w.name, w.node, w.disk_gib
        ),
        ids: vec![("workspace", w.id.to_string())],
        details: None,
        next: vec![format!("vt workspace list{list_flags}")],
    }
}

fn port_added(workspace: &str, port: u16, list: &List<WorkspacePort>) -> Receipt {
    let path = list.items.iter().find(|p| p.port == port).map(|p| p.path.clone());
    Receipt {
        what: match path {
            Some(path) => format!("Registered port {port} of workspace `{workspace}` at {path}"),
            None => format!("Registered port {port} of workspace `{workspace}`"),
        },
        ids: vec![],
        details: Some(ports_table(&list.items)),
        next: vec![format!("vt workspace open {workspace}")],
    }
}

fn port_removed(workspace: &str, port: u16, list: &List<WorkspacePort>) -> Receipt {
    Receipt {
        what: format!("Removed port {port} of workspace `{workspace}`"),
        ids: vec![],
        details: Some(ports_table(&list.items)),
        next: vec![format!("vt workspace port list {workspace}")],
    }
}

/// What `vt workspace open` prints: where, then who to sign in as.
fn open(w: &Workspace) -> String {
    format!(
        "{}\nsign in as user `{CONSOLE_USER}` with the password in <data-dir>/console-password on the server (./.vt by default)\n",
        w.url.as_deref().unwrap_or(&w.path)
    )
}

fn list_table(items: &[Workspace]) -> String {
    let mut t = Table::new(&["ID", "NAME", "STATUS", "CPUS", "MEMORY", "DISK", "NODE", "PORTS", "LAST ACCESSED"]);
    for w in items {
        t.row(vec![
            w.id.to_string(),
            w.name.clone(),
            w.status.as_str().to_owned(),
            w.cpus.to_string(),
            format!("{} MiB", w.memory_mib),
            format!("{} GiB", w.disk_gib),
            w.node.clone(),
            port_numbers(&w.ports),
            w.last_accessed_at.as_ref().map_or_else(|| "never".to_owned(), time),
        ]);
    }
    let mut out = t.render();
    for w in items.iter().filter(|w| w.status == WorkspaceStatus::Failed) {
        out.push_str(&format!("workspace `{}` failed: {}\n", w.name, w.reason.as_deref().unwrap_or("-")));
    }
    out
}

/// `3000,5173`, or `-`.
fn port_numbers(ports: &[WorkspacePort]) -> String {
    if ports.is_empty() {
        return "-".into();
    }
    ports.iter().map(|p| p.port.to_string()).collect::<Vec<_>>().join(",")
}

fn ports_table(ports: &[WorkspacePort]) -> String {
    if ports.is_empty() {
        return "no ports registered\n".into();
    }
    let mut t = Table::new(&["PORT", "PATH"]);
    for p in ports {
        t.row(vec![p.port.to_string(), p.path.clone()]);
    }
    t.render()
}

/// `text` with each line indented by two spaces.
fn indented(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn details(w: &Workspace) -> String {
    let mut s = fields(&[
        ("workspace", w.id.to_string()),
        ("name", w.name.clone()),
        ("org", w.org_id.to_string()),
        ("status", w.status.as_str().to_owned()),
        ("desired", w.desired.as_str().to_owned()),
        ("reason", opt(&w.reason)),
        ("cpus", w.cpus.to_string()),
        ("memory", format!("{} MiB", w.memory_mib)),
        ("disk", format!("{} GiB", w.disk_gib)),
        ("image", w.image_ref.clone()),
        ("image digest", w.image_digest.clone()),
        ("node", w.node.clone()),
        ("instance", opt(&w.instance_id)),
        ("address", opt(&w.address)),
        ("path", w.path.clone()),
        ("url", opt(&w.url)),
        ("created", time(&w.created_at)),
        ("last started", w.last_started_at.as_ref().map_or_else(|| "never".to_owned(), time)),
        ("last accessed", w.last_accessed_at.as_ref().map_or_else(|| "never".to_owned(), time)),
    ]);
    if w.ports.is_empty() {
        s.push_str("ports: none\n");
    } else {
        s.push_str("ports:\n");
        s.push_str(&indented(&ports_table(&w.ports)));
    }
    if w.activity.is_empty() {
        s.push_str("activity: none\n");
    } else {
        let mut t = Table::new(&["TIME", "EVENT", "DETAIL"]);
        for a in &w.activity {
            t.row(vec![time(&a.at), a.event.clone(), a.detail.clone()]);
        }
        s.push_str("activity:\n");
        s.push_str(&indented(&t.render()));
    }
    if !w.last_log_lines.is_empty() {
        s.push_str("last log lines:\n");
        s.push_str(&indented(&w.last_log_lines.join("\n")));
    }
    s
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use clap::Parser;
    use vt_api::{WorkspaceActivity, WorkspaceDesired};

    use super::*;
    use crate::args::{Cli, Command};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn workspace() -> Workspace {
        Workspace {
            id: "ws_01jd8x6k3v9q4m2t7r5w0y1zcb".parse().unwrap(),
            name: "dev".into(),
            org_id: "org_01jd8x6k3v9q4m2t7r5w0y1zcc".parse().unwrap(),
            desired: WorkspaceDesired::Running,
            status: WorkspaceStatus::Running,
            reason: None,
            last_log_lines: vec![],
            cpus: 2,
            memory_mib: 4096,
            disk_gib: 10,
            image_ref: "acme/ide@sha256:aaaa".into(),
            image_digest: "sha256:bbbb".into(),
            node_id: "node_01jd8x6k3v9q4m2t7r5w0y1zcd".parse().unwrap(),
            node: "node-1".into(),
            instance_id: Some("inst_01jd8x6k3v9q4m2t7r5w0y1zce".parse().unwrap()),
            address: Some("10.0.0.2".into()),
            path: Workspace::path_of("dev"),
            url: Some("http://127.0.0.1:7412/workspace/dev/".into()),
            ports: vec![WorkspacePort { port: 3000, path: "/workspace/dev/port/3000/".into() }],
            created_at: at("2025-01-02T03:04:05Z"),
            last_started_at: Some(at("2025-01-02T03:04:06Z")),
            last_accessed_at: None,
            activity: vec![
                WorkspaceActivity {
                    at: at("2025-01-02T03:04:05Z"),
                    event: "workspace.created".into(),
                    detail: "created by admin".into(),
                },
                WorkspaceActivity {
                    at: at("2025-01-02T03:04:40Z"),
                    event: "workspace.running".into(),
                    detail: "its IDE is up".into(),
                },
            ],
        }
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from([&["vt"], args].concat()).map(|c| c.command)
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused_before_any_request() {
        for bad in ["0", "65536", "http"] {
            let e = parse(&["workspace", "port", "add", "dev", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}: {e}");
            assert!(parse(&["workspace", "port", "remove", "dev", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["workspace", "port", "add", "dev", "-1"]).is_err());
        for good in ["1", "3000", "65535"] {
            assert!(parse(&["workspace", "port", "add", "dev", good]).is_ok(), "{good}");
        }
    }

    #[test]
    fn create_checks_names_and_bounds_locally() {
        let Command::Workspace(WorkspaceCommand::Create(a)) =
            parse(&["workspace", "create", "dev", "--cpus", "4", "--memory-mib", "8192", "--wait"]).unwrap()
        else {
            panic!("not a workspace create")
        };
        assert_eq!(
            (a.cpus, a.memory_mib, a.disk_gib, a.wait.wait, a.wait.timeout),
            (Some(4), Some(8192), None, true, 300)
        );
        for bad in [
            &["--cpus", "0"][..],
            &["--cpus", "65"],
            &["--memory-mib", "255"],
            &["--memory-mib", "262145"],
            &["--disk-gib", "0"],
            &["--disk-gib", "4097"],
        ] {
            assert!(parse(&[&["workspace", "create", "dev"][..], bad].concat()).is_err(), "{bad:?}");
        }
        assert!(parse(&["workspace", "create", "Not_A_Name"]).is_err());
        assert!(parse(&["workspace", "create"]).is_err());
    }

    #[test]
    fn get_shows_fields_ports_and_activity_in_utc() {
        assert_eq!(
            details(&workspace()),
            "\
workspace      ws_01jd8x6k3v9q4m2t7r5w0y1zcb
name           dev
org            org_01jd8x6k3v9q4m2t7r5w0y1zcc
status         running
desired        running
reason         -
cpus           2
memory         4096 MiB
disk           10 GiB
image          acme/ide@sha256:aaaa
image digest   sha256:bbbb
node           node-1
instance       inst_01jd8x6k3v9q4m2t7r5w0y1zce
address        10.0.0.2
path           /workspace/dev/
url            http://127.0.0.1:7412/workspace/dev/
created        2025-01-02T03:04:05Z
last started   2025-01-02T03:04:06Z
last accessed  never
ports:
  PORT  PATH
  3000  /workspace/dev/port/3000/
activity:
  TIME                  EVENT              DETAIL
  2025-01-02T03:04:05Z  workspace.created  created by admin
  2025-01-02T03:04:40Z  workspace.running  its IDE is up
"
        );
    }

    #[test]
    fn a_failed_workspace_shows_why_in_get_and_list() {
        let mut w = workspace();
        w.status = WorkspaceStatus::Failed;
        w.reason = Some("its IDE exited with code 1".into());
        w.last_log_lines = vec!["boom".into(), "bye".into()];
        w.ports = vec![];
        w.activity = vec![];
        let get = details(&w);
        assert!(get.contains("reason         its IDE exited with code 1\n"), "{get}");
        assert!(get.ends_with("ports: none\nactivity: none\nlast log lines:\n  boom\n  bye\n"), "{get}");
        assert_eq!(
            list_table(&[w]),
            "\
ID                             NAME  STATUS  CPUS  MEMORY    DISK    NODE    PORTS  LAST ACCESSED
ws_01jd8x6k3v9q4m2t7r5w0y1zcb  dev   failed  2     4096 MiB  10 GiB  node-1  -      never
workspace `dev` failed: its IDE exited with code 1
"
        );
    }

    #[test]
    fn receipts_say_what_happened_and_what_to_run_next() {
        let mut w = workspace();
        w.status = WorkspaceStatus::Creating;
        assert_eq!(
            created(&w, "acme", false).render(),
            "\
Created workspace `dev` in org `acme` (2 vCPUs, 4096 MiB, 10 GiB home disk) on node node-1; it is creating
  workspace  ws_01jd8x6k3v9q4m2t7r5w0y1zcb
  org        org_01jd8x6k3v9q4m2t7r5w0y1zcc
next: vt workspace get dev
next: vt workspace open dev
"
        );
        w.status = WorkspaceStatus::Stopped;
        assert_eq!(
            stopped(&w).render(),
            "\
Stopped workspace `dev`; its home disk stays on node node-1
  workspace  ws_01jd8x6k3v9q4m2t7r5w0y1zcb
next: vt workspace start dev
"
        );
        w.status = WorkspaceStatus::Suspended;
        assert_eq!(
            stopped(&w).render(),
            "\
Suspended workspace `dev`: its VM is saved to a snapshot on node node-1, its home disk stays there
  workspace  ws_01jd8x6k3v9q4m2t7r5w0y1zcb
next: vt workspace start dev
"
        );
        w.status = WorkspaceStatus::Deleting;
        assert_eq!(
            deleted(&w, "").render(),
            "\
Deleting workspace `dev`: its VM stops, then node node-1 removes its 10 GiB home disk
  workspace  ws_01jd8x6k3v9q4m2t7r5w0y1zcb
next: vt workspace list
"
        );
        let ports = List { items: workspace().ports };
        assert_eq!(
            port_added("dev", 3000, &ports).render(),
            "\
Registered port 3000 of workspace `dev` at /workspace/dev/port/3000/
PORT  PATH
3000  /workspace/dev/port/3000/
next: vt workspace open dev
"
        );
        assert_eq!(
            port_removed("dev", 3000, &List { items: vec![] }).render(),
            "Removed port 3000 of workspace `dev`\nno ports registered\nnext: vt workspace port list dev\n"
        );
    }

    #[test]
    fn open_prints_the_url_or_else_the_path_and_the_console_user() {
        let mut w = workspace();
        assert!(open(&w).starts_with("http://127.0.0.1:7412/workspace/dev/\nsign in as user `vt` "), "{}", open(&w));
        w.url = None;
        assert!(open(&w).starts_with("/workspace/dev/\n"));
        assert!(open(&w).contains("<data-dir>/console-password"));
    }
}
