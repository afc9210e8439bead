//! `vt exec`: the grant request and answer, and the frames of the session's WebSocket.
//!
//! A client asks `POST /v1/instances/{id}/exec` for a grant ([`CreateExec`] → [`ExecGrant`]),
//! then upgrades `GET /v1/exec/{grant}` to a WebSocket. Every WebSocket message is one
//! binary frame: one byte of kind, then the payload ([`ClientFrame`] from the client,
//! [`ServerFrame`] from the server). Integers are big-endian. The kinds of the two
//! directions do not overlap, so a frame sent the wrong way is refused as unknown.
//!
//! | kind | direction | name | payload |
//! | --- | --- | --- | --- |
//! | `0x01` | client → server | stdin | the bytes (at most [`MAX_PAYLOAD`]) |
//! | `0x02` | client → server | stdin-eof | none |
//! | `0x03` | client → server | resize | rows `u16`, cols `u16` (each at least 1) |
//! | `0x04` | client → server | signal | the signal number, `i32` (1-64) |
//! | `0x81` | server → client | stdout | the bytes |
//! | `0x82` | server → client | stderr | the bytes |
//! | `0x83` | server → client | exit | `0x00` + code `i32`, or `0x01` + signal `i32`; the last frame |
//! | `0x84` | server → client | error | a UTF-8 message for people; the session ends |
//!
//! No I/O here: the decoders take hostile input (every-prefix tests below, and
//! `fuzz/fuzz_targets/exec_frame.rs`).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use vt_ids::InstanceId;

/// The most words of a command line.
pub const MAX_ARGV: usize = 256;
/// The longest word of a command line, environment value, or working directory, in bytes.
pub const MAX_WORD: usize = 4096;
/// The most environment variables one exec sets.
pub const MAX_ENV: usize = 64;
/// The longest `user` (`name`, `uid` or `uid:gid`).
pub const MAX_USER: usize = 65;
/// The most bytes of a stdin, stdout or stderr frame's payload.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The largest frame either side sends: a kind byte and the largest payload.
pub const MAX_FRAME: usize = 1 + MAX_PAYLOAD;
/// A grant is valid this long after it is issued, and once.
pub const GRANT_TTL_SECS: u64 = 60;

/// No NUL (the guest passes words to `execve`) and no other control character but tab and newline.
const WORD_PATTERN: &str = "^[^\\x00]*$";

/// What to run in an instance (`POST /v1/instances/{id}/exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExec {
    /// The command and its arguments: 1-256 words, each at most 4096 bytes, no NUL; the first
    /// is looked up in the instance's `PATH` and is not empty.
    #[schema(schema_with = argv_schema)]
    pub argv: Vec<String>,
    /// Extra environment, on top of the instance's own: at most 64 names (environment variable
    /// names), values at most 4096 bytes. Only the names are recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = env_schema)]
    pub env: BTreeMap<String, String>,
    /// Working directory, an absolute path; absent: the entrypoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096, pattern = "^/[^\\x00]*$")]
    pub cwd: Option<String>,
    /// `root`, a user name of the image, or `uid[:gid]`; absent: the entrypoint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65, pattern = "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[0-9]{1,10})?$")]
    pub user: Option<String>,
    /// Run under a pseudo-terminal (stdout and stderr are then one stream).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's rows (with `tty`; default 24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub rows: Option<u16>,
    /// The terminal's columns (with `tty`; default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub cols: Option<u16>,
}

fn word(max: usize, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .max_length(Some(max))
        .pattern(Some(WORD_PATTERN))
        .description(Some(description))
        .build()
}

/// The schema of `CreateExec.argv`.
pub fn argv_schema() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(word(MAX_WORD, "a word of the command line"))
        .min_items(Some(1))
        .max_items(Some(MAX_ARGV))
        .description(Some(format!("1-{MAX_ARGV} words, each at most {MAX_WORD} bytes")))
        .build()
}

/// The schema of `CreateExec.env`.
pub fn env_schema() -> Object {
    let name = match <vt_ids::EnvVarName as PartialSchema>::schema() {
        RefOr::T(utoipa::openapi::schema::Schema::Object(name)) => Some(name),
        _ => None,
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .max_properties(Some(MAX_ENV))
        .property_names(name)
        .additional_properties(Some(AdditionalProperties::RefOr(word(MAX_WORD, "the value").into())))
        .description(Some(format!("At most {MAX_ENV} names, values at most {MAX_WORD} bytes.")))
        .build()
}

/// The answer of `POST /v1/instances/{id}/exec`: a grant to open the session with, once,
/// within 60 seconds, with the same token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecGrant {
    /// The grant's secret (`vtx_<64 hex>`): shown once; the server keeps only its hash.
    pub grant: String,
    /// After this instant the grant is refused (410).
    pub expires_at: DateTime<Utc>,
    pub instance: InstanceId,
    /// Where to open the session: `GET` it as a WebSocket upgrade (`/v1/exec/<grant>`).
    pub path: String,
}

/// Never prints the grant.
impl std::fmt::Debug for ExecGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecGrant")
            .field("grant", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("instance", &self.instance)
            .finish()
    }
}

/// Frame kinds, client → server.
pub mod kind {
    pub const STDIN: u8 = 0x01;
    pub const STDIN_EOF: u8 = 0x02;
    pub const RESIZE: u8 = 0x03;
    pub const SIGNAL: u8 = 0x04;
    /// Server → client.
    pub const STDOUT: u8 = 0x81;
    pub const STDERR: u8 = 0x82;
    pub const EXIT: u8 = 0x83;
    pub const ERROR: u8 = 0x84;
}

/// From the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Stdin(Bytes),
    /// No more standard input.
    StdinEof,
    Resize {
        rows: u16,
        cols: u16,
    },
    /// Deliver this signal (1-64) to the command's process group.
    Signal(i32),
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecExit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExecExit {
    /// The shell's convention: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExecExit::Code(c) => c,
            ExecExit::Signal(s) => 128 + s,
        }
    }
}

/// From the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    Stdout(Bytes),
    Stderr(Bytes),
    /// The last frame of a session that ran to its end.
    Exit(ExecExit),
    /// The session ends without an exit status: why, for people (at most [`MAX_PAYLOAD`] bytes).
    Error(String),
}

/// Why bytes are not a frame. The message never quotes the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("an empty frame (a frame is one byte of kind, then its payload)")]
    Empty,
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("a {kind} frame has a payload of {expected} bytes; got {got}")]
    Length { kind: &'static str, expected: usize, got: usize },
    #[error("a {kind} frame carries at most {max} bytes; got {got}")]
    TooLarge { kind: &'static str, max: usize, got: usize },
    #[error("a resize frame needs at least 1 row and 1 column; got {rows}x{cols}")]
    EmptyWindow { rows: u16, cols: u16 },
    #[error("signal {0} is not a signal number (1-64)")]
    Signal(i32),
    #[error("an exit frame says code (0x00) or signal (0x01); got 0x{0:02x}")]
    ExitKind(u8),
    #[error("an error frame's message is not UTF-8")]
    NotUtf8,
}

fn fixed<const N: usize>(kind: &'static str, payload: &[u8]) -> Result<[u8; N], FrameError> {
    payload.try_into().map_err(|_| FrameError::Length { kind, expected: N, got: payload.len() })
}

fn data(kind: &'static str, payload: Bytes) -> Result<Bytes, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge { kind, max: MAX_PAYLOAD, got: payload.len() });
    }
    Ok(payload)
}

fn with_kind(k: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + payload.len());
    b.put_u8(k);
    b.put_slice(payload);
    b.freeze()
}

impl ClientFrame {
    pub fn decode(frame: Bytes) -> Result<ClientFrame, FrameError> {
        let (&k, _) = frame.split_first().ok_or(FrameError::Empty)?;
        let payload = frame.slice(1..);
        Ok(match k {
            kind::STDIN => ClientFrame::Stdin(data("stdin", payload)?),
            kind::STDIN_EOF => {
                fixed::<0>("stdin-eof", &payload)?;
                ClientFrame::StdinEof
            }
            kind::RESIZE => {
                let b = fixed::<4>("resize", &payload)?;
                let (rows, cols) = (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]));
                if rows == 0 || cols == 0 {
                    return Err(FrameError::EmptyWindow { rows, cols });
                }
                ClientFrame::Resize { rows, cols }
            }
            kind::SIGNAL => {
                let n = i32::from_be_bytes(fixed::<4>("signal", &payload)?);
                if !(1..=64).contains(&n) {
                    return Err(FrameError::Signal(n));
                }
                ClientFrame::Signal(n)
            }
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    pub fn encode(&self) -> Bytes {
        match self {
            ClientFrame::Stdin(b) => with_kind(kind::STDIN, b),
            ClientFrame::StdinEof => with_kind(kind::STDIN_EOF, &[]),
            ClientFrame::Resize { rows, cols } => {
                let mut p = [0u8; 4];
                p[..2].copy_from_slice(&rows.to_be_bytes());
                p[2..].copy_from_slice(&cols.to_be_bytes());
                with_kind(kind::RESIZE, &p)
            }
            ClientFrame::Signal(n) => with_kind(kind::SIGNAL, &n.to_be_bytes()),
        }
    }
}

impl ServerFrame {
    pub fn decode(frame: Bytes) -> Result<ServerFrame, FrameError> {
        let (&k, _) = frame.split_first().ok_or(FrameError::Empty)?;
        let payload = frame.slice(1..);
        Ok(match k {
            kind::STDOUT => ServerFrame::Stdout(data("stdout", payload)?),
            kind::STDERR => ServerFrame::Stderr(data("stderr", payload)?),
            kind::EXIT => {
                let b = fixed::<5>("exit", &payload)?;
                let n = i32::from_be_bytes([b[1], b[2], b[3], b[4]]);
                ServerFrame::Exit(match b[0] {
                    0 => ExecExit::Code(n),
                    1 => ExecExit::Signal(n),
                    other => return Err(FrameError::ExitKind(other)),
                })
            }
            kind::ERROR => {
                let message =
                    std::str::from_utf8(&data("error", payload.clone())?).map_err(|_| FrameError::NotUtf8)?.to_owned();
                ServerFrame::Error(message)
            }
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    pub fn encode(&self) -> Bytes {
        match self {
            ServerFrame::Stdout(b) => with_kind(kind::STDOUT, b),
            ServerFrame::Stderr(b) => with_kind(kind::STDERR, b),
            ServerFrame::Exit(exit) => {
                let (tag, n) = match *exit {
                    ExecExit::Code(c) => (0u8, c),
                    ExecExit::Signal(s) => (1u8, s),
                };
                let mut p = [tag, 0, 0, 0, 0];
                p[1..].copy_from_slice(&n.to_be_bytes());
                with_kind(kind::EXIT, &p)
            }
            ServerFrame::Error(m) => with_kind(kind::ERROR, m.as_bytes()),
        }
    }
}

/// WebSocket close codes the server ends a session with (RFC 6455 §7.4).
pub mod close {
    /// The command exited (an exit frame came first), or the client closed.
    pub const NORMAL: u16 = 1000;
    /// The server is stopping.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame the client sent is not one of [`super::ClientFrame`] (the reason says why).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The session failed on the server's side (an error frame came first).
    pub const INTERNAL_ERROR: u16 = 1011;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_client() -> Vec<(ClientFrame, &'static [u8])> {
        vec![
            (ClientFrame::Stdin(Bytes::from_static(b"ls\n")), b"\x01ls\n"),
            (ClientFrame::Stdin(Bytes::new()), b"\x01"),
            (ClientFrame::StdinEof, b"\x02"),
            (ClientFrame::Resize { rows: 24, cols: 80 }, b"\x03\x00\x18\x00\x50"),
            (ClientFrame::Resize { rows: 65535, cols: 1 }, b"\x03\xff\xff\x00\x01"),
            (ClientFrame::Signal(2), b"\x04\x00\x00\x00\x02"),
        ]
    }

    fn golden_server() -> Vec<(ServerFrame, &'static [u8])> {
        vec![
            (ServerFrame::Stdout(Bytes::from_static(b"out\n")), b"\x81out\n"),
            (ServerFrame::Stderr(Bytes::from_static(b"err\n")), b"\x82err\n"),
            (ServerFrame::Exit(ExecExit::Code(7)), b"\x83\x00\x00\x00\x00\x07"),
            (ServerFrame::Exit(ExecExit::Code(-1)), b"\x83\x00\xff\xff\xff\xff"),
            (ServerFrame::Exit(ExecExit::Signal(9)), b"\x83\x01\x00\x00\x00\x09"),
            (ServerFrame::Error("gone".into()), b"\x84gone"),
        ]
    }

    #[test]
    fn golden_bytes() {
        for (frame, bytes) in golden_client() {
            assert_eq!(&frame.encode()[..], bytes, "{frame:?}");
            assert_eq!(ClientFrame::decode(Bytes::from_static(bytes)), Ok(frame));
        }
        for (frame, bytes) in golden_server() {
            assert_eq!(&frame.encode()[..], bytes, "{frame:?}");
            assert_eq!(ServerFrame::decode(Bytes::from_static(bytes)), Ok(frame));
        }
    }

    /// Every prefix of a frame decodes to a frame of the same kind (data frames are any
    /// length) or is refused; fixed-size frames refuse every strict prefix.
    #[test]
    fn every_prefix() {
        for (frame, bytes) in golden_client() {
            for n in 0..bytes.len() {
                match ClientFrame::decode(Bytes::copy_from_slice(&bytes[..n])) {
                    Ok(ClientFrame::Stdin(p)) => assert_eq!(&p[..], &bytes[1..n]),
                    Ok(other) => panic!("prefix {n} of {frame:?} decoded as {other:?}"),
                    Err(e) if n == 0 => assert_eq!(e, FrameError::Empty),
                    Err(e) => assert!(matches!(e, FrameError::Length { .. }), "{e}"),
                }
            }
        }
        for (frame, bytes) in golden_server() {
            for n in 0..bytes.len() {
                match ServerFrame::decode(Bytes::copy_from_slice(&bytes[..n])) {
                    Ok(ServerFrame::Stdout(p) | ServerFrame::Stderr(p)) => assert_eq!(&p[..], &bytes[1..n]),
                    Ok(ServerFrame::Error(m)) => assert_eq!(m.as_bytes(), &bytes[1..n]),
                    Ok(other) => panic!("prefix {n} of {frame:?} decoded as {other:?}"),
                    Err(e) if n == 0 => assert_eq!(e, FrameError::Empty),
                    Err(e) => assert!(matches!(e, FrameError::Length { .. }), "{e}"),
                }
            }
        }
    }

    #[test]
    fn refusals() {
        let c = |b: &[u8]| ClientFrame::decode(Bytes::copy_from_slice(b)).unwrap_err();
        assert_eq!(c(b"\x81out"), FrameError::UnknownKind(0x81));
        assert_eq!(c(b"\x00"), FrameError::UnknownKind(0));
        assert_eq!(c(b"\x02x"), FrameError::Length { kind: "stdin-eof", expected: 0, got: 1 });
        assert_eq!(c(b"\x03\x00\x00\x00\x50"), FrameError::EmptyWindow { rows: 0, cols: 80 });
        assert_eq!(c(b"\x04\x00\x00\x00\x00"), FrameError::Signal(0));
        assert_eq!(c(b"\x04\x00\x00\x00\x41"), FrameError::Signal(65));
        let mut big = vec![kind::STDIN];
        big.resize(MAX_FRAME + 1, b'x');
        assert_eq!(c(&big), FrameError::TooLarge { kind: "stdin", max: MAX_PAYLOAD, got: MAX_PAYLOAD + 1 });
        big.pop();
        assert!(ClientFrame::decode(Bytes::from(big)).is_ok());
        let s = |b: &[u8]| ServerFrame::decode(Bytes::copy_from_slice(b)).unwrap_err();
        assert_eq!(s(b"\x01in"), FrameError::UnknownKind(1));
        assert_eq!(s(b"\x83\x02\x00\x00\x00\x00"), FrameError::ExitKind(2));
        assert_eq!(s(b"\x84\xff"), FrameError::NotUtf8);
        assert_eq!(FrameError::UnknownKind(0x81).to_string(), "unknown frame kind 0x81");
    }

    #[test]
    fn the_shell_convention() {
        assert_eq!(ExecExit::Code(7).shell_code(), 7);
        assert_eq!(ExecExit::Signal(9).shell_code(), 137);
    }
}
