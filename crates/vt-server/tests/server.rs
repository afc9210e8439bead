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
            ("registry-gc", TaskState::Running),
            ("edge", TaskState::Off),
            ("agent", TaskState::Off)
        ]
    );
    let agent = &tasks[4];
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
        wireguard_public_key: None,
        wireguard_port: None,
        runs_instances: true,
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

/// An admin's context for calling the control plane directly.
fn admin() -> vt_control_plane::Ctx {
    vt_control_plane::Ctx::new(vt_ids::RequestId::new(), Caller::Admin { token: vt_ids::TokenId::new() })
}

/// Org `acme`, app `web`, env `prod`, and secret `DB` set to `value` (a new version).
async fn with_a_secret(server: &Server, value: &[u8]) -> Option<u64> {
    use base64::Engine as _;
    let cp = &server.control_plane;
    let ctx = admin();
    let name = |n: &str| vt_api::Name::parse(n).unwrap();
    if cp.lookup_org(&ctx, "acme").await.is_err() {
        cp.org_create(&ctx, vt_api::CreateOrg { name: name("acme") }).await.unwrap();
        cp.app_create(&ctx, "acme", vt_api::CreateApp { name: name("web"), description: None }).await.unwrap();
        cp.env_create(&ctx, "acme", "web", vt_api::CreateEnv { name: name("prod") }).await.unwrap();
    }
    let scope = cp.lookup_env_scope(&ctx, "acme", "web", "prod").await.unwrap();
    let set = [("DB".to_owned(), base64::engine::general_purpose::STANDARD.encode(value))].into();
    let req = vt_api::ChangeSecrets { set, unset: vec![], stage: false };
    let done = cp.secrets_change(&ctx, &scope, req).await.unwrap();
    serde_json::from_str::<vt_api::EnvSecrets>(&done.body).unwrap().new_version
}

fn start_error(e: Result<Server, vt_server::ServerError>) -> String {
    match e {
        Ok(_) => panic!("the server started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn the_master_key_is_made_once_checked_at_start_and_rotated_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let server = Server::start(&cfg).await.unwrap();
    let key_file = server.data.master_key();
    assert!(server
        .notices
        .iter()
        .any(|n| matches!(n, vt_server::Notice::Info(t) if t.contains("wrote a new master key"))));
    #[cfg(unix)]
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(with_a_secret(&server, b"first").await, Some(1));
    // One server per data directory.
    let err = start_error(Server::start(&cfg).await);
    assert!(err.contains("another vt server") && err.contains("stop it first"), "{err}");
    server.control_plane.shutdown();
    drop(server);
    let original = std::fs::read_to_string(&key_file).unwrap();

    // A wrong key, a missing key, a key named but absent: refused, saying what to do.
    let other = dir.path().join("other.key");
    vt_secrets::MasterKey::generate().unwrap().write_new(&other).unwrap();
    let mut wrong = cfg.clone();
    wrong.master_key_file = Some(other.clone());
    let err = start_error(Server::start(&wrong).await);
    assert!(
        err.contains("is not the one the store's secrets are wrapped by") && err.contains("--master-key-file"),
        "{err}"
    );
    std::fs::rename(&key_file, dir.path().join("aside.key")).unwrap();
    let err = start_error(Server::start(&cfg).await);
    assert!(err.contains("does not exist, and the store holds secrets wrapped by master key mk_"), "{err}");
    assert!(!key_file.exists(), "no new key is made over secrets wrapped by another");
    std::fs::rename(dir.path().join("aside.key"), &key_file).unwrap();
    let mut absent = cfg.clone();
    absent.master_key_file = Some(dir.path().join("nope.key"));
    assert!(start_error(Server::start(&absent).await).contains("does not exist"));

    // Rotation: a new key file, every env key re-wrapped, the values readable with the new key only.
    let rotation = vt_server::rotate_master_key(&cfg).await.unwrap();
    assert_eq!((rotation.env_keys, rotation.path.clone()), (1, key_file.clone()));
    assert_ne!(rotation.old, rotation.new);
    assert_ne!(std::fs::read_to_string(&key_file).unwrap(), original);
    #[cfg(unix)]
    assert_eq!(mode(&key_file), 0o600);
    let server = Server::start(&cfg).await.unwrap();
    // Setting the same value again opens the stored one (with the new key): nothing changes.
    assert_eq!(with_a_secret(&server, b"first").await, None, "the stored value still opens");
    assert_eq!(with_a_secret(&server, b"second").await, Some(2));
    server.control_plane.shutdown();
    drop(server);

    // An interrupted rotation: the store re-wrapped, the new key still aside. The next start finishes it.
    let (data, lock, store) = vt_server::open_store(&cfg).await.unwrap();
    let old = vt_secrets::MasterKey::read(&key_file).unwrap();
    let new = vt_secrets::MasterKey::generate().unwrap();
    let mut keys = store.secret_keys().await.unwrap();
    for k in &mut keys {
        let env_key = old.unwrap(&k.env_id, &vt_secrets::Sealed::from_text(&k.wrapped, "k").unwrap()).unwrap();
        k.wrapped = new.wrap(&k.env_id, &env_key).unwrap().to_text();
        k.master_key = new.fingerprint();
    }
    store.rewrap_secret_keys(keys).await.unwrap();
    new.write_new(&data.root().join("master.key.new")).unwrap();
    drop((lock, store));
    let server = Server::start(&cfg).await.unwrap();
    assert!(
        server.notices.iter().any(
            |n| matches!(n, vt_server::Notice::Warning(t) if t.contains("finished an interrupted master key rotation"))
        ),
        "{:?}",
        server.notices
    );
    assert_eq!(vt_secrets::MasterKey::read(&key_file).unwrap().fingerprint(), new.fingerprint());
    assert_eq!(with_a_secret(&server, b"second").await, None, "readable after the finished rotation");
    server.control_plane.shutdown();
}
