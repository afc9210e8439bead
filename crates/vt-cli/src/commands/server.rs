//! `vt server`: start the platform (`vt-server` assembles it); `vt server
//! rebuild-views`: the offline repair.
//!
//! Logs are JSON lines on stderr (level from `RUST_LOG`, default `info`);
//! the few lines meant for people (token location, address, ready) are plain
//! text on stderr too.

use vt_api::Hostname;
use vt_server::{Notice, Server, ServerConfig};

use crate::args::{Ipv6EgressArg, NetworkArgs, ServerArgs, ServerCommand, SqliteSync, StoreArgs};
use crate::printer::{fields, Printer, Receipt};
use crate::{CliError, CliResult, ExitStatus};

fn config(store: &StoreArgs, listen: std::net::SocketAddr) -> ServerConfig {
    let mut config = ServerConfig::new(store.data_dir.clone(), listen);
    config.database_url = store.database_url.clone().filter(|u| !u.is_empty());
    config.sqlite = vt_server::SqliteOptions { full_sync: store.sqlite_sync == SqliteSync::Full };
    config.master_key_file = store.master_key_file.clone();
    config
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::failed(e.to_string(), None)
}

/// The name this host's node registers under: the host name, when it is one.
fn host_name() -> Hostname {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .and_then(|h| Hostname::parse(h.trim()).ok())
        .unwrap_or_else(|| Hostname::parse("local").unwrap_or_else(|e| unreachable!("`local` is a host name: {e}")))
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
    init_logs();
    let mut config = config(&args.store, args.listen);
    config.tcp_ports = args.ingress_tcp_ports.clone();
    config.ingress = (!args.no_ingress).then(|| args.ingress_listen.clone());
    config.agent = (!args.no_agent).then(|| args.node_name.clone().unwrap_or_else(host_name));
    config.limits = limits(&args);
    let (network, node_network) = network(&args.network)?;
    config.network = network;
    config.node_network = node_network;
    config.check().map_err(|e| CliError::usage(e.to_string(), None))?;
    let server = Server::start(&config).await.map_err(failed)?;
    let addr = server.local_addr()?;
    notices(p, &server.notices);
    p.notice(&format!("listening on {addr}"));
    p.notice(&format!("vt server ready on http://{addr}"));
    server.run(shutdown_signal()).await.map_err(failed)?;
    p.notice("vt server stopped");
    Ok(ExitStatus::Success)
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
}
