//! Secrets of an env: versions of named values, sealed at rest, rolled out
//! like releases.
//!
//! A change either makes a new version at once (and, when the env runs a
//! release, a deploy of kind `secrets` that replaces its instances,
//! health-gated) or is staged, to be applied with others as one version by
//! [`ControlPlane::secrets_deploy`]. Events and views carry names and version
//! numbers only; values are sealed with the env's key (`vt-secrets`) in the
//! same transaction as the events. No person reads a value back: only the
//! node an instance is placed on, when it boots it.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use base64::Engine as _;
use vt_api::{ChangeSecrets, EnvSecrets, InstanceSecrets, SecretChange, SecretInfo, SecretValue, StagedChange};
use vt_events::{AggregateType, DeployKind, Event, SecretsStaged, SecretsVersionCreated};
use vt_ids::EnvVarName;
use vt_secrets::{limits, EnvKey, MasterKey, Sealed};
use vt_store::{Expectation, ExpectedVersion, SecretWrite};
use vt_views::{EnvView, ReleaseView, SecretsView};
use zeroize::Zeroizing;

use super::deploys::manifest_of;
use super::exists;
use crate::authz::Action;
use crate::lookup::{shown, EnvScope};
use crate::{ApiErr, ApiResult, Committed, ControlPlane, Ctx, Plan};

/// A value as the env holds it: already sealed (carried over from a version
/// or staging), or sealed by this request.
#[derive(Clone)]
struct Held {
    sealed: String,
    len: usize,
}

/// One request's change, checked: names valid, values decoded.
struct Change {
    set: BTreeMap<String, Zeroizing<Vec<u8>>>,
    unset: BTreeSet<String>,
}

fn parse_change(req: &ChangeSecrets) -> ApiResult<Change> {
    if req.set.is_empty() && req.unset.is_empty() {
        return Err(ApiErr::invalid("set", "name at least one secret to `set` or `unset`"));
    }
    let mut set = BTreeMap::new();
    for (name, b64) in &req.set {
        let field = format!("set.{name}");
        EnvVarName::parse(name).map_err(|e| ApiErr::invalid(&field, format!("secret name {}: {e}", shown(name))))?;
        let value = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| {
            ApiErr::invalid(
                &field,
                format!("`{field}` is not base64 (standard alphabet, padded); send the value's bytes base64-encoded"),
            )
        })?);
        if value.is_empty() {
            return Err(ApiErr::invalid(
                &field,
                format!("`{field}` is empty: a secret holds at least one byte; to remove `{name}`, unset it"),
            ));
        }
        limits::check_value(value.len()).map_err(|why| ApiErr::invalid(&field, format!("`{field}`: {why}")))?;
        set.insert(name.clone(), value);
    }
    let mut unset = BTreeSet::new();
    for (i, name) in req.unset.iter().enumerate() {
        let field = format!("unset[{i}]");
        EnvVarName::parse(name).map_err(|e| ApiErr::invalid(&field, format!("secret name {}: {e}", shown(name))))?;
        if set.contains_key(name) {
            return Err(ApiErr::invalid(&field, format!("`{name}` is both set and unset; do one")));
        }
        if !unset.insert(name.clone()) {
            return Err(ApiErr::invalid(&field, format!("`{name}` is unset twice")));
        }
    }
    Ok(Change { set, unset })
}

/// The secrets lib's error as an API error: names what does not open, never a value.
fn sealed_err(e: vt_secrets::SecretsError) -> ApiErr {
    let mut err = ApiErr::internal(&e);
    err.message = format!("{e}; the server log has the details under this request id");
    err
}

impl ControlPlane {
    fn master_key(&self) -> ApiResult<&MasterKey> {
        self.master_key.as_deref().ok_or_else(|| {
            ApiErr::conflict(
                "this control plane runs without a master key, so it keeps no secrets; start it with `vt server`",
            )
        })
    }

    async fn secrets_view(&self, env: &EnvView) -> ApiResult<Option<SecretsView>> {
        self.view(&env.id.to_string()).await
    }

    /// The env's latest secrets version (`None`: it never had secrets), what a deploy rolls out.
    pub(crate) async fn latest_secrets_version(&self, env: &EnvView) -> ApiResult<Option<u64>> {
        Ok(self.secrets_view(env).await?.map(|s| s.version).filter(|&v| v > 0))
    }

    /// The env's key, unwrapped; and when it has none yet, a new one with the write that stores it.
    async fn env_key(&self, env: &EnvView) -> ApiResult<(EnvKey, Option<SecretWrite>)> {
        let master = self.master_key()?;
        let env_id = env.id.to_string();
        match self.store.secret_key(&env_id).await? {
            Some(rec) => {
                if rec.master_key != master.fingerprint() {
                    return Err(ApiErr::internal(format!(
                        "the key of env {env_id} is wrapped by master key {}, this server has {}",
                        rec.master_key,
                        master.fingerprint()
                    )));
                }
                let sealed =
                    Sealed::from_text(&rec.wrapped, &format!("the key of env {env_id}")).map_err(sealed_err)?;
                Ok((master.unwrap(&env_id, &sealed).map_err(sealed_err)?, None))
            }
            None => {
                let key = EnvKey::generate().map_err(ApiErr::internal)?;
                let wrapped = master.wrap(&env_id, &key).map_err(ApiErr::internal)?.to_text();
                Ok((key, Some(SecretWrite::Key { env_id, master_key: master.fingerprint(), wrapped })))
            }
        }
    }

    /// The sealed values of version `version` of the env, by name.
    async fn held(&self, env: &EnvView, version: u64) -> ApiResult<BTreeMap<String, Held>> {
        let what = |name: &str| format!("secret `{name}` of env {} (version {version})", env.id);
        let mut out = BTreeMap::new();
        for (name, sealed) in self.store.secret_values(&env.id.to_string(), version).await? {
            let len = Sealed::from_text(&sealed, &what(&name)).map_err(sealed_err)?.plaintext_len();
            out.insert(name, Held { sealed, len });
        }
        Ok(out)
    }

    /// The staged changes of the env: a sealed value, or `None` for a removal.
    async fn staged(&self, env: &EnvView) -> ApiResult<BTreeMap<String, Option<Held>>> {
        let what = |name: &str| format!("staged secret `{name}` of env {}", env.id);
        let mut out = BTreeMap::new();
        for (name, sealed) in self.store.secret_staged(&env.id.to_string()).await? {
            let held = match sealed {
                Some(sealed) => Some(Held {
                    len: Sealed::from_text(&sealed, &what(&name)).map_err(sealed_err)?.plaintext_len(),
                    sealed,
                }),
                None => None,
            };
            out.insert(name, held);
        }
        Ok(out)
    }

    /// The env's secrets, metadata only: names, versions, who set them when, what is staged.
    pub async fn secrets_list(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<EnvSecrets> {
        scope.authorize(ctx, Action::Read)?;
        Ok(env_secrets(&scope.env, self.secrets_view(&scope.env).await?, None))
    }

    /// Set and unset secrets: staged (`stage`), or as a new version that the
    /// env rolls out at once, together with whatever was staged before.
    pub async fn secrets_change(&self, ctx: &Ctx, scope: &EnvScope, req: ChangeSecrets) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        let change = parse_change(&req)?;
        self.master_key()?;
        let state = self.secrets_state(&scope.env).await?;
        let (key, new_key) = self.env_key(&state.env).await?;
        let env_id = state.env.id.to_string();
        let mut sealed = BTreeMap::new();
        for (name, value) in &change.set {
            let s = key.seal(&env_id, name, value).map_err(ApiErr::internal)?;
            sealed.insert(name.clone(), Held { sealed: s.to_text(), len: value.len() });
        }
        // What the next version would hold with this change and what is staged.
        let mut next = state.next();
        for name in &change.unset {
            if next.remove(name).is_none() {
                let known: Vec<&str> = next.keys().map(String::as_str).collect();
                return Err(ApiErr::invalid(
                    "unset",
                    format!(
                        "env `{}` has no secret `{name}` to unset; its secrets are: {}",
                        state.env.name,
                        if known.is_empty() { "(none)".to_owned() } else { known.join(", ") }
                    ),
                ));
            }
        }
        next.extend(sealed.clone());
        check_limits(&next)?;
        self.check_secret_env(&state.env, &change, &next).await?;

        if req.stage {
            let mut plan =
                Plan::new(StatusCode::OK, ()).expect(exists(AggregateType::Env, state.env.id)).expect(state.pin());
            plan.secrets.extend(new_key);
            plan = plan.event(Event::SecretsStaged(SecretsStaged {
                org_id: state.env.org_id,
                app_id: state.env.app_id,
                env_id: state.env.id,
                set: change.set.keys().cloned().collect(),
                unset: change.unset.iter().cloned().collect(),
            }));
            for (name, held) in sealed {
                plan.secrets.push(SecretWrite::Stage { env_id: env_id.clone(), name, sealed: Some(held.sealed) });
            }
            for name in change.unset {
                plan.secrets.push(SecretWrite::Stage { env_id: env_id.clone(), name, sealed: None });
            }
            let response = env_secrets(&state.env, Some(state.after_staging(ctx, &req)), None);
            return self.commit(ctx, plan.respond(response)).await;
        }

        if state.staged.is_empty() && change.unset.is_empty() && self.unchanged(&state, &key, &change).await? {
            // Every value is already so: no new version, no restart.
            return self.unchanged_answer(ctx, &state).await;
        }
        let changed: BTreeSet<String> = change.set.keys().cloned().collect();
        self.new_version(ctx, state, next, changed, change.unset, new_key).await
    }

    /// Apply what is staged as one new version, and roll the env out once.
    pub async fn secrets_deploy(&self, ctx: &Ctx, scope: &EnvScope) -> ApiResult<Committed> {
        scope.authorize(ctx, Action::Deploy)?;
        self.master_key()?;
        let state = self.secrets_state(&scope.env).await?;
        if state.staged.is_empty() {
            return Err(ApiErr::conflict(format!(
                "env `{}` has nothing staged; stage changes with `vt secrets set --stage` or `vt secrets unset --stage`",
                state.env.name
            )));
        }
        let next = state.next();
        check_limits(&next)?;
        let empty = Change { set: BTreeMap::new(), unset: BTreeSet::new() };
        self.check_secret_env(&state.env, &empty, &next).await?;
        self.new_version(ctx, state, next, BTreeSet::new(), BTreeSet::new(), None).await
    }

    /// Read what a change decides from, in an order that cannot lose an update:
    /// the secrets' aggregate version first (pinned in the append), then the views.
    async fn secrets_state(&self, env: &EnvView) -> ApiResult<SecretsState> {
        let aggregate = self.store.aggregate_version(AggregateType::Secrets, &env.id.to_string()).await?;
        let (env, env_pin) = self.fresh_env(env).await?;
        let view = self.secrets_view(&env).await?;
        let version = view.as_ref().map_or(0, |v| v.version);
        let live = if version > 0 { self.held(&env, version).await? } else { BTreeMap::new() };
        let staged = self.staged(&env).await?;
        Ok(SecretsState { env, env_pin, aggregate, view, live, staged })
    }

    /// Whether every value `change` sets is already the live value (nothing to roll out).
    async fn unchanged(&self, state: &SecretsState, key: &EnvKey, change: &Change) -> ApiResult<bool> {
        let env_id = state.env.id.to_string();
        for (name, value) in &change.set {
            let Some(held) = state.live.get(name) else { return Ok(false) };
            let what = format!("secret `{name}` of env {env_id} (version {})", state.version());
            let sealed = Sealed::from_text(&held.sealed, &what).map_err(sealed_err)?;
            if key.open(&env_id, name, state.version(), &sealed).map_err(sealed_err)?.as_slice() != value.as_slice() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn unchanged_answer(&self, ctx: &Ctx, state: &SecretsState) -> ApiResult<Committed> {
        let response = env_secrets(&state.env, state.view.clone(), None);
        let plan = Plan::new(StatusCode::OK, response).expect(state.pin());
        self.commit(ctx, plan).await
    }

    /// Commit version `current + 1` holding `next`, and when the env runs a
    /// release, a deploy of it with the new version.
    async fn new_version(
        &self,
        ctx: &Ctx,
        state: SecretsState,
        next: BTreeMap<String, Held>,
        mut set: BTreeSet<String>,
        mut unset: BTreeSet<String>,
        new_key: Option<SecretWrite>,
    ) -> ApiResult<Committed> {
        let env = &state.env;
        let version = state.version() + 1;
        for (name, staged) in &state.staged {
            match staged {
                Some(_) => set.insert(name.clone()),
                None => unset.insert(name.clone()),
            };
        }
        // Only what was live is removed; only what is in the version was set.
        unset.retain(|n| state.live.contains_key(n) && !next.contains_key(n));
        set.retain(|n| next.contains_key(n));
        let created = SecretsVersionCreated {
            org_id: env.org_id,
            app_id: env.app_id,
            env_id: env.id,
            version,
            names: next.keys().cloned().collect(),
            set: set.into_iter().collect(),
            unset: unset.into_iter().collect(),
            from_staged: !state.staged.is_empty(),
        };
        let mut writes: Vec<SecretWrite> = new_key.into_iter().collect();
        writes.push(SecretWrite::Version {
            env_id: env.id.to_string(),
            version,
            values: next.into_iter().map(|(name, held)| (name, held.sealed)).collect(),
            clear_staged: !state.staged.is_empty(),
        });
        let mut after = state.view_or_empty(ctx);
        after.apply_version(&created, ctx.now(), &ctx.actor().0);

        let (mut plan, deploy) = match env.desired_release_id {
            Some(release) => {
                let release = self.view::<ReleaseView>(&release.to_string()).await?.ok_or_else(|| {
                    ApiErr::internal(format!("the desired release {release} of env {} is not in the views", env.id))
                })?;
                let plan = self
                    .deploy_release(ctx, env, state.env_pin.clone(), release, DeployKind::Secrets, Some(version))
                    .await?;
                let deploy = plan.response.clone();
                (plan.respond(()), Some(deploy))
            }
            None => (Plan::new(StatusCode::OK, ()).expect(exists(AggregateType::Env, env.id)), None),
        };
        plan.status = StatusCode::OK;
        plan.events.insert(0, Event::SecretsVersionCreated(created));
        plan.secrets.extend(writes);
        let desired_version = if deploy.is_some() { Some(version) } else { env.desired_secrets_version };
        let response =
            EnvSecrets { desired_version, new_version: Some(version), ..env_secrets(env, Some(after), deploy) };
        self.commit(ctx, plan.expect(state.pin()).respond(response)).await
    }

    /// A release whose processes read secrets as environment variables
    /// (manifest `secret_env`) needs them, as text without NUL bytes.
    async fn check_secret_env(&self, env: &EnvView, change: &Change, next: &BTreeMap<String, Held>) -> ApiResult<()> {
        let Some(release) = env.desired_release_id else { return Ok(()) };
        let Some(release) = self.view::<ReleaseView>(&release.to_string()).await? else { return Ok(()) };
        let manifest = manifest_of(&release)?;
        for (process, p) in &manifest.processes {
            for name in &p.secret_env {
                if !next.contains_key(name) {
                    return Err(ApiErr::invalid(
                        "unset",
                        format!(
                            "process `{process}` of the desired release ({}) reads `{name}` as an environment variable (manifest `secret_env`); deploy a release without it first",
                            release.id
                        ),
                    ));
                }
                if change.set.get(name).is_some_and(|v| v.contains(&0)) {
                    return Err(ApiErr::invalid(
                        format!("set.{name}"),
                        format!("`set.{name}` holds a NUL byte, and process `{process}` reads it as an environment variable (manifest `secret_env`), which cannot hold one; read it from /run/secrets/{name} instead"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A release to deploy: the secrets its processes read as environment
    /// variables are in the env's latest version.
    pub(crate) async fn check_secret_env_names(
        &self,
        env: &EnvView,
        release: &ReleaseView,
        manifest: &vt_manifest::Manifest,
    ) -> ApiResult<()> {
        let view = self.secrets_view(env).await?;
        for (process, p) in &manifest.processes {
            for name in &p.secret_env {
                if !view.as_ref().is_some_and(|v| v.live.contains_key(name)) {
                    return Err(ApiErr::invalid(
                        "release_id",
                        format!(
                            "process `{process}` of release {} reads secret `{name}` as an environment variable (manifest `secret_env`), and env `{}` has no such secret; set it first (`vt secrets set {name}=...`)",
                            release.id, env.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// An instance's secret values, for the node it is placed on to give it at boot.
    pub async fn instance_secrets(&self, ctx: &Ctx, instance: &str) -> ApiResult<InstanceSecrets> {
        let instance = self.lookup_instance(ctx, instance, Action::Unseal).await?;
        let version = instance.secrets_version.ok_or_else(|| {
            ApiErr::not_found(format!(
                "instance {} runs without secrets (its env had none when it was placed)",
                instance.id
            ))
        })?;
        let env: EnvView = self
            .view(&instance.env_id.to_string())
            .await?
            .ok_or_else(|| ApiErr::not_found(format!("the env of instance {} is gone", instance.id)))?;
        let (key, new_key) = self.env_key(&env).await?;
        if new_key.is_some() {
            return Err(ApiErr::internal(format!("env {} has secrets version {version} but no key", env.id)));
        }
        let env_id = env.id.to_string();
        let mut items = vec![];
        for (name, held) in self.held(&env, version).await? {
            let what = format!("secret `{name}` of env {env_id} (version {version})");
            let sealed = Sealed::from_text(&held.sealed, &what).map_err(sealed_err)?;
            let value = key.open(&env_id, &name, version, &sealed).map_err(sealed_err)?;
            items.push(SecretValue { name, value_base64: base64::engine::general_purpose::STANDARD.encode(&*value) });
        }
        Ok(InstanceSecrets { version, items })
    }
}

/// The answer about an env's secrets: from its view (or none yet), with a deploy for a change that made one.
fn env_secrets(env: &EnvView, view: Option<SecretsView>, deploy: Option<vt_api::Deploy>) -> EnvSecrets {
    let (version, live, staged) = match view {
        Some(v) => (v.version, v.live, v.staged),
        None => (0, BTreeMap::new(), BTreeMap::new()),
    };
    let names: BTreeSet<&String> = live.keys().chain(staged.keys()).collect();
    let items = names
        .into_iter()
        .map(|name| {
            let meta = live.get(name);
            SecretInfo {
                name: name.clone(),
                version: meta.map(|m| m.version),
                set_at: meta.map(|m| m.set_at),
                set_by: meta.map(|m| m.set_by.clone()),
                staged: staged.get(name).map(|s| StagedChange {
                    change: if s.set { SecretChange::Set } else { SecretChange::Unset },
                    staged_at: s.staged_at,
                    staged_by: s.staged_by.clone(),
                }),
            }
        })
        .collect();
    EnvSecrets {
        env_id: env.id,
        version,
        desired_version: env.desired_secrets_version,
        items,
        new_version: None,
        deploy,
    }
}

fn check_limits(next: &BTreeMap<String, Held>) -> ApiResult<()> {
    let total = next.values().map(|h| h.len).sum();
    limits::check_total(next.len(), total).map_err(|why| ApiErr::invalid("set", why))
}

/// What a change to an env's secrets decides from.
struct SecretsState {
    env: EnvView,
    /// The env's version, read before the views (`fresh_env`): a new version's deploy pins it.
    env_pin: Expectation,
    /// The `secrets` aggregate's version when the state was read.
    aggregate: u64,
    view: Option<SecretsView>,
    /// The latest version's values.
    live: BTreeMap<String, Held>,
    /// Staged changes (`None`: removal).
    staged: BTreeMap<String, Option<Held>>,
}

impl SecretsState {
    fn version(&self) -> u64 {
        self.view.as_ref().map_or(0, |v| v.version)
    }

    /// The append commits only if no other change to the env's secrets did first.
    fn pin(&self) -> Expectation {
        Expectation {
            aggregate_type: AggregateType::Secrets,
            aggregate_id: self.env.id.to_string(),
            expected: if self.aggregate == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(self.aggregate)
            },
        }
    }

    fn view_or_empty(&self, ctx: &Ctx) -> SecretsView {
        let env = &self.env;
        self.view.clone().unwrap_or_else(|| SecretsView::empty(env.org_id, env.app_id, env.id, ctx.now()))
    }

    /// The live values with the staged changes applied.
    fn next(&self) -> BTreeMap<String, Held> {
        let mut next = self.live.clone();
        for (name, staged) in &self.staged {
            match staged {
                Some(held) => next.insert(name.clone(), held.clone()),
                None => next.remove(name),
            };
        }
        next
    }

    /// The view after staging `req`.
    fn after_staging(&self, ctx: &Ctx, req: &ChangeSecrets) -> SecretsView {
        let mut view = self.view_or_empty(ctx);
        let staged = SecretsStaged {
            org_id: self.env.org_id,
            app_id: self.env.app_id,
            env_id: self.env.id,
            set: req.set.keys().cloned().collect(),
            unset: req.unset.clone(),
        };
        view.apply_staged(&staged, ctx.now(), &ctx.actor().0);
        view
    }
}

#[cfg(test)]
mod tests {
    /// The API document's bounds are the store's limits.
    #[test]
    fn the_documented_bounds_are_the_limits() {
        use base64::Engine as _;
        assert_eq!(vt_api::limits::MAX_SECRETS, vt_secrets::limits::MAX_COUNT);
        let largest = base64::engine::general_purpose::STANDARD.encode(vec![0u8; vt_secrets::limits::MAX_VALUE]);
        assert_eq!(vt_api::limits::MAX_SECRET_BASE64, largest.len());
    }
}
