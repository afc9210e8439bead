//! Instance logs for the API, from the in-process agent's files (its node's instances; the
//! control plane's `channel::Dispatch` asks other nodes through their channels).

use std::path::PathBuf;

use futures_util::StreamExt;
use vt_control_plane::logs::{Ended, LogFuture, LogSource};
use vt_ids::{InstanceId, NodeId};

/// Serves `GET /v1/instances/{id}/logs` from the local agent's log directory.
pub struct LocalLogs {
    pub dir: PathBuf,
}

impl LogSource for LocalLogs {
    fn read(&self, instance: InstanceId, _node: NodeId, tail: Option<usize>, follow: bool, ended: Ended) -> LogFuture {
        let stream = vt_agent::logs::read(&self.dir, &instance.to_string(), tail, follow, ended).boxed();
        Box::pin(async move { Ok(stream) })
    }
}
