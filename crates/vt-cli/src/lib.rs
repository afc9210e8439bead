//! The `vt` command line.
//!
//! - `args`: the clap types (the command line's shape, nothing else).
//! - `commands/`: one module per command group; each returns an
//!   [`ExitStatus`] or a [`CliError`].
//! - `printer`: the only place that writes to stdout or stderr.
//! - `config`: the context file and flag > env > context resolution.
//! - `exit`: the exit codes, documented in `docs/cli.md`.
//!
//! The binary (`crates/vt`) builds the tokio runtime and calls [`run`].

// Only the printer writes output (through `std::io`, never `print!`).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::OsString;

use clap::Parser;

pub mod args;
pub mod commands;
pub mod config;
pub mod error;
pub mod exit;
pub mod printer;

pub use error::{CliError, CliResult};
pub use exit::ExitStatus;

use args::{Cli, Command};
use printer::Printer;

/// What every command gets: how to print, the effective settings, a client.
pub struct Ctx {
    pub printer: Printer,
    pub settings: config::Settings,
    pub global: args::GlobalArgs,
}

impl Ctx {
    pub fn client(&self) -> vt_client::Client {
        vt_client::Client::new(
            self.settings.server.value.as_deref().unwrap_or(config::DEFAULT_SERVER),
            self.settings.token.value.clone(),
        )
    }
}

/// A fresh idempotency key: made once per invocation, reused by retries.
pub fn idempotency_key() -> String {
    format!("vt-cli-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Parse `args` (including the program name) and run the command.
pub async fn run(args: impl IntoIterator<Item = OsString>) -> ExitStatus {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitStatus::Usage } else { ExitStatus::Success };
        }
    };
    let printer = Printer::new(cli.global.format);
    match dispatch(cli, printer).await {
        Ok(status) => status,
        Err(e) => {
            printer.error(&e);
            e.exit_status()
        }
    }
}

async fn dispatch(cli: Cli, printer: Printer) -> CliResult {
    // Local commands first: they need no settings and no server.
    match cli.command {
        Command::Manifest(cmd) => return commands::manifest::run(&printer, cmd),
        Command::Server(args) => return commands::server::run(&printer, *args).await,
        _ => {}
    }
    let settings = config::resolve(&cli.global)?;
    let ctx = Ctx { printer, settings, global: cli.global };
    match cli.command {
        Command::Context(cmd) => commands::context::run(&ctx, cmd),
        Command::Org(cmd) => commands::org::run(&ctx, cmd).await,
        Command::App(cmd) => commands::app::run(&ctx, cmd).await,
        Command::Env(cmd) => commands::env::run(&ctx, cmd).await,
        Command::Release(cmd) => commands::release::run(&ctx, cmd).await,
        Command::Image(cmd) => commands::image::run(&ctx, cmd).await,
        Command::Deploy(args) => commands::deploy::run(&ctx, args).await,
        Command::Rollback(args) => commands::rollback::run(&ctx, args).await,
        Command::Scale(args) => commands::scale::run(&ctx, args).await,
        Command::Instances => commands::instances::run(&ctx).await,
        Command::Events(args) => commands::events::run(&ctx, args).await,
        Command::Logs(args) => commands::logs::run(&ctx, args).await,
        Command::Describe => commands::describe::run(&ctx).await,
        Command::Exec(args) => commands::exec::run(&ctx, args).await,
        Command::Node(cmd) => commands::node::run(&ctx, cmd).await,
        Command::Route(cmd) => commands::route::run(&ctx, cmd).await,
        Command::System(cmd) => commands::system::run(&ctx, cmd).await,
        Command::Secrets(cmd) => commands::secrets::run(&ctx, cmd).await,
        Command::Token(cmd) => commands::token::run(&ctx, cmd).await,
        Command::Volume(cmd) => commands::volume::run(&ctx, cmd).await,
        Command::Workspace(cmd) => commands::workspace::run(&ctx, cmd).await,
        Command::Manifest(_) | Command::Server(_) => unreachable!("handled above"),
    }
}
