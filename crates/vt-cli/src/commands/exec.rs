//! `vt exec INSTANCE [-i] [-t] [--user U] [-w DIR] [-e K=V]... -- CMD ARGS...` (or
//! `--process P` for a running instance of the env's process P): ask for a grant, open the
//! session's WebSocket, relay this terminal to it, exit with the command's code.
//!
//! - Without `-i` standard input is not read: the command reads end of file at once.
//! - With `-t` the command runs under a pseudo-terminal; when stdin is a terminal it is put in
//!   raw mode (restored on every way out: [`RawMode`] is a drop guard, and panics unwind) and
//!   its size is sent at the start and on every SIGWINCH. Ctrl-C is then a byte for the
//!   remote terminal; without `-t` it is sent to the command as SIGINT.
//! - Output is the command's: `--format json` is refused.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use vt_api::exec::{ClientFrame, CreateExec, ExecExit, ServerFrame, MAX_PAYLOAD};
use vt_api::{DesiredState, Health, InstanceStatus};
use vt_client::exec::ExecEvent;

use crate::args::ExecArgs;
use crate::{CliError, CliResult, Ctx, ExitStatus};

/// The local terminal in raw mode until dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.saved);
    }
}

/// This terminal's size (stdout's, else stdin's), if there is one.
fn window_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

fn env_vars(pairs: &[String]) -> CliResult<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            // Not quoted: it may be a value.
            return Err(CliError::usage("an `-e` argument is not KEY=VALUE", Some("write `-e NAME=value`".to_owned())));
        };
        env.insert(k.to_owned(), v.to_owned());
    }
    Ok(env)
}

/// The instance to run in: the one named, or a running instance of `--process` in the env
/// (a ready one first, then the oldest).
async fn pick(ctx: &Ctx, args: &ExecArgs) -> CliResult<String> {
    if let Some(i) = &args.instance {
        return Ok(i.clone());
    }
    let process = args.process.as_deref().unwrap_or_default();
    let (org, app, env) = ctx.settings.env_scope()?;
    let mut running: Vec<_> = ctx
        .client()
        .instance_list(org, app, env)
        .await?
        .items
        .into_iter()
        .filter(|i| i.process == process && i.status == InstanceStatus::Running)
        .filter(|i| i.desired_state == DesiredState::Running)
        .collect();
    running.sort_by_key(|i| (i.health != Some(Health::Passing), i.created_at, i.id));
    match running.first() {
        Some(i) => Ok(i.id.to_string()),
        None => Err(CliError::failed(
            format!("no running instance of process `{process}` in env `{env}`"),
            Some("`vt instances` shows the env's instances and their status".to_owned()),
        )),
    }
}

pub async fn run(ctx: &Ctx, args: ExecArgs) -> CliResult {
    if ctx.printer.json_mode() {
        return Err(CliError::usage(
            "`vt exec` prints the command's own output: `--format json` does not apply",
            Some("drop `--format json`".to_owned()),
        ));
    }
    let env = env_vars(&args.env_vars)?;
    let instance = pick(ctx, &args).await?;
    let size = if args.tty { window_size() } else { None };
    let req = CreateExec {
        argv: args.command.clone(),
        env,
        cwd: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        rows: size.map(|s| s.0),
        cols: size.map(|s| s.1),
    };
    let client = ctx.client();
    let grant = client.exec_create(&instance, &req).await?;
    let (mut writer, mut reader) = client.exec_connect(&grant).await?.split();

    // One writer; stdin, window changes and signals queue frames for it (bounded).
    let (frames, mut queued) = mpsc::channel::<ClientFrame>(16);
    let writing = tokio::spawn(async move {
        while let Some(f) = queued.recv().await {
            if writer.send(f).await.is_err() {
                break;
            }
        }
        writer
    });
    let raw = if args.tty && std::io::stdin().is_terminal() {
        Some(
            RawMode::enter()
                .map_err(|e| CliError::failed(format!("cannot put the terminal in raw mode: {e}"), None))?,
        )
    } else {
        None
    };
    let mut tasks = vec![];
    if args.interactive {
        let frames = frames.clone();
        tasks.push(tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; MAX_PAYLOAD.min(16 * 1024)];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if frames.send(ClientFrame::Stdin(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = frames.send(ClientFrame::StdinEof).await;
        }));
    } else {
        let _ = frames.send(ClientFrame::StdinEof).await;
    }
    if args.tty {
        if let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) {
            let frames = frames.clone();
            tasks.push(tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some((rows, cols)) = window_size() {
                        if frames.send(ClientFrame::Resize { rows, cols }).await.is_err() {
                            return;
                        }
                    }
                }
            }));
        }
    } else if let Ok(mut int) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
        let frames = frames.clone();
        tasks.push(tokio::spawn(async move {
            while int.recv().await.is_some() {
                if frames.send(ClientFrame::Signal(2)).await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(frames);

    let mut exit = None;
    let mut failure = None;
    while let Some(event) = reader.next().await {
        match event {
            Ok(ExecEvent::Frame(ServerFrame::Stdout(b))) => ctx.printer.raw_out(&b),
            Ok(ExecEvent::Frame(ServerFrame::Stderr(b))) => ctx.printer.raw_err(&b),
            Ok(ExecEvent::Frame(ServerFrame::Exit(e))) => exit = Some(e),
            Ok(ExecEvent::Frame(ServerFrame::Error(m))) => failure = Some(m),
            Ok(ExecEvent::Closed { code, reason }) => {
                if exit.is_none() && failure.is_none() {
                    failure = Some(if reason.is_empty() {
                        format!("the server closed the session (WebSocket close code {code})")
                    } else {
                        format!("the server closed the session: {reason}")
                    });
                }
            }
            Err(e) => {
                if exit.is_none() && failure.is_none() {
                    failure = Some(format!("the session broke: {e}"));
                }
                break;
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    writing.abort();
    drop(raw);
    match (exit, failure) {
        (Some(ExecExit::Code(0)), _) => Ok(ExitStatus::Success),
        (Some(ExecExit::Code(c)), _) => Ok(ExitStatus::Command(c.clamp(0, 255) as u8)),
        (Some(ExecExit::Signal(s)), _) => Ok(ExitStatus::Command((128 + s).clamp(0, 255) as u8)),
        (None, Some(m)) => Err(CliError::failed(m, None)),
        (None, None) => Err(CliError::failed("the session ended without an exit status", None)),
    }
}
