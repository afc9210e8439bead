//! `vt release create|list|get`.

use vt_api::{CreateRelease, Release};

use crate::args::{ReleaseCommand, ReleaseSource};
use crate::commands::scope_flags;
use crate::printer::{fields, opt, time, Receipt, Table};
use crate::{idempotency_key, CliError, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: ReleaseCommand) -> CliResult {
    let client = ctx.client();
    let p = &ctx.printer;
    let (org, app) = (ctx.settings.org()?, ctx.settings.app()?);
    match cmd {
        ReleaseCommand::Create(src) => {
            let r = create(ctx, &src).await?;
            p.receipt(
                &r,
                Receipt {
                    what: format!("Created release of app `{app}` from `{}`", r.image_ref),
                    ids: vec![("release", r.id.to_string()), ("manifest", r.manifest_hash.clone())],
                    details: None,
                    next: vec![format!("vt deploy --release {}{}", r.id, scope_flags(ctx, true, true))],
                },
            );
        }
        ReleaseCommand::List => {
            let list = client.release_list(org, app).await?;
            p.show(&list, || {
                let mut t = Table::new(&["ID", "IMAGE", "MANIFEST", "CREATED"]);
                for r in &list.items {
                    t.row(vec![
                        r.id.to_string(),
                        r.image_ref.clone(),
                        short_hash(&r.manifest_hash),
                        time(&r.created_at),
                    ]);
                }
                t.render()
            });
        }
        ReleaseCommand::Get { release } => {
            let r = client.release_get(org, app, &release).await?;
            p.show(&r, || render(&r));
        }
    }
    Ok(ExitStatus::Success)
}

/// Check the manifest locally (errors with line:column), then create the release.
pub async fn create(ctx: &Ctx, src: &ReleaseSource) -> CliResult<Release> {
    let (org, app) = (ctx.settings.org()?, ctx.settings.app()?);
    let manifest = fs_err::read_to_string(&src.manifest)?;
    let parsed =
        vt_manifest::parse(&manifest).map_err(|errors| CliError::Manifest { path: src.manifest.clone(), errors })?;
    // For people (table mode); a program reads the manifest it sent.
    if !parsed.volumes.is_empty() && !ctx.printer.json_mode() {
        let names: Vec<String> = parsed.volumes.iter().map(|v| format!("`{}`", v.name)).collect();
        ctx.printer.hint(&format!(
            "{} mounts volumes ({}): each instance of a process that mounts one runs only where a free volume of that name is (`vt volume create NAME --size-gib N`; docs/volumes.md)",
            src.manifest.display(),
            names.join(", ")
        ));
    }
    let req = CreateRelease { image: src.image.clone(), manifest };
    Ok(ctx.client().release_create(org, app, &req, &idempotency_key()).await?.value)
}

/// `sha256:0123456789ab` (12 hex digits are plenty to tell releases apart).
pub fn short_hash(h: &str) -> String {
    match h.split_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", &hex[..hex.len().min(12)]),
        None => h.chars().take(12).collect(),
    }
}

fn render(r: &Release) -> String {
    fields(&[
        ("id", r.id.to_string()),
        ("app", r.app_id.to_string()),
        ("image", r.image_ref.clone()),
        ("digest", r.image_digest.clone()),
        ("resolved from", opt(&r.resolved_from)),
        ("manifest", r.manifest_hash.clone()),
        ("created", time(&r.created_at)),
    ])
}
