//! Exec sessions for the API, opened by the in-process agent (single host: the instance's
//! node agent is this process's).
//!
//! The agent starts after the control plane (it registers through the API), so the backend
//! is given its agent once there is one; until then, and with `--no-agent`, a session cannot
//! be opened.

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use vt_agent::Agent;
use vt_control_plane::exec::ExitStatus;
use vt_control_plane::exec::{ExecBackend, ExecError, ExecFuture, ExecInput, ExecOutput, ExecRequest, ExecSession};
use vt_ids::{InstanceId, NodeId};
use vt_runtime::exec as rt;

#[derive(Default)]
pub struct LocalExec {
    agent: OnceLock<Arc<Agent>>,
}

impl LocalExec {
    pub fn set_agent(&self, agent: Arc<Agent>) {
        let _ = self.agent.set(agent);
    }
}

impl ExecBackend for LocalExec {
    fn open(&self, instance: InstanceId, _node: NodeId, req: ExecRequest) -> ExecFuture {
        let agent = self.agent.get().cloned();
        Box::pin(async move {
            let agent = agent.ok_or(ExecError::NotRunning)?;
            let req = rt::ExecRequest {
                argv: req.argv,
                env: req.env,
                cwd: req.cwd.unwrap_or_default(),
                user: req.user.unwrap_or_default(),
                tty: req.tty.map(|w| (w.rows, w.cols)),
            };
            let rt::ExecSession { mut input, mut output } =
                agent.exec(&instance.to_string(), req).await.map_err(|e| match e {
                    vt_agent::ExecError::NotRunning => ExecError::NotRunning,
                    vt_agent::ExecError::Refused(m) => ExecError::Failed(m),
                })?;
            // Two relays, each holding at most one item: the guest channel's credit window
            // is the only buffer. The client dropping its input ends the input relay, which
            // drops the runtime's input: the session is hung up.
            let (in_tx, mut in_rx) = mpsc::channel::<ExecInput>(1);
            let (out_tx, out_rx) = mpsc::channel::<ExecOutput>(1);
            tokio::spawn(async move {
                while let Some(i) = in_rx.recv().await {
                    let i = match i {
                        ExecInput::Stdin(b) => rt::ExecInput::Stdin(b.to_vec()),
                        ExecInput::StdinEof => rt::ExecInput::StdinEof,
                        ExecInput::Resize(w) => rt::ExecInput::Resize { rows: w.rows, cols: w.cols },
                        ExecInput::Signal(s) => rt::ExecInput::Signal(s),
                    };
                    if input.send(i).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some(o) = output.recv().await {
                    let o = match o {
                        rt::ExecOutput::Stdout(d) => ExecOutput::Stdout(d.into()),
                        rt::ExecOutput::Stderr(d) => ExecOutput::Stderr(d.into()),
                        rt::ExecOutput::Exit(vt_runtime::ExitStatus::Code(c)) => ExecOutput::Exit(ExitStatus::Code(c)),
                        rt::ExecOutput::Exit(vt_runtime::ExitStatus::Signal(s)) => {
                            ExecOutput::Exit(ExitStatus::Signal(s))
                        }
                    };
                    if out_tx.send(o).await.is_err() {
                        break;
                    }
                }
            });
            Ok(ExecSession { input: in_tx, output: out_rx })
        })
    }
}
