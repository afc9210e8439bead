//! `vt secrets list|set|import|unset|deploy`.
//!
//! Values go from the command line, a file or stdin to the server and
//! nowhere else: no output, receipt, hint or error of this module shows one.
//! A malformed argument is named by its position, never echoed (it may hold
//! a value).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use vt_api::{ChangeSecrets, EnvSecrets, EnvVarName, SecretChange};

use crate::args::{SecretsCommand, SecretsImportArgs, SecretsSetArgs, SecretsUnsetArgs};
use crate::commands::scope_flags;
use crate::printer::{fields, opt, time, Receipt, Table};
use crate::{idempotency_key, CliError, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: SecretsCommand) -> CliResult {
    match cmd {
        SecretsCommand::List => list(ctx).await,
        SecretsCommand::Set(args) => {
            let set = set_values(&args)?;
            change(ctx, set, vec![], args.stage).await
        }
        SecretsCommand::Import(args) => {
            let set = import(&args)?;
            change(ctx, set, vec![], args.stage).await
        }
        SecretsCommand::Unset(args) => unset(ctx, args).await,
        SecretsCommand::Deploy => deploy(ctx).await,
    }
}

fn name(n: &str) -> CliResult<String> {
    EnvVarName::parse(n)
        .map(|n| n.as_str().to_owned())
        .map_err(|e| CliError::usage(format!("secret name `{n}`: {e}"), None))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of `path`, or of stdin for `-`.
fn read_input(path: &Path) -> CliResult<Vec<u8>> {
    let mut bytes = vec![];
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes)?;
    } else {
        bytes = fs_err::read(path)?;
    }
    Ok(bytes)
}

/// `KEY=VALUE...`, or one `KEY` with `--from-file`: names to base64 values.
fn set_values(args: &SecretsSetArgs) -> CliResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(path) = &args.from_file {
        let [key] = args.pairs.as_slice() else {
            return Err(CliError::usage(
                "`--from-file` reads one secret: give its name only",
                Some("for example `vt secrets set TLS_KEY --from-file key.pem`".to_owned()),
            ));
        };
        if key.contains('=') {
            return Err(CliError::usage(
                "with `--from-file`, give the name only (no `=`): the value is the file's content",
                None,
            ));
        }
        out.insert(name(key)?, b64(&read_input(path)?));
        return Ok(out);
    }
    for (i, pair) in args.pairs.iter().enumerate() {
        let Some((key, value)) = pair.split_once('=') else {
            // Not echoed: it may be a value typed without its name.
            return Err(CliError::usage(
                format!("argument {} is not KEY=VALUE (it has no `=`)", i + 1),
                Some(
                    "for example `vt secrets set DATABASE_URL=postgres://...`, or `--from-file` for a file".to_owned(),
                ),
            ));
        };
        let key = name(key)?;
        if out.insert(key.clone(), b64(value.as_bytes())).is_some() {
            return Err(CliError::usage(format!("`{key}` is given twice"), None));
        }
    }
    Ok(out)
}

/// Every secret of a bundle file.
fn import(args: &SecretsImportArgs) -> CliResult<BTreeMap<String, String>> {
    let bytes = read_input(&args.file)?;
    let bundle = vt_guest_proto::bundle::parse(&bytes).map_err(|e| {
        CliError::usage(
            format!("{} is not a secrets bundle: {e}", args.file.display()),
            Some("the format is `VTSECRETS 1`, `version N`, `count n`, then `NAME LEN` and the value's bytes (docs/secrets.md)".to_owned()),
        )
    })?;
    if bundle.secrets.is_empty() {
        return Err(CliError::usage(format!("{} holds no secret", args.file.display()), None));
    }
    bundle.secrets.iter().map(|(n, v)| Ok((name(n)?, b64(v)))).collect()
}

async fn unset(ctx: &Ctx, args: SecretsUnsetArgs) -> CliResult {
    let mut names = vec![];
    for n in &args.names {
        let n = name(n)?;
        if names.contains(&n) {
            return Err(CliError::usage(format!("`{n}` is given twice"), None));
        }
        names.push(n);
    }
    change(ctx, BTreeMap::new(), names, args.stage).await
}

async fn change(ctx: &Ctx, set: BTreeMap<String, String>, unset: Vec<String>, stage: bool) -> CliResult {
    let (org, app, env) = ctx.settings.env_scope()?;
    let mut words = vec![];
    if !set.is_empty() {
        words.push(format!("set {}", set.keys().cloned().collect::<Vec<_>>().join(", ")));
    }
    if !unset.is_empty() {
        words.push(format!("unset {}", unset.join(", ")));
    }
    let req = ChangeSecrets { set, unset, stage };
    let answer = ctx.client().secrets_change(org, app, env, &req, &idempotency_key()).await?.value;
    receipt(ctx, env, &answer, &words.join("; "), stage);
    Ok(ExitStatus::Success)
}

async fn deploy(ctx: &Ctx) -> CliResult {
    let (org, app, env) = ctx.settings.env_scope()?;
    let answer = ctx.client().secrets_deploy(org, app, env, &idempotency_key()).await?.value;
    receipt(ctx, env, &answer, "applied what was staged", false);
    Ok(ExitStatus::Success)
}

/// What a change did: staged, a new version (rolling out, or waiting for a
/// first deploy), or nothing.
fn receipt(ctx: &Ctx, env: &str, s: &EnvSecrets, what: &str, staged: bool) {
    let flags = scope_flags(ctx, true, true);
    let mut ids = vec![("env", s.env_id.to_string())];
    let (what, next) = match (staged, s.new_version, &s.deploy) {
        (true, _, _) => (
            format!("Staged for env `{env}`: {what}; nothing rolls out until `vt secrets deploy`"),
            vec![format!("vt secrets list{flags}"), format!("vt secrets deploy{flags}")],
        ),
        (false, Some(v), Some(d)) => {
            ids.push(("version", v.to_string()));
            ids.push(("deploy", d.id.to_string()));
            (
                format!("Secrets version {v} of env `{env}`: {what}; its instances are replaced, health-gated"),
                vec![format!("vt describe{flags}"), format!("vt deploy get {}{flags}", d.id)],
            )
        }
        (false, Some(v), None) => {
            ids.push(("version", v.to_string()));
            (
                format!("Secrets version {v} of env `{env}`: {what}; nothing runs yet: the next deploy uses it"),
                vec![format!("vt deploy --image REF --manifest vt.toml{flags}")],
            )
        }
        (false, None, _) => (
            format!(
                "Nothing changed: env `{env}` already has these values (secrets version {}); no rollout",
                s.version
            ),
            vec![format!("vt secrets list{flags}")],
        ),
    };
    ctx.printer.receipt(s, Receipt { what, ids, details: Some(table(s)), next });
}

async fn list(ctx: &Ctx) -> CliResult {
    let (org, app, env) = ctx.settings.env_scope()?;
    let s = ctx.client().secrets_list(org, app, env).await?;
    ctx.printer.show(&s, || {
        let mut out = fields(&[
            ("env", format!("{env} ({})", s.env_id)),
            ("version", if s.version == 0 { "none yet".into() } else { s.version.to_string() }),
            ("instances run", s.desired_version.map_or("no secrets".into(), |v| format!("version {v}"))),
        ]);
        out.push('\n');
        out.push_str(&table(&s));
        out
    });
    Ok(ExitStatus::Success)
}

fn table(s: &EnvSecrets) -> String {
    if s.items.is_empty() {
        return "(no secrets)\n".to_owned();
    }
    let mut t = Table::new(&["NAME", "VERSION", "SET", "SET BY", "STAGED"]);
    for i in &s.items {
        let staged = i.staged.as_ref().map(|c| {
            let change = match c.change {
                SecretChange::Set => "set",
                SecretChange::Unset => "unset",
            };
            format!("{change} by {} at {}", c.staged_by, time(&c.staged_at))
        });
        t.row(vec![
            i.name.clone(),
            opt(&i.version),
            i.set_at.as_ref().map(time).unwrap_or_else(|| "-".into()),
            opt(&i.set_by),
            opt(&staged),
        ]);
    }
    t.render()
}
