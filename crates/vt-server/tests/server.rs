//! `vt server` assembled, without microVMs: the data directory, the tokens it
//! makes for itself, the background tasks it publishes.

use std::net::SocketAddr;

use vt_api::{Hostname, TaskState};
use vt_control_plane::auth::{self, AuthError};
use vt_control_plane::authz::Caller;
use vt_server::{tokens, Server, ServerConfig};

fn config(dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir.join("data"), SocketAddr::from(([127, 0, 0, 1], 0)));
    c.sqlite = vt_store::SqliteOptions { full_sync: false };
    c
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_first_start_writes_a_private_admin_token_and_the_second_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&config(dir.path())).await.unwrap();
    let written = server.admin_token_written.clone().expect("the first start writes the admin token");
    assert_eq!(written, server.data.admin_token());
    let secret = std::fs::read_to_string(&written).unwrap().trim().to_owned();
    let caller = auth::authenticate(server.control_plane.store.as_ref(), &secret, chrono::Utc::now()).await.unwrap();
    assert!(matches!(caller, Ok(Caller::Admin { .. })));
    #[cfg(unix)]
    {
        assert_eq!(mode(&written), 0o600);
        assert_eq!(mode(server.data.root()), 0o700);
    }
    assert!(server.data.sqlite().exists() && server.data.registry().is_dir());
    server.control_plane.shutdown();
    drop(server);
    let again = Server::start(&config(dir.path())).await.unwrap();
    assert_eq!(again.admin_token_written, None);
    assert_eq!(std::fs::read_to_string(again.data.admin_token()).unwrap().trim(), secret);
}

#[tokio::test]
async fn the_local_agent_gets_a_token_bound_to_its_node_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&config(dir.path())).await.unwrap();
    let cp = server.control_plane.clone();
    let store = cp.store.as_ref();
    let now = chrono::Utc::now;
    let host1 = Hostname::parse("host-1").unwrap();
    let first = tokens::local_node_token(&cp, &server.data, &host1).await.unwrap();
    assert!(matches!(auth::authenticate(store, &first, now()).await.unwrap(), Ok(Caller::Node { .. })));
    assert_eq!(std::fs::read_to_string(server.data.node_token()).unwrap().trim(), first);
    #[cfg(unix)]
    assert_eq!(mode(&server.data.node_token()), 0o600);
    // The next start reuses it.
    assert_eq!(tokens::local_node_token(&cp, &server.data, &host1).await.unwrap(), first);
    // Renamed: a new token for the new name, and the old one is revoked.
    let host2 = Hostname::parse("host-2").unwrap();
    let second = tokens::local_node_token(&cp, &server.data, &host2).await.unwrap();
    assert_ne!(second, first);
    assert!(matches!(auth::authenticate(store, &first, now()).await.unwrap(), Err(AuthError::Revoked { .. })));
    // A file holding garbage (or an admin token) is replaced, never used.
    std::fs::write(server.data.node_token(), "vt_not-a-token\n").unwrap();
    let third = tokens::local_node_token(&cp, &server.data, &host2).await.unwrap();
    assert!(matches!(auth::authenticate(store, &third, now()).await.unwrap(), Ok(Caller::Node { .. })));
    let admin = std::fs::read_to_string(server.data.admin_token()).unwrap();
    std::fs::write(server.data.node_token(), &admin).unwrap();
    let fourth = tokens::local_node_token(&cp, &server.data, &host2).await.unwrap();
    assert_ne!(fourth.trim(), admin.trim());
    cp.shutdown();
}

#[tokio::test]
async fn every_background_task_publishes_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&config(dir.path())).await.unwrap();
    let tasks = server.control_plane.tasks.list();
    let states: Vec<(&str, TaskState)> = tasks.iter().map(|t| (t.name.as_str(), t.state)).collect();
    assert_eq!(
        states,
        [
            ("projector", TaskState::Running),
            ("scheduler", TaskState::Running),
            ("edge", TaskState::Off),
            ("agent", TaskState::Off)
        ]
    );
    let agent = &tasks[3];
    assert_eq!(agent.last_error.as_deref(), Some("switched off (`--no-agent`)"));
    assert!(tasks.iter().all(|t| !t.description.is_empty()));
    server.control_plane.shutdown();
}

/// The hole this closes: the in-process agent's token could register any node
/// (it became `ready` with a /64 and capacity) and list every org.
#[tokio::test]
async fn the_local_node_token_cannot_register_another_node_nor_see_orgs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&config(dir.path())).await.unwrap();
    let cp = server.control_plane.clone();
    let data = server.data.clone();
    let base = format!("http://{}", server.local_addr().unwrap());
    let admin = std::fs::read_to_string(data.admin_token()).unwrap().trim().to_owned();
    let node = tokens::local_node_token(&cp, &data, &Hostname::parse("host-1").unwrap()).await.unwrap();
    tokio::spawn(server.run(std::future::pending()));
    let as_admin = vt_client::Client::new(&base, Some(admin));
    let as_node = vt_client::Client::new(&base, Some(node)).with_retries(1, std::time::Duration::ZERO);
    let name = |s: &str| vt_api::Name::parse(s).unwrap();
    as_admin.org_create(&vt_api::CreateOrg { name: name("acme") }, "k1").await.unwrap();

    let register = |n: &str| vt_api::RegisterNode {
        name: Hostname::parse(n).unwrap(),
        capacity: vt_api::Capacity { cpu_millis: 2000, memory_mib: 2048 },
        allocatable: None,
        labels: Default::default(),
        address: None,
    };
    let err = as_node.node_register(&register("evil"), "k2").await.unwrap_err();
    assert_eq!(err.api().map(|e| e.code), Some(vt_api::ErrorCode::Forbidden), "{err}");
    assert!(as_admin.node_list().await.unwrap().items.is_empty(), "no node was registered");
    assert!(as_node.org_list().await.unwrap().items.is_empty(), "a node sees no org");
    let err = as_node.org_get("acme").await.unwrap_err();
    assert_eq!(err.api().map(|e| e.code), Some(vt_api::ErrorCode::NotFound));
    // Its own node it registers, and only as itself.
    let me = as_node.node_register(&register("host-1"), "k3").await.unwrap().value;
    assert_eq!(me.name, "host-1");
    let err = as_node.node_heartbeat("evil", &vt_api::Heartbeat::default(), "k4").await.unwrap_err();
    assert_eq!(err.api().map(|e| e.code), Some(vt_api::ErrorCode::NotFound), "{err}");
    cp.shutdown();
}
