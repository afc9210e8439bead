//! Exec: grants to run a command in an instance, and their redemption.
//!
//! `POST /v1/instances/{id}/exec` checks the caller (a deployer of the instance's org), the
//! request and the instance (running), records `instance.exec_granted` and answers a grant:
//! 32 random bytes (`vtx_<64 hex>`), valid once, for [`Exec::ttl`] (60 s), to the token that
//! asked. The grant's secret is in that answer only; the control plane keeps its sha256, in
//! memory: a grant is redeemed on the control plane that issued it (a single control plane
//! today; several behind one address would need the redemption to reach the issuer, or
//! these hashes in the store). A restart forgets every grant, which costs a new `vt exec`.
//!
//! `GET /v1/exec/{grant}` redeems it ([`ControlPlane::exec_redeem`]) and the HTTP layer
//! relays the session (`http/exec.rs`); when the session ends, `instance.exec_ended`
//! records how ([`ControlPlane::exec_ended`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sha2::Digest;
use vt_api::exec::{CreateExec, ExecGrant};
use vt_api::ErrorCode;
use vt_events::{Event, ExecEnd, InstanceExecEnded, InstanceExecGranted, InstanceStatus};
use vt_ids::{ExecId, InstanceId, NodeId, OrgId, TokenId};

use crate::authz::Action;
use crate::channel::Dispatch;
use crate::exec::{ExecBackend, ExecRequest, WindowSize};
use crate::{ApiErr, ApiResult, ControlPlane, Ctx, Plan};

/// Grants kept at once (issued and not yet forgotten); past it, new ones are refused (503).
const MAX_GRANTS: usize = 10_000;
/// How long a used or expired grant is remembered, to answer 410 rather than 404.
const REMEMBER: Duration = Duration::from_secs(600);
/// The prefix of a grant's secret.
const PREFIX: &str = "vtx_";

/// The exec side of a control plane: its backend and the grants it issued.
pub(crate) struct Exec {
    backend: Arc<Dispatch>,
    ttl: Duration,
    grants: Mutex<HashMap<[u8; 32], Grant>>,
}

struct Grant {
    exec_id: ExecId,
    org_id: OrgId,
    instance_id: InstanceId,
    node_id: NodeId,
    token: TokenId,
    request: ExecRequest,
    expires_at: DateTime<Utc>,
    used: bool,
}

impl Exec {
    pub(crate) fn new(backend: Arc<Dispatch>, ttl: Duration) -> Self {
        Exec { backend, ttl, grants: Mutex::new(HashMap::new()) }
    }
}

fn hash(secret: &str) -> [u8; 32] {
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// A redeemed grant: what to open, for whom.
#[derive(Clone)]
pub struct Redeemed {
    pub exec_id: ExecId,
    pub org_id: OrgId,
    pub instance_id: InstanceId,
    /// The node the instance is placed on.
    pub node_id: NodeId,
    pub request: ExecRequest,
    pub backend: Arc<dyn ExecBackend>,
}

/// How a session ended, for its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub end: ExecEnd,
    pub exit: Option<crate::exec::ExitStatus>,
    pub reason: Option<String>,
}

fn not_found() -> ApiErr {
    // Never quotes the path: it is the grant's secret.
    ApiErr::not_found(
        "no such exec grant (grants live on the control plane that issued them and are forgotten when it restarts); ask for a new one",
    )
    .field("grant")
}

impl ControlPlane {
    /// Issue a grant to run `req` in `instance`. The answer carries the grant's secret, once.
    pub async fn exec_create(&self, ctx: &Ctx, instance: &str, req: CreateExec) -> ApiResult<(StatusCode, ExecGrant)> {
        ctx.refuse_replay("an exec grant")?;
        let instance = self.lookup_instance(ctx, instance, Action::Exec).await?;
        let request = check(&req)?;
        if instance.status != InstanceStatus::Running {
            return Err(ApiErr::conflict(format!(
                "instance {} is `{}`; exec needs a `running` instance (`vt instances` shows them)",
                instance.id,
                instance.status.as_str()
            )));
        }
        if !self.exec.backend.serves_exec(instance.node_id) {
            return Err(self.node_not_connected(instance.node_id).await);
        }
        let mut secret_bytes = [0u8; 32];
        getrandom::fill(&mut secret_bytes).map_err(ApiErr::internal)?;
        let secret = zeroize::Zeroizing::new(format!("{PREFIX}{}", hex::encode(secret_bytes)));
        let exec_id = ExecId::new();
        let ttl = chrono::Duration::from_std(self.exec.ttl).map_err(ApiErr::internal)?;
        let expires_at = ctx.now() + ttl;
        let event = InstanceExecGranted {
            exec_id,
            org_id: instance.org_id,
            env_id: instance.env_id,
            instance_id: instance.id,
            token_id: ctx.caller.token(),
            argv: request.argv.clone(),
            env_names: request.env.iter().map(|(k, _)| k.clone()).collect(),
            cwd: request.cwd.clone(),
            user: request.user.clone(),
            tty: request.tty.is_some(),
            expires_at,
        };
        {
            let mut grants = self.exec.grants.lock().unwrap_or_else(|e| e.into_inner());
            let now = Utc::now();
            let remember = chrono::Duration::from_std(REMEMBER).unwrap_or_default();
            grants.retain(|_, g| g.expires_at + remember > now);
            if grants.len() >= MAX_GRANTS {
                return Err(ApiErr::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    format!("{MAX_GRANTS} exec grants are outstanding; retry in a minute"),
                ));
            }
        }
        // The answer committed (and remembered, were it keyed) carries no secret.
        self.commit(ctx, Plan::new(StatusCode::CREATED, ()).event(Event::InstanceExecGranted(event))).await?;
        let grant = Grant {
            exec_id,
            org_id: instance.org_id,
            instance_id: instance.id,
            node_id: instance.node_id,
            token: ctx.caller.token(),
            request,
            expires_at,
            used: false,
        };
        self.exec.grants.lock().unwrap_or_else(|e| e.into_inner()).insert(hash(&secret), grant);
        let path = format!("/v1/exec/{}", secret.as_str());
        Ok((StatusCode::CREATED, ExecGrant { grant: secret.to_string(), expires_at, instance: instance.id, path }))
    }

    /// Redeem a grant (once, before it expires, with the token it was issued to).
    pub fn exec_redeem(&self, ctx: &Ctx, secret: &str) -> ApiResult<Redeemed> {
        let well_formed = secret
            .strip_prefix(PREFIX)
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if !well_formed {
            return Err(not_found());
        }
        let backend: Arc<dyn ExecBackend> = self.exec.backend.clone();
        let mut grants = self.exec.grants.lock().unwrap_or_else(|e| e.into_inner());
        let grant = grants.get_mut(&hash(secret)).ok_or_else(not_found)?;
        if grant.token != ctx.caller.token() {
            return Err(ApiErr::unauthorized(
                "this exec grant was issued to another token; open it with the token that asked for it",
            ));
        }
        if grant.used {
            return Err(ApiErr::new(
                StatusCode::GONE,
                ErrorCode::Gone,
                "this exec grant was already used (a grant opens one session); ask for a new one",
            ));
        }
        if grant.expires_at <= ctx.now() {
            return Err(ApiErr::new(
                StatusCode::GONE,
                ErrorCode::Gone,
                format!(
                    "this exec grant expired at {} (a grant is valid for {} s); ask for a new one",
                    grant.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    self.exec.ttl.as_secs()
                ),
            ));
        }
        grant.used = true;
        Ok(Redeemed {
            exec_id: grant.exec_id,
            org_id: grant.org_id,
            instance_id: grant.instance_id,
            node_id: grant.node_id,
            request: grant.request.clone(),
            backend,
        })
    }

    /// Record how a session ended (`instance.exec_ended`). A failure to record is logged:
    /// the session is over either way.
    pub async fn exec_ended(&self, ctx: &Ctx, redeemed: &Redeemed, ending: Ending) {
        let (exit_code, signal) = match ending.exit {
            Some(crate::exec::ExitStatus::Code(c)) => (Some(c), None),
            Some(crate::exec::ExitStatus::Signal(s)) => (None, Some(s)),
            None => (None, None),
        };
        let event = InstanceExecEnded {
            exec_id: redeemed.exec_id,
            org_id: redeemed.org_id,
            instance_id: redeemed.instance_id,
            end: ending.end,
            exit_code,
            signal,
            reason: ending.reason,
        };
        let ctx = Ctx::new(ctx.request_id, ctx.caller);
        if let Err(e) = self.commit(&ctx, Plan::new(StatusCode::OK, ()).event(Event::InstanceExecEnded(event))).await {
            tracing::warn!(exec = %redeemed.exec_id, error = %e.internal.as_deref().unwrap_or(&e.message), "cannot record the end of an exec session");
        }
    }
}

/// The request as the backend takes it; what the schema cannot say.
fn check(req: &CreateExec) -> ApiResult<ExecRequest> {
    if req.argv.first().is_none_or(|a| a.is_empty()) {
        return Err(ApiErr::invalid("argv", "`argv` needs a command: its first word is not empty"));
    }
    let mut env = Vec::with_capacity(req.env.len());
    for (name, value) in &req.env {
        let name =
            vt_ids::EnvVarName::parse(name).map_err(|e| ApiErr::invalid(format!("env.{name}"), e.to_string()))?;
        env.push((name.into_string(), value.clone()));
    }
    let tty = match (req.tty, req.rows, req.cols) {
        (true, rows, cols) => Some(WindowSize { rows: rows.unwrap_or(24).max(1), cols: cols.unwrap_or(80).max(1) }),
        (false, None, None) => None,
        (false, _, _) => {
            return Err(ApiErr::invalid(
                if req.rows.is_some() { "rows" } else { "cols" },
                "`rows` and `cols` are a terminal's size: send them with `tty: true`",
            ))
        }
    };
    Ok(ExecRequest { argv: req.argv.clone(), env, cwd: req.cwd.clone(), user: req.user.clone(), tty })
}
