//! Scheduled backups (`--backup-every`): the scheduler asks for a backup of every volume
//! that is due, once (a running backup is not asked for again), tagged with its names.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_due_for_a_backup_gets_one_request_until_its_node_reports() {
    let s = TestServer::start().await;
    let (repo, password_file) = (s.dir.path().join("backups"), s.dir.path().join("pw"));
    std::fs::write(&password_file, "pw\n").unwrap();
    s.cp.backups.set(Some(vt_backup::Target { repo: repo.to_str().unwrap().into(), password_file, keep: vec![] }));
    s.cp.backups.set_every(Some(Duration::from_secs(1)));
    for (path, name) in [("/v1/orgs", "acme"), ("/v1/orgs/acme/apps", "web"), ("/v1/orgs/acme/apps/web/envs", "prod")] {
        assert_eq!(s.post(path, json!({"name": name})).await.status, StatusCode::CREATED);
    }
    let r = s.post("/v1/nodes", json!({"name": "n1", "capacity": {"cpu_millis": 1000, "memory_mib": 1024}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = s.post("/v1/orgs/acme/apps/web/envs/prod/volumes", json!({"name": "data", "size_gib": 1})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let started = Instant::now();
    let pending = loop {
        let v = s.get("/v1/orgs/acme/apps/web/envs/prod/volumes/data").await.body;
        if !v["backups"]["pending"].is_null() {
            break v["backups"]["pending"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no backup was scheduled: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (pending["org"].as_str(), pending["app"].as_str(), pending["env"].as_str()),
        (Some("acme"), Some("web"), Some("prod"))
    );
    // While it runs (no node reports here), nothing more is asked for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = s.get("/v1/events?limit=1000").await.body;
    let requested: Vec<_> =
        events["events"].as_array().unwrap().iter().filter(|e| e["event_type"] == "backup.requested").collect();
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0]["payload"]["scheduled"], true);
}
