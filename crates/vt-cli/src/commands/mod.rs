//! One module per command group. Each maps its arguments to client calls and
//! hands the results to the printer.

pub mod app;
pub mod context;
pub mod deploy;
pub mod describe;
pub mod env;
pub mod events;
pub mod exec;
pub mod image;
pub mod instances;
pub mod logs;
pub mod manifest;
pub mod node;
pub mod org;
pub mod release;
pub mod rollback;
pub mod route;
pub mod scale;
pub mod secrets;
pub mod server;
pub mod system;
pub mod token;
pub mod volume;
pub mod workspace;

use std::io::IsTerminal;

use crate::config::Source;
use crate::printer::Printer;
use crate::{CliError, CliResult, Ctx};

/// ` --org X` when the org came from a flag (so the next command needs it
/// too); empty when it comes from the environment or the context.
pub(crate) fn scope_flags(ctx: &Ctx, with_app: bool, with_env: bool) -> String {
    let mut s = String::new();
    let s_ = &ctx.settings;
    if s_.org.source == Some(Source::Flag) {
        s.push_str(&format!(" --org {}", s_.org.value.as_deref().unwrap_or_default()));
    }
    if with_app && s_.app.source == Some(Source::Flag) {
        s.push_str(&format!(" --app {}", s_.app.value.as_deref().unwrap_or_default()));
    }
    if with_env && s_.env.source == Some(Source::Flag) {
        s.push_str(&format!(" --env {}", s_.env.value.as_deref().unwrap_or_default()));
    }
    s
}

/// Before an irreversible deletion without `--yes`: refuse unless stdin is a terminal to ask on.
/// `why` says what is lost; `hint` how to go ahead anyway.
pub(crate) fn require_terminal(why: &str, hint: String) -> CliResult<()> {
    if std::io::stdin().is_terminal() {
        return Ok(());
    }
    Err(CliError::usage(format!("{why}, and stdin is not a terminal to ask"), Some(hint)))
}

/// Ask `question` and go ahead only when the answer is `name`, the `kind`'s name (`volume`).
pub(crate) fn confirm_name(p: &Printer, question: &str, name: &str, kind: &str) -> CliResult<()> {
    if p.ask(question)? != name {
        return Err(CliError::failed(format!("not deleted: the answer was not the {kind}'s name"), None));
    }
    Ok(())
}
