//! Deploys, scale, and `describe` (desired next to current).

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use vt_api::{CrashLoop, CreateDeploy, EnvDescription, ProcessState, SetScale};
use vt_events::{
    AggregateType, DeployCreated, DeployKind, DeployStatus, DeployStatusChanged, DesiredState, Event, Health,
    InstanceStatus, ScaleSet,
};
use vt_ids::DeployId;
use vt_store::{Expectation, ExpectedVersion};
use vt_views::{AppView, DeployView, EnvView, InstanceView, ReleaseView, ScaleView, ViewKind};

use crate::{rollout, validate, ApiErr, ApiResult, ControlPlane, Ctx, Plan};

fn manifest_of(release: &ReleaseView) -> ApiResult<vt_manifest::Manifest> {
    vt_manifest::from_normalized_json(&release.manifest)
        .map_err(|e| ApiErr::internal(format!("stored manifest of {} does not decode: {e}", release.id)))
}

impl ControlPlane {
    async fn env_pin(&self, env: &EnvView) -> ApiResult<Expectation> {
        let version = self.store.aggregate_version(AggregateType::Env, &env.id.to_string()).await?;
        Ok(Expectation {
            aggregate_type: AggregateType::Env,
            aggregate_id: env.id.to_string(),
            expected: ExpectedVersion::Exact(version),
        })
    }

    pub async fn scales(&self, env: &EnvView) -> ApiResult<Vec<ScaleView>> {
        // Listed by process name (the store orders by id, which is `<env>/<process>`).
        self.views(Self::kind_query(ViewKind::Scale).parent(env.id)).await
    }

    /// Start a deploy of `release` onto `env`: the env's desired release changes,
    /// an unfinished earlier deploy is superseded, and process types that have
    /// no desired count yet get their manifest's `scaling.min`.
    pub async fn create_deploy(
        &self,
        ctx: &Ctx,
        app: &AppView,
        env: &EnvView,
        req: CreateDeploy,
    ) -> ApiResult<Plan<DeployView>> {
        if !ctx.caller.is_admin() {
            return Err(ApiErr::forbidden("this needs an admin token"));
        }
        if vt_ids::ReleaseId::parse(&req.release_id).is_err() {
            return Err(ApiErr::invalid(
                "release_id",
                format!("`release_id` must be a release id (`rel_...`); got {:?}", req.release_id),
            ));
        }
        let release = self.release(app, &req.release_id).await.map_err(|e| e.field("release_id"))?;
        self.fresh().await?;
        let env: EnvView = self.view(&env.id.to_string()).await?.ok_or_else(|| ApiErr::not_found("env vanished"))?;
        self.deploy_release(ctx, &env, release, DeployKind::Deploy).await
    }

    /// Return an env to its previous release: the newest release in its deploy
    /// history other than the desired one (releases of failed deploys do not
    /// count). A deploy of kind `rollback`.
    pub async fn rollback(&self, ctx: &Ctx, app: &AppView, env: &EnvView) -> ApiResult<Plan<DeployView>> {
        if !ctx.caller.is_admin() {
            return Err(ApiErr::forbidden("this needs an admin token"));
        }
        self.fresh().await?;
        let env: EnvView = self.view(&env.id.to_string()).await?.ok_or_else(|| ApiErr::not_found("env vanished"))?;
        let Some(current) = env.desired_release_id else {
            return Err(ApiErr::conflict(format!("env `{}` has no deploy yet: nothing to roll back", env.name)));
        };
        let previous =
            self.list_deploys(&env).await?.into_iter().filter(|d| d.status != DeployStatus::Failed).map(|d| d.release_id).find(|r| *r != current).ok_or_else(|| {
                ApiErr::conflict(format!(
                    "env `{}` has no previous release: every deploy in its history is of {current} or failed; deploy another release with `vt deploy`",
                    env.name
                ))
            })?;
        let release = self.release(app, &previous.to_string()).await?;
        self.deploy_release(ctx, &env, release, DeployKind::Rollback).await
    }

    /// The deploy plan for a release onto an env read fresh from the views.
    async fn deploy_release(
        &self,
        ctx: &Ctx,
        env: &EnvView,
        release: ReleaseView,
        kind: DeployKind,
    ) -> ApiResult<Plan<DeployView>> {
        let manifest = manifest_of(&release)?;
        let env = env.clone();
        let pin = self.env_pin(&env).await?;
        let id = DeployId::new();
        let now = ctx.now();
        let view = DeployView {
            id,
            org_id: env.org_id,
            app_id: env.app_id,
            env_id: env.id,
            release_id: release.id,
            previous_release_id: env.desired_release_id,
            kind,
            status: DeployStatus::Pending,
            reason: None,
            phases: vec![],
            failed_instance_id: None,
            reverted_to_release_id: None,
            created_at: now,
            updated_at: now,
        };
        let mut plan = Plan::new(StatusCode::CREATED, view).expect(pin).event(Event::DeployCreated(DeployCreated {
            org_id: env.org_id,
            app_id: env.app_id,
            env_id: env.id,
            deploy_id: id,
            release_id: release.id,
            previous_release_id: env.desired_release_id,
            kind,
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
        let scaled: BTreeSet<String> = self.scales(&env).await?.into_iter().map(|s| s.process).collect();
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

    /// Set desired instance counts. Checked against the desired release's
    /// manifest when there is one (process exists, count within `scaling`).
    pub async fn set_scale(
        &self,
        ctx: &Ctx,
        app: &AppView,
        env: &EnvView,
        req: SetScale,
    ) -> ApiResult<Plan<Vec<ScaleView>>> {
        if !ctx.caller.is_admin() {
            return Err(ApiErr::forbidden("this needs an admin token"));
        }
        if req.processes.is_empty() {
            return Err(ApiErr::invalid(
                "processes",
                "`processes` is empty; name at least one process, e.g. {\"web\": 2}",
            ));
        }
        self.fresh().await?;
        let env: EnvView = self.view(&env.id.to_string()).await?.ok_or_else(|| ApiErr::not_found("env vanished"))?;
        let manifest = match env.desired_release_id {
            Some(r) => Some(manifest_of(&self.release(app, &r.to_string()).await?)?),
            None => None,
        };
        for (process, &n) in &req.processes {
            let field = format!("processes.{process}");
            validate::name(&field, process)?;
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
            } else if n > 1000 {
                return Err(ApiErr::invalid(&field, format!("at most 1000 instances per process; got {n}")));
            }
        }
        let current: BTreeMap<String, ScaleView> =
            self.scales(&env).await?.into_iter().map(|s| (s.process.clone(), s)).collect();
        let now = ctx.now();
        let mut result = current.clone();
        let mut plan = Plan::new(StatusCode::OK, vec![]).expect(self.env_pin(&env).await?);
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
        plan.response = result.into_values().collect();
        Ok(plan)
    }

    /// Deploys of an env, newest first.
    pub async fn list_deploys(&self, env: &EnvView) -> ApiResult<Vec<DeployView>> {
        let mut items: Vec<DeployView> = self.views(Self::kind_query(ViewKind::Deploy).parent(env.id)).await?;
        items.sort_by_key(|item| std::cmp::Reverse(item.id));
        Ok(items)
    }

    pub async fn deploy(&self, env: &EnvView, r: &str) -> ApiResult<DeployView> {
        self.view::<DeployView>(r).await?.filter(|d| d.env_id == env.id).ok_or_else(|| {
            ApiErr::not_found(format!(
                "deploy `{r}` not found in env `{}`; `vt deploy list` shows its deploys",
                env.name
            ))
        })
    }

    /// Instances of an env, by process then id.
    pub async fn list_instances(&self, env: &EnvView) -> ApiResult<Vec<InstanceView>> {
        let mut items: Vec<InstanceView> = self.views(Self::kind_query(ViewKind::Instance).parent(env.id)).await?;
        items.sort_by(|a, b| (&a.process, a.id).cmp(&(&b.process, b.id)));
        Ok(items)
    }

    /// Desired next to current for each process type of the env, and why they
    /// differ: placement, health checks, a rolling or failed deploy, a crash loop.
    pub async fn describe(&self, app: &AppView, env: &EnvView) -> ApiResult<EnvDescription> {
        let current_deploy = match env.current_deploy_id {
            Some(d) => self.view::<DeployView>(&d.to_string()).await?,
            None => None,
        };
        let release = match env.desired_release_id {
            Some(r) => Some(self.release(app, &r.to_string()).await?),
            None => None,
        };
        let manifest = release.as_ref().map(manifest_of).transpose()?;
        let scales: BTreeMap<String, u32> =
            self.scales(env).await?.into_iter().map(|s| (s.process, s.instances)).collect();
        let instances = self.list_instances(env).await?;
        let mut names: BTreeSet<String> = scales.keys().cloned().collect();
        names.extend(manifest.iter().flat_map(|m| m.processes.keys().cloned()));
        names.extend(instances.iter().map(|i| i.process.clone()));
        // Planned from the same views (not the last activation's result), so describe is deterministic.
        let preview = if env.desired_release_id.is_some() { Some(self.scheduler_preview().await?) } else { None };
        // A deploy still going: how far each process got.
        let rolling = current_deploy.as_ref().filter(|d| d.status == DeployStatus::Rolling).map(|d| {
            let desired = manifest
                .iter()
                .flat_map(|m| m.processes.keys())
                .map(|p| (p.clone(), scales.get(p).copied().unwrap_or(0)))
                .collect();
            (d, rollout::progress(d, &desired, &instances))
        });
        // A failed deploy: said on the process of the instance that failed it.
        let failed = current_deploy.as_ref().filter(|d| d.status == DeployStatus::Failed).map(|d| {
            let process =
                d.failed_instance_id.and_then(|f| instances.iter().find(|i| i.id == f)).map(|i| i.process.clone());
            (d, process)
        });
        let mut processes = vec![];
        for process in names {
            let desired = scales.get(&process).copied().unwrap_or(0);
            let mine: Vec<&InstanceView> = instances.iter().filter(|i| i.process == process).collect();
            let mut by_status: BTreeMap<String, u32> = BTreeMap::new();
            for i in &mine {
                *by_status.entry(i.status.as_str().to_owned()).or_default() += 1;
            }
            let live: Vec<&InstanceView> = mine
                .iter()
                .copied()
                .filter(|i| i.desired_state == DesiredState::Running && !i.status.is_terminal())
                .collect();
            let running: Vec<&InstanceView> = live
                .iter()
                .copied()
                .filter(|i| i.status == InstanceStatus::Running && Some(i.release_id) == env.desired_release_id)
                .collect();
            let running_desired = running.len() as u32;
            let ready_desired = running.iter().filter(|i| i.is_ready()).count() as u32;
            let mut differences = vec![];
            if let Some((d, p)) = &failed {
                if p.as_deref().is_none_or(|p| p == process) {
                    differences.push(format!(
                        "deploy {} failed: {}",
                        d.id,
                        d.reason.as_deref().unwrap_or("no reason recorded")
                    ));
                }
            }
            if manifest.as_ref().is_some_and(|m| !m.processes.contains_key(&process)) && desired > 0 {
                differences.push(format!(
                    "the desired release has no process `{process}`, yet {desired} instance(s) are desired"
                ));
            }
            if env.desired_release_id.is_none() && desired > 0 {
                differences.push("no release has been deployed to this env yet: run `vt deploy`".to_owned());
            }
            if running_desired < desired {
                let allocated = live.len() as u32;
                if allocated < desired {
                    differences.push(format!(
                        "{desired} instance(s) desired, {allocated} allocated: the scheduler has not placed {} yet",
                        desired - allocated
                    ));
                } else {
                    differences
                        .push(format!("{desired} instance(s) desired, {running_desired} running the desired release"));
                }
            }
            if ready_desired < running_desired {
                let pending = running.iter().filter(|i| i.health == Some(Health::Pending)).count();
                let failing =
                    running.iter().filter(|i| i.health == Some(Health::Failing) || i.failure.is_some()).count();
                let mut why = vec![];
                if pending > 0 {
                    why.push(format!("{pending} health check pending"));
                }
                if failing > 0 {
                    why.push(format!("{failing} health check failing"));
                }
                differences.push(format!("{running_desired} running, {ready_desired} ready; {}", why.join(", ")));
            }
            if let Some((d, p)) = rolling.as_ref().and_then(|(d, p)| Some((d, p.processes.get(&process)?))) {
                differences.push(format!("rolling deploy {}: {} of {} new ready", d.id, p.ready(), p.desired));
            }
            if (live.len() as u32) > desired {
                differences.push(format!(
                    "{} instance(s) more than desired are still running; they are to be stopped",
                    live.len() as u32 - desired
                ));
            }
            let crash_loop = preview.as_ref().and_then(|pv| {
                Some((pv.now, pv.crash_loops.iter().find(|c| c.env == env.id.to_string() && c.process == process)?))
            });
            let crash_loop = crash_loop.map(|(now, cl)| {
                let at = |ms: u64| {
                    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or(now)
                };
                let next = at(cl.restart_at);
                let when = match cl.held {
                    0 => "a replacement is starting".to_owned(),
                    _ => format!(
                        "next restart in {} s",
                        u64::try_from((next - now).num_milliseconds()).unwrap_or(0).div_ceil(1000)
                    ),
                };
                differences.push(format!("crash loop: {cl}; {when}"));
                CrashLoop {
                    failures: cl.failures,
                    last_failure: cl.last.reason.clone(),
                    last_failure_at: at(cl.last.at),
                    next_restart_at: next,
                    waiting: cl.held,
                }
            });
            if let Some(u) = preview
                .as_ref()
                .and_then(|pv| pv.unplaceable.iter().find(|u| u.env_id == env.id.to_string() && u.process == process))
            {
                differences.push(format!(
                    "cannot place {} more: {}; {}",
                    u.wanted.saturating_sub(u.placed),
                    u.reason,
                    u.hint
                ));
            }
            processes.push(ProcessState {
                process,
                desired_instances: desired,
                desired_release_id: env.desired_release_id.map(|r| r.to_string()),
                instances_by_status: by_status,
                running_desired_release: running_desired,
                ready_desired_release: ready_desired,
                crash_loop,
                differences,
            });
        }
        Ok(EnvDescription { env: env.clone(), current_deploy, processes })
    }
}
