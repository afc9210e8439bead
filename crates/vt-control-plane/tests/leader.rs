//! Two control planes on one PostgreSQL: one runs the reconcilers, the other stands by
//! (serving reads that stay fresh) and takes over within a second when the first goes.
//!
//! Needs `VT_TEST_DATABASE_URL` (`.ci/run` starts a server and sets it); skipped locally
//! without it, a failure under CI.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vt_api::TaskState;
use vt_control_plane::{ControlPlane, Settings};
use vt_events::{Actor, Event, NewEvent, OrgCreated};
use vt_store::{AppendRequest, PgStore, Store};

fn database_url() -> Option<String> {
    match std::env::var("VT_TEST_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => panic!("CI is set but VT_TEST_DATABASE_URL is not"),
        Err(_) => {
            eprintln!("skipping: set VT_TEST_DATABASE_URL=postgres://... to run the leader failover test");
            None
        }
    }
}

fn state(cp: &ControlPlane, task: &str) -> TaskState {
    cp.tasks.list().into_iter().find(|t| t.name == task).unwrap_or_else(|| panic!("no task {task}")).state
}

async fn until(what: &str, within: Duration, ok: impl Fn() -> bool) -> Duration {
    let began = Instant::now();
    while !ok() {
        assert!(began.elapsed() < within, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    began.elapsed()
}

async fn org(store: &dyn Store, name: &str) -> u64 {
    let e = Event::OrgCreated(OrgCreated { org_id: vt_ids::OrgId::new(), name: name.into() });
    let req = AppendRequest { events: vec![NewEvent::new(e, Actor::system("test"), None)], ..Default::default() };
    store.append(req).await.unwrap().last_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_goes() {
    let Some(url) = database_url() else { return };
    PgStore::drop_all(&url).await.unwrap();
    let store_a: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
    let a = ControlPlane::start(store_a.clone(), Settings::default());
    until("the first control plane leading", Duration::from_secs(5), || a.leader.leading()).await;
    let store_b: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
    let b = ControlPlane::start(store_b.clone(), Settings::default());
    tokio::time::sleep(vt_control_plane::leader::POLL * 3).await;
    assert!(a.leader.leading() && !b.leader.leading(), "exactly one leads");
    assert_eq!((state(&a, "projector"), state(&a, "scheduler")), (TaskState::Running, TaskState::Running));
    assert_eq!((state(&b, "projector"), state(&b, "scheduler")), (TaskState::Standby, TaskState::Standby));

    // A write through the standby is projected by the leader; the standby's reads see it.
    let seq = org(store_b.as_ref(), "written-on-b").await;
    b.projector.wait_for(seq, Duration::from_secs(5)).await.unwrap();
    b.fresh().await.unwrap();

    // The leader goes: its lock session closes, the standby leads within a poll.
    a.shutdown();
    let took = until("the standby taking over", Duration::from_secs(3), || b.leader.leading()).await;
    println!("leadership moved to the standby in {took:?} (poll {:?})", vt_control_plane::leader::POLL);
    let seq = org(store_b.as_ref(), "after-failover").await;
    b.projector.wait_for(seq, Duration::from_secs(5)).await.unwrap();
    assert_eq!(state(&b, "projector"), TaskState::Running);
    assert_eq!(b.leader.changes().0, 1);
    b.shutdown();
}
