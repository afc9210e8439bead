//! Where instance logs come from.
//!
//! The control plane serves `GET /v1/instances/{id}/logs` but does not keep
//! logs: a node agent does. [`LogSource`] is what it asks. In a single-host
//! server the agent runs in the same process and the source reads its files
//! (`vt_agent::logs::LocalLogs`, wired by `vt-server`); a multi-node control
//! plane would forward to the instance's node.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use vt_ids::InstanceId;

/// A stream of log bytes: whole lines, `<RFC3339 time> <stdout|stderr> <text>\n`.
pub type LogStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Tells a following reader whether the instance has ended (then it stops after the last line).
pub type Ended = Box<dyn Fn() -> Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync>;

pub trait LogSource: Send + Sync + 'static {
    /// The instance's log: its backlog (the last `tail` lines, or all of it), then,
    /// with `follow`, new lines as they are written until `ended` says so.
    fn read(&self, instance: InstanceId, tail: Option<usize>, follow: bool, ended: Ended) -> LogStream;
}
