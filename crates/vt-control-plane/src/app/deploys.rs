//! Deploys, rollbacks and scale: what an env should run.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use vt_api::{CreateDeploy, Deploy, Scale, SetScale};
use vt_events::{AggregateType, DeployCreated, DeployKind, DeployStatus, DeployStatusChanged, Event, ScaleSet};
use vt_ids::{DeployId, Name};
use vt_store::Expectation;
use vt_views::{DeployView, EnvView, ReleaseView, ScaleView, ViewKind};

use crate::authz::Action;
use crate::lookup::EnvScope;
use crate::wire::{all, Wire};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

pub(crate) fn manifest_of(release: &ReleaseView) -> ApiResult<vt_manifest::Manifest> {
    vt_manifest::from_normalized_json(&release.manifest)
        .map_err(|e| ApiErr::internal(format!("stored manifest of {} does not decode: {e}", release.id)))
}

impl ControlPlane {
    /// The env as the views show it now, pinned ([`Self::fresh_pinned`]).
    pub(crate) async fn fresh_env(&self, env: &EnvView) -> ApiResult<(EnvView, Expectation)> {
        self.fresh_pinned(AggregateType::Env, env.id, "env").await
    }

    /// The env's desired counts, by process name (the store orders by id, `<env>/<process>`).
    pub(crate) async fn scales(&self, env: &EnvView) -> ApiResult<Vec<ScaleView>> {
        self.views(Self::kind_query(ViewKind::Scale).parent(env.id)).await
    }

    /// Start a deploy of a release onto an env: the env's desired release changes,
    /// an unfinished earlier deploy is superseded, and process types that have
    /// no desired count yet get their manifest's `scaling.min`.
    pub async fn deploy_create(&self, ctx: &Ctx, scope: &EnvScope, req: CreateDeploy) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let release =
            self.lookup_release(&scope.app, &req.release_id.to_string()).await.map_err(|e| e.field("release_id"))?;
        let (env, pin) = self.fresh_env(&scope.env).await?;
        let secrets = self.latest_secrets_version(&env).await?;
        let plan = self.deploy_release(ctx, &env, pin, release, DeployKind::Deploy, secrets).await?;
        self.commit(ctx, plan).await
    }

    /// Return an env to its previous release: the newest release in its deploy
    /// history other than the desired one (releases of failed deploys do not
    /// count). A deploy of kind `rollback`.
    pub async fn env_rollback(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let (env, pin) = self.fresh_env(&scope.env).await?;
        let Some(current) = env.desired_release_id else {
            return Err(ApiErr::conflict(format!("env `{}` has no deploy yet: nothing to roll back", env.name)));
        };
        let previous = self
            .deploys_of(&env)
            .await?
            .into_iter()
            .filter(|d| d.status != DeployStatus::Failed)
            .map(|d| d.release_id)
            .find(|r| *r != current)
            .ok_or_else(|| {
                ApiErr::conflict(format!(
                    "env `{}` has no previous release: every deploy in its history is of {current} or failed; deploy another release with `vt deploy`",
                    env.name
                ))
            })?;
        let release = self.lookup_release(&scope.app, &previous.to_string()).await?;
        // A rollback is of the release: the secrets stay the latest ones.
        let secrets = self.latest_secrets_version(&env).await?;
        let plan = self.deploy_release(ctx, &env, pin, release, DeployKind::Rollback, secrets).await?;
        self.commit(ctx, plan).await
    }

    /// The deploy plan for a release with a secrets version onto an env read
    /// fresh from the views (`pub(crate)`: a new secrets version rolls out
    /// through it too).
    pub(crate) async fn deploy_release(
        &self,
        ctx: &Ctx,
        env: &EnvView,
        pin: Expectation,
        release: ReleaseView,
        kind: DeployKind,
        secrets_version: Option<u64>,
    ) -> ApiResult<Plan<Deploy>> {
        let manifest = manifest_of(&release)?;
        self.check_secret_env_names(env, &release, &manifest).await?;
        let id = DeployId::new();
        let now = ctx.now();
        let view = DeployView {
            id,
            org_id: env.org_id,
            app_id: env.app_id,
            env_id: env.id,
            release_id: release.id,
            previous_release_id: env.desired_release_id,
            secrets_version,
            previous_secrets_version: env.desired_secrets_version,
            kind,
            status: DeployStatus::Pending,
            reason: None,
            phases: vec![],
            failed_instance_id: None,
            reverted_to_release_id: None,
            created_at: now,
            updated_at: now,
        };
        let mut plan =
            Plan::new(StatusCode::CREATED, view.wire()).expect(pin).event(Event::DeployCreated(DeployCreated {
                org_id: env.org_id,
                app_id: env.app_id,
                env_id: env.id,
                deploy_id: id,
                release_id: release.id,
                previous_release_id: env.desired_release_id,
                kind,
                secrets_version,
                previous_secrets_version: env.desired_secrets_version,
            }));
        if let Some(prev) = env.current_deploy_id {
            if let Some(prev) = self.view::<DeployView>(&prev.to_string()).await? {
                if !prev.status.is_terminal() {
                    plan = plan.event(Event::DeployStatusChanged(DeployStatusChanged {
                        org_id: env.org_id,
                        env_id: env.id,
                        deploy_id: prev.id,
                        status: DeployStatus::Superseded,
                        reason: Some(format!("superseded by deploy {id}")),
                        failed_instance_id: None,
                    }));
                }
            }
        }
        let scaled: BTreeSet<String> = self.scales(env).await?.into_iter().map(|s| s.process).collect();
        for (process, p) in &manifest.processes {
            if !scaled.contains(process) {
                plan = plan.event(Event::ScaleSet(ScaleSet {
                    org_id: env.org_id,
                    app_id: env.app_id,
                    env_id: env.id,
                    process: process.clone(),
                    instances: p.scaling.min,
                }));
            }
        }
        Ok(plan)
    }

    pub async fn scale_get(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<Vec<Scale>> {
        scope.authorize(ctx, Action::Read)?;
        Ok(all(self.scales(&scope.env).await?))
    }

    /// Set desired instance counts. Checked against the desired release's
    /// manifest when there is one (process exists, count within `scaling`).
    /// Answers every process's count after the change.
    pub async fn scale_set(&self, ctx: &Ctx, scope: &EnvScope, req: SetScale) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let (env, pin) = self.fresh_env(&scope.env).await?;
        let manifest = match env.desired_release_id {
            Some(r) => Some(manifest_of(&self.lookup_release(&scope.app, &r.to_string()).await?)?),
            None => None,
        };
        for (process, &n) in &req.processes {
            let field = format!("processes.{process}");
            Name::parse(process).map_err(|e| ApiErr::invalid(&field, format!("`{field}`: {e}")))?;
            if let Some(m) = &manifest {
                let p = m.processes.get(process).ok_or_else(|| {
                    let known: Vec<&str> = m.processes.keys().map(String::as_str).collect();
                    ApiErr::invalid(
                        &field,
                        format!(
                            "the desired release has no process `{process}`; its processes are: {}",
                            known.join(", ")
                        ),
                    )
                })?;
                if n < p.scaling.min || n > p.scaling.max {
                    return Err(ApiErr::invalid(
                        &field,
                        format!(
                            "process `{process}` allows {}..={} instances (manifest `scaling`); got {n}",
                            p.scaling.min, p.scaling.max
                        ),
                    ));
                }
            }
        }
        let current: BTreeMap<String, ScaleView> =
            self.scales(&env).await?.into_iter().map(|s| (s.process.clone(), s)).collect();
        let now = ctx.now();
        let mut result = current.clone();
        let mut plan = Plan::new(StatusCode::OK, ()).expect(pin);
        for (process, &n) in &req.processes {
            if current.get(process).map(|s| s.instances) == Some(n) {
                continue; // already so: nothing to record
            }
            plan = plan.event(Event::ScaleSet(ScaleSet {
                org_id: env.org_id,
                app_id: env.app_id,
                env_id: env.id,
                process: process.clone(),
                instances: n,
            }));
            result.insert(
                process.clone(),
                ScaleView {
                    org_id: env.org_id,
                    app_id: env.app_id,
                    env_id: env.id,
                    process: process.clone(),
                    instances: n,
                    updated_at: now,
                },
            );
        }
        let plan = plan.respond(all(result.into_values().collect()));
        self.commit(ctx, plan).await
    }

    /// Deploys of an env, newest first.
    pub(crate) async fn deploys_of(&self, env: &EnvView) -> ApiResult<Vec<DeployView>> {
        let mut items: Vec<DeployView> = self.views(Self::kind_query(ViewKind::Deploy).parent(env.id)).await?;
        items.sort_by_key(|item| std::cmp::Reverse(item.id));
        Ok(items)
    }

    pub async fn deploy_list(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<Vec<Deploy>> {
        scope.authorize(ctx, Action::Read)?;
        Ok(all(self.deploys_of(&scope.env).await?))
    }

    pub async fn deploy_get(&self, ctx: &Ctx, scope: &EnvScope, deploy: &str) -> ApiResult<Deploy> {
        scope.authorize(ctx, Action::Read)?;
        Ok(self.lookup_deploy(&scope.env, deploy).await?.wire())
    }
}
