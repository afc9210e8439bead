//! Node-agent-facing reads (`GET /v1/nodes/{node}/instances`) and instance logs
//! (`GET /v1/instances/{instance}/logs`).
//!
//! Logs, single-host mode: the node agent runs in `vt server`'s process and
//! writes `<data-dir>/agent/logs/<instance>.log` (+ `.log.1`, rotated); the
//! control plane reads those files directly. Multi-node (not built yet): the
//! control plane would proxy this request to the instance's node agent, which
//! serves the same files; the response format stays the same.

use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use vt_api::*;
use vt_views::{InstanceView, ViewKind};

use super::{Cp, Out, QueryParams};
use crate::{ApiErr, ApiResult, ControlPlane};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct NodeInstancesQuery {
    /// A `seq` from an earlier answer: wait until the views move past it (or `wait_ms` ends).
    after: Option<u64>,
    /// How long to wait with `after`, in ms (default 10000, at most 20000).
    wait_ms: Option<u64>,
}

/// Longest wait of a node's follow request (below the client's 30 s request timeout).
const MAX_FOLLOW_WAIT: Duration = Duration::from_secs(20);

#[utoipa::path(get, path = "/v1/nodes/{node}/instances", operation_id = "node_instances", tag = "nodes", params(("node" = String, Path, description = "id or name"), NodeInstancesQuery),
    responses((status = 200, body = NodeInstances, description = "every instance placed on the node (desired and current state), by id, and the view position they reflect; with `after`, answered once the views move past it"), (status = "4XX", body = ErrorBody)))]
pub(super) async fn node_instances(
    State(cp): Cp,
    Path(node): Path<String>,
    QueryParams(q): QueryParams<NodeInstancesQuery>,
) -> Out<NodeInstances> {
    let node = cp.node(&node).await?;
    if let Some(after) = q.after {
        // A node follows its instances by cursor: one request per change of the views.
        let limit = Duration::from_millis(q.wait_ms.unwrap_or(10_000)).min(MAX_FOLLOW_WAIT);
        let mut progress = cp.projector.subscribe();
        let _ = tokio::time::timeout(limit, progress.wait_for(|seq| *seq > after)).await;
    }
    let seq = cp.projector.progress();
    let mut items: Vec<InstanceView> = cp
        .views::<InstanceView>(ControlPlane::kind_query(ViewKind::Instance))
        .await?
        .into_iter()
        .filter(|i| i.node_id == node.id)
        .collect();
    items.sort_by_key(|i| i.id);
    Ok(Json(NodeInstances { items, seq }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// Keep the response open and send new lines as they are written, until the instance ends.
    follow: Option<bool>,
    /// Start with the last N lines of the backlog (default: all of it).
    tail: Option<usize>,
}

/// `<data-dir>/agent/logs/<instance>.log`: the node agent's log file of one instance.
pub fn agent_log_path(data_dir: &FsPath, instance: &str) -> PathBuf {
    data_dir.join("agent").join("logs").join(format!("{instance}.log"))
}

#[utoipa::path(get, path = "/v1/instances/{instance}/logs", operation_id = "instance_logs", tag = "instances", params(("instance" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", description = "one line per output chunk: `<RFC3339 time> <stdout|stderr> <text>`; with `follow=true`, streamed until the instance ends"), (status = "4XX", body = ErrorBody)))]
pub(super) async fn instance_logs(
    State(cp): Cp,
    Path(instance): Path<String>,
    QueryParams(q): QueryParams<LogQuery>,
) -> ApiResult<Response> {
    let inst = cp.instance(&instance).await?;
    let Some(data_dir) = cp.data_dir.clone() else {
        return Err(ApiErr::invalid(
            "instance",
            "this control plane has no local node agent; logs of remote nodes are not served yet",
        ));
    };
    let path = agent_log_path(&data_dir, &inst.id.to_string());
    let (backlog, pos, ino) = read_backlog(&path, q.tail).await;
    if !q.follow.unwrap_or(false) {
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], backlog).into_response());
    }
    let id = inst.id.to_string();
    let first = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(backlog)) });
    // The read position and inode travel in the unfold state (a captured copy would restart).
    let rest =
        futures_util::stream::unfold((cp, id, path, pos, ino), move |(cp, id, path, mut pos, mut ino)| async move {
            loop {
                // Read the ended flag before the file so the last lines are never lost.
                let ended = cp.instance(&id).await.map(|i| i.status.is_terminal()).unwrap_or(true);
                let (chunk, np, ni) = read_new(&path, pos, ino).await;
                pos = np;
                ino = ni;
                if !chunk.is_empty() {
                    return Some((Ok(Bytes::from(chunk)), (cp, id, path, pos, ino)));
                }
                if ended {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    use futures_util::StreamExt;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(first.chain(rest))).into_response())
}

fn inode(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.ino()
}

/// The rotated file then the current one, complete lines only, the last `tail` of them.
/// Returns the text, the position reached in the current file and its inode.
async fn read_backlog(path: &FsPath, tail: Option<usize>) -> (Vec<u8>, u64, u64) {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    let old = tokio::fs::read(PathBuf::from(rotated)).await.unwrap_or_default();
    let (cur, pos, ino) = read_new(path, 0, 0).await;
    let mut all = old;
    if !all.is_empty() && !all.ends_with(b"\n") {
        all.push(b'\n');
    }
    all.extend_from_slice(&cur);
    if let Some(n) = tail {
        let lines: Vec<&[u8]> = all.split_inclusive(|&b| b == b'\n').collect();
        let skip = lines.len().saturating_sub(n);
        all = lines[skip..].concat();
    }
    (all, pos, ino)
}

/// Complete lines written to `path` past `pos`; starts over when the file was rotated
/// (another inode, or shorter than `pos`).
async fn read_new(path: &FsPath, mut pos: u64, ino: u64) -> (Vec<u8>, u64, u64) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return (Vec::new(), pos, ino);
    };
    let Ok(meta) = f.metadata().await else {
        return (Vec::new(), pos, ino);
    };
    let new_ino = inode(&meta);
    if (ino != 0 && new_ino != ino) || meta.len() < pos {
        pos = 0;
    }
    if f.seek(std::io::SeekFrom::Start(pos)).await.is_err() {
        return (Vec::new(), pos, new_ino);
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).await.is_err() {
        return (Vec::new(), pos, new_ino);
    }
    match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => {
            buf.truncate(i + 1);
            (buf.clone(), pos + buf.len() as u64, new_ino)
        }
        None => (Vec::new(), pos, new_ino),
    }
}
