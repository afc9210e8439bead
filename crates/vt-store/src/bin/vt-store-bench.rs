//! Event store benchmark: append and projection throughput, projection lag.
//!
//!   cargo run --release -p vt-store --bin vt-store-bench -- [--events N] [--writers W] [--database-url postgres://...]
//!
//! Runs against a fresh SQLite database (synchronous=FULL and NORMAL) and, when
//! a PostgreSQL URL is given (or `VT_TEST_DATABASE_URL` is set), against
//! PostgreSQL too (its vt tables are dropped first: use a scratch database).
//! Prints one table. Appends are single-event commands, as the API makes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vt_events::{Actor, Capacity, Event, NewEvent, NodeRegistered, NodeStatus, NodeStatusChanged, OrgCreated};
use vt_ids::{NodeId, OrgId};
use vt_store::{AppendRequest, PgStore, Projector, SqliteOptions, SqliteStore, Store};

struct Row {
    backend: String,
    events: u64,
    append_per_s: f64,
    project_per_s: f64,
    lag_p50: Duration,
    lag_p99: Duration,
}

fn event(i: u64, nodes: &[NodeId]) -> NewEvent {
    // A mix: org creations and status changes on a set of existing nodes.
    let e = if i.is_multiple_of(2) {
        Event::OrgCreated(OrgCreated { org_id: OrgId::new(), name: format!("org{i}") })
    } else {
        let node_id = nodes[(i as usize / 2) % nodes.len()];
        Event::NodeStatusChanged(NodeStatusChanged {
            node_id,
            status: if i % 4 == 1 { NodeStatus::Draining } else { NodeStatus::Ready },
            reason: None,
        })
    };
    NewEvent::new(e, Actor::system("bench"), None)
}

async fn seed_nodes(store: &Arc<dyn Store>) -> Vec<NodeId> {
    let mut nodes = vec![];
    for i in 0..16 {
        let node_id = NodeId::new();
        let cap = Capacity { cpu_millis: 4000, memory_mib: 8192 };
        let e = Event::NodeRegistered(NodeRegistered {
            wireguard_public_key: None,
            wireguard_port: None,
            runs_instances: true,
            node_id,
            name: format!("n{i}"),
            capacity: cap,
            allocatable: cap,
            labels: Default::default(),
            address: None,
        });
        store
            .append(AppendRequest {
                events: vec![NewEvent::new(e, Actor::system("bench"), None)],
                ..Default::default()
            })
            .await
            .unwrap();
        nodes.push(node_id);
    }
    nodes
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(backend: &str, store: Arc<dyn Store>, events: u64, writers: u64) -> Row {
    let nodes = Arc::new(seed_nodes(&store).await);
    let base = store.head().await.unwrap();

    // 1. Append throughput, projector off.
    let started = Instant::now();
    let mut tasks = vec![];
    for w in 0..writers {
        let (store, nodes) = (store.clone(), nodes.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < events {
                store.append(AppendRequest { events: vec![event(i, &nodes)], ..Default::default() }).await.unwrap();
                i += writers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let append_per_s = events as f64 / started.elapsed().as_secs_f64();

    // 2. Projection throughput: catch up from zero over the whole log.
    let projector = Projector::new(store.clone());
    let started = Instant::now();
    while projector.step().await.unwrap() > 0 {}
    let total = store.head().await.unwrap();
    assert_eq!(projector.progress(), total);
    let project_per_s = total as f64 / started.elapsed().as_secs_f64();

    // 3. Lag: the projector runs live; writers append; for each append, the time
    // from its commit being acknowledged to the views reflecting it.
    let live = projector.clone();
    let runner = tokio::spawn(live.clone().run(Duration::from_millis(250)));
    let lag_events = (events / 4).max(1000);
    let mut tasks = vec![];
    for w in 0..writers {
        let (store, nodes, projector) = (store.clone(), nodes.clone(), projector.clone());
        tasks.push(tokio::spawn(async move {
            let mut lags = vec![];
            let mut i = w;
            while i < lag_events {
                let a = store
                    .append(AppendRequest { events: vec![event(base + events + i, &nodes)], ..Default::default() })
                    .await
                    .unwrap();
                let acked = Instant::now();
                projector.wait_for(a.last_seq, Duration::from_secs(30)).await.unwrap();
                lags.push(acked.elapsed());
                i += writers;
            }
            lags
        }));
    }
    let mut lags = vec![];
    for t in tasks {
        lags.extend(t.await.unwrap());
    }
    runner.abort();
    lags.sort();
    Row {
        backend: backend.into(),
        events,
        append_per_s,
        project_per_s,
        lag_p50: percentile(&lags, 0.5),
        lag_p99: percentile(&lags, 0.99),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut events = 20_000u64;
    let mut writers = 4u64;
    let mut url = std::env::var("VT_TEST_DATABASE_URL").ok();
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--events" => events = value().parse().expect("--events N"),
            "--writers" => writers = value().parse().expect("--writers W"),
            "--database-url" => url = Some(value()),
            other => panic!("unknown argument {other}; see the header of src/bin/vt-store-bench.rs"),
        }
    }
    let mut rows = vec![];
    let dir = std::env::temp_dir().join(format!("vt-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (label, full_sync) in [("sqlite (sync=full)", true), ("sqlite (sync=normal)", false)] {
        let path = dir.join(format!("{full_sync}.sqlite"));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, SqliteOptions { full_sync }).await.unwrap());
        rows.push(run(label, store, events, writers).await);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(url) = url {
        PgStore::drop_all(&url).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
        rows.push(run("postgresql", store, events, writers).await);
        PgStore::drop_all(&url).await.unwrap();
    } else {
        eprintln!("note: no PostgreSQL URL (--database-url or VT_TEST_DATABASE_URL): PostgreSQL row skipped");
    }
    println!(
        "{:<22} {:>8} {:>9} {:>12} {:>13} {:>10} {:>10}",
        "backend", "events", "writers", "append ev/s", "project ev/s", "lag p50", "lag p99"
    );
    for r in rows {
        println!(
            "{:<22} {:>8} {:>9} {:>12.0} {:>13.0} {:>8.2}ms {:>8.2}ms",
            r.backend,
            r.events,
            writers,
            r.append_per_s,
            r.project_per_s,
            r.lag_p50.as_secs_f64() * 1000.0,
            r.lag_p99.as_secs_f64() * 1000.0
        );
    }
}
