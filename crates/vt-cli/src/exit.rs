//! Exit codes: a closed set, documented in `docs/cli.md`.

use vt_api::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// The command did what was asked.
    Success = 0,
    /// The operation failed (a deploy failed, `fmt --check` found changes, a server error).
    Failure = 1,
    /// Bad usage or input: a clap error, a bad manifest, a 4xx about a field.
    Usage = 2,
    /// Something named does not exist.
    NotFound = 3,
    /// A name is taken, a concurrent change, an idempotency key reused.
    Conflict = 4,
    /// The server could not be reached (or timed out).
    Unreachable = 5,
    /// The token is missing, invalid or not allowed to do this.
    Unauthorized = 6,
    /// `vt server` got a second SIGTERM or Ctrl-C while stopping, and exited at once (128 + SIGINT).
    Interrupted = 130,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn from_api(code: ErrorCode) -> Self {
        match code {
            ErrorCode::MalformedRequest | ErrorCode::InvalidField | ErrorCode::UnknownField => Self::Usage,
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::NameTaken | ErrorCode::Conflict | ErrorCode::IdempotencyKeyReused => Self::Conflict,
            ErrorCode::Unauthorized | ErrorCode::Forbidden => Self::Unauthorized,
            ErrorCode::ProjectionLag | ErrorCode::Internal | ErrorCode::Gone | ErrorCode::Unavailable => Self::Failure,
        }
    }
}

impl From<ExitStatus> for i32 {
    fn from(s: ExitStatus) -> i32 {
        s.code()
    }
}
