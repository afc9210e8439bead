//! The instance lifecycle, shared by every runtime.
//!
//! ```text
//! allocated → preparing → booting → running → stopping → stopped
//!                  │          │  ╰──────────────╯ ↑          
//!                  ╰──────────┴─────── any non-terminal ─────→ failed
//!                                running → suspended
//! ```
//!
//! `booting → stopping` happens when the entrypoint cannot be started or a stop is requested
//! before it runs. `running → suspended`: the VM was saved to a snapshot and its VMM ended
//! ([`crate::Vm::suspend`]); [`crate::Runtime::restore`] resumes it in a new VMM, as a new
//! [`crate::Vm`]. `stopped`, `failed` and `suspended` are terminal (for this VMM).

use std::fmt;

use vt_guest_proto::ExitStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Allocated,
    /// Scratch disk, channel and configuration being prepared.
    Preparing,
    /// VMM started; kernel and guest init on their way to the entrypoint.
    Booting,
    /// The entrypoint runs.
    Running,
    /// The entrypoint ended or a stop was requested; the VM is powering off.
    Stopping,
    /// Ended normally: the entrypoint's exit status when it was reported.
    Stopped {
        exit: Option<ExitStatus>,
    },
    /// Saved to a snapshot in the work dir; the VMM ended. Resumed by `Runtime::restore`.
    Suspended,
    /// Ended abnormally, with a reason a user can act on.
    Failed {
        reason: String,
        exit: Option<ExitStatus>,
    },
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lifecycle transition {from} → {to}")]
pub struct InvalidTransition {
    pub from: String,
    pub to: String,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Allocated => "allocated",
            State::Preparing => "preparing",
            State::Booting => "booting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped { .. } => "stopped",
            State::Suspended => "suspended",
            State::Failed { .. } => "failed",
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, State::Stopped { .. } | State::Failed { .. } | State::Suspended)
    }

    /// Whether `self → next` is allowed.
    pub fn can_become(&self, next: &State) -> bool {
        use State::*;
        match (self, next) {
            (_, Failed { .. }) => !self.is_terminal(),
            (Allocated, Preparing)
            | (Preparing, Booting)
            | (Booting, Running)
            | (Booting, Stopping)
            | (Running, Stopping)
            | (Running, Suspended)
            | (Stopping, Stopped { .. }) => true,
            _ => false,
        }
    }

    /// Move to `next` if allowed.
    pub fn advance(&mut self, next: State) -> Result<(), InvalidTransition> {
        if !self.can_become(&next) {
            return Err(InvalidTransition { from: self.to_string(), to: next.to_string() });
        }
        *self = next;
        Ok(())
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Stopped { exit: Some(e) } => write!(f, "stopped ({e})"),
            State::Failed { reason, exit } => {
                write!(f, "failed: {reason}")?;
                if let Some(e) = exit {
                    write!(f, " ({e})")?;
                }
                Ok(())
            }
            s => f.write_str(s.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_and_terminal_states() {
        let mut s = State::Allocated;
        for next in [
            State::Preparing,
            State::Booting,
            State::Running,
            State::Stopping,
            State::Stopped { exit: Some(ExitStatus::Code(7)) },
        ] {
            s.advance(next).unwrap();
        }
        assert_eq!(s.to_string(), "stopped (exit code 7)");
        assert!(s.advance(State::Running).is_err());
        assert!(s.advance(State::Failed { reason: "x".into(), exit: None }).is_err());
    }

    #[test]
    fn failure_from_any_live_state_and_no_skipping() {
        for s in [State::Allocated, State::Preparing, State::Booting, State::Running, State::Stopping] {
            assert!(s.can_become(&State::Failed { reason: "r".into(), exit: None }));
        }
        assert!(!State::Allocated.can_become(&State::Booting));
        assert!(!State::Preparing.can_become(&State::Running));
        assert!(!State::Running.can_become(&State::Stopped { exit: None }));
        assert!(State::Booting.can_become(&State::Stopping));
        assert!(!State::Stopping.can_become(&State::Running));
    }

    #[test]
    fn only_a_running_vm_is_suspended_and_that_is_the_end() {
        assert!(State::Running.can_become(&State::Suspended));
        for s in [State::Allocated, State::Preparing, State::Booting, State::Stopping] {
            assert!(!s.can_become(&State::Suspended), "{s}");
        }
        assert!(State::Suspended.is_terminal());
        assert!(!State::Suspended.can_become(&State::Running));
        assert!(!State::Suspended.can_become(&State::Failed { reason: "r".into(), exit: None }));
    }
}
