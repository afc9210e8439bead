//! The control plane.
//!
//! Layers, from the outside in (as in omicron's nexus):
//! - `http`: axum handlers, one module per resource, registered together with
//!   their OpenAPI operations (`http::api`). A handler parses the request into
//!   typed input and calls one app-layer operation.
//! - `app`: one module per resource. Every operation authorizes first
//!   ([`Ctx::authorize`], the policy in [`authz`]), then reads what it decides
//!   from (views, through [`lookup`]) and appends a [`Plan`]: the events, the
//!   preconditions that must still hold, the names it claims. [`ControlPlane::commit`]
//!   appends it in one transaction with the idempotency record.
//! - `vt-store`: the log, the views and the projector.
//!
//! Background work of the control plane: the projector and the scheduler
//! reconciler ([`scheduler`]), started by [`ControlPlane::start`] and stopped
//! by [`ControlPlane::shutdown`]; their status is published in [`tasks`].
//! A server that begins to stop calls [`ControlPlane::close_streams`] first:
//! long polls answer and follow streams end at once, so no request that waits
//! for news holds up the drain.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;
use vt_events::{Actor, Event, NewEvent};
use vt_ids::RequestId;
use vt_store::{
    AppendRequest, Claim, Expectation, IdempotencyRecord, Projector, SecretWrite, Store, TokenRecord, TokenRevocation,
};
use vt_views::{View, ViewKind};

pub mod app;
pub mod auth;
pub mod authz;
pub mod channel;
pub mod error;
pub mod exec;
pub mod http;
pub mod leader;
pub mod logs;
pub mod lookup;
pub mod rebuild;
pub mod registry;
pub mod rollout;
pub mod scheduler;
pub mod tasks;
/// Helpers for tests of a control plane (feature `test-support`).
#[cfg(feature = "test-support")]
pub mod testing {
    use vt_store::{AppendRequest, Store};

    use crate::auth::{self, TokenSpec};

    /// An admin token appended to `store`; its secret.
    pub async fn admin_token(store: &dyn Store) -> String {
        let spec = TokenSpec {
            name: vt_ids::Name::parse("admin").expect("a valid name"),
            role: vt_events::TokenRole::Admin,
            org: None,
            node: None,
            expires_at: None,
            labels: Default::default(),
        };
        let issued = auth::issue(spec, chrono::Utc::now()).expect("a token is issued");
        let event = vt_events::NewEvent::new(issued.event, vt_events::Actor::system("test"), None);
        store
            .append(AppendRequest { events: vec![event], tokens: vec![issued.record], ..Default::default() })
            .await
            .expect("the token is appended");
        issued.secret
    }
}
mod wire;

pub use error::{ApiErr, ApiResult};

use authz::{Action, Caller, Denied, Resource};

/// How long a mutation waits for views to show its own write before answering.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

/// What the control plane is given besides its store.
#[derive(Default)]
pub struct Settings {
    /// The built-in registry's storage (opened by the caller, `<data-dir>/registry` or
    /// `--registry-dir`); `None`: no registry, `/v2/` answers 404.
    pub registry: Option<vt_registry::Storage>,
    /// Where the logs of the in-process agent's instances come from (the other nodes' come
    /// through their channels, `channel.rs`); `None`: no agent runs in this process.
    pub logs: Option<Arc<dyn logs::LogSource>>,
    /// The key that wraps the envs' secret keys; `None`: secrets cannot be set or read.
    pub master_key: Option<Arc<vt_secrets::MasterKey>>,
    /// The port the API listens on, when known: no route may claim it.
    pub api_port: Option<u16>,
    /// The cluster's guest network: nodes' IPv4 ranges, the guests' MTU.
    pub network: NetworkSettings,
    /// What registry uploads may take: the node's disk budget, a quota per org.
    pub registry_limits: vt_registry::Limits,
    /// Where exec sessions of the in-process agent's instances are opened (the other nodes'
    /// through their channels); `None`: no agent runs in this process.
    pub exec: Option<Arc<dyn exec::ExecBackend>>,
    /// How long an exec grant stays valid; `None`: [`vt_api::exec::GRANT_TTL_SECS`] (tests shorten it).
    pub exec_grant_ttl: Option<Duration>,
    /// The workspace template and the workspace origin's address.
    pub workspaces: app::workspaces::WorkspaceSettings,
}

/// The cluster's guest network settings (`vt server --guest-ipv4-block`, `--guest-mtu`;
/// docs/network.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Each node gets a /24 of it (`node.ipv4_range_assigned`): its instances' private IPv4
    /// addresses, for egress through NAT only.
    pub ipv4_block: ipnet::Ipv4Net,
    /// Every guest's interface MTU: 1500 on a single host (1420 once nodes mesh over WireGuard).
    pub mtu: u16,
}

impl NetworkSettings {
    /// The smallest MTU IPv6 allows, and a jumbo frame's.
    pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 1280..=9000;

    /// Checked settings: an IPv4 block with room for a node's /24, an MTU in [`Self::MTU_RANGE`].
    pub fn new(ipv4_block: ipnet::Ipv4Net, mtu: u16) -> Result<Self, String> {
        if ipv4_block.prefix_len() > NODE_IPV4_PREFIX {
            return Err(format!(
                "`{ipv4_block}` is smaller than one node's range (a /{NODE_IPV4_PREFIX}): give a /{NODE_IPV4_PREFIX} or larger, like 100.64.0.0/10"
            ));
        }
        if ipv4_block.trunc() != ipv4_block {
            return Err(format!("`{ipv4_block}` has host bits set: did you mean `{}`?", ipv4_block.trunc()));
        }
        if !Self::MTU_RANGE.contains(&mtu) {
            return Err(format!(
                "{mtu} is not an MTU guests can use: between {} (IPv6's minimum) and {}",
                Self::MTU_RANGE.start(),
                Self::MTU_RANGE.end()
            ));
        }
        Ok(NetworkSettings { ipv4_block, mtu })
    }
}

/// Each node's IPv4 range is a /24 of the cluster's block (253 instances with egress at once).
pub const NODE_IPV4_PREFIX: u8 = 24;

impl Default for NetworkSettings {
    /// 100.64.0.0/10 (shared address space, RFC 6598), MTU 1500.
    fn default() -> Self {
        NetworkSettings {
            ipv4_block: ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(100, 64, 0, 0), 10),
            mtu: 1500,
        }
    }
}

/// The running control plane: a store, its projector, the scheduler reconciler.
pub struct ControlPlane {
    pub store: Arc<dyn Store>,
    pub projector: Arc<Projector>,
    registry: registry::Registry,
    registry_gc: registry::GcState,
    /// The nodes' channels (`channel.rs`): how the agents of other nodes serve logs and exec.
    pub channels: Arc<channel::Hub>,
    /// Logs and exec: the in-process agent's, or through a node's channel.
    pub dispatch: Arc<channel::Dispatch>,
    /// Exec: the backend that opens sessions, and the grants issued and not yet expired.
    exec: app::exec::Exec,
    master_key: Option<Arc<vt_secrets::MasterKey>>,
    /// Requests are remembered (`Idempotency-Key`) by a hash keyed with this, when there is
    /// a master key: a request may carry secret values.
    request_hash_key: Option<zeroize::Zeroizing<[u8; 32]>>,
    /// The TCP route port range and the metrics of an ingress running beside it.
    pub ingress: app::routes::IngressSettings,
    /// The scheduler reconciler's settings and status (`scheduler.rs`).
    pub scheduler: scheduler::Scheduler,
    /// The backup repository volumes are backed up to, if any (docs/volumes.md).
    pub backups: app::backups::BackupSettings,
    /// The cluster's guest network settings.
    pub network: NetworkSettings,
    /// The workspace template and the workspace origin's address.
    pub workspaces: app::workspaces::WorkspaceSettings,
    /// Every background task of the server this control plane runs in, with its status.
    pub tasks: tasks::Tasks,
    /// Whether this control plane runs the reconcilers (`leader.rs`).
    pub leader: leader::Leader,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// `true` once the server stops: what waits for news (long polls, follow streams) ends.
    closing: tokio::sync::watch::Sender<bool>,
}

impl ControlPlane {
    /// Wrap a store and start the projector and the scheduler on the current runtime.
    pub fn start(store: Arc<dyn Store>, settings: Settings) -> Arc<Self> {
        let projector = Projector::new(store.clone());
        let channels = channel::Hub::new();
        let dispatch = Arc::new(channel::Dispatch::new(channels.clone(), settings.logs, settings.exec));
        let cp = Arc::new(ControlPlane {
            store,
            projector: projector.clone(),
            registry: registry::Registry::new(settings.registry, settings.registry_limits),
            registry_gc: Default::default(),
            channels,
            dispatch: dispatch.clone(),
            exec: app::exec::Exec::new(
                dispatch,
                settings.exec_grant_ttl.unwrap_or(Duration::from_secs(vt_api::exec::GRANT_TTL_SECS)),
            ),
            request_hash_key: settings.master_key.as_ref().map(|k| k.derive("vt idempotency request hash")),
            master_key: settings.master_key,
            ingress: app::routes::IngressSettings::new(settings.api_port),
            scheduler: Default::default(),
            backups: Default::default(),
            network: settings.network,
            workspaces: settings.workspaces,
            tasks: Default::default(),
            leader: Default::default(),
            background: Mutex::new(vec![]),
            closing: tokio::sync::watch::Sender::new(false),
        });
        let leading = tokio::spawn(leader::run(Arc::downgrade(&cp)));
        let projecting = tokio::spawn(projector.run_led(Duration::from_millis(250), cp.leader.subscribe()));
        let scheduling = tokio::spawn(scheduler::run(Arc::downgrade(&cp)));
        tasks::register_control_plane(&cp);
        let collecting = registry::start_gc(&cp);
        cp.background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([leading, projecting, scheduling].into_iter().chain(collecting));
        cp
    }

    /// The first step of a server's shutdown: a node's long poll answers now (with what it
    /// would have answered), event and log follow streams end after what they have sent.
    /// Requests keep being served; nothing waits for news any more.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`ControlPlane::close_streams`] was called.
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|closed| *closed).await;
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Let the projector apply what is in the log (at most `within`), so a stopped
    /// server leaves its views at the head. Part of a graceful stop, before [`Self::shutdown`].
    pub async fn settle(&self, within: Duration) {
        let head = match self.store.head().await {
            Ok(h) => h,
            Err(e) => return tracing::warn!(error = %e, "cannot read the log's head to settle the views"),
        };
        if let Err(e) = self.projector.wait_for(head, within).await {
            tracing::warn!(head, error = %e, "the views did not catch up before the stop; they will at the next start");
        }
    }

    /// Stop the scheduler and the projector (the last steps of a server's shutdown).
    pub fn shutdown(&self) {
        for task in self.background.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
        // Its lock session closes with it: a standby takes over at its next try.
        self.leader.set(None);
    }

    /// The hash a keyed request is remembered by: keyed with a secret of this
    /// server when it has a master key (the request may carry secret values).
    pub fn request_hash(&self, method: &str, path: &str, body: &[u8]) -> String {
        match &self.request_hash_key {
            Some(key) => vt_secrets::keyed_hash(key, &[method.as_bytes(), path.as_bytes(), body]),
            None => {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(method);
                h.update(b"\n");
                h.update(path);
                h.update(b"\n");
                h.update(body);
                hex::encode(h.finalize())
            }
        }
    }

    /// Wait until views reflect everything committed so far (for commands that
    /// decide from views and then pin what they read with expectations).
    pub async fn fresh(&self) -> ApiResult<()> {
        let head = self.store.head().await?;
        Ok(self.projector.wait_for(head, READ_YOUR_WRITES).await?)
    }

    pub async fn view<T: View>(&self, id: &str) -> ApiResult<Option<T>> {
        match self.store.view_get(T::KIND, id).await? {
            Some(row) => Ok(Some(row.decode().map_err(ApiErr::internal)?)),
            None => Ok(None),
        }
    }

    pub async fn views<T: View>(&self, query: vt_store::ViewQuery) -> ApiResult<Vec<T>> {
        debug_assert_eq!(query.kind, Some(T::KIND));
        self.store.view_list(&query).await?.iter().map(|r| r.decode().map_err(ApiErr::internal)).collect()
    }

    pub fn kind_query(kind: ViewKind) -> vt_store::ViewQuery {
        vt_store::ViewQuery::kind(kind)
    }

    /// Append a plan's writes atomically with the idempotency record, then wait
    /// (bounded) until views show them.
    pub async fn commit<T: Serialize>(&self, ctx: &Ctx, plan: Plan<T>) -> ApiResult<Committed> {
        let body = serde_json::to_string(&plan.response).map_err(ApiErr::internal)?;
        let events: Vec<NewEvent> = plan.events.into_iter().map(|e| ctx.event(e)).collect();
        let idempotency = ctx.idempotency.as_ref().map(|k| IdempotencyRecord {
            scope: k.scope.clone(),
            key: k.key.clone(),
            request_hash: k.request_hash.clone(),
            status: plan.status.as_u16(),
            body: body.clone(),
            created_at: chrono::Utc::now(),
            last_seq: 0,
        });
        let request = AppendRequest {
            events,
            expectations: plan.expectations,
            claims: plan.claims,
            releases: plan.releases,
            idempotency,
            tokens: plan.tokens,
            revocations: plan.revocations,
            secrets: plan.secrets,
            // Any control plane serves the API; only its reconcilers are fenced.
            fence: None,
        };
        let appended = match self.store.append(request).await {
            Ok(a) => a,
            Err(vt_store::StoreError::IdempotencyRace { .. }) => {
                // The same key committed concurrently: answer as that request did.
                let k = ctx.idempotency.as_ref().ok_or_else(|| ApiErr::internal("idempotency race without a key"))?;
                let rec = self
                    .store
                    .idempotency_get(&k.scope, &k.key)
                    .await?
                    .ok_or_else(|| ApiErr::internal("idempotency record vanished"))?;
                return Committed::replay(&rec, k);
            }
            Err(e) => return Err(e.into()),
        };
        let seq = appended.last_seq;
        if appended.last_seq >= appended.first_seq {
            if let Err(e) = self.projector.wait_for(seq, READ_YOUR_WRITES).await {
                // The write is committed: report success, and say the views lag.
                tracing::warn!(seq, error = %e, "views lag behind a committed write");
            }
        }
        Ok(Committed { status: plan.status, body, seq, replayed: false })
    }
}

/// Who is calling and what the request carries, for commands.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub request_id: RequestId,
    /// The request's time: every event and view it writes carries this instant.
    pub at: chrono::DateTime<chrono::Utc>,
    pub caller: Caller,
    pub idempotency: Option<IdempotencyKey>,
}

impl Ctx {
    pub fn new(request_id: RequestId, caller: Caller) -> Self {
        let now = chrono::Utc::now();
        // Stored with microsecond precision: keep responses identical to what the log replays.
        let at = chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        Ctx { request_id, at, caller, idempotency: None }
    }

    fn event(&self, event: Event) -> NewEvent {
        let mut e = NewEvent::new(event, self.actor(), Some(self.request_id));
        e.occurred_at = self.at;
        e
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.at
    }

    pub fn actor(&self) -> Actor {
        Actor::token(self.caller.token())
    }

    /// May the caller do `action` to `resource`? The one check every operation
    /// makes first. A hidden resource answers 404 with `not_found`'s message.
    pub fn authorize(&self, action: Action, resource: Resource, not_found: impl FnOnce() -> ApiErr) -> ApiResult<()> {
        match authz::check(&self.caller, action, resource) {
            Ok(()) => Ok(()),
            Err(Denied::Hidden) => Err(not_found()),
            Err(Denied::Forbidden(why)) => Err(ApiErr::forbidden(why)),
        }
    }

    /// Refuse an `Idempotency-Key` on a request whose answer carries a secret (`what`: a token,
    /// an exec grant): a replay would have to store the secret, so nothing is kept instead.
    pub fn refuse_replay(&self, what: &str) -> ApiResult<()> {
        if self.idempotency.is_some() {
            return Err(ApiErr::invalid(
                "Idempotency-Key",
                format!("{what} cannot be replayed (its secret is never stored); send it without `Idempotency-Key`"),
            ));
        }
        Ok(())
    }

    /// [`Ctx::authorize`] for cluster-wide resources, which are never hidden.
    pub fn authorize_cluster(&self, action: Action) -> ApiResult<()> {
        self.authorize(action, Resource::Cluster, || ApiErr::forbidden("this needs an admin token"))
    }
}

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
}

/// What a command wants written, and what it answers.
pub struct Plan<T> {
    pub status: StatusCode,
    pub events: Vec<Event>,
    pub expectations: Vec<Expectation>,
    pub claims: Vec<Claim>,
    /// Claims given up in the same transaction (a deleted resource frees its names).
    pub releases: Vec<Claim>,
    pub tokens: Vec<TokenRecord>,
    pub revocations: Vec<TokenRevocation>,
    pub secrets: Vec<SecretWrite>,
    pub response: T,
}

impl<T> Plan<T> {
    pub fn new(status: StatusCode, response: T) -> Self {
        Plan {
            status,
            events: vec![],
            expectations: vec![],
            claims: vec![],
            releases: vec![],
            tokens: vec![],
            revocations: vec![],
            secrets: vec![],
            response,
        }
    }
    pub fn event(mut self, e: Event) -> Self {
        self.events.push(e);
        self
    }
    pub fn expect(mut self, e: Expectation) -> Self {
        self.expectations.push(e);
        self
    }
    pub fn claim(mut self, c: Claim) -> Self {
        self.claims.push(c);
        self
    }
    pub fn release(mut self, c: Claim) -> Self {
        self.releases.push(c);
        self
    }
    /// The same writes with another response.
    pub fn respond<U>(self, response: U) -> Plan<U> {
        Plan {
            status: self.status,
            events: self.events,
            expectations: self.expectations,
            claims: self.claims,
            releases: self.releases,
            tokens: self.tokens,
            revocations: self.revocations,
            secrets: self.secrets,
            response,
        }
    }
}

/// A committed (or replayed) mutation's response.
#[derive(Debug, Clone)]
pub struct Committed {
    pub status: StatusCode,
    pub body: String,
    pub seq: u64,
    pub replayed: bool,
}

impl Committed {
    pub fn replay(rec: &IdempotencyRecord, key: &IdempotencyKey) -> ApiResult<Committed> {
        if rec.request_hash != key.request_hash {
            return Err(ApiErr::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                vt_api::ErrorCode::IdempotencyKeyReused,
                format!(
                    "idempotency key {} was already used for a different request; use a new key for a new request",
                    vt_ids::shown(&key.key)
                ),
            )
            .field("Idempotency-Key"));
        }
        let status = StatusCode::from_u16(rec.status).map_err(ApiErr::internal)?;
        Ok(Committed { status, body: rec.body.clone(), seq: rec.last_seq, replayed: true })
    }
}
