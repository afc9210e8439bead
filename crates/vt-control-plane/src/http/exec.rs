//! `vt exec`: a grant (`POST /v1/instances/{id}/exec`), then the session over a WebSocket
//! (`GET /v1/exec/{grant}`), relayed between the client and the [`ExecBackend`]'s channels.
//!
//! The relay holds no buffer of its own: it reads the client's next frame only once the
//! session took the previous one (`input` is bounded), and takes the session's next output
//! only once the client's socket took the previous frame. A client that stops reading stops
//! the command (through the backend's bounded output), never grows the server's memory.
//!
//! [`ExecBackend`]: crate::exec::ExecBackend

use std::sync::Arc;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use utoipa_axum::{router::OpenApiRouter, routes};
use vt_api::exec::{close, ClientFrame, CreateExec, ExecExit, ExecGrant, ServerFrame, MAX_FRAME, MAX_PAYLOAD};
use vt_api::{ErrorBody, ErrorCode};
use vt_events::ExecEnd;

use super::{Cp, JsonBody};
use crate::app::exec::Ending;
use crate::exec::{ExecError, ExecInput, ExecOutput, ExecSession, ExitStatus};
use crate::{ApiErr, ApiResult, ControlPlane, Ctx};

pub(super) fn routes() -> OpenApiRouter<Arc<ControlPlane>> {
    OpenApiRouter::new().routes(routes!(exec_create)).routes(routes!(exec_connect))
}

/// Ask to run a command in an instance: a grant, valid once, for 60 s, to the token that asks
/// (deployers and owners of the instance's org). The answer carries the grant's secret, once.
#[utoipa::path(post, path = "/instances/{instance}/exec", tag = "exec", request_body = CreateExec,
    params(("instance" = String, Path, description = "id")),
    responses((status = 201, body = ExecGrant),
        (status = "4XX", body = ErrorBody, description = "409 when the instance is not `running` (the message names its status) or its node's agent is not connected to this control plane (the message names the node); 422 with `field` `Idempotency-Key` when one is sent: a grant cannot be replayed"),
        (status = 503, body = ErrorBody, description = "too many grants are outstanding")))]
async fn exec_create(
    State(cp): Cp,
    ctx: Ctx,
    Path(instance): Path<String>,
    JsonBody(req): JsonBody<CreateExec>,
) -> ApiResult<Response> {
    let (status, grant) = cp.exec_create(&ctx, &instance, req).await?;
    Ok((status, Json(grant)).into_response())
}

/// Open the session a grant allows: a WebSocket upgrade (binary frames, `vt_api::exec`), with
/// the token that asked for the grant. Each grant opens one session.
#[utoipa::path(get, path = "/exec/{grant}", tag = "exec",
    params(("grant" = String, Path, description = "the grant's secret (`vtx_<64 hex>`)")),
    responses((status = 101, description = "switching to the WebSocket of the session"),
        (status = "4XX", body = ErrorBody, description = "400 when the request is not a WebSocket upgrade; 404 for an unknown grant; 401 for another token than the grant's; 410 for a grant used or expired; 409 when the instance no longer runs or its node's agent is not connected"),
        (status = "5XX", body = ErrorBody, description = "502 when the node could not open the session (or did not open its stream within 10 s)")))]
async fn exec_connect(
    State(cp): Cp,
    ctx: Ctx,
    Path(grant): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let upgrade = upgrade.map_err(|e| super::websocket_required(e, "`vt exec`"))?;
    let redeemed = cp.exec_redeem(&ctx, &grant)?;
    let session = match redeemed.backend.open(redeemed.instance_id, redeemed.node_id, redeemed.request.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let err = match &e {
                ExecError::NotRunning => ApiErr::conflict(format!(
                    "instance {} is not running on a node this control plane reaches; `vt instances` shows its status",
                    redeemed.instance_id
                )),
                ExecError::Unreachable(m) => ApiErr::conflict(m.clone()),
                ExecError::Failed(m) => ApiErr::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::Unavailable,
                    format!("the node could not open the session: {m}"),
                ),
            };
            let ending = Ending { end: ExecEnd::Failed, exit: None, reason: Some(err.message.clone()) };
            cp.exec_ended(&ctx, &redeemed, ending).await;
            return Err(err);
        }
    };
    // An upgrade that fails after the 101 (the client went at once) drops the session too.
    let failed = (cp.clone(), ctx.clone(), redeemed.clone());
    let upgrade = upgrade.max_message_size(MAX_FRAME).max_frame_size(MAX_FRAME).on_failed_upgrade(move |e| {
        let (cp, ctx, redeemed) = failed;
        tokio::spawn(async move {
            let reason = format!("the WebSocket upgrade failed: {e}");
            cp.exec_ended(&ctx, &redeemed, Ending { end: ExecEnd::Disconnected, exit: None, reason: Some(reason) })
                .await;
        });
    });
    Ok(upgrade
        .on_upgrade(move |socket| async move {
            let ending = relay(&cp, socket, session).await;
            cp.exec_ended(&ctx, &redeemed, ending).await;
        })
        .into_response())
}

/// How the client's side ended.
enum ClientEnd {
    /// Closed, or gone.
    Gone,
    /// Sent something that is not a frame: why.
    Malformed(String),
}

/// How the session's side ended.
enum SessionEnd {
    Exit(ExitStatus),
    /// The output closed without an exit status.
    Lost,
    /// The client's socket failed while we wrote to it.
    ClientGone,
}

/// How long the server waits for the client's answer to its close frame.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

enum Ended {
    Client(ClientEnd),
    Session(SessionEnd),
    Stopping,
}

/// A data frame as frames of at most [`MAX_PAYLOAD`] bytes each (an exit or error frame as is).
fn split(frame: ServerFrame) -> Vec<bytes::Bytes> {
    let chunks = |data: bytes::Bytes, make: fn(bytes::Bytes) -> ServerFrame| {
        let mut out = Vec::with_capacity(data.len().div_ceil(MAX_PAYLOAD).max(1));
        let mut rest = data;
        loop {
            let take = rest.len().min(MAX_PAYLOAD);
            let head = rest.split_to(take);
            out.push(make(head).encode());
            if rest.is_empty() {
                return out;
            }
        }
    };
    match frame {
        ServerFrame::Stdout(b) => chunks(b, ServerFrame::Stdout),
        ServerFrame::Stderr(b) => chunks(b, ServerFrame::Stderr),
        other => vec![other.encode()],
    }
}

/// Relay one session until it exits, the client goes, a frame is malformed or the server stops.
async fn relay(cp: &ControlPlane, socket: WebSocket, session: ExecSession) -> Ending {
    let (mut sink, mut stream) = socket.split();
    let ExecSession { input, mut output } = session;
    // Dropping this future drops `input`: the backend hangs the command up.
    let reading = &mut stream;
    let from_client = async move {
        while let Some(msg) = reading.next().await {
            let frame = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => return ClientEnd::Gone,
                Ok(Message::Text(_)) => return ClientEnd::Malformed("text message: frames are binary".into()),
            };
            let item = match ClientFrame::decode(frame) {
                Ok(ClientFrame::Stdin(b)) => ExecInput::Stdin(b),
                Ok(ClientFrame::StdinEof) => ExecInput::StdinEof,
                Ok(ClientFrame::Resize { rows, cols }) => ExecInput::Resize(crate::exec::WindowSize { rows, cols }),
                Ok(ClientFrame::Signal(n)) => ExecInput::Signal(n),
                Err(e) => return ClientEnd::Malformed(format!("malformed frame: {e}")),
            };
            if input.send(item).await.is_err() {
                // The session ended; its output says how.
                std::future::pending::<()>().await;
            }
        }
        ClientEnd::Gone
    };
    let to_client = async {
        while let Some(out) = output.recv().await {
            let frame = match out {
                ExecOutput::Stdout(b) => ServerFrame::Stdout(b),
                ExecOutput::Stderr(b) => ServerFrame::Stderr(b),
                ExecOutput::Exit(status) => {
                    let exit = match status {
                        ExitStatus::Code(c) => ExecExit::Code(c),
                        ExitStatus::Signal(s) => ExecExit::Signal(s),
                    };
                    if sink.send(Message::Binary(ServerFrame::Exit(exit).encode())).await.is_err() {
                        return SessionEnd::ClientGone;
                    }
                    return SessionEnd::Exit(status);
                }
            };
            // Data frames longer than a frame's payload are cut into several.
            for frame in split(frame) {
                if sink.send(Message::Binary(frame)).await.is_err() {
                    return SessionEnd::ClientGone;
                }
            }
        }
        SessionEnd::Lost
    };
    let ended = tokio::select! {
        end = from_client => Ended::Client(end),
        end = to_client => Ended::Session(end),
        () = cp.closed() => Ended::Stopping,
    };
    let (ending, close_frame) = match ended {
        Ended::Session(SessionEnd::Exit(status)) => {
            let reason = match status {
                ExitStatus::Code(c) => format!("exited with code {c}"),
                ExitStatus::Signal(s) => format!("killed by signal {s}"),
            };
            (Ending { end: ExecEnd::Exited, exit: Some(status), reason: None }, Some((close::NORMAL, reason)))
        }
        Ended::Session(SessionEnd::ClientGone) | Ended::Client(ClientEnd::Gone) => {
            (Ending { end: ExecEnd::Disconnected, exit: None, reason: None }, None)
        }
        Ended::Session(SessionEnd::Lost) => {
            let reason = "the session ended without an exit status (the instance stopped, or its node lost it)";
            let _ = sink.send(Message::Binary(ServerFrame::Error(reason.into()).encode())).await;
            (
                Ending { end: ExecEnd::Failed, exit: None, reason: Some(reason.into()) },
                Some((close::INTERNAL_ERROR, "session lost".to_owned())),
            )
        }
        Ended::Client(ClientEnd::Malformed(why)) => (
            Ending { end: ExecEnd::MalformedInput, exit: None, reason: Some(why.clone()) },
            Some((close::PROTOCOL_ERROR, why)),
        ),
        Ended::Stopping => (
            Ending { end: ExecEnd::ServerStopped, exit: None, reason: None },
            Some((close::GOING_AWAY, "the server is stopping".to_owned())),
        ),
    };
    if let Some((code, reason)) = close_frame {
        let frame = CloseFrame { code, reason: vt_ids::cut(&reason, 120).into_owned().into() };
        if sink.send(Message::Close(Some(frame))).await.is_ok() {
            // The closing handshake: read what the client still sends until its close (briefly). A
            // socket closed with unread input is reset, and the reset can destroy what the
            // client has not read yet (the exit frame).
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                while let Some(Ok(msg)) = stream.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
    ending
}
