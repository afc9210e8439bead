//! Instance logs for the API, from the in-process agent's files.

use std::path::PathBuf;

use futures_util::StreamExt;
use vt_control_plane::logs::{Ended, LogSource, LogStream};
use vt_ids::InstanceId;

/// Serves `GET /v1/instances/{id}/logs` from the local agent's log directory.
pub struct LocalLogs {
    pub dir: PathBuf,
}

impl LogSource for LocalLogs {
    fn read(&self, instance: InstanceId, tail: Option<usize>, follow: bool, ended: Ended) -> LogStream {
        vt_agent::logs::read(&self.dir, &instance.to_string(), tail, follow, ended).boxed()
    }
}
