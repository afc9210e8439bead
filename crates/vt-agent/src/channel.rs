//! The node's end of its channel (docs/nodes.md, "Logs and exec of a joined node"; the wire
//! is `vt_api::channel`): a joined node's agent keeps one WebSocket open to its control plane
//! with its node token, and answers each request on it through a stream of its own, a second
//! WebSocket it opens for that request. The control plane never dials the node, so a node
//! behind NAT serves logs and exec too, and no credential of the control plane lives here.
//!
//! [`Agent::serve_channel`] connects, and connects again with backoff whenever the channel
//! closes (a control plane restarting, a network failure, the control plane silent for
//! [`SILENCE`]). A node that knows several control planes (on one database: `--join
//! URL1,URL2`) keeps a channel to each, so whichever one a user asks serves the node's logs
//! and exec; each request's stream goes back to the control plane that asked.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use vt_api::channel::{NodeRequest, StreamOpen};
use vt_api::exec::{close, ClientFrame, ExecExit, ServerFrame, MAX_PAYLOAD};
use vt_client::exec::{CloseCode, CloseFrame, Message, Ws};
use vt_client::Client;
use vt_runtime::exec as rt;

use crate::{Agent, ExecError};

/// The first wait before connecting again; doubled after each failure up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// A channel that lived this long was healthy: the next failure starts the backoff over.
const HEALTHY: Duration = Duration::from_secs(10);
/// The control plane pings every 15 s: this long without a message, the channel is dead.
pub const SILENCE: Duration = Duration::from_secs(45);

impl Agent {
    /// Keep this node's channel to each of its control planes open and answer their requests,
    /// until the future is dropped (a joined node runs it beside [`Agent::run`]).
    pub async fn serve_channel(self: Arc<Self>) {
        let urls = std::iter::once(&self.cfg.server).chain(&self.cfg.fallback_servers);
        let channels = urls.map(|url| self.clone().keep_channel(Client::new(url, self.cfg.token.clone())));
        futures_util::future::join_all(channels).await;
    }

    /// The channel to the control plane `cp`, connected again whenever it closes.
    async fn keep_channel(self: Arc<Self>, cp: Client) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let node = self.cfg.node_name.to_string();
            let began = Instant::now();
            match cp.node_channel(&node).await {
                Ok(ws) => {
                    tracing::info!(node, control_plane = cp.base(), "channel to the control plane open");
                    let why = self.clone().follow_channel(ws, &cp).await;
                    tracing::info!(
                        node,
                        control_plane = cp.base(),
                        why,
                        "channel to the control plane closed; connecting again"
                    );
                }
                Err(e) => {
                    tracing::warn!(node, control_plane = cp.base(), error = %e, "cannot open the channel to the control plane; retrying")
                }
            }
            if began.elapsed() >= HEALTHY {
                backoff = BACKOFF_FIRST;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Take requests from an open channel to `cp` until it closes: why it did.
    async fn follow_channel(self: Arc<Self>, mut ws: Ws, cp: &Client) -> &'static str {
        loop {
            let msg = match tokio::time::timeout(SILENCE, ws.next()).await {
                Err(_) => return "the control plane was silent too long",
                Ok(None) => return "the connection ended",
                Ok(Some(Err(_))) => return "the connection failed",
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(text) => match serde_json::from_str::<NodeRequest>(text.as_str()) {
                    Ok(request) => {
                        tracing::debug!(instance = %request.instance(), kind = request.kind(), "a request of the control plane");
                        tokio::spawn(self.clone().answer(request, cp.clone()));
                    }
                    // A request of a newer control plane, say: refused by not opening its stream.
                    Err(e) => {
                        tracing::warn!(error = %e, "a request of the control plane this node does not understand")
                    }
                },
                Message::Close(_) => return "the control plane closed it",
                // Pings are answered by the WebSocket itself.
                _ => {}
            }
        }
    }

    /// Open the request's stream (to `cp`, which asked) and serve it.
    async fn answer(self: Arc<Self>, request: NodeRequest, cp: Client) {
        let instance = request.instance();
        let kind = request.kind();
        let served = match request {
            NodeRequest::Logs { request, instance, tail, follow } => {
                self.serve_logs(&cp, &request, &instance.to_string(), tail, follow).await
            }
            NodeRequest::Exec { request, instance, argv, env, cwd, user, tty } => {
                let req = rt::ExecRequest {
                    argv,
                    env: env.into_iter().collect(),
                    cwd: cwd.unwrap_or_default(),
                    user: user.unwrap_or_default(),
                    tty: tty.map(|t| (t.rows, t.cols)),
                };
                self.serve_exec(&cp, &request, &instance.to_string(), req).await
            }
        };
        if let Err(e) = served {
            tracing::warn!(%instance, kind, error = %e, "cannot serve the control plane's request");
        }
    }

    async fn open_stream(&self, cp: &Client, request: &str, open: &StreamOpen) -> Result<Ws, String> {
        let mut ws = cp.node_stream(self.cfg.node_name.as_str(), request).await.map_err(|e| e.to_string())?;
        let text = serde_json::to_string(open).map_err(|e| e.to_string())?;
        ws.send(Message::Text(text.into())).await.map_err(|e| e.to_string())?;
        Ok(ws)
    }

    /// An instance's log: its backlog, then with `follow` new lines until it ends here (or the
    /// control plane closes the stream).
    async fn serve_logs(
        self: &Arc<Self>,
        cp: &Client,
        request: &str,
        instance: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<(), String> {
        let ws = self.open_stream(cp, request, &StreamOpen::Opened).await?;
        let (mut sink, mut stream) = ws.split();
        let (me, id) = (self.clone(), instance.to_owned());
        let ended = move || {
            let (me, id) = (me.clone(), id.clone());
            async move { me.instance_ended(&id) }
        };
        let log = crate::logs::read(&self.cfg.dirs.logs, instance, tail, follow, ended);
        let sending = async {
            futures_util::pin_mut!(log);
            while let Some(chunk) = log.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => return Some(format!("reading the log failed: {e}")),
                };
                for piece in chunk.chunks(MAX_PAYLOAD) {
                    if sink.send(Message::Binary(chunk.slice_ref(piece))).await.is_err() {
                        return None;
                    }
                }
            }
            let _ = sink.send(close_message(close::NORMAL, "the end of the log")).await;
            None
        };
        // The control plane closing the stream (its reader went) ends the reading.
        let closed = async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        };
        tokio::select! {
            failed = sending => {
                if let Some(why) = failed {
                    return Err(why);
                }
            }
            () = closed => {}
        }
        Ok(())
    }

    /// An exec session, relayed between the stream and the VM's guest channel: the frames of
    /// the client's exec WebSocket, both ways.
    async fn serve_exec(&self, cp: &Client, request: &str, instance: &str, req: rt::ExecRequest) -> Result<(), String> {
        let session = self.exec(instance, req).await;
        let open = match &session {
            Ok(_) => StreamOpen::Opened,
            Err(ExecError::NotRunning) => StreamOpen::NotRunning,
            Err(ExecError::Refused(m)) => StreamOpen::Failed { message: m.clone() },
        };
        let mut ws = self.open_stream(cp, request, &open).await?;
        let Ok(rt::ExecSession { mut input, mut output }) = session else {
            let _ = ws.send(close_message(close::NORMAL, "not opened")).await;
            return Ok(());
        };
        let (mut sink, mut stream) = ws.split();
        let to_control_plane = async {
            while let Some(out) = output.recv().await {
                let frames = match out {
                    rt::ExecOutput::Stdout(d) => chunks(d, ServerFrame::Stdout),
                    rt::ExecOutput::Stderr(d) => chunks(d, ServerFrame::Stderr),
                    rt::ExecOutput::Exit(status) => {
                        let exit = match status {
                            vt_runtime::ExitStatus::Code(c) => ExecExit::Code(c),
                            vt_runtime::ExitStatus::Signal(s) => ExecExit::Signal(s),
                        };
                        let _ = sink.send(Message::Binary(ServerFrame::Exit(exit).encode())).await;
                        let _ = sink.send(close_message(close::NORMAL, "exited")).await;
                        return;
                    }
                };
                for frame in frames {
                    if sink.send(Message::Binary(frame.encode())).await.is_err() {
                        return;
                    }
                }
            }
            let lost = ServerFrame::Error("the session ended without an exit status".into());
            let _ = sink.send(Message::Binary(lost.encode())).await;
            let _ = sink.send(close_message(close::INTERNAL_ERROR, "session lost")).await;
        };
        // Ends when the control plane closes the stream (the client went): dropping `input`
        // with it hangs the command up.
        let from_control_plane = async {
            while let Some(Ok(msg)) = stream.next().await {
                let frame = match msg {
                    Message::Binary(b) => b,
                    Message::Close(_) => return,
                    _ => continue,
                };
                let item = match ClientFrame::decode(frame) {
                    Ok(ClientFrame::Stdin(b)) => rt::ExecInput::Stdin(b.to_vec()),
                    Ok(ClientFrame::StdinEof) => rt::ExecInput::StdinEof,
                    Ok(ClientFrame::Resize { rows, cols }) => rt::ExecInput::Resize { rows, cols },
                    Ok(ClientFrame::Signal(s)) => rt::ExecInput::Signal(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "a malformed exec frame from the control plane");
                        return;
                    }
                };
                if input.send(item).await.is_err() {
                    // The session ended; its output says how.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = to_control_plane => {}
            () = from_control_plane => {}
        }
        Ok(())
    }

    /// Whether `instance` has ended on this node: a log follower stops. One without a record
    /// yet (placed here, not started: a follower from its allocation on) has not; the control
    /// plane ends a follower of an instance that never runs here (its view ends it).
    pub fn instance_ended(&self, instance: &str) -> bool {
        self.shutting_down() || self.states.load(instance).is_some_and(|r| r.phase.is_terminal())
    }
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() }))
}

/// Output as frames of at most [`MAX_PAYLOAD`] bytes.
fn chunks(data: Vec<u8>, make: fn(bytes::Bytes) -> ServerFrame) -> Vec<ServerFrame> {
    let data = bytes::Bytes::from(data);
    data.chunks(MAX_PAYLOAD).map(|c| make(data.slice_ref(c))).collect()
}
