//! `/v1/tokens`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::{CreateToken, ErrorBody, IssuedToken, List, Token, TokenQuery};

use super::{Cp, JsonBody, Out, QueryParams};
use crate::{ApiResult, Committed, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<std::sync::Arc<ControlPlane>> {
    OpenApiRouter::new().routes(routes!(token_create, token_list)).routes(routes!(token_revoke))
}

/// Issue a token; the answer carries its secret, once. `admin` and `node` tokens: admin; an org role: that org's owner.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = IssuedToken), (status = "4XX", body = ErrorBody, description = "422 with `field` `Idempotency-Key` when one is sent: a token's creation cannot be replayed")))]
async fn token_create(State(cp): Cp, ctx: Ctx, JsonBody(req): JsonBody<CreateToken>) -> ApiResult<Response> {
    let (status, issued) = cp.token_create(&ctx, req).await?;
    Ok((status, Json(issued)).into_response())
}

/// Tokens, without secrets, oldest first: an admin's all (or one org's), an owner's its org's.
#[utoipa::path(get, path = "/tokens", tag = "tokens", params(TokenQuery),
    responses((status = 200, body = List<Token>), (status = "4XX", body = ErrorBody)))]
async fn token_list(State(cp): Cp, ctx: Ctx, QueryParams(q): QueryParams<TokenQuery>) -> Out<List<Token>> {
    Ok(Json(List { items: cp.token_list(&ctx, q).await? }))
}

/// Revoke a token: refused from the next request on.
#[utoipa::path(delete, path = "/tokens/{token}", tag = "tokens",
    params(("token" = String, Path, description = "id (`tok_...`)"), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = Token, description = "the token, revoked"), (status = "4XX", body = ErrorBody, description = "409 for the last active admin token")))]
async fn token_revoke(State(cp): Cp, ctx: Ctx, Path(token): Path<String>) -> ApiResult<Committed> {
    cp.token_revoke(&ctx, &token).await
}
