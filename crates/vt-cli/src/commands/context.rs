//! `vt context set|show`: the saved server, token and default org/app/env.

use serde::Serialize;

use crate::args::ContextCommand;
use crate::config::{Context, Setting};
use crate::printer::{fields, Receipt};
use crate::{CliError, CliResult, Ctx, ExitStatus};

pub fn run(ctx: &Ctx, cmd: ContextCommand) -> CliResult {
    let p = &ctx.printer;
    let path = ctx.settings.config_path.clone().ok_or_else(|| {
        CliError::usage(
            "cannot tell where the context file is",
            Some("set `VT_CONFIG` (or `HOME`, or `XDG_CONFIG_HOME`)".into()),
        )
    })?;
    match cmd {
        ContextCommand::Set(args) => {
            let g = &ctx.global;
            let mut c = Context::load(&path)?;
            let mut changed = vec![];
            for (key, flag, slot) in [
                ("server", &g.server, &mut c.server),
                ("token", &g.token, &mut c.token),
                ("org", &g.org, &mut c.org),
                ("app", &g.app, &mut c.app),
                ("env", &g.env, &mut c.env),
            ] {
                if let Some(v) = flag {
                    *slot = Some(v.clone());
                    changed.push(key.to_owned());
                }
                if args.unset.iter().any(|u| u == key) {
                    *slot = None;
                    changed.push(format!("-{key}"));
                }
            }
            for u in &args.unset {
                if !["server", "token", "org", "app", "env"].contains(&u.as_str()) {
                    return Err(CliError::usage(
                        format!("`{u}` is not a context key"),
                        Some("keys: server, token, org, app, env".into()),
                    ));
                }
            }
            if changed.is_empty() {
                return Err(CliError::usage(
                    "nothing to set",
                    Some(
                        "pass any of `--server URL`, `--token T`, `--org O`, `--app A`, `--env E`, or `--unset KEY`"
                            .into(),
                    ),
                ));
            }
            c.save(&path)?;
            let shown = Shown::from(&c);
            p.receipt(
                &shown,
                Receipt {
                    what: format!("Saved the context ({}) in {}", changed.join(", "), path.display()),
                    ids: vec![],
                    details: None,
                    next: vec!["vt context show".into()],
                },
            );
        }
        ContextCommand::Show => {
            let s = &ctx.settings;
            let token = Setting { value: s.token.value.as_ref().map(|_| "(set)".to_owned()), source: s.token.source };
            let line = |st: &Setting| match (&st.value, st.source) {
                (Some(v), Some(src)) => format!("{v}  ({})", src.as_str()),
                _ => "-".into(),
            };
            #[derive(Serialize)]
            struct Out<'a> {
                config_path: String,
                server: &'a Setting,
                token: &'a Setting,
                org: &'a Setting,
                app: &'a Setting,
                env: &'a Setting,
            }
            let out = Out {
                config_path: path.display().to_string(),
                server: &s.server,
                token: &token,
                org: &s.org,
                app: &s.app,
                env: &s.env,
            };
            p.show(&out, || {
                fields(&[
                    ("config", path.display().to_string()),
                    ("server", line(&s.server)),
                    ("token", line(&token)),
                    ("org", line(&s.org)),
                    ("app", line(&s.app)),
                    ("env", line(&s.env)),
                ])
            });
        }
    }
    Ok(ExitStatus::Success)
}

/// The saved context with the token redacted.
#[derive(Serialize)]
struct Shown {
    server: Option<String>,
    token: Option<&'static str>,
    org: Option<String>,
    app: Option<String>,
    env: Option<String>,
}

impl From<&Context> for Shown {
    fn from(c: &Context) -> Self {
        Shown {
            server: c.server.clone(),
            token: c.token.as_ref().map(|_| "(set)"),
            org: c.org.clone(),
            app: c.app.clone(),
            env: c.env.clone(),
        }
    }
}
