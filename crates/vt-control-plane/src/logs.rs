//! Where instance logs come from.
//!
//! The control plane serves `GET /v1/instances/{id}/logs` but does not keep
//! logs: a node agent does. [`LogSource`] is what it asks. The control plane's own source is
//! [`crate::channel::Dispatch`]: the instances of the agent running in the same process are
//! read from its files (`vt_server::logs::LocalLogs`), the others' through their node's
//! channel (docs/nodes.md).

use std::pin::Pin;

use std::future::Future;

use bytes::Bytes;
use futures_util::Stream;
use vt_ids::{InstanceId, NodeId};

/// A stream of log bytes: whole lines, `<RFC3339 time> <stdout|stderr> <text>\n`.
pub type LogStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Tells a following reader whether the instance has ended (then it stops after the last line).
pub type Ended = Box<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Why a log could not be read; the messages are for the user (no secret in them).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No agent that serves this control plane runs the instance's node (503).
    #[error("{0}")]
    Unreachable(String),
    /// The node was asked and could not serve it (502).
    #[error("{0}")]
    Failed(String),
}

pub type LogFuture = Pin<Box<dyn Future<Output = Result<LogStream, LogError>> + Send>>;

pub trait LogSource: Send + Sync + 'static {
    /// The log of `instance`, placed on `node`: its backlog (the last `tail` lines, or all of
    /// it), then, with `follow`, new lines as they are written until `ended` says so.
    fn read(&self, instance: InstanceId, node: NodeId, tail: Option<usize>, follow: bool, ended: Ended) -> LogFuture;
}
