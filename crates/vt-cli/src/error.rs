//! The CLI's error: what to tell the user and which exit code to use.

use std::path::PathBuf;

use crate::exit::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage the parser could not catch (a missing `--org`, a bad `web=x`).
    #[error("{message}")]
    Usage { message: String, hint: Option<String> },
    #[error(transparent)]
    Client(#[from] vt_client::Error),
    #[error("{} is not a valid manifest", path.display())]
    Manifest { path: PathBuf, errors: vt_manifest::ManifestErrors },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The operation ran and failed.
    #[error("{message}")]
    Failed { message: String, hint: Option<String> },
}

impl CliError {
    pub fn usage(message: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        CliError::Usage { message: message.into(), hint: hint.into() }
    }

    pub fn failed(message: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        CliError::Failed { message: message.into(), hint: hint.into() }
    }

    pub fn exit_status(&self) -> ExitStatus {
        match self {
            CliError::Usage { .. } | CliError::Manifest { .. } => ExitStatus::Usage,
            CliError::Client(e) => match e {
                vt_client::Error::Api { body, .. } => ExitStatus::from_api(body.error.code),
                vt_client::Error::Connect { .. } | vt_client::Error::Timeout { .. } => ExitStatus::Unreachable,
                vt_client::Error::Decode { .. } => ExitStatus::Failure,
            },
            // A file the user named does not exist: bad input, not a failed operation.
            CliError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => ExitStatus::Usage,
            CliError::Io(_) | CliError::Failed { .. } => ExitStatus::Failure,
        }
    }
}

pub type CliResult<T = ExitStatus> = Result<T, CliError>;
