//! Tokens: who may call the API, with which role, where.
//!
//! `admin` and `node` tokens are the operator's to make; an org's tokens
//! (`owner`, `deployer`, `viewer`) its owners'. The secret is in the answer
//! that creates a token and nowhere else: not in the log, the views, the
//! idempotency records or any error.

use axum::http::StatusCode;
use vt_api::{CreateToken, IssuedToken, Token, TokenQuery, TokenRole, TokenState};
use vt_events::AggregateType;
use vt_ids::{Hostname, NodeId, TokenId};
use vt_views::{NodeView, TokenView, ViewKind};

use super::exists;
use crate::auth::{self, TokenSpec};
use crate::authz::{Action, Resource};
use crate::lookup::{authorize_in, shown};
use crate::{wire, ApiErr, ApiResult, ControlPlane, Ctx, Plan};

/// The longest a token may live: ten years.
const MAX_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

impl ControlPlane {
    /// Issue a token. The answer carries its secret, once.
    pub async fn token_create(&self, ctx: &Ctx, req: CreateToken) -> ApiResult<(StatusCode, IssuedToken)> {
        ctx.refuse_replay("token creation")?;
        let mut plan = Plan::new(StatusCode::CREATED, ());
        let (org, node) = match req.role {
            TokenRole::Admin | TokenRole::Node => {
                ctx.authorize_cluster(Action::Operate)?;
                if req.org.is_some() {
                    return Err(ApiErr::invalid(
                        "org",
                        format!(
                            "`{}` tokens belong to no org; remove `org` (or pick an org role: owner, deployer, viewer)",
                            req.role
                        ),
                    ));
                }
                let node = match (req.role, &req.node) {
                    (TokenRole::Node, Some(n)) => Some(self.node_binding(n).await?),
                    (TokenRole::Node, None) => {
                        return Err(ApiErr::invalid(
                            "node",
                            "a `node` token needs `node`: the name (or id) of the node it is for",
                        ))
                    }
                    (_, Some(_)) => {
                        return Err(ApiErr::invalid("node", "only `node` tokens are bound to a node; remove `node`"))
                    }
                    (_, None) => None,
                };
                (None, node)
            }
            TokenRole::Enroll => {
                return Err(ApiErr::invalid(
                    "role",
                    "enrollment tokens are made with `vt node enroll-token create` (`POST /v1/nodes/enroll-tokens`)",
                ))
            }
            TokenRole::Owner | TokenRole::Deployer | TokenRole::Viewer => {
                let r = req.org.as_deref().ok_or_else(|| {
                    ApiErr::invalid("org", format!("a `{}` token acts in one org: name it in `org`", req.role))
                })?;
                let org = self.lookup_org(ctx, r).await?;
                authorize_in(ctx, Action::Manage, &org)?;
                if req.node.is_some() {
                    return Err(ApiErr::invalid("node", "only `node` tokens are bound to a node; remove `node`"));
                }
                plan = plan.expect(exists(AggregateType::Org, org.id));
                (Some(org.id), None)
            }
        };
        let expires_at = match req.expires_in_secs {
            None => None,
            Some(secs @ 1..=MAX_LIFETIME_SECS) => Some(ctx.now() + chrono::Duration::seconds(secs as i64)),
            Some(secs) => {
                return Err(ApiErr::invalid(
                    "expires_in_secs",
                    format!("`expires_in_secs` must be 1 to {MAX_LIFETIME_SECS} (ten years); got {secs}"),
                ))
            }
        };
        let spec = TokenSpec { name: req.name, role: req.role, org, node, expires_at, labels: Default::default() };
        self.issue_token(ctx, plan, spec).await
    }

    /// Issue the token `spec` describes with `plan`'s other writes; the answer carries its
    /// secret, once (`pub(crate)`: enrollment tokens are issued through it too).
    pub(crate) async fn issue_token(
        &self,
        ctx: &Ctx,
        mut plan: Plan<()>,
        spec: TokenSpec,
    ) -> ApiResult<(StatusCode, IssuedToken)> {
        let issued = auth::issue(spec, ctx.now()).map_err(ApiErr::internal)?;
        let vt_events::Event::TokenCreated(created) = &issued.event else {
            return Err(ApiErr::internal("a token's issue made no token.created event"));
        };
        let view = TokenView::created(created, ctx.now(), &ctx.actor().0);
        let token = wire::token(view, ctx.now());
        plan.events.push(issued.event);
        plan.tokens.push(issued.record);
        let committed = self.commit(ctx, plan.respond(token.clone())).await?;
        Ok((committed.status, IssuedToken { token, secret: issued.secret }))
    }

    /// The node a `node` token is for: a registered node, or a new id for the
    /// name a new node will register under.
    async fn node_binding(&self, r: &str) -> ApiResult<(NodeId, Hostname)> {
        let found: Vec<NodeView> = self.find(None, r).await?;
        if let Some(node) = found.into_iter().next() {
            let name = Hostname::parse(&node.name).map_err(ApiErr::internal)?;
            return Ok((node.id, name));
        }
        if r.starts_with("node_") {
            return Err(
                ApiErr::not_found(format!("node {} not found; `vt node list` shows the nodes", shown(r))).field("node")
            );
        }
        let name = Hostname::parse(r).map_err(|e| ApiErr::invalid("node", format!("`node`: {e}")))?;
        Ok((NodeId::new(), name))
    }

    /// Tokens the caller manages: an admin all (or one org's), an owner its org's.
    /// Active ones only unless `all`; oldest first.
    pub async fn token_list(&self, ctx: &Ctx, q: TokenQuery) -> ApiResult<Vec<Token>> {
        let org = match &q.org {
            Some(r) => Some(self.lookup_org(ctx, r).await?.id),
            None => ctx.caller.org(),
        };
        match org {
            Some(org) => ctx.authorize(Action::Manage, Resource::Org(org), || ApiErr::not_found("org not found"))?,
            None => ctx.authorize_cluster(Action::Operate)?,
        }
        let mut query = Self::kind_query(ViewKind::Token);
        if let Some(org) = org {
            query = query.org(org);
        }
        let now = ctx.now();
        let mut tokens: Vec<Token> =
            self.views::<TokenView>(query).await?.into_iter().map(|t| wire::token(t, now)).collect();
        if !q.all.unwrap_or(false) {
            tokens.retain(|t| t.state == TokenState::Active);
        }
        tokens.sort_by_key(|t| t.id);
        Ok(tokens)
    }

    /// Revoke a token: refused from the next request on. Revoking a revoked
    /// token changes nothing. The last active admin token cannot be revoked.
    pub async fn token_revoke(&self, ctx: &Ctx, token: &str) -> ApiResult<crate::Committed> {
        let not_found =
            || ApiErr::not_found(format!("token {} not found; `vt token list` shows the tokens", shown(token)));
        let id = TokenId::parse(token).map_err(|_| not_found())?;
        let view: TokenView = self.view(&id.to_string()).await?.ok_or_else(not_found)?;
        match view.org_id {
            Some(org) => ctx.authorize(Action::Manage, Resource::Org(org), not_found)?,
            None => ctx.authorize_cluster(Action::Operate)?,
        }
        let now = ctx.now();
        if view.revoked_at.is_some() {
            return self.commit(ctx, Plan::new(StatusCode::OK, wire::token(view, now))).await;
        }
        // Revoking the last active admin token is refused by the store, in the append's transaction.
        let (event, revocation) = auth::revoke(view.id, view.role, view.org_id, now);
        let mut revoked = view.clone();
        revoked.revoked_at = Some(now);
        revoked.revoked_by = Some(ctx.actor().0);
        let mut plan = Plan::new(StatusCode::OK, wire::token(revoked, now)).event(event);
        plan.revocations.push(revocation);
        // Pinned to the token's version: two racing revocations record one.
        plan = plan.expect(vt_store::Expectation {
            aggregate_type: AggregateType::Token,
            aggregate_id: view.id.to_string(),
            expected: vt_store::ExpectedVersion::Exact(1),
        });
        self.commit(ctx, plan).await
    }
}
