//! `vt server`: run the control plane; `vt server rebuild-views`: offline repair.
//!
//! Logs are JSON lines on stderr (level from `RUST_LOG`, default `info`);
//! the few lines meant for people (token location, address, ready) are plain
//! text on stderr too.

use vt_control_plane::server::{open_store, Server, ServerConfig};

use crate::args::{ServerArgs, ServerCommand, SqliteSync, StoreArgs};
use crate::printer::{fields, Printer};
use crate::{CliError, CliResult, ExitStatus};

fn config(store: &StoreArgs, listen: std::net::SocketAddr) -> ServerConfig {
    ServerConfig {
        data_dir: store.data_dir.clone(),
        listen,
        database_url: store.database_url.clone().filter(|u| !u.is_empty()),
        sqlite: vt_store::SqliteOptions { full_sync: store.sqlite_sync == SqliteSync::Full },
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::failed(e.to_string(), None)
}

pub async fn run(p: &Printer, args: ServerArgs) -> CliResult {
    if let Some(ServerCommand::RebuildViews(r)) = args.command {
        return rebuild(p, &r.store).await;
    }
    init_logs();
    let config = config(&args.store, args.listen);
    let server = Server::bind(&config).await.map_err(failed)?;
    let addr = server.local_addr()?;
    let cp = server.control_plane.clone();
    cp.ingress.set_tcp_ports(args.ingress_tcp_ports.clone());
    let ingress = if args.no_ingress { None } else { Some(start_ingress(&args, &config, &cp).await?) };
    match &server.admin_token_written {
        Some(path) => p.notice(&format!("wrote a new admin token to {}", path.display())),
        None => p.notice(&format!(
            "the admin token was written on first start (in {})",
            config.data_dir.join("admin-token").display()
        )),
    }
    let agent = if args.no_agent {
        None
    } else {
        let token =
            vt_control_plane::auth::local_node_token(cp.store.as_ref(), &config.data_dir).await.map_err(failed)?;
        start_agent(p, &args, &config, addr, token)
    };
    p.notice(&format!("listening on {addr}"));
    p.notice(&format!("vt server ready on http://{addr}"));
    server.run(shutdown_signal()).await.map_err(failed)?;
    if let Some((agent, task)) = agent {
        // Stop the supervisors and their VMs (the records stay: a restart boots them again).
        task.abort();
        agent.kill_vms().await;
    }
    if let Some(ingress) = ingress {
        ingress.close_listeners().await;
    }
    p.notice("vt server stopped");
    Ok(ExitStatus::Success)
}

/// The ingress and the edge that feeds it routes from this server's store. The
/// applied table is kept in `<data-dir>/ingress-table.json`, so routes are
/// served from the start, before the edge has caught up.
async fn start_ingress(
    args: &ServerArgs,
    config: &ServerConfig,
    cp: &std::sync::Arc<vt_control_plane::ControlPlane>,
) -> Result<vt_ingress::Ingress, CliError> {
    let ingress_config = vt_ingress::IngressConfig {
        bind_addrs: args.ingress_listen.clone(),
        state_path: Some(config.data_dir.join("ingress-table.json")),
        ..Default::default()
    };
    let ingress = vt_ingress::Ingress::start(ingress_config)
        .await
        .map_err(|e| CliError::failed(format!("cannot start the ingress: {e}"), None))?;
    let source = std::sync::Arc::new(vt_edge::StoreSource(cp.store.clone()));
    let edge = vt_edge::Edge::new(source, ingress.clone());
    let metrics = edge.clone();
    cp.ingress.set_metrics(move || metrics.metrics_text());
    tokio::spawn(edge.run(std::time::Duration::from_secs(2), std::future::pending()));
    Ok(ingress)
}

/// The node agent, in this process, with the node token in `<data-dir>/node-token`: it
/// registers this host as a node, boots the instances
/// placed on it and writes their logs under `<data-dir>/agent/`, where the control plane
/// reads them for `GET /v1/instances/{id}/logs`. Without a guest kernel it is not started.
fn start_agent(
    p: &Printer,
    args: &ServerArgs,
    config: &ServerConfig,
    addr: std::net::SocketAddr,
    token: String,
) -> Option<(std::sync::Arc<vt_agent::Agent>, tokio::task::JoinHandle<()>)> {
    let name = args.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into())
    });
    let cfg = vt_agent::AgentConfig::new(&format!("http://{addr}"), Some(token), &name, config.data_dir.clone());
    match vt_agent::Agent::new(cfg) {
        Ok(agent) => {
            p.notice(&format!("node agent running as node `{name}`"));
            Some((agent.clone(), tokio::spawn(agent.run())))
        }
        Err(e) => {
            p.warning(&format!("the node agent is not running ({e}); instances placed on this host will not start"));
            None
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}

async fn rebuild(p: &Printer, store: &StoreArgs) -> CliResult {
    let config = config(store, ([127, 0, 0, 1], 0).into());
    let store = open_store(&config).await.map_err(failed)?;
    let report = vt_control_plane::rebuild::rebuild_views(store).await.map_err(failed)?;
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
