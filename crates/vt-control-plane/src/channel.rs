//! The nodes' channels, the control plane's end (docs/nodes.md, "Logs and exec of a joined
//! node"; the wire is `vt_api::channel`).
//!
//! The control plane never dials a node. A joined node's agent keeps a WebSocket open to it
//! (`GET /v1/nodes/{node}/channel`, its own token): the [`Hub`] keeps one per node and sends
//! requests down it. Each request has an id of 32 random bytes, bound to the node it was sent
//! to; the node opens the request's stream (`GET /v1/nodes/{node}/streams/{request}`, its own
//! token again), and the hub hands that WebSocket to the user request waiting for it. A
//! stream not opened within [`Hub::open_timeout`] (10 s) fails the user request with a
//! timeout; an id presented by another node, or twice, or unknown, is refused (404).
//!
//! [`Dispatch`] is the control plane's [`LogSource`] and [`ExecBackend`]: an instance of the
//! agent running in this process (its node is [`Dispatch::serve_locally`]) is served by the
//! local source and backend as on a single host; any other instance through its node's
//! channel; a node without a connected channel gets a clear error at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use sha2::Digest;
use tokio::sync::{mpsc, oneshot};
use vt_api::channel::{NodeRequest, StreamOpen, TermSize, REQUEST_PREFIX};
use vt_api::exec::{close, ClientFrame, ExecExit, ServerFrame};
use vt_ids::{InstanceId, NodeId};

use crate::exec::{ExecBackend, ExecError, ExecFuture, ExecInput, ExecOutput, ExecRequest, ExecSession, ExitStatus};
use crate::logs::{Ended, LogError, LogFuture, LogSource};

/// How long a node has to open a request's stream, by default.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests waiting to be sent down one channel; past it, new ones are refused at once.
const QUEUE: usize = 64;
/// Streams asked for and not opened yet, over all nodes; past it, new ones are refused.
const MAX_PENDING: usize = 4096;

/// The channels connected to this control plane and the streams they were asked for.
pub struct Hub {
    channels: Mutex<HashMap<NodeId, Connected>>,
    pending: Mutex<HashMap<[u8; 32], Pending>>,
    generation: AtomicU64,
    open_timeout: Mutex<Duration>,
}

struct Connected {
    generation: u64,
    requests: mpsc::Sender<NodeRequest>,
}

struct Pending {
    node: NodeId,
    deliver: oneshot::Sender<WebSocket>,
}

/// Why a node could not be asked, or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The node's agent has no channel to this control plane.
    #[error(
        "node {0}'s agent is not connected to this control plane (is `vt server --role agent --join` running there?)"
    )]
    NotConnected(NodeId),
    /// Too many requests are waiting for it.
    #[error("node {0} has too many requests waiting; retry in a moment")]
    Busy(NodeId),
    /// Its stream was not opened in time.
    #[error("the agent of node {node} did not open the stream within {secs} s")]
    Timeout { node: NodeId, secs: u64 },
    /// The stream opened but broke before saying whether it serves the request.
    #[error("the stream of node {node} broke before it answered: {why}")]
    Broken { node: NodeId, why: String },
}

fn hash(id: &str) -> [u8; 32] {
    sha2::Sha256::digest(id.as_bytes()).into()
}

/// Removes a pending request when its waiter goes (answered, timed out or dropped).
struct PendingGuard<'h> {
    hub: &'h Hub,
    key: [u8; 32],
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.hub.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            channels: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            open_timeout: Mutex::new(OPEN_TIMEOUT),
        })
    }

    /// How long a node has to open a request's stream ([`OPEN_TIMEOUT`]; tests shorten it).
    pub fn open_timeout(&self) -> Duration {
        *self.open_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_open_timeout(&self, timeout: Duration) {
        *self.open_timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
    }

    /// Whether `node`'s agent has a channel to this control plane now.
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).get(&node).is_some_and(|c| !c.requests.is_closed())
    }

    /// The nodes connected now.
    pub fn connected(&self) -> Vec<NodeId> {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.iter().filter(|(_, c)| !c.requests.is_closed()).map(|(n, _)| *n).collect()
    }

    /// A new channel of `node`: its generation and the requests to send down it. An earlier
    /// channel of the node is replaced (its receiver ends: its connection closes).
    pub(crate) fn attach(&self, node: NodeId) -> (u64, mpsc::Receiver<NodeRequest>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(QUEUE);
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).insert(node, Connected { generation, requests: tx });
        (generation, rx)
    }

    /// The channel of `node` of `generation` closed (a newer one stays).
    pub(crate) fn detach(&self, node: NodeId, generation: u64) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if channels.get(&node).is_some_and(|c| c.generation == generation) {
            channels.remove(&node);
        }
    }

    /// Take the request `id` if it is waiting for its stream and was sent to `node`: where its
    /// WebSocket goes. Anything else (unknown, taken, another node's) is `None`, alike.
    pub(crate) fn claim(&self, node: NodeId, id: &str) -> Option<oneshot::Sender<WebSocket>> {
        if !vt_api::channel::is_request_id(id) {
            return None;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let key = hash(id);
        if pending.get(&key).is_some_and(|p| p.node == node) {
            pending.remove(&key).map(|p| p.deliver)
        } else {
            None
        }
    }

    /// Send `node` the request `make` builds around a new request id, and wait for its
    /// stream: opened, with its [`StreamOpen`] read.
    pub async fn request(
        &self,
        node: NodeId,
        make: impl FnOnce(String) -> NodeRequest,
    ) -> Result<(StreamOpen, WebSocket), ChannelError> {
        let deadline = tokio::time::Instant::now() + self.open_timeout();
        let sender = {
            let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels.get(&node).map(|c| c.requests.clone()).ok_or(ChannelError::NotConnected(node))?
        };
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| ChannelError::Broken { node, why: e.to_string() })?;
        let id = zeroize::Zeroizing::new(format!("{REQUEST_PREFIX}{}", hex::encode(bytes)));
        let key = hash(&id);
        let (deliver, delivered) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.len() >= MAX_PENDING {
                return Err(ChannelError::Busy(node));
            }
            pending.insert(key, Pending { node, deliver });
        }
        let _guard = PendingGuard { hub: self, key };
        let request = make(id.to_string());
        let kind = request.kind();
        let instance = request.instance();
        sender.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ChannelError::Busy(node),
            mpsc::error::TrySendError::Closed(_) => ChannelError::NotConnected(node),
        })?;
        tracing::debug!(%node, %instance, kind, "asked the node for a stream");
        let timeout = || ChannelError::Timeout { node, secs: self.open_timeout().as_secs().max(1) };
        let mut ws = match tokio::time::timeout_at(deadline, delivered).await {
            Ok(Ok(ws)) => ws,
            // The channel went before the stream came.
            Ok(Err(_)) => return Err(ChannelError::NotConnected(node)),
            Err(_) => return Err(timeout()),
        };
        let first = tokio::time::timeout_at(deadline, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return serde_json::from_str::<StreamOpen>(t.as_str())
                            .map_err(|e| format!("its first message is not a stream opening: {e}"))
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(other)) => return Err(format!("its first message is not a stream opening: {other:?}")),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("it closed".into()),
                }
            }
        })
        .await;
        match first {
            Ok(Ok(open)) => Ok((open, ws)),
            Ok(Err(why)) => Err(ChannelError::Broken { node, why }),
            Err(_) => Err(timeout()),
        }
    }
}

/// The control plane's logs and exec: local for the in-process agent's node, through the
/// channel for the others.
pub struct Dispatch {
    hub: Arc<Hub>,
    local_node: OnceLock<NodeId>,
    logs: Option<Arc<dyn LogSource>>,
    exec: Option<Arc<dyn ExecBackend>>,
}

/// Where an instance's logs and exec come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The agent in this process.
    Local,
    /// The node's channel.
    Channel,
    /// Nowhere now: the node's agent has no channel here.
    NotConnected,
}

impl Dispatch {
    pub fn new(hub: Arc<Hub>, logs: Option<Arc<dyn LogSource>>, exec: Option<Arc<dyn ExecBackend>>) -> Self {
        Dispatch { hub, local_node: OnceLock::new(), logs, exec }
    }

    /// The node of the agent running in this process: its instances are served by the local
    /// source and backend. Until then (and for good in a control plane whose local backends
    /// stand for every node, tests'), every node without a channel is served locally.
    pub fn serve_locally(&self, node: NodeId) {
        let _ = self.local_node.set(node);
    }

    pub fn route(&self, node: NodeId) -> Route {
        let local = self.logs.is_some() || self.exec.is_some();
        match self.local_node.get() {
            Some(l) if *l == node && local => Route::Local,
            _ if self.hub.is_connected(node) => Route::Channel,
            None if local => Route::Local,
            _ => Route::NotConnected,
        }
    }

    /// Whether exec sessions can be opened in `node`'s instances now.
    pub fn serves_exec(&self, node: NodeId) -> bool {
        match self.route(node) {
            Route::Local => self.exec.is_some(),
            Route::Channel => true,
            Route::NotConnected => false,
        }
    }
}

impl LogSource for Dispatch {
    fn read(&self, instance: InstanceId, node: NodeId, tail: Option<usize>, follow: bool, ended: Ended) -> LogFuture {
        match (self.route(node), &self.logs) {
            (Route::Local, Some(logs)) => logs.read(instance, node, tail, follow, ended),
            (Route::Local, None) | (Route::NotConnected, _) => {
                let err = LogError::Unreachable(ChannelError::NotConnected(node).to_string());
                Box::pin(async move { Err(err) })
            }
            (Route::Channel, _) => {
                let hub = self.hub.clone();
                Box::pin(async move { remote_logs(&hub, instance, node, tail, follow, ended).await })
            }
        }
    }
}

impl ExecBackend for Dispatch {
    fn open(&self, instance: InstanceId, node: NodeId, req: ExecRequest) -> ExecFuture {
        match (self.route(node), &self.exec) {
            (Route::Local, Some(exec)) => exec.open(instance, node, req),
            (Route::Local, None) | (Route::NotConnected, _) => {
                let err = ExecError::Unreachable(ChannelError::NotConnected(node).to_string());
                Box::pin(async move { Err(err) })
            }
            (Route::Channel, _) => {
                let hub = self.hub.clone();
                Box::pin(async move { remote_exec(&hub, instance, node, req).await })
            }
        }
    }
}

/// How often a following reader checks whether the instance ended, while the node is quiet.
const IDLE_CHECK: Duration = Duration::from_secs(1);

async fn remote_logs(
    hub: &Hub,
    instance: InstanceId,
    node: NodeId,
    tail: Option<usize>,
    follow: bool,
    ended: Ended,
) -> Result<crate::logs::LogStream, LogError> {
    let (open, ws) = hub.request(node, |request| NodeRequest::Logs { request, instance, tail, follow }).await.map_err(
        |e| match e {
            ChannelError::NotConnected(_) | ChannelError::Busy(_) => LogError::Unreachable(e.to_string()),
            ChannelError::Timeout { .. } | ChannelError::Broken { .. } => LogError::Failed(e.to_string()),
        },
    )?;
    match open {
        StreamOpen::Opened => {}
        StreamOpen::NotRunning => {
            return Err(LogError::Failed(format!("node {node} has no log of instance {instance}")));
        }
        StreamOpen::Failed { message } => return Err(LogError::Failed(format!("node {node}: {message}"))),
    }
    // The node ends the stream once the instance has ended; a follower here also stops after
    // a quiet second once the control plane says it ended (or stops).
    struct State {
        ws: WebSocket,
        ended: Ended,
        ended_seen: bool,
        done: bool,
    }
    let state = State { ws, ended, ended_seen: false, done: false };
    Ok(Box::pin(futures_util::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let next = if follow {
                match tokio::time::timeout(IDLE_CHECK, s.ws.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        if s.ended_seen {
                            return None;
                        }
                        s.ended_seen = (s.ended)().await;
                        continue;
                    }
                }
            } else {
                s.ws.next().await
            };
            match next {
                Some(Ok(Message::Binary(b))) => return Some((Ok(b), s)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(Some(f)))) if f.code != close::NORMAL => {
                    s.done = true;
                    let err = std::io::Error::other(format!("node {node}: {}", f.reason));
                    return Some((Err(err), s));
                }
                Some(Ok(Message::Close(_))) | None => return None,
                Some(Ok(Message::Text(_))) => {
                    s.done = true;
                    return Some((Err(std::io::Error::other(format!("node {node} sent text in a log stream"))), s));
                }
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(std::io::Error::other(format!("node {node}'s stream broke: {e}"))), s));
                }
            }
        }
    })))
}

async fn remote_exec(
    hub: &Hub,
    instance: InstanceId,
    node: NodeId,
    req: ExecRequest,
) -> Result<ExecSession, ExecError> {
    let ExecRequest { argv, env, cwd, user, tty } = req;
    let (open, ws) = hub
        .request(node, |request| NodeRequest::Exec {
            request,
            instance,
            argv,
            env: env.into_iter().collect(),
            cwd,
            user,
            tty: tty.map(|w| TermSize { rows: w.rows, cols: w.cols }),
        })
        .await
        .map_err(|e| match e {
            ChannelError::NotConnected(_) | ChannelError::Busy(_) => ExecError::Unreachable(e.to_string()),
            ChannelError::Timeout { .. } | ChannelError::Broken { .. } => ExecError::Failed(e.to_string()),
        })?;
    match open {
        StreamOpen::Opened => {}
        StreamOpen::NotRunning => return Err(ExecError::NotRunning),
        StreamOpen::Failed { message } => return Err(ExecError::Failed(message)),
    }
    // Two relays each holding at most one item: the node's stream (its own TCP connection) and
    // the guest channel's window are the buffers.
    let (in_tx, mut in_rx) = mpsc::channel::<ExecInput>(1);
    let (out_tx, out_rx) = mpsc::channel::<ExecOutput>(1);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        let input = async {
            while let Some(item) = in_rx.recv().await {
                let frame = match item {
                    ExecInput::Stdin(b) => ClientFrame::Stdin(b),
                    ExecInput::StdinEof => ClientFrame::StdinEof,
                    ExecInput::Resize(w) => ClientFrame::Resize { rows: w.rows, cols: w.cols },
                    ExecInput::Signal(s) => ClientFrame::Signal(s),
                };
                if sink.send(Message::Binary(frame.encode())).await.is_err() {
                    return;
                }
            }
            // The client went: the node hangs the command up.
            let frame = CloseFrame { code: close::NORMAL, reason: "the client went".into() };
            let _ = sink.send(Message::Close(Some(frame))).await;
            // Wait for the node's close (bounded by the output side below).
            std::future::pending::<()>().await;
        };
        let output = async {
            while let Some(Ok(msg)) = stream.next().await {
                let frame = match msg {
                    Message::Binary(b) => b,
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(_) | Message::Text(_) => return,
                };
                let out = match ServerFrame::decode(frame) {
                    Ok(ServerFrame::Stdout(b)) => ExecOutput::Stdout(b),
                    Ok(ServerFrame::Stderr(b)) => ExecOutput::Stderr(b),
                    Ok(ServerFrame::Exit(e)) => ExecOutput::Exit(match e {
                        ExecExit::Code(c) => ExitStatus::Code(c),
                        ExecExit::Signal(s) => ExitStatus::Signal(s),
                    }),
                    Ok(ServerFrame::Error(why)) => {
                        tracing::debug!(%node, %instance, %why, "the node ended an exec session without an exit");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%node, %instance, error = %e, "a malformed exec frame from the node");
                        return;
                    }
                };
                let last = matches!(out, ExecOutput::Exit(_));
                if out_tx.send(out).await.is_err() || last {
                    return;
                }
            }
        };
        tokio::select! {
            () = input => {}
            () = output => {}
        }
    });
    Ok(ExecSession { input: in_tx, output: out_rx })
}
