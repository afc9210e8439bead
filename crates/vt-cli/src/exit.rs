//! Exit codes: a closed set, documented in `docs/cli.md`.

use vt_api::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did what was asked.
    Success,
    /// The operation failed (a deploy failed, `fmt --check` found changes, a server error).
    Failure,
    /// Bad usage or input: a clap error, a bad manifest, a 4xx about a field.
    Usage,
    /// Something named does not exist.
    NotFound,
    /// A name is taken, a concurrent change, an idempotency key reused.
    Conflict,
    /// The server could not be reached (or timed out).
    Unreachable,
    /// The token is missing, invalid or not allowed to do this.
    Unauthorized,
    /// `vt server` got a second SIGTERM or Ctrl-C while stopping, and exited at once (128 + SIGINT).
    Interrupted,
    /// `vt exec`: the remote command's own exit code (a signal n: 128 + n).
    Command(u8),
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::NotFound => 3,
            Self::Conflict => 4,
            Self::Unreachable => 5,
            Self::Unauthorized => 6,
            Self::Interrupted => 130,
            Self::Command(c) => i32::from(c),
        }
    }

    pub fn from_api(code: ErrorCode) -> Self {
        match code {
            ErrorCode::MalformedRequest | ErrorCode::InvalidField | ErrorCode::UnknownField => Self::Usage,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::NameTaken
            | ErrorCode::Conflict
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::CapacityExhausted => Self::Conflict,
            ErrorCode::Unauthorized | ErrorCode::Forbidden => Self::Unauthorized,
            ErrorCode::ProjectionLag
            | ErrorCode::Internal
            | ErrorCode::Gone
            | ErrorCode::Unavailable
            | ErrorCode::RateLimited => Self::Failure,
        }
    }
}

impl From<ExitStatus> for i32 {
    fn from(s: ExitStatus) -> i32 {
        s.code()
    }
}
