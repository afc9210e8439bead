//! Envs of an app, and `describe`: desired next to current.

use std::collections::{BTreeMap, BTreeSet};

use vt_api::{CrashLoop, CreateEnv, Env, EnvDescription, ProcessState};
use vt_events::{AggregateType, DeployStatus, DesiredState, EnvCreated, Event, Health, InstanceStatus, ListenerState};
use vt_ids::EnvId;
use vt_store::{Claim, ClaimScope};
use vt_views::{AppView, DeployView, EnvView, InstanceView, ViewKind};

use super::deploys::manifest_of;
use super::{by_name, created, exists};
use crate::authz::Action;
use crate::lookup::{authorize_in, EnvScope};
use crate::rollout;
use crate::wire::{all, Wire};
use crate::{ApiResult, Committed, ControlPlane, Ctx, Plan};

impl ControlPlane {
    pub async fn env_create(&self, ctx: &Ctx, org: &str, app: &str, req: CreateEnv) -> ApiResult<Committed> {
        let (org, app) = self.lookup_app_scope(ctx, org, app).await?;
        authorize_in(ctx, Action::Manage, &org)?;
        let id = EnvId::new();
        let now = ctx.now();
        let name = req.name.into_string();
        let view = EnvView {
            id,
            org_id: app.org_id,
            app_id: app.id,
            name: name.clone(),
            desired_release_id: None,
            current_deploy_id: None,
            desired_secrets_version: None,
            created_at: now,
            updated_at: now,
        };
        let plan = Plan::new(created(), view.wire())
            .event(Event::EnvCreated(EnvCreated { org_id: app.org_id, app_id: app.id, env_id: id, name: name.clone() }))
            .expect(exists(AggregateType::App, app.id))
            .claim(Claim { scope: ClaimScope::Env(app.id), name, owner: id.to_string() });
        self.commit(ctx, plan).await
    }

    pub async fn env_list(&self, ctx: &Ctx, org: &str, app: &str) -> ApiResult<Vec<Env>> {
        let (_, app) = self.lookup_app_scope(ctx, org, app).await?;
        let envs: Vec<EnvView> = self.views(Self::kind_query(ViewKind::Env).parent(app.id)).await?;
        Ok(all(by_name(envs, |e: &EnvView| &e.name)))
    }

    pub async fn env_get(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<Env> {
        scope.authorize(ctx, Action::Read)?;
        Ok(scope.env.clone().wire())
    }

    pub async fn env_describe(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<EnvDescription> {
        scope.authorize(ctx, Action::Read)?;
        self.describe(&scope.app, &scope.env).await
    }

    /// Instances of an env, by process then id.
    pub(crate) async fn instances_of(&self, env: &EnvView) -> ApiResult<Vec<InstanceView>> {
        let mut items: Vec<InstanceView> = self.views(Self::kind_query(ViewKind::Instance).parent(env.id)).await?;
        items.sort_by(|a, b| (&a.process, a.id).cmp(&(&b.process, b.id)));
        Ok(items)
    }

    /// Desired next to current for each process type of the env, and why they
    /// differ: placement, health checks, a rolling or failed deploy, a crash loop.
    async fn describe(&self, app: &AppView, env: &EnvView) -> ApiResult<EnvDescription> {
        let current_deploy = match env.current_deploy_id {
            Some(d) => self.view::<DeployView>(&d.to_string()).await?,
            None => None,
        };
        let release = match env.desired_release_id {
            Some(r) => Some(self.lookup_release(app, &r.to_string()).await?),
            None => None,
        };
        let manifest = release.as_ref().map(manifest_of).transpose()?;
        let scales: BTreeMap<String, u32> =
            self.scales(env).await?.into_iter().map(|s| (s.process, s.instances)).collect();
        let instances = self.instances_of(env).await?;
        let routes = self.routes_of(env.id).await?;
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
                .filter(|i| i.status == InstanceStatus::Running && Some(i.revision()) == env.desired_revision())
                .collect();
            let running_desired = running.len() as u32;
            let mut by_secrets: BTreeMap<String, u32> = BTreeMap::new();
            for i in &live {
                *by_secrets.entry(i.secrets_version.map_or("none".to_owned(), |v| v.to_string())).or_default() += 1;
            }
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
                    let what = match env.desired_secrets_version {
                        Some(v) => format!("the desired release with secrets version {v}"),
                        None => "the desired release".to_owned(),
                    };
                    differences.push(format!("{desired} instance(s) desired, {running_desired} running {what}"));
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
            let stale_secrets: BTreeMap<Option<u64>, u32> = live
                .iter()
                .filter(|i| {
                    Some(i.release_id) == env.desired_release_id && i.secrets_version != env.desired_secrets_version
                })
                .fold(BTreeMap::new(), |mut m, i| {
                    *m.entry(i.secrets_version).or_default() += 1;
                    m
                });
            for (version, n) in stale_secrets {
                let run = version.map_or("no secrets".to_owned(), |v| format!("secrets version {v}"));
                let want = env.desired_secrets_version.map_or("none".to_owned(), |v| v.to_string());
                differences.push(format!(
                    "{n} instance(s) run {run}, the env's is {want}: they are replaced as new ones become ready"
                ));
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
            for r in routes.iter().filter(|r| r.process == process) {
                for l in r.listeners.iter().filter(|l| l.state == ListenerState::Failed) {
                    let listener = match &r.hostname {
                        Some(host) => format!("{host}:{}", r.port),
                        None => format!("tcp port {}", r.port),
                    };
                    let why = l.reason.as_deref().unwrap_or("no reason given");
                    differences.push(format!("route {listener} is not served on node {}: {why}", l.node));
                }
            }
            processes.push(ProcessState {
                process,
                desired_instances: desired,
                desired_release_id: env.desired_release_id.map(|r| r.to_string()),
                desired_secrets_version: env.desired_secrets_version,
                instances_by_secrets_version: by_secrets,
                instances_by_status: by_status,
                running_desired_release: running_desired,
                ready_desired_release: ready_desired,
                crash_loop,
                differences,
            });
        }
        let current_deploy = current_deploy.map(Wire::wire);
        Ok(EnvDescription { env: env.clone().wire(), current_deploy, processes, routes })
    }
}
