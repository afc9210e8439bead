//! The one test suite every [`Store`] implementation must pass.
//!
//! Each case takes a fresh, empty store. `tests/sqlite.rs` and
//! `tests/postgres.rs` run [`run_all`] against the two backends. Panics on failure
//! (it is test code, compiled into the library so both test files share it).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use vt_events::*;
use vt_ids::*;
use vt_views::{MemoryViews, NodeView, OrgView, ViewKind};

use crate::*;

fn org_created(name: &str) -> (OrgId, NewEvent) {
    let org_id = OrgId::new();
    (
        org_id,
        NewEvent::new(
            Event::OrgCreated(OrgCreated { org_id, name: name.into() }),
            Actor::system("test"),
            Some(RequestId::new()),
        ),
    )
}

fn node_registered(name: &str) -> (NodeId, NewEvent) {
    let node_id = NodeId::new();
    let cap = Capacity { cpu_millis: 2000, memory_mib: 2048 };
    let e = Event::NodeRegistered(NodeRegistered {
        wireguard_public_key: None,
        wireguard_port: None,
        runs_instances: true,
        node_id,
        name: name.into(),
        capacity: cap,
        allocatable: cap,
        labels: Default::default(),
        address: None,
    });
    (node_id, NewEvent::new(e, Actor::system("test"), None))
}

fn one(ev: NewEvent) -> AppendRequest {
    AppendRequest { events: vec![ev], ..Default::default() }
}

/// Run every case, each on a store made fresh by `fresh`.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    appends_get_dense_seqs_and_round_trip(fresh().await).await;
    expected_versions_are_enforced(fresh().await).await;
    racing_writers_on_one_aggregate_one_wins(fresh().await).await;
    claims_make_names_unique_and_fail_atomically(fresh().await).await;
    released_claims_free_their_names(fresh().await).await;
    idempotency_records_commit_with_events(fresh().await).await;
    projector_builds_views_and_checkpoints(fresh().await).await;
    views_are_listed_by_any_of_several_parents(fresh().await).await;
    rebuild_equals_live_views(fresh().await).await;
    racing_projectors_agree(fresh().await).await;
    a_failing_projection_stops_alone(fresh().await).await;
    tokens_and_heartbeats(fresh().await).await;
    the_last_admin_token_is_never_revoked(fresh().await).await;
    sealed_secrets_commit_with_their_events(fresh().await).await;
    a_leader_appends_with_its_fence(fresh().await).await;
}

/// Any backend gives the process that asks first the leadership, and takes appends fenced
/// by it (PostgreSQL's two-leader cases: `tests/postgres.rs`).
pub async fn a_leader_appends_with_its_fence(store: Arc<dyn Store>) {
    let lead = store.try_lead().await.unwrap().expect("a lone process leads");
    assert!(lead.held().await);
    let (_, ev) = org_created("fenced");
    store.append(AppendRequest { events: vec![ev], fence: Some(lead.fence()), ..Default::default() }).await.unwrap();
}

pub async fn appends_get_dense_seqs_and_round_trip(store: Arc<dyn Store>) {
    assert_eq!(store.head().await.unwrap(), 0);
    let (org_id, ev) = org_created("acme");
    let sent = ev.clone();
    let a = store.append(one(ev)).await.unwrap();
    assert_eq!((a.first_seq, a.last_seq), (1, 1));
    let (_, e2) = org_created("beta");
    let (_, e3) = org_created("gamma");
    let b = store.append(AppendRequest { events: vec![e2, e3], ..Default::default() }).await.unwrap();
    assert_eq!((b.first_seq, b.last_seq), (2, 3));
    assert_eq!(store.head().await.unwrap(), 3);
    assert_eq!(*store.subscribe_head().borrow(), 3);

    let events = store.read_events(0, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let first = &events[0];
    assert_eq!(first.event_id, sent.event_id);
    assert_eq!(first.event_type, "org.created");
    assert_eq!(first.schema_version, 1);
    assert_eq!(first.aggregate_type, AggregateType::Org);
    assert_eq!(first.aggregate_id, org_id.to_string());
    assert_eq!(first.aggregate_version, 1);
    assert_eq!(first.org_id, Some(org_id));
    assert_eq!(first.request_id, sent.request_id);
    assert_eq!(first.correlation_id, sent.correlation_id);
    assert_eq!(first.actor, "system:test");
    assert_eq!(first.occurred_at.timestamp_micros(), sent.occurred_at.timestamp_micros());
    assert_eq!(first.decode().unwrap(), sent.event);
    assert_eq!(store.read_events(1, 1).await.unwrap()[0].seq, 2);
    assert!(store.read_events(3, 10).await.unwrap().is_empty());
    // Cursors past the largest stored seq read nothing: they never wrap to the start of the log.
    for after in [i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX - 1, u64::MAX] {
        assert!(store.read_events(after, 10).await.unwrap().is_empty(), "{after}");
        assert!(store.read_org_events(&org_id.to_string(), after, 10).await.unwrap().is_empty(), "{after}");
    }

    // An org's events only, by cursor.
    let org = org_id.to_string();
    let mine = store.read_org_events(&org, 0, 10).await.unwrap();
    assert_eq!(mine.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
    assert!(store.read_org_events(&org, 1, 10).await.unwrap().is_empty());
    let (_, node) = node_registered("n1");
    store.append(one(node)).await.unwrap();
    assert!(store.read_org_events(&org, 0, 10).await.unwrap().iter().all(|e| e.org_id == Some(org_id)));

    // The newest events, in order; of one org, only its own.
    let head = store.head().await.unwrap();
    let last: Vec<u64> = store.read_last_events(None, 2).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(last, vec![head - 1, head]);
    assert_eq!(store.read_last_events(None, 1000).await.unwrap().len() as u64, head);
    let mine: Vec<u64> = store.read_last_events(Some(&org), 10).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(mine, vec![1]);
    assert!(store.read_last_events(Some("org_nobody"), 10).await.unwrap().is_empty());
}

pub async fn expected_versions_are_enforced(store: Arc<dyn Store>) {
    let (node_id, reg) = node_registered("n1");
    let agg =
        |expected| Expectation { aggregate_type: AggregateType::Node, aggregate_id: node_id.to_string(), expected };
    store
        .append(AppendRequest {
            events: vec![reg],
            expectations: vec![agg(ExpectedVersion::NoStream)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.aggregate_version(AggregateType::Node, &node_id.to_string()).await.unwrap(), 1);

    let change = || {
        NewEvent::new(
            Event::NodeStatusChanged(NodeStatusChanged { node_id, status: NodeStatus::Draining, reason: None }),
            Actor::system("test"),
            None,
        )
    };
    for stale in [ExpectedVersion::NoStream, ExpectedVersion::Exact(0), ExpectedVersion::Exact(2)] {
        let err = store
            .append(AppendRequest { events: vec![change()], expectations: vec![agg(stale)], ..Default::default() })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::VersionConflict { actual: 1, .. }), "{stale:?}: {err}");
    }
    assert_eq!(store.head().await.unwrap(), 1, "a refused append writes nothing");
    store
        .append(AppendRequest {
            events: vec![change()],
            expectations: vec![agg(ExpectedVersion::Exact(1))],
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .append(AppendRequest {
            events: vec![change()],
            expectations: vec![agg(ExpectedVersion::Exists)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.aggregate_version(AggregateType::Node, &node_id.to_string()).await.unwrap(), 3);
    let missing = Expectation {
        aggregate_type: AggregateType::Org,
        aggregate_id: OrgId::new().to_string(),
        expected: ExpectedVersion::Exists,
    };
    let err = store
        .append(AppendRequest { events: vec![change()], expectations: vec![missing], ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { actual: 0, .. }), "{err}");
    assert_eq!(store.head().await.unwrap(), 3);
}

pub async fn racing_writers_on_one_aggregate_one_wins(store: Arc<dyn Store>) {
    let (node_id, reg) = node_registered("n1");
    store.append(one(reg)).await.unwrap();
    let mut tasks = vec![];
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let ev = NewEvent::new(
                Event::NodeStatusChanged(NodeStatusChanged { node_id, status: NodeStatus::Draining, reason: None }),
                Actor::system("test"),
                None,
            );
            let exp = Expectation {
                aggregate_type: AggregateType::Node,
                aggregate_id: node_id.to_string(),
                expected: ExpectedVersion::Exact(1),
            };
            store.append(AppendRequest { events: vec![ev], expectations: vec![exp], ..Default::default() }).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert!(matches!(e, StoreError::VersionConflict { .. }), "{e}"),
        }
    }
    assert_eq!(won, 1, "exactly one writer wins, the rest get a conflict");
    assert_eq!(store.aggregate_version(AggregateType::Node, &node_id.to_string()).await.unwrap(), 2);
}

pub async fn claims_make_names_unique_and_fail_atomically(store: Arc<dyn Store>) {
    let (org_a, ev) = org_created("acme");
    let claim = |owner: OrgId| Claim { scope: ClaimScope::Org, name: "acme".into(), owner: owner.to_string() };
    store.append(AppendRequest { events: vec![ev], claims: vec![claim(org_a)], ..Default::default() }).await.unwrap();
    let (org_b, ev) = org_created("acme");
    let err = store
        .append(AppendRequest { events: vec![ev], claims: vec![claim(org_b)], ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::NameTaken { owner, .. } if *owner == org_a.to_string()), "{err}");
    assert_eq!(store.head().await.unwrap(), 1, "the losing create wrote no event");
    assert_eq!(store.claim_owner(ClaimScope::Org, "acme").await.unwrap(), Some(org_a.to_string()));
    // Re-claiming by the same owner is a no-op, so a replayed command passes.
    store.append(AppendRequest { claims: vec![claim(org_a)], ..Default::default() }).await.unwrap();
    // A claim failure after other writes in the same request rolls all of them back.
    let (_, ev) = org_created("other");
    let claims = vec![Claim { scope: ClaimScope::Org, name: "other".into(), owner: "x".into() }, claim(org_b)];
    assert!(store.append(AppendRequest { events: vec![ev], claims, ..Default::default() }).await.is_err());
    assert_eq!(store.claim_owner(ClaimScope::Org, "other").await.unwrap(), None);
    assert_eq!(store.head().await.unwrap(), 1);
}

pub async fn released_claims_free_their_names(store: Arc<dyn Store>) {
    let claim = |owner: &str| Claim { scope: ClaimScope::RoutePort, name: "20000".into(), owner: owner.into() };
    let (_, ev) = org_created("acme");
    store
        .append(AppendRequest { events: vec![ev], claims: vec![claim("route_a")], ..Default::default() })
        .await
        .unwrap();
    // Releasing a claim held by someone else does nothing.
    let (_, ev) = org_created("b");
    store
        .append(AppendRequest { events: vec![ev], releases: vec![claim("route_b")], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(store.claim_owner(ClaimScope::RoutePort, "20000").await.unwrap(), Some("route_a".into()));
    // A release in a failing append is rolled back with the rest.
    let (_, ev) = org_created("c");
    let bad = Expectation {
        aggregate_type: AggregateType::Org,
        aggregate_id: OrgId::new().to_string(),
        expected: ExpectedVersion::Exists,
    };
    let err = store
        .append(AppendRequest {
            events: vec![ev],
            expectations: vec![bad],
            releases: vec![claim("route_a")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { .. }), "{err}");
    assert_eq!(store.claim_owner(ClaimScope::RoutePort, "20000").await.unwrap(), Some("route_a".into()));
    // The owner's release commits with its events; the name is free for another owner.
    let (_, ev) = org_created("d");
    store
        .append(AppendRequest { events: vec![ev], releases: vec![claim("route_a")], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(store.claim_owner(ClaimScope::RoutePort, "20000").await.unwrap(), None);
    store.append(AppendRequest { claims: vec![claim("route_b")], ..Default::default() }).await.unwrap();
    assert_eq!(store.claim_owner(ClaimScope::RoutePort, "20000").await.unwrap(), Some("route_b".into()));
}

pub async fn idempotency_records_commit_with_events(store: Arc<dyn Store>) {
    let record = |last_seq| IdempotencyRecord {
        scope: "token:tok_a".into(),
        key: "k1".into(),
        request_hash: "h1".into(),
        status: 201,
        body: "{\"id\":1}".into(),
        created_at: Utc::now(),
        last_seq,
    };
    assert_eq!(store.idempotency_get("token:tok_a", "k1").await.unwrap(), None);
    let (_, ev) = org_created("acme");
    store.append(AppendRequest { events: vec![ev], idempotency: Some(record(0)), ..Default::default() }).await.unwrap();
    let got = store.idempotency_get("token:tok_a", "k1").await.unwrap().unwrap();
    assert_eq!((got.status, got.body.as_str(), got.request_hash.as_str(), got.last_seq), (201, "{\"id\":1}", "h1", 1));
    let (_, ev) = org_created("acme2");
    let err = store
        .append(AppendRequest { events: vec![ev], idempotency: Some(record(0)), ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyRace { .. }), "{err}");
    assert_eq!(store.head().await.unwrap(), 1, "a second use of the key appends nothing");
    assert_eq!(store.idempotency_get("token:tok_b", "k1").await.unwrap(), None, "keys are scoped per caller");
}

async fn catch_up(projector: &Projector) {
    for _ in 0..1000 {
        if projector.step().await.unwrap() == 0 {
            return;
        }
    }
    panic!("projector did not catch up");
}

async fn seed(store: &Arc<dyn Store>, orgs: usize) -> Vec<NodeId> {
    let mut nodes = vec![];
    for i in 0..orgs {
        let (_, ev) = org_created(&format!("org{i}"));
        store.append(one(ev)).await.unwrap();
        let (node_id, ev) = node_registered(&format!("node{i}"));
        store.append(one(ev)).await.unwrap();
        let ev = NewEvent::new(
            Event::NodeStatusChanged(NodeStatusChanged {
                node_id,
                status: NodeStatus::Draining,
                reason: Some("maintenance".into()),
            }),
            Actor::system("test"),
            None,
        );
        store.append(one(ev)).await.unwrap();
        nodes.push(node_id);
    }
    nodes
}

pub async fn views_are_listed_by_any_of_several_parents(store: Arc<dyn Store>) {
    let mut orgs = vec![];
    for i in 0..3 {
        let (org_id, ev) = org_created(&format!("org{i}"));
        store.append(one(ev)).await.unwrap();
        for app in ["api", "web"] {
            let ev = Event::AppCreated(AppCreated {
                org_id,
                app_id: AppId::new(),
                name: app.into(),
                description: None,
                workspace_id: None,
            });
            store.append(one(NewEvent::new(ev, Actor::system("test"), None))).await.unwrap();
        }
        orgs.push(org_id);
    }
    catch_up(&Projector::new(store.clone())).await;
    let apps = |q: ViewQuery| {
        let store = store.clone();
        async move {
            let rows = store.view_list(&q).await.unwrap();
            rows.iter().map(|r| (r.parent_id.clone().unwrap(), r.name.clone().unwrap())).collect::<Vec<_>>()
        }
    };
    let mut got = apps(ViewQuery::kind(ViewKind::App).parents([orgs[0], orgs[2]])).await;
    got.sort();
    let mut want: Vec<(String, String)> =
        [orgs[0], orgs[2]].iter().flat_map(|o| ["api", "web"].map(|a| (o.to_string(), a.to_string()))).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        apps(ViewQuery::kind(ViewKind::App).parents([orgs[1]]).name("web")).await,
        [(orgs[1].to_string(), "web".into())]
    );
    assert!(apps(ViewQuery::kind(ViewKind::App).parents(Vec::<String>::new())).await.is_empty(), "no parent: no row");
}

pub async fn projector_builds_views_and_checkpoints(store: Arc<dyn Store>) {
    let nodes = seed(&store, 3).await;
    let projector = Projector::new(store.clone());
    assert_eq!(projector.progress(), 0);
    catch_up(&projector).await;
    assert_eq!(projector.progress(), 9);
    projector.wait_for(9, Duration::from_millis(10)).await.unwrap();
    assert!(matches!(
        projector.wait_for(10, Duration::from_millis(10)).await,
        Err(WaitError::Timeout { wanted: 10, reached: 9, .. })
    ));

    let checkpoints = store.checkpoints().await.unwrap();
    assert_eq!(checkpoints.len(), ViewKind::ALL.len(), "one checkpoint per projection: {checkpoints:?}");
    assert!(checkpoints.values().all(|&c| c == 9));

    let orgs = store.view_list(&ViewQuery::kind(ViewKind::Org)).await.unwrap();
    let mut names: Vec<String> = orgs.iter().map(|r| r.decode::<OrgView>().unwrap().name).collect();
    names.sort();
    assert_eq!(names, ["org0", "org1", "org2"]);
    let node = store.view_get(ViewKind::Node, &nodes[1].to_string()).await.unwrap().unwrap();
    let view: NodeView = node.decode().unwrap();
    assert_eq!((view.status, view.status_reason.as_deref(), node.seq), (NodeStatus::Draining, Some("maintenance"), 6));
    let by_name = store.view_list(&ViewQuery::kind(ViewKind::Node).name("node2")).await.unwrap();
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].id, nodes[2].to_string());
    let many = store
        .views_get_many(&[(ViewKind::Node, nodes[0].to_string()), (ViewKind::Node, "node_missing".into())])
        .await
        .unwrap();
    assert_eq!(many.len(), 1);

    // The projector follows new appends when run as a task.
    let task = tokio::spawn(projector.clone().run(Duration::from_millis(500)));
    let (_, ev) = org_created("late");
    let a = store.append(one(ev)).await.unwrap();
    projector.wait_for(a.last_seq, Duration::from_secs(5)).await.unwrap();
    assert_eq!(store.view_list(&ViewQuery::kind(ViewKind::Org).name("late")).await.unwrap().len(), 1);
    task.abort();
}

/// Rows in the store's list order: kind name, then id.
fn sorted_like_the_store(views: MemoryViews) -> Vec<ViewRow> {
    let mut rows: Vec<_> = views.rows.into_values().collect();
    rows.sort_by(|a, b| (a.kind.as_str(), &a.id).cmp(&(b.kind.as_str(), &b.id)));
    rows
}

async fn all_rows(store: &Arc<dyn Store>) -> Vec<ViewRow> {
    store.view_list(&ViewQuery::default()).await.unwrap()
}

pub async fn rebuild_equals_live_views(store: Arc<dyn Store>) {
    let projector = Projector::new(store.clone());
    // Interleave appends and projection so live views are built incrementally.
    for i in 0..4 {
        seed(&store, 2).await;
        if i % 2 == 0 {
            catch_up(&projector).await;
        }
    }
    catch_up(&projector).await;
    let live = all_rows(&store).await;
    assert!(live.len() >= 16);

    store.reset_views().await.unwrap();
    assert!(all_rows(&store).await.is_empty());
    let fresh = Projector::new(store.clone());
    catch_up(&fresh).await;
    let rebuilt = all_rows(&store).await;
    assert_eq!(rebuilt, live, "replaying the log gives the live views");

    // And both equal the in-memory reference fold of the whole log.
    let mut reference = MemoryViews::default();
    for e in store.read_events(0, 100_000).await.unwrap() {
        reference.apply(&e).unwrap();
    }
    assert_eq!(rebuilt, sorted_like_the_store(reference));
}

pub async fn racing_projectors_agree(store: Arc<dyn Store>) {
    seed(&store, 20).await;
    let a = Projector::new(store.clone());
    let b = Projector::new(store.clone());
    let run = |p: Arc<Projector>| async move {
        for _ in 0..1000 {
            match p.step().await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => panic!("{e}"),
            }
        }
    };
    tokio::join!(run(a.clone()), run(b.clone()));
    catch_up(&a).await;
    let mut reference = MemoryViews::default();
    for e in store.read_events(0, 100_000).await.unwrap() {
        reference.apply(&e).unwrap();
    }
    assert_eq!(all_rows(&store).await, sorted_like_the_store(reference));
}

pub async fn a_failing_projection_stops_alone(store: Arc<dyn Store>) {
    // A status change for a node that was never registered: the nodes projection cannot apply it.
    let bad = NewEvent::new(
        Event::NodeStatusChanged(NodeStatusChanged { node_id: NodeId::new(), status: NodeStatus::Ready, reason: None }),
        Actor::system("test"),
        None,
    );
    store.append(one(bad)).await.unwrap();
    let (_, ev) = org_created("after");
    store.append(one(ev)).await.unwrap();
    let projector = Projector::new(store.clone());
    catch_up(&projector).await;
    let status = projector.status();
    let nodes = status.iter().find(|s| s.name == "nodes").unwrap();
    assert_eq!(nodes.checkpoint, 0);
    assert!(nodes.error.as_deref().unwrap_or_default().contains("unknown node"), "{nodes:?}");
    let orgs = status.iter().find(|s| s.name == "orgs").unwrap();
    assert_eq!((orgs.checkpoint, orgs.error.as_deref()), (2, None));
    assert_eq!(store.view_list(&ViewQuery::kind(ViewKind::Org)).await.unwrap().len(), 1);
    assert!(matches!(projector.wait_for(2, Duration::from_millis(50)).await, Err(WaitError::Stuck { .. })));
}

pub async fn tokens_and_heartbeats(store: Arc<dyn Store>) {
    assert_eq!(store.token_count().await.unwrap(), 0);
    let token_id = TokenId::new();
    let org_id = OrgId::new();
    let created = |role| TokenCreated {
        labels: Default::default(),
        token_id,
        name: "ci".into(),
        role,
        org_id: Some(org_id),
        node_id: None,
        node_name: None,
        expires_at: None,
    };
    let ev = NewEvent::new(Event::TokenCreated(created(TokenRole::Deployer)), Actor::system("test"), None);
    let expires_at = Utc::now() + chrono::Duration::days(30);
    let rec = TokenRecord {
        token_id,
        hash: "abc".into(),
        name: "ci".into(),
        role: TokenRole::Deployer,
        org_id: Some(org_id),
        node_id: None,
        expires_at: Some(expires_at),
        created_at: Utc::now(),
        revoked_at: None,
    };
    store.append(AppendRequest { events: vec![ev], tokens: vec![rec.clone()], ..Default::default() }).await.unwrap();
    assert_eq!(store.token_count().await.unwrap(), 1);
    let got = store.token_by_hash("abc").await.unwrap().unwrap();
    assert_eq!(
        (got.token_id, got.role, got.org_id, got.node_id, got.revoked_at),
        (token_id, TokenRole::Deployer, Some(org_id), None, None)
    );
    assert_eq!(got.expires_at.map(|t| t.timestamp_micros()), Some(expires_at.timestamp_micros()));
    assert!(store.token_by_hash("abd").await.unwrap().is_none());

    // A revocation commits with its event; the first revocation's time stands.
    let at = Utc::now();
    let revoked = || {
        NewEvent::new(Event::TokenRevoked(TokenRevoked { token_id, org_id: Some(org_id) }), Actor::system("test"), None)
    };
    let revocation = TokenRevocation { token_id, at, keep_an_admin: false };
    store
        .append(AppendRequest { events: vec![revoked()], revocations: vec![revocation], ..Default::default() })
        .await
        .unwrap();
    let later = TokenRevocation { token_id, at: at + chrono::Duration::seconds(9), keep_an_admin: false };
    store
        .append(AppendRequest { events: vec![revoked()], revocations: vec![later], ..Default::default() })
        .await
        .unwrap();
    let got = store.token_by_hash("abc").await.unwrap().unwrap();
    assert_eq!(got.revoked_at.map(|t| t.timestamp_micros()), Some(at.timestamp_micros()));

    // A revocation in a failing append is rolled back with it.
    let other = TokenRecord { token_id: TokenId::new(), hash: "def".into(), ..rec };
    store.append(AppendRequest { tokens: vec![other.clone()], ..Default::default() }).await.unwrap();
    let bad = Expectation {
        aggregate_type: AggregateType::Org,
        aggregate_id: OrgId::new().to_string(),
        expected: ExpectedVersion::Exists,
    };
    let revocation = TokenRevocation { token_id: other.token_id, at, keep_an_admin: false };
    assert!(store
        .append(AppendRequest { expectations: vec![bad], revocations: vec![revocation], ..Default::default() })
        .await
        .is_err());
    assert_eq!(store.token_by_hash("def").await.unwrap().unwrap().revoked_at, None);

    let t1 = Utc::now();
    store.heartbeat("node_a", t1, None).await.unwrap();
    assert!(store.node_disks().await.unwrap().is_empty(), "no disk report yet");
    store.heartbeat("node_a", t1 + chrono::Duration::seconds(5), Some(r#"{"a":1}"#)).await.unwrap();
    let hb = store.heartbeats().await.unwrap();
    assert_eq!(hb.len(), 1);
    assert_eq!(hb["node_a"].timestamp_micros(), (t1 + chrono::Duration::seconds(5)).timestamp_micros());
    // A heartbeat without a report keeps the last one, and when it came.
    store.heartbeat("node_a", t1 + chrono::Duration::seconds(10), None).await.unwrap();
    let disks = store.node_disks().await.unwrap();
    let (at, report) = &disks["node_a"];
    assert_eq!(
        (at.timestamp_micros(), report.as_str()),
        ((t1 + chrono::Duration::seconds(5)).timestamp_micros(), r#"{"a":1}"#)
    );
    store.heartbeat("node_a", t1 + chrono::Duration::seconds(15), Some(r#"{"a":2}"#)).await.unwrap();
    assert_eq!(store.node_disks().await.unwrap()["node_a"].1, r#"{"a":2}"#);
    // One node's, as the list has it; none for a node that never sent one.
    assert_eq!(store.node_disk("node_a").await.unwrap(), Some(store.node_disks().await.unwrap()["node_a"].clone()));
    store.heartbeat("node_b", t1, None).await.unwrap();
    assert_eq!(store.node_disk("node_b").await.unwrap(), None);
    assert_eq!(store.node_disk("node_c").await.unwrap(), None);
    assert_eq!(
        store.heartbeats().await.unwrap()["node_a"].timestamp_micros(),
        (t1 + chrono::Duration::seconds(15)).timestamp_micros()
    );
}

pub async fn the_last_admin_token_is_never_revoked(store: Arc<dyn Store>) {
    let admin = |hash: &str| TokenRecord {
        token_id: TokenId::new(),
        hash: hash.into(),
        name: "admin".into(),
        role: TokenRole::Admin,
        org_id: None,
        node_id: None,
        expires_at: None,
        created_at: Utc::now(),
        revoked_at: None,
    };
    let (a, b) = (admin("a"), admin("b"));
    store.append(AppendRequest { tokens: vec![a.clone(), b.clone()], ..Default::default() }).await.unwrap();
    let revoke = |t: &TokenRecord| AppendRequest {
        revocations: vec![TokenRevocation { token_id: t.token_id, at: Utc::now(), keep_an_admin: true }],
        ..Default::default()
    };
    // Both at once (one group commit, or two): exactly one commits.
    let (ra, rb) = tokio::join!(store.append(revoke(&a)), store.append(revoke(&b)));
    let refused: Vec<&StoreError> = [&ra, &rb].into_iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{ra:?} {rb:?}");
    assert!(matches!(refused[0], StoreError::Refused(why) if why.contains("last active admin token")), "{refused:?}");
    assert!(refused[0].is_conflict());
    let active = [store.token_by_hash("a").await.unwrap(), store.token_by_hash("b").await.unwrap()]
        .into_iter()
        .flatten()
        .filter(|t| t.revoked_at.is_none())
        .count();
    assert_eq!(active, 1, "one admin token stays active");
    // An expired admin token does not count as the one left.
    let expired = TokenRecord { expires_at: Some(Utc::now() - chrono::Duration::seconds(1)), ..admin("c") };
    store.append(AppendRequest { tokens: vec![expired], ..Default::default() }).await.unwrap();
    let last = if ra.is_ok() { store.token_by_hash("b") } else { store.token_by_hash("a") }.await.unwrap().unwrap();
    assert!(matches!(store.append(revoke(&last)).await, Err(StoreError::Refused(_))));
}

pub async fn sealed_secrets_commit_with_their_events(store: Arc<dyn Store>) {
    let (_, ev) = org_created("acme");
    let env = "env_01jd8x6k3v9q4m2t7r5w0y1zcd".to_owned();
    assert!(store.secret_key(&env).await.unwrap().is_none());
    let key = SecretWrite::Key { env_id: env.clone(), master_key: "mk_1".into(), wrapped: "v1:k".into() };
    let stage = |name: &str, sealed: Option<&str>| SecretWrite::Stage {
        env_id: env.clone(),
        name: name.into(),
        sealed: sealed.map(Into::into),
    };
    let writes = vec![key, stage("B", Some("v1:b")), stage("A", Some("v1:a")), stage("C", None)];
    store.append(AppendRequest { events: vec![ev], secrets: writes, ..Default::default() }).await.unwrap();
    let staged = store.secret_staged(&env).await.unwrap();
    assert_eq!(staged, [("A".into(), Some("v1:a".into())), ("B".into(), Some("v1:b".into())), ("C".into(), None)]);
    // Staging a name again replaces its change.
    let (_, ev) = org_created("b");
    store
        .append(AppendRequest { events: vec![ev], secrets: vec![stage("A", Some("v1:a2"))], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(store.secret_staged(&env).await.unwrap()[0], ("A".into(), Some("v1:a2".into())));
    // A version commits its values and clears the staging; a failing append writes nothing.
    let version = |v: u64| SecretWrite::Version {
        env_id: env.clone(),
        version: v,
        values: vec![("A".into(), "v1:a2".into()), ("B".into(), "v1:b".into())],
        clear_staged: true,
    };
    let bad = Expectation {
        aggregate_type: AggregateType::Org,
        aggregate_id: OrgId::new().to_string(),
        expected: ExpectedVersion::Exists,
    };
    assert!(store
        .append(AppendRequest { expectations: vec![bad], secrets: vec![version(1)], ..Default::default() })
        .await
        .is_err());
    assert!(store.secret_values(&env, 1).await.unwrap().is_empty());
    assert_eq!(store.secret_staged(&env).await.unwrap().len(), 3);
    store.append(AppendRequest { secrets: vec![version(1)], ..Default::default() }).await.unwrap();
    assert_eq!(
        store.secret_values(&env, 1).await.unwrap(),
        [("A".into(), "v1:a2".into()), ("B".into(), "v1:b".into())]
    );
    assert!(store.secret_staged(&env).await.unwrap().is_empty());
    // Keys are re-wrapped all at once.
    let keys = store.secret_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    let rewrapped = SecretKeyRecord { master_key: "mk_2".into(), wrapped: "v1:k2".into(), ..keys[0].clone() };
    store.rewrap_secret_keys(vec![rewrapped.clone()]).await.unwrap();
    assert_eq!(store.secret_key(&env).await.unwrap(), Some(rewrapped.clone()));
    let missing = SecretKeyRecord { env_id: "env_x".into(), master_key: "mk_2".into(), wrapped: "v1:x".into() };
    assert!(store.rewrap_secret_keys(vec![missing]).await.is_err());
    // Not every key: refused whole (a key made since they were read would be left behind).
    assert!(store.rewrap_secret_keys(vec![]).await.unwrap_err().to_string().contains("rotate with no server running"));
    assert_eq!(store.secret_key(&env).await.unwrap(), Some(rewrapped));
}
