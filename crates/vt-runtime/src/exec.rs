//! Exec sessions as the node agent sees them: [`ExecHandle::open`] asks a running instance's
//! guest channel task for a session and gets an [`ExecSession`]: a sender of input and a
//! receiver of output.
//!
//! Both directions are credit-bounded (`vt_guest_proto::EXEC_WINDOW`): the guest sends at most
//! that much output beyond what [`ExecOutputs::recv`] has handed out (each `recv` grants the
//! guest what it took), and [`ExecInputs::send`] waits for the guest's stdin credit. So the
//! host holds at most one window per session, whatever the client's speed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use vt_guest_proto::{ExitStatus, Message, EXEC_WINDOW, MAX_LOG_CHUNK};

/// What to run (see `vt_guest_proto::Message::ExecStart`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// "": the entrypoint's.
    pub cwd: String,
    /// "": the entrypoint's.
    pub user: String,
    /// Rows and columns of a pseudo-terminal; `None`: pipes.
    pub tty: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    StdinEof,
    Resize { rows: u16, cols: u16 },
    Signal(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The last item.
    Exit(ExitStatus),
}

/// What the guest channel task is asked by sessions (one queue for all of them).
#[derive(Debug)]
pub(crate) enum ToGuest {
    Input(u32, ExecInput),
    /// The client took this many bytes of output.
    Window(u32, u32),
    /// The client went away.
    Close(u32),
}

impl ToGuest {
    pub(crate) fn session(&self) -> u32 {
        match self {
            ToGuest::Input(id, _) | ToGuest::Window(id, _) | ToGuest::Close(id) => *id,
        }
    }

    pub(crate) fn into_message(self) -> Message {
        match self {
            ToGuest::Input(id, ExecInput::Stdin(data)) => Message::ExecStdin { id, data },
            ToGuest::Input(id, ExecInput::StdinEof) => Message::ExecStdin { id, data: Vec::new() },
            ToGuest::Input(id, ExecInput::Resize { rows, cols }) => Message::ExecResize { id, rows, cols },
            ToGuest::Input(id, ExecInput::Signal(signo)) => Message::ExecSignal { id, signo },
            ToGuest::Window(id, bytes) => Message::ExecWindow { id, bytes },
            ToGuest::Close(id) => Message::ExecClose { id },
        }
    }
}

/// A request to open a session, answered by the guest channel task.
pub(crate) struct Open {
    pub req: ExecRequest,
    pub reply: oneshot::Sender<Result<ExecSession, String>>,
}

/// Opens sessions in one instance; cheap to clone.
#[derive(Clone)]
pub struct ExecHandle {
    pub(crate) tx: mpsc::Sender<Open>,
}

impl ExecHandle {
    /// A new session, or why not (the instance is not running, or has ended).
    pub async fn open(&self, req: ExecRequest) -> Result<ExecSession, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Open { req, reply }).await.map_err(|_| "the instance has ended".to_string())?;
        rx.await.map_err(|_| "the instance has ended".to_string())?
    }
}

pub struct ExecSession {
    pub input: ExecInputs,
    pub output: ExecOutputs,
}

/// The guest channel task's side of one session.
pub(crate) struct GuestSide {
    pub output: mpsc::UnboundedSender<ExecOutput>,
    pub stdin_credit: Arc<Semaphore>,
}

/// Make the two ends of session `id`.
pub(crate) fn session(id: u32, to_guest: mpsc::Sender<ToGuest>) -> (ExecSession, GuestSide) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let credit = Arc::new(Semaphore::new(EXEC_WINDOW as usize));
    let s = ExecSession {
        input: ExecInputs { id, to_guest: to_guest.clone(), credit: credit.clone() },
        output: ExecOutputs { id, rx: out_rx, to_guest },
    };
    (s, GuestSide { output: out_tx, stdin_credit: credit })
}

/// Input to a session. Dropping it hangs the session up (SIGHUP to its processes).
pub struct ExecInputs {
    id: u32,
    to_guest: mpsc::Sender<ToGuest>,
    credit: Arc<Semaphore>,
}

impl ExecInputs {
    /// Send input; stdin waits for the guest's credit. Errors once the session has ended.
    pub async fn send(&mut self, input: ExecInput) -> Result<(), String> {
        let gone = || "the session has ended".to_string();
        match input {
            ExecInput::Stdin(data) => {
                for chunk in data.chunks(MAX_LOG_CHUNK) {
                    let permits = self.credit.acquire_many(chunk.len() as u32).await.map_err(|_| gone())?;
                    permits.forget();
                    self.to_guest
                        .send(ToGuest::Input(self.id, ExecInput::Stdin(chunk.to_vec())))
                        .await
                        .map_err(|_| gone())?;
                }
                Ok(())
            }
            other => self.to_guest.send(ToGuest::Input(self.id, other)).await.map_err(|_| gone()),
        }
    }
}

impl Drop for ExecInputs {
    fn drop(&mut self) {
        if let Err(mpsc::error::TrySendError::Full(m)) = self.to_guest.try_send(ToGuest::Close(self.id)) {
            // The queue is full for a moment: the hang-up must still reach the guest.
            let tx = self.to_guest.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tx.send(m).await;
                });
            }
        }
    }
}

/// Output of a session, ending with [`ExecOutput::Exit`] (or `None` if the VM ended first).
pub struct ExecOutputs {
    id: u32,
    rx: mpsc::UnboundedReceiver<ExecOutput>,
    to_guest: mpsc::Sender<ToGuest>,
}

impl ExecOutputs {
    pub async fn recv(&mut self) -> Option<ExecOutput> {
        let o = self.rx.recv().await?;
        if let ExecOutput::Stdout(d) | ExecOutput::Stderr(d) = &o {
            let _ = self.to_guest.send(ToGuest::Window(self.id, d.len() as u32)).await;
        }
        Some(o)
    }
}
