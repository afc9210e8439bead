//! Where exec sessions are opened.
//!
//! The control plane authorizes `vt exec` and relays the session's bytes, but the session
//! runs in the instance's microVM, which only its node agent can reach (over the guest
//! channel). [`ExecBackend`] is what the control plane asks. The control plane's own backend
//! is [`crate::channel::Dispatch`]: the agent running in the same process opens the sessions
//! of its instances (`vt_server::exec::LocalExec`), the other nodes' agents through their
//! channels (docs/nodes.md).
//!
//! Flow control is the channels' bounds: a session's output is a bounded channel, and a
//! reader that does not take from it stops the guest process (through the guest channel's
//! per-session window), never grows a buffer.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::mpsc;
use vt_ids::{InstanceId, NodeId};

/// What to run in an instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    /// The command and its arguments (at least one word; argv\[0\] is looked up in `PATH`).
    pub argv: Vec<String>,
    /// Extra environment, on top of the instance's own (its image's and manifest's).
    pub env: Vec<(String, String)>,
    /// Working directory; `None`: the entrypoint's.
    pub cwd: Option<String>,
    /// `root`, a name from the image's `/etc/passwd`, or `uid[:gid]`; `None`: the entrypoint's.
    pub user: Option<String>,
    /// Run under a pseudo-terminal of this size; `None`: plain pipes.
    pub tty: Option<WindowSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// From the client to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Bytes),
    /// End of standard input (the process reads EOF; under a tty: nothing, send `^D`).
    StdinEof,
    Resize(WindowSize),
    /// Deliver this signal to the session's process group.
    Signal(i32),
}

/// From the session to the client. `Exit` is the last item; the channel closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(ExitStatus),
}

/// How an exec session's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code (0-255).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The shell's convention: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// One open session. Dropping `input` (the client went away) ends it: the guest process
/// gets SIGHUP and the session is cleaned up within a bound; `output` then ends with an
/// `Exit` or closes.
pub struct ExecSession {
    pub input: mpsc::Sender<ExecInput>,
    pub output: mpsc::Receiver<ExecOutput>,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The instance is not running on a node this control plane reaches (its status says why).
    #[error("the instance is not running here")]
    NotRunning,
    /// No agent that serves this control plane runs the instance's node: why (503).
    #[error("{0}")]
    Unreachable(String),
    /// The node refused or failed: the message is for the user (no secrets in it).
    #[error("{0}")]
    Failed(String),
}

pub type ExecFuture = Pin<Box<dyn Future<Output = Result<ExecSession, ExecError>> + Send>>;

pub trait ExecBackend: Send + Sync + 'static {
    /// Open a session in the microVM of `instance`, placed on `node`.
    fn open(&self, instance: InstanceId, node: NodeId, req: ExecRequest) -> ExecFuture;
}

/// Backends for tests (feature `test-support`): the same trait, no microVM.
#[cfg(feature = "test-support")]
pub mod testing {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;
    use vt_ids::{InstanceId, NodeId};

    use super::{ExecBackend, ExecError, ExecFuture, ExecInput, ExecOutput, ExecRequest, ExecSession, ExitStatus};

    /// Runs the argv as a local process: stdin, stdout and stderr through bounded channels
    /// (no terminal, whatever `tty` says), signals delivered to the process; it is killed
    /// when the client goes.
    pub struct LocalProcess;

    async fn pump(
        mut from: impl tokio::io::AsyncRead + Unpin,
        to: mpsc::Sender<ExecOutput>,
        make: fn(Bytes) -> ExecOutput,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if to.send(make(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                return;
            }
        }
    }

    impl ExecBackend for LocalProcess {
        fn open(&self, _instance: InstanceId, _node: NodeId, req: ExecRequest) -> ExecFuture {
            Box::pin(async move {
                let mut child = tokio::process::Command::new(&req.argv[0])
                    .args(&req.argv[1..])
                    .envs(req.env)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| ExecError::Failed(e.to_string()))?;
                let (in_tx, mut in_rx) = mpsc::channel::<ExecInput>(4);
                let (out_tx, out_rx) = mpsc::channel::<ExecOutput>(4);
                let pid = child.id();
                let mut stdin = child.stdin.take();
                let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
                tokio::spawn(async move {
                    let pumps = async {
                        tokio::join!(
                            pump(stdout, out_tx.clone(), ExecOutput::Stdout),
                            pump(stderr, out_tx.clone(), ExecOutput::Stderr)
                        )
                    };
                    let input = async {
                        while let Some(item) = in_rx.recv().await {
                            match item {
                                ExecInput::Stdin(b) => {
                                    if let Some(s) = stdin.as_mut() {
                                        let _ = s.write_all(&b).await;
                                    }
                                }
                                ExecInput::StdinEof => stdin = None,
                                // No unsafe code here: kill(1) delivers it.
                                ExecInput::Signal(n) => {
                                    if let Some(pid) = pid {
                                        let _ = tokio::process::Command::new("kill")
                                            .arg(format!("-{n}"))
                                            .arg(pid.to_string())
                                            .status()
                                            .await;
                                    }
                                }
                                // Pipes, not a terminal: there is no size to change.
                                ExecInput::Resize(_) => {}
                            }
                        }
                    };
                    let client_gone = tokio::select! {
                        _ = pumps => false,
                        () = input => true,
                    };
                    if client_gone {
                        let _ = child.kill().await;
                        return;
                    }
                    let status = child.wait().await.unwrap();
                    use std::os::unix::process::ExitStatusExt;
                    let exit = match (status.code(), status.signal()) {
                        (Some(c), _) => ExitStatus::Code(c),
                        (None, Some(s)) => ExitStatus::Signal(s),
                        (None, None) => ExitStatus::Code(255),
                    };
                    let _ = out_tx.send(ExecOutput::Exit(exit)).await;
                });
                Ok(ExecSession { input: in_tx, output: out_rx })
            })
        }
    }

    /// Sends 64 KiB of stdout after 64 KiB for as long as it is taken, counting them.
    pub struct Flood(pub Arc<AtomicU64>);

    impl ExecBackend for Flood {
        fn open(&self, _instance: InstanceId, _node: NodeId, _req: ExecRequest) -> ExecFuture {
            let sent = self.0.clone();
            Box::pin(async move {
                let (in_tx, _in_rx) = mpsc::channel::<ExecInput>(4);
                let (out_tx, out_rx) = mpsc::channel::<ExecOutput>(4);
                tokio::spawn(async move {
                    let _keep = _in_rx;
                    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                    while out_tx.send(ExecOutput::Stdout(chunk.clone())).await.is_ok() {
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                });
                Ok(ExecSession { input: in_tx, output: out_rx })
            })
        }
    }
}
