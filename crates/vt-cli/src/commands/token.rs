//! `vt token create|list|revoke`.

use vt_api::{CreateToken, Token, TokenQuery, TokenRole};

use crate::args::{TokenCommand, TokenCreateArgs, TokenListArgs};
use crate::printer::{label, opt, time, Receipt, Table};
use crate::{idempotency_key, CliResult, Ctx, ExitStatus};

pub async fn run(ctx: &Ctx, cmd: TokenCommand) -> CliResult {
    match cmd {
        TokenCommand::Create(args) => create(ctx, args).await,
        TokenCommand::List(args) => list(ctx, args).await,
        TokenCommand::Revoke { id } => revoke(ctx, &id).await,
    }
}

/// What a token may do, in a few words: `deployer in org `acme``, `node `node-1``, `admin`.
/// `org` names the org as the user did, when they did.
fn scope(t: &Token, org: Option<&str>) -> String {
    match (t.role, &t.org_id, &t.node_name) {
        (TokenRole::Node, _, Some(node)) => format!("node `{node}`"),
        (role, Some(_), _) if org.is_some() => format!("{role} in org `{}`", org.unwrap_or_default()),
        (role, Some(id), _) => format!("{role} in {id}"),
        (role, _, _) => role.to_string(),
    }
}

async fn create(ctx: &Ctx, args: TokenCreateArgs) -> CliResult {
    let role = TokenRole::from(args.role);
    // An org role acts in the current org unless told otherwise.
    let org = match (role.is_org_role(), args.org) {
        (true, None) => Some(ctx.settings.org()?.to_owned()),
        (_, org) => org,
    };
    let req =
        CreateToken { name: args.name, role, org: org.clone(), node: args.node, expires_in_secs: args.expires_in };
    let issued = ctx.client().token_create(&req).await?;
    let t = &issued.token;
    let expires = t.expires_at.as_ref().map(|e| format!("; it expires at {}", time(e))).unwrap_or_default();
    ctx.printer.receipt(
        &issued,
        Receipt {
            what: format!("Created token `{}` ({}){expires}", t.name, scope(t, org.as_deref())),
            ids: vec![("token", t.id.to_string())],
            details: Some(format!(
                "secret: {}\nThe secret is shown this once: store it now (only its hash is kept).\n",
                issued.secret
            )),
            next: vec!["VT_TOKEN=<secret> vt ...".into(), format!("vt token revoke {}", t.id)],
        },
    );
    Ok(ExitStatus::Success)
}

async fn list(ctx: &Ctx, args: TokenListArgs) -> CliResult {
    let q = TokenQuery { org: args.org, all: args.all.then_some(true) };
    let list = ctx.client().token_list(&q).await?;
    ctx.printer.show(&list, || {
        let mut t = Table::new(&["ID", "NAME", "ROLE", "ORG", "NODE", "EXPIRES", "STATE", "CREATED"]);
        for tok in &list.items {
            t.row(vec![
                tok.id.to_string(),
                tok.name.clone(),
                label(&tok.role),
                opt(&tok.org_id),
                opt(&tok.node_name),
                tok.expires_at.as_ref().map(time).unwrap_or_else(|| "never".into()),
                tok.state.as_str().to_owned(),
                time(&tok.created_at),
            ]);
        }
        t.render()
    });
    Ok(ExitStatus::Success)
}

async fn revoke(ctx: &Ctx, token: &str) -> CliResult {
    let t = ctx.client().token_revoke(token, &idempotency_key()).await?.value;
    ctx.printer.receipt(
        &t,
        Receipt {
            what: format!("Revoked token `{}` ({}): it is refused from the next request on", t.name, scope(&t, None)),
            ids: vec![("token", t.id.to_string())],
            details: None,
            next: vec!["vt token list --all".into()],
        },
    );
    Ok(ExitStatus::Success)
}
