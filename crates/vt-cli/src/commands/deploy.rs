//! `vt deploy [--release R | --image REF --manifest FILE] [--wait]`, `vt deploy list|get`.

use std::time::{Duration, Instant};

use vt_api::{CreateDeploy, DeployView};

use crate::args::{DeployArgs, DeployCommand, ReleaseSource};
use crate::commands::scope_flags;
use crate::printer::{fields, label, opt, time, Receipt, Table};
use crate::{idempotency_key, CliError, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, args: DeployArgs) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let (org, app, env) = ctx.settings.env_scope()?;
    match args.command {
        Some(DeployCommand::List) => {
            let list = client.deploy_list(org, app, env).await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "RELEASE", "KIND", "STATUS", "CREATED", "REASON"]);
                for d in &list.items {
                    t.row(vec![
                        d.id.to_string(),
                        d.release_id.to_string(),
                        label(&d.kind),
                        label(&d.status),
                        time(&d.created_at),
                        opt(&d.reason),
                    ]);
                }
                t.render()
            });
            return Ok(ExitStatus::Success);
        }
        Some(DeployCommand::Get { deploy }) => {
            let d = client.deploy_get(org, app, env, &deploy).await?;
            p.show(&d, || render(&d));
            return Ok(ExitStatus::Success);
        }
        None => {}
    }
    let release_id = match (&args.release, &args.image, &args.manifest) {
        (Some(r), _, _) => client.release_get(org, app, r).await?.id.to_string(),
        (None, Some(image), Some(manifest)) => {
            let r = super::release::create(ctx, &ReleaseSource { image: image.clone(), manifest: manifest.clone() }).await?;
            p.progress(&format!("created release {}", r.id));
            r.id.to_string()
        }
        _ => {
            return Err(CliError::usage(
                "say what to deploy",
                Some("pass `--release R`, or `--image REF --manifest FILE`; `vt release list` shows releases".into()),
            ))
        }
    };
    let mut d = client
        .deploy_create(
            org,
            app,
            env,
            &CreateDeploy { release_id },
            &idempotency_key(),
        )
        .await?
        .value;
    let mut status = ExitStatus::Success;
    if args.wait {
        d = wait(ctx, d, Duration::from_secs(args.timeout)).await?;
        if !matches!(label(&d.status).as_str(), "succeeded") {
            status = ExitStatus::Failure;
        }
    }
    let flags = scope_flags(ctx, true, true);
    let what = if args.wait {
        format!(
            "Deploy of release {} to env `{env}`: {}{}",
            d.release_id,
            label(&d.status),
            d.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    } else {
        format!(
            "Started deploy of release {} to env `{env}` ({})",
            d.release_id,
            label(&d.status)
        )
    };
    let next = if args.wait {
        format!("vt describe{flags}")
    } else {
        format!("vt deploy get {}{flags}", d.id)
    };
    p.receipt(
        &d,
        Receipt {
            what,
            ids: vec![
                ("deploy", d.id.to_string()),
                ("release", d.release_id.to_string()),
            ],
            details: None,
            next: vec![next],
        },
    );
    if status != ExitStatus::Success && !p.json_mode() {
        p.hint(&format!(
            "see why with `vt describe{flags}` and `vt events`"
        ));
    }
    Ok(status)
}

/// Poll until the deploy reaches a terminal status; progress only on a TTY.
pub(crate) async fn wait(ctx: &Ctx, mut d: DeployView, timeout: Duration) -> CliResult<DeployView> {
    let client = ctx.client();
    let (org, app, env) = ctx.settings.env_scope()?;
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let status = label(&d.status);
        if status != last {
            ctx.printer.progress(&format!(
                "[{:>4}s] deploy {}: {status}",
                started.elapsed().as_secs(),
                d.id
            ));
            last = status;
        }
        if d.status.is_terminal() {
            return Ok(d);
        }
        if started.elapsed() >= timeout {
            return Err(CliError::failed(
                format!(
                    "deploy {} is still {} after {}s",
                    d.id,
                    label(&d.status),
                    timeout.as_secs()
                ),
                Some(format!(
                    "it keeps going; follow it with `vt deploy get {}`",
                    d.id
                )),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        d = client.deploy_get(org, app, env, &d.id.to_string()).await?;
    }
}

fn render(d: &DeployView) -> String {
    fields(&[
        ("id", d.id.to_string()),
        ("env", d.env_id.to_string()),
        ("release", d.release_id.to_string()),
        ("previous", opt(&d.previous_release_id)),
        ("kind", label(&d.kind)),
        ("status", label(&d.status)),
        ("reason", opt(&d.reason)),
        ("created", time(&d.created_at)),
        ("updated", time(&d.updated_at)),
    ])
}
