//! A node's channel (docs/nodes.md, "Logs and exec of a joined node"): how a control plane
//! asks a node's agent for an instance's logs or an exec session without ever dialing the
//! node.
//!
//! The node's agent keeps one WebSocket open to its control plane, `GET
//! /v1/nodes/{node}/channel` with its node token. The control plane sends it requests, one text
//! message each ([`NodeRequest`], JSON). For each request the node opens a stream of its own:
//! a second WebSocket, `GET /v1/nodes/{node}/streams/{request}`, with the same token. Its first
//! message is a text message, [`StreamOpen`] (JSON): whether the node could open what was
//! asked. Then, binary messages only:
//!
//! - logs: node → control plane, the log's bytes (whole lines, as `GET
//!   /v1/instances/{id}/logs` answers them); the node closes the stream after the last line
//!   (close code 1000; 1011 with a reason when reading failed);
//! - exec: the frames of [`crate::exec`], as the client's session WebSocket carries them:
//!   [`crate::exec::ClientFrame`]s control plane → node, [`crate::exec::ServerFrame`]s node →
//!   control plane. The control plane closing the stream hangs the command up.
//!
//! One connection per stream: each has the flow control of its own TCP connection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vt_ids::InstanceId;

/// A request's id: 32 random bytes, hex, made by the control plane and bound to one node.
/// The node presents it once, to open the request's stream.
pub const REQUEST_PREFIX: &str = "vtq_";

/// Whether `s` has the shape of a request id (`vtq_<64 lowercase hex>`).
pub fn is_request_id(s: &str) -> bool {
    s.strip_prefix(REQUEST_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// What a control plane asks a node's agent, over the node's channel.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeRequest {
    /// An instance's log: the last `tail` lines (or all), then with `follow` new lines until
    /// the instance ends.
    Logs {
        request: String,
        instance: InstanceId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<usize>,
        follow: bool,
    },
    /// An exec session in an instance's microVM (checked by the control plane: the fields
    /// of [`crate::exec::CreateExec`], the terminal's size with `tty`).
    Exec {
        request: String,
        instance: InstanceId,
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tty: Option<TermSize>,
    },
}

impl NodeRequest {
    /// The request's id (what its stream is opened with).
    pub fn request(&self) -> &str {
        match self {
            NodeRequest::Logs { request, .. } | NodeRequest::Exec { request, .. } => request,
        }
    }

    /// The instance it is about.
    pub fn instance(&self) -> InstanceId {
        match self {
            NodeRequest::Logs { instance, .. } | NodeRequest::Exec { instance, .. } => *instance,
        }
    }

    /// `logs` or `exec`.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeRequest::Logs { .. } => "logs",
            NodeRequest::Exec { .. } => "exec",
        }
    }
}

/// Never prints the request id (it opens the stream) nor an environment value.
impl std::fmt::Debug for NodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeRequest::Logs { instance, tail, follow, .. } => f
                .debug_struct("Logs")
                .field("instance", instance)
                .field("tail", tail)
                .field("follow", follow)
                .finish_non_exhaustive(),
            NodeRequest::Exec { instance, argv, env, tty, .. } => f
                .debug_struct("Exec")
                .field("instance", instance)
                .field("argv", argv)
                .field("env", &env.keys().collect::<Vec<_>>())
                .field("tty", tty)
                .finish_non_exhaustive(),
        }
    }
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

/// The first message of a stream, from the node: whether it opened what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamOpen {
    /// Opened: the stream's data follows.
    Opened,
    /// The instance has no running VM on this node.
    NotRunning,
    /// The node could not open it: why, for people (no secret in it).
    Failed { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_and_hide_their_ids() {
        let instance = InstanceId::new();
        let req = NodeRequest::Exec {
            request: format!("{REQUEST_PREFIX}{}", "a".repeat(64)),
            instance,
            argv: vec!["sh".into()],
            env: [("TOKEN".to_owned(), "hunter2".to_owned())].into(),
            cwd: None,
            user: None,
            tty: Some(TermSize { rows: 24, cols: 80 }),
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["type"], "exec");
        assert_eq!(serde_json::from_value::<NodeRequest>(json).unwrap(), req);
        let shown = format!("{req:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("aaaa"), "{shown}");
        assert!(is_request_id(req.request()));
        assert!(!is_request_id("vtq_0") && !is_request_id(&format!("vtq_{}", "A".repeat(64))));
        let unknown = serde_json::json!({"type": "shell", "request": "x"});
        assert!(serde_json::from_value::<NodeRequest>(unknown).is_err());
        let open: StreamOpen = serde_json::from_str(r#"{"type":"failed","message":"no"}"#).unwrap();
        assert_eq!(open, StreamOpen::Failed { message: "no".into() });
    }
}
