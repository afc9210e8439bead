//! `vt server`: start the platform (`vt-server` assembles it); `vt server
//! rebuild-views`: the offline repair.
//!
//! Logs go to stderr, as text on a terminal and JSON lines otherwise
//! (`--log-format`), at the level `RUST_LOG` sets (default `info`: a server at
//! rest writes nothing); the few lines meant for people (token location,
//! address, ready, shutting down) are plain text on stderr in either format.
//!
//! The first SIGTERM or Ctrl-C stops the server in order (`vt_server::Server::run`:
//! drain, then stop the VMs); a second one exits at once, leaving the VMs running for
//! the next `vt server` to adopt, and says so.

use vt_server::{Notice, Server, ServerConfig};

use crate::args::{
    Ipv6EgressArg, LogFormat, NetworkArgs, ServerArgs, ServerCommand, ServerRole, SqliteSync, StoreArgs,
};
use crate::printer::{fields, Printer, Receipt};
use crate::{CliError, CliResult, ExitStatus};

fn config(store: &StoreArgs, listen: std::net::SocketAddr) -> ServerConfig {
    let mut config = ServerConfig::new(store.data_dir.clone(), listen);
    config.database_url = store.database_url.clone().filter(|u| !u.is_empty());
    config.sqlite = vt_server::SqliteOptions { full_sync: store.sqlite_sync == SqliteSync::Full };
    config.master_key_file = store.master_key_file.clone();
    config
}

/// Whether log lines are text: asked for, or `auto` with stderr on a terminal.
fn text_logs(format: LogFormat, stderr_is_terminal: bool) -> bool {
    match format {
        LogFormat::Text => true,
        LogFormat::Json => false,
        LogFormat::Auto => stderr_is_terminal,
    }
}

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if text_logs(format, std::io::stderr().is_terminal()) {
        // `2025-01-02T03:04:05.678901Z  WARN heartbeat failed error=...`
        logs.with_target(false).try_init()
    } else {
        logs.json().try_init()
    };
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::failed(e.to_string(), None)
}

/// The guest network from the flags: the cluster's (control plane) and this node's (agent).
fn network(args: &NetworkArgs) -> Result<(vt_server::NetworkSettings, vt_server::NodeNetwork), CliError> {
    let cluster = vt_server::NetworkSettings::new(args.guest_ipv4_block, args.guest_mtu)
        .map_err(|e| CliError::usage(format!("--guest-ipv4-block: {e}"), None))?;
    let egress = if args.no_egress {
        vt_firewall::Egress::Off
    } else {
        let ipv6 = match args.egress_ipv6 {
            Ipv6EgressArg::Nat => vt_firewall::Ipv6Egress::Nat,
            Ipv6EgressArg::Routed => vt_firewall::Ipv6Egress::Routed,
        };
        vt_firewall::Egress::On { ipv6 }
    };
    let node = vt_server::NodeNetwork {
        table: args.nft_table.clone(),
        egress,
        allow: args.egress_allow.clone(),
        deny: args.egress_deny.clone(),
        ..Default::default()
    };
    Ok((cluster, node))
}

/// The API listener's limits from the flags.
fn limits(args: &ServerArgs) -> vt_server::ConnectionLimits {
    vt_server::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout),
        body_read_timeout: std::time::Duration::from_secs(args.body_read_timeout),
        max_connections_per_client: args.max_connections_per_client as usize,
    }
}

pub async fn run(p: &Printer, args: ServerArgs) -> CliResult {
    match args.command {
        Some(ServerCommand::RebuildViews(r)) => return rebuild(p, &r.store).await,
        Some(ServerCommand::RotateMasterKey(r)) => return rotate(p, &r.store).await,
        None => {}
    }
    init_logs(args.log_format);
    let mut config = config(&args.store, args.listen);
    let has = |r| args.role.contains(&r);
    config.tcp_ports = args.ingress_tcp_ports.clone();
    config.ingress = (has(ServerRole::Edge) && !args.no_ingress).then(|| args.ingress_listen.clone());
    config.agent =
        (has(ServerRole::Agent) && !args.no_agent).then(|| args.node_name.clone().unwrap_or_else(vt_server::host_name));
    // A joined node meshes unless told not to; a single host only when asked.
    let mesh = if !args.join.is_empty() { !args.no_mesh } else { args.mesh };
    config.mesh = mesh.then(|| vt_server::MeshSettings {
        port: args.wireguard_port,
        address: args.node_address,
        interface: args.mesh_interface.clone(),
    });
    if has(ServerRole::ControlPlane) && !args.join.is_empty() {
        return Err(CliError::usage(
            "--join is for a node without the control plane, which joins a remote one",
            Some("add `--role agent` (or `agent,edge`, or `edge` for an edge-only node)".into()),
        ));
    }
    config.limits = limits(&args);
    let tls = |cert: &Option<std::path::PathBuf>, key: &Option<std::path::PathBuf>| match (cert, key) {
        (Some(cert), Some(key)) => Some(vt_server::TlsFiles { cert: cert.clone(), key: key.clone() }),
        _ => None,
    };
    config.tls = tls(&args.tls_cert, &args.tls_key);
    config.workspace = (!args.no_workspace_origin).then(|| vt_server::WorkspaceOrigin {
        listen: args.workspace_listen,
        tls: tls(&args.workspace_tls_cert, &args.workspace_tls_key),
    });
    config.workspace_template = args.workspace_template.clone();
    if args.workspace_access_every == 0 {
        return Err(CliError::usage(
            "--workspace-access-every must be longer than 0s",
            Some("e.g. --workspace-access-every 60s".into()),
        ));
    }
    config.workspace_access_every = std::time::Duration::from_secs(args.workspace_access_every);
    let (network, node_network) = network(&args.network)?;
    config.network = network;
    config.node_network = node_network;
    config.check().map_err(|e| CliError::usage(e.to_string(), None))?;
    config.disk_reserve = args.disk_reserve;
    config.registry_quota = args.registry_quota_gib.map(|g| g << 30);
    config.registry_dir = args.registry_dir.clone();
    config.backup = match (&args.backup_repo, &args.backup_password_file) {
        (Some(repo), Some(password_file)) => {
            if !password_file.is_file() {
                return Err(CliError::usage(
                    format!("--backup-password-file {}: no such file", password_file.display()),
                    None,
                ));
            }
            Some(vt_backup::Target {
                repo: repo.clone(),
                password_file: password_file.clone(),
                keep: args.backup_keep.clone().map(|k| k.0).unwrap_or_default(),
            })
        }
        _ => None,
    };
    if args.backup_every == Some(0) {
        return Err(CliError::usage("--backup-every must be longer than 0s", Some("e.g. --backup-every 6h".into())));
    }
    config.backup_every = args.backup_every.map(std::time::Duration::from_secs);
    if args.heartbeat_timeout < 10 {
        return Err(CliError::usage(
            "--heartbeat-timeout must be at least 10s: agents beat every 5 s, and a node that misses one is not gone",
            Some("e.g. --heartbeat-timeout 30s".into()),
        ));
    }
    config.heartbeat_timeout = std::time::Duration::from_secs(args.heartbeat_timeout);
    config.drain_timeout = std::time::Duration::from_secs(args.drain_timeout);
    config.vm_stop_timeout = std::time::Duration::from_secs(args.vm_stop_timeout);
    if !has(ServerRole::ControlPlane) {
        return run_joined(p, &args, config).await;
    }
    // Listening before anything starts: a signal during start-up is not lost.
    let signals = Signals::new()?;
    let server = Server::start(&config).await.map_err(failed)?;
    let addr = server.local_addr()?;
    let (scheme, workspace_scheme) = server.schemes();
    notices(p, &server.notices);
    p.notice(&format!("listening on {addr}"));
    if let Some(workspaces) = server.workspace_addr() {
        p.notice(&format!("workspaces on {workspace_scheme}://{workspaces}/workspace/NAME/ (user `vt`)"));
    }
    p.notice(&format!("vt server ready on {scheme}://{addr}"));
    let drain = format!("no new connections; requests in flight get up to {}", secs(config.drain_timeout));
    let shutdown = shutdown(p, signals, server.handle(), &config, drain);
    let stopped = server.run(shutdown).await.map_err(failed)?;
    vms_stopped(p, &stopped);
    p.notice("vt server stopped");
    Ok(ExitStatus::Success)
}

/// `vt server --role agent[,edge] --join URL`: the node agent (and the edge), following a remote
/// control plane with the node's own token; `--role edge --join URL`: an edge-only node, which
/// runs no instances (docs/nodes.md).
async fn run_joined(p: &Printer, args: &ServerArgs, config: ServerConfig) -> CliResult {
    let Some((url, fallbacks)) = args.join.split_first() else {
        return Err(CliError::usage(
            "a server without the control plane joins one: pass --join URL",
            Some(
                "and, the first time, --enroll-token TOKEN (an admin makes one with `vt node enroll-token create`)"
                    .into(),
            ),
        ));
    };
    for u in &args.join {
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.contains(char::is_whitespace) {
            return Err(CliError::usage(
                format!("--join `{u}`: not a control plane URL"),
                Some("give the API URL the control plane printed, e.g. `https://cp.example:7411` (several: comma-separated)".into()),
            ));
        }
    }
    let join = vt_server::join::Join {
        url: url.clone(),
        fallbacks: fallbacks.to_vec(),
        enroll_token: args.enroll_token.clone(),
    };
    if config.agent.is_none() {
        if config.ingress.is_none() {
            return Err(CliError::usage(
                "nothing to run: a joined node runs the agent, the edge or both",
                Some(
                    "use `--role agent`, `--role agent,edge` or `--role edge` (without --no-agent or --no-ingress)"
                        .into(),
                ),
            ));
        }
        return run_edge_only(p, args, config, join).await;
    }
    let signals = Signals::new()?;
    let node = vt_server::join::NodeServer::start(&config, &join).await.map_err(failed)?;
    notices(p, &node.notices);
    p.notice(&format!("vt node `{}` ready, following {}", node.name, args.join.join(", ")));
    let shutdown = shutdown(p, signals, node.handle(), &config, "stopping the node".into());
    let stopped = node.run(shutdown).await.map_err(failed)?;
    vms_stopped(p, &stopped);
    p.notice("vt node stopped");
    Ok(ExitStatus::Success)
}

/// `vt server --role edge --join URL`: the ingress and its follower, on a node in the mesh that
/// runs no instances (docs/nodes.md, "Edges").
async fn run_edge_only(p: &Printer, args: &ServerArgs, config: ServerConfig, join: vt_server::join::Join) -> CliResult {
    let name = args.node_name.clone().unwrap_or_else(vt_server::host_name);
    let mut signals = Signals::new()?;
    let node = vt_server::edge_node::EdgeNode::start(&config, &join, name).await.map_err(failed)?;
    notices(p, &node.notices);
    p.notice(&format!(
        "vt node `{}` ready (edge-only: it runs no instances), following {}",
        node.name,
        args.join.join(", ")
    ));
    node.run(async move {
        let first = signals.next().await;
        tracing::info!(signal = first, "stopping the edge-only node");
    })
    .await
    .map_err(failed)?;
    p.notice("vt node stopped");
    Ok(ExitStatus::Success)
}

/// What a server does at its first signal: says what the stop does (`first` and then the VMs
/// stopping), and exits at once at a second one, leaving the VMs to the next `vt server`.
fn shutdown(
    p: &Printer,
    mut signals: Signals,
    handle: vt_server::ServerHandle,
    config: &ServerConfig,
    first: String,
) -> impl std::future::Future<Output = ()> {
    let (printer, data_dir, vm_stop) = (*p, config.data_dir.clone(), config.vm_stop_timeout);
    async move {
        let signal = signals.next().await;
        printer.notice(&format!(
            "{signal}: shutting down: {first}, then {}; {signal} again exits at once and leaves the VMs running for the next `vt server` to adopt",
            match handle.running_vms() {
                0 => "no VM to stop".to_owned(),
                n => format!("{n} VM(s) stop (up to {})", secs(vm_stop)),
            },
        ));
        tokio::spawn(async move {
            let second = signals.next().await;
            leave_vms_and_exit(&printer, second, handle.running_vms(), &data_dir);
        });
    }
}

/// How many VMs the stop stopped, and how long it took.
fn vms_stopped(p: &Printer, stopped: &vt_server::Stopped) {
    if stopped.vms > 0 {
        let killed = match stopped.vms_killed {
            0 => String::new(),
            n => format!(", {n} of them killed at the timeout"),
        };
        p.notice(&format!(
            "stopped {} VM(s) in {:.1} s{killed}; the next `vt server` boots them again",
            stopped.vms,
            (stopped.vms_stopped_in - stopped.drained_in).as_secs_f64()
        ));
    }
}

fn secs(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs())
}

/// The second signal: exit now, without running the destructors that would kill the VMs
/// (their VMM processes are the agent's children, killed when dropped). They keep running,
/// and the next `vt server` on this data directory adopts them (docs/agent.md).
#[allow(clippy::exit)] // Exiting without unwinding is the point: nothing may kill the VMs on the way out.
fn leave_vms_and_exit(p: &Printer, signal: &str, vms: usize, data_dir: &std::path::Path) -> ! {
    p.notice(&match vms {
        0 => format!("{signal} again: exiting now"),
        n => format!(
            "{signal} again: exiting now; {n} VM(s) left running: the next `vt server --data-dir {}` adopts them",
            data_dir.display()
        ),
    });
    std::process::exit(ExitStatus::Interrupted.code())
}

/// SIGTERM and SIGINT (Ctrl-C), listened to for the whole life of the server, so a
/// second one is never missed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> CliResult<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| signal(kind).map_err(|e| CliError::failed(format!("cannot listen for signals: {e}"), None));
        Ok(Signals { term: listen(SignalKind::terminate())?, int: listen(SignalKind::interrupt())? })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "Ctrl-C",
        }
    }
}

fn notices(p: &Printer, notices: &[Notice]) {
    for notice in notices {
        match notice {
            Notice::Info(text) => p.notice(text),
            Notice::Warning(text) => p.warning(text),
        }
    }
}

async fn rotate(p: &Printer, store: &StoreArgs) -> CliResult {
    let config = config(store, ([127, 0, 0, 1], 0).into());
    let r = vt_server::rotate_master_key(&config).await.map_err(failed)?;
    notices(p, &r.notices);
    let value = serde_json::json!({
        "path": r.path, "old_master_key": r.old, "new_master_key": r.new, "env_keys_rewrapped": r.env_keys,
    });
    p.receipt(
        &value,
        Receipt {
            what: format!("Rotated the master key: {} env key(s) re-wrapped, no secret value touched", r.env_keys),
            ids: vec![("old", r.old.clone()), ("new", r.new.clone()), ("file", r.path.display().to_string())],
            details: None,
            next: vec![
                format!("back up {} (the old key no longer opens anything)", r.path.display()),
                "vt server".to_owned(),
            ],
        },
    );
    Ok(ExitStatus::Success)
}

async fn rebuild(p: &Printer, store: &StoreArgs) -> CliResult {
    let config = config(store, ([127, 0, 0, 1], 0).into());
    let report = vt_server::rebuild_views(&config).await.map_err(failed)?;
    p.show(&report, || {
        let mut s = fields(&[
            ("events", report.events.to_string()),
            ("rows", report.rows.to_string()),
            ("differing rows", report.differing_rows.len().to_string()),
        ]);
        for r in &report.differing_rows {
            s.push_str(&format!("  {r}\n"));
        }
        s
    });
    if report.differing_rows.is_empty() {
        Ok(ExitStatus::Success)
    } else {
        p.warning("rebuilt views differ from the live ones: the rows above were repaired");
        Ok(ExitStatus::Failure)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::{Cli, Command};

    fn server_args(flags: &[&str]) -> crate::args::ServerArgs {
        let cli = Cli::try_parse_from([&["vt", "server"], flags].concat()).unwrap();
        match cli.command {
            Command::Server(args) => *args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_network_flags_are_refused_naming_the_flag() {
        let e = Cli::try_parse_from(["vt", "server", "--egress-deny", "10.0.0.1/8"]).unwrap_err().to_string();
        assert!(e.contains("--egress-deny") && e.contains("did you mean `10.0.0.0/8`"), "{e}");
        let e = Cli::try_parse_from(["vt", "server", "--guest-ipv4-block", "fd00::/8"]).unwrap_err().to_string();
        assert!(e.contains("--guest-ipv4-block") && e.contains("is IPv6"), "{e}");
        let args = server_args(&["--egress-allow", "10.1.0.0/16", "--egress-deny", "192.168.0.0/16,10.0.0.0/8"]);
        let (cluster, node) = super::network(&args.network).unwrap();
        let mut config = vt_server::ServerConfig::new("/nonexistent".into(), "127.0.0.1:0".parse().unwrap());
        (config.network, config.node_network) = (cluster, node);
        assert_eq!(
            config.check().unwrap_err().to_string(),
            "`--egress-allow 10.1.0.0/16` overlaps `--egress-deny 10.0.0.0/8`: a prefix is one or the other, never both"
        );
        let args = server_args(&["--egress-allow", "100.64.9.0/24"]);
        (config.network, config.node_network) = super::network(&args.network).unwrap();
        let e = config.check().unwrap_err().to_string();
        assert!(e.contains("--guest-ipv4-block 100.64.0.0/10"), "{e}");
    }

    #[test]
    fn the_flags_default_to_the_servers_limits_and_change_them() {
        assert_eq!(super::limits(&server_args(&[])), vt_server::ConnectionLimits::default());
        let set = super::limits(&server_args(&[
            "--header-read-timeout",
            "5s",
            "--body-read-timeout",
            "2m",
            "--max-connections-per-client",
            "16",
        ]));
        assert_eq!(
            (set.header_read_timeout.as_secs(), set.body_read_timeout.as_secs(), set.max_connections_per_client),
            (5, 120, 16)
        );
        for bad in [["--max-connections-per-client", "0"], ["--header-read-timeout", "0s"]] {
            assert!(Cli::try_parse_from([&["vt", "server"], bad.as_slice()].concat()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn logs_are_text_on_a_terminal_and_json_otherwise_unless_asked() {
        use crate::args::LogFormat::*;
        assert_eq!(server_args(&[]).log_format, Auto);
        assert!(super::text_logs(Auto, true));
        assert!(!super::text_logs(Auto, false));
        assert!(super::text_logs(Text, false));
        assert!(!super::text_logs(Json, true));
        assert_eq!(server_args(&["--log-format", "json"]).log_format, Json);
        assert!(Cli::try_parse_from(["vt", "server", "--log-format", "xml"]).is_err());
    }
}
