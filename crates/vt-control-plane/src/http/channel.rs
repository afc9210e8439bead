//! A node's channel and its streams (`crate::channel`; the wire is `vt_api::channel`): two
//! WebSockets a node's agent opens with its own token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::exec::{close, MAX_FRAME};
use vt_api::ErrorBody;
use vt_ids::{NodeId, TokenId};

use super::Cp;
use crate::authz::Action;
use crate::{ApiErr, ApiResult, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<Arc<ControlPlane>> {
    OpenApiRouter::new().routes(routes!(node_channel)).routes(routes!(node_stream))
}

/// How often the control plane pings a channel (and checks its token is still alive). A node
/// that hears nothing for three of these connects again.
pub const PING_EVERY: Duration = Duration::from_secs(15);

fn not_upgrade(e: WebSocketUpgradeRejection) -> ApiErr {
    super::websocket_required(e, "a node's agent")
}

/// The node's channel: a WebSocket on which the control plane sends the node's agent requests
/// for its instances' logs and exec sessions (text messages, `vt_api::channel::NodeRequest`).
/// The node's own token only. A newer channel of the node replaces this one.
#[utoipa::path(get, path = "/nodes/{node}/channel", tag = "nodes",
    params(("node" = String, Path, description = "id or name")),
    responses((status = 101, description = "switching to the channel's WebSocket"),
        (status = "4XX", body = ErrorBody, description = "403 for any token but the node's own (admins too); 404 for an unknown node; 400 or 426 when the request is not a WebSocket upgrade")))]
async fn node_channel(
    State(cp): Cp,
    ctx: Ctx,
    Path(node): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let node = cp.authorized_node(&ctx, &node, Action::Serve).await?.id;
    let upgrade = upgrade.map_err(not_upgrade)?;
    let token = ctx.caller.token();
    Ok(upgrade.on_upgrade(move |socket| serve_channel(cp, node, token, socket)).into_response())
}

/// A stream the node opens for one request of its channel: a WebSocket whose first message
/// says whether the node opened what was asked (`vt_api::channel::StreamOpen`), then the log's
/// bytes or the exec session's frames. Each request's stream opens once, by the node it was
/// sent to.
#[utoipa::path(get, path = "/nodes/{node}/streams/{request}", tag = "nodes",
    params(("node" = String, Path, description = "id or name"),
        ("request" = String, Path, description = "the request's id (`vtq_<64 hex>`), from the channel")),
    responses((status = 101, description = "switching to the stream's WebSocket"),
        (status = "4XX", body = ErrorBody, description = "403 for any token but the node's own; 404 for a request that is unknown, already opened, timed out or sent to another node; 400 or 426 when the request is not a WebSocket upgrade")))]
async fn node_stream(
    State(cp): Cp,
    ctx: Ctx,
    Path((node, request)): Path<(String, String)>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let node = cp.authorized_node(&ctx, &node, Action::Serve).await?.id;
    let upgrade = upgrade.map_err(not_upgrade)?;
    // Never quotes the id: it opens the stream.
    let deliver = cp.channels.claim(node, &request).ok_or_else(|| {
        ApiErr::not_found(
            "no such stream request for this node (unknown, already opened, or its user request gave up waiting)",
        )
        .field("request")
    })?;
    Ok(upgrade
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            // The user request gave up in the meantime: the socket closes.
            let _ = deliver.send(socket);
        })
        .into_response())
}

/// Send the node its requests until it goes, a newer channel replaces it, its token dies or
/// the server stops.
async fn serve_channel(cp: Arc<ControlPlane>, node: NodeId, token: TokenId, socket: WebSocket) {
    let (generation, mut requests) = cp.channels.attach(node);
    tracing::info!(%node, "node channel connected");
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let closed = cp.closed();
    tokio::pin!(closed);
    let (why, close_frame) = loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(request) => {
                    let text = match serde_json::to_string(&request) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(%node, error = %e, "cannot encode a node request");
                            continue;
                        }
                    };
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break ("the connection failed", None);
                    }
                }
                None => break ("a newer channel of the node replaced it", Some((close::NORMAL, "replaced"))),
            },
            message = stream.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break ("the node closed it", None),
                // Pongs, and whatever else a node sends: nothing is expected from it here.
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if !token_alive(&cp, token).await {
                    break ("the node's token was revoked", Some((close::PROTOCOL_ERROR, "the node's token was revoked")));
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break ("the connection failed", None);
                }
            }
            () = &mut closed => break ("the server is stopping", Some((close::GOING_AWAY, "the server is stopping"))),
        }
    };
    cp.channels.detach(node, generation);
    if let Some((code, reason)) = close_frame {
        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    }
    tracing::info!(%node, why, "node channel closed");
}

/// Whether `token` is still valid (not revoked, not expired); a store failure keeps it.
async fn token_alive(cp: &ControlPlane, token: TokenId) -> bool {
    match cp.view::<vt_views::TokenView>(&token.to_string()).await {
        Ok(Some(t)) => t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > chrono::Utc::now()),
        Ok(None) => false,
        Err(_) => true,
    }
}
