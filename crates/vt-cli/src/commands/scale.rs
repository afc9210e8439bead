//! `vt scale PROCESS=N...` (no arguments: show the scale).

use std::collections::BTreeMap;

use vt_api::{Scale, SetScale};

use crate::args::ScaleArgs;
use crate::commands::scope_flags;
use crate::printer::{time, Receipt, Table};
use crate::{idempotency_key, CliError, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, args: ScaleArgs) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let (org, app, env) = ctx.settings.env_scope()?;
    if args.processes.is_empty() {
        let list = client.scale_get(org, app, env).await?;
        p.show(&list, || table(&list.items));
        return Ok(ExitStatus::Success);
    }
    let processes = parse(&args.processes)?;
    let changed: Vec<String> = processes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let scales = client.scale_set(org, app, env, &SetScale { processes }, &idempotency_key()).await?.value;
    p.receipt(
        &scales,
        Receipt {
            what: format!("Scaled env `{env}`: {}", changed.join(" ")),
            ids: scales.first().map(|s| vec![("env", s.env_id.to_string())]).unwrap_or_default(),
            details: Some(table(&scales)),
            next: vec![format!("vt describe{}", scope_flags(ctx, true, true))],
        },
    );
    Ok(ExitStatus::Success)
}

fn parse(args: &[String]) -> CliResult<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for a in args {
        let parsed =
            a.split_once('=').and_then(|(k, v)| Some((k, v.parse::<u32>().ok()?))).filter(|(k, _)| !k.is_empty());
        let (k, v) = parsed.ok_or_else(|| {
            CliError::usage(format!("`{a}` is not PROCESS=N"), Some("for example `vt scale web=3 worker=1`".into()))
        })?;
        if out.insert(k.to_owned(), v).is_some() {
            return Err(CliError::usage(format!("process `{k}` is given twice"), None));
        }
    }
    Ok(out)
}

fn table(items: &[Scale]) -> String {
    let mut t = Table::new(&["PROCESS", "INSTANCES", "UPDATED"]);
    for s in items {
        t.row(vec![s.process.clone(), s.instances.to_string(), time(&s.updated_at)]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_process_counts() {
        let m = super::parse(&["web=3".into(), "worker=0".into()]).unwrap();
        assert_eq!(m.get("web"), Some(&3));
        assert_eq!(m.get("worker"), Some(&0));
        for bad in ["web", "=3", "web=-1", "web=x"] {
            assert!(super::parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(super::parse(&["web=1".into(), "web=2".into()]).is_err());
    }
}
