//! A typed async client for the vt HTTP API: one method per endpoint, named
//! after the API's operation ids (`org_create`, `deploy_list`, ...).
//!
//! Mutations take an idempotency key and send it as `Idempotency-Key`. A
//! mutation that fails in a way that may be transient (cannot connect, timed
//! out, 502/503/504) is retried with the SAME key, a bounded number of times,
//! so a retried request cannot act twice: the server replays the first answer.
//!
//! `{org}`, `{app}`, `{env}` arguments accept an id or a name, as the API does.
//!
//! A client may know several URLs of one control plane (control planes on one database,
//! [`Client::with_fallbacks`]): it sends to the one in use, and when that one cannot be
//! connected to, sends the same request to the next, in order, and keeps the one that answers.
//! Only a failed connection moves it on: the request never reached a server, so trying another
//! cannot act twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vt_api::*;
use vt_events::Envelope;

pub use vt_api;

pub mod exec;
pub mod registry;
pub mod tls;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status and an [`ErrorBody`].
    #[error("{} ({}): {}", body.error.code.as_str(), status, body.error.message)]
    Api { status: u16, body: ErrorBody },
    /// The server could not be reached (connection refused, DNS, reset).
    #[error("cannot reach the server at {url}: {message}")]
    Connect { url: String, message: String },
    /// The server answered, but not with what this client expects.
    #[error("cannot decode the response from {url}: {message}")]
    Decode { url: String, message: String },
    /// The request took longer than the client's timeout.
    #[error("the request to {url} timed out")]
    Timeout { url: String },
}

impl Error {
    /// Worth retrying with the same idempotency key.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } => true,
            Error::Api { status, .. } => matches!(*status, 502..=504),
            Error::Decode { .. } => false,
        }
    }

    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api { body, .. } => Some(&body.error),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A mutation's answer: the resource, the log position it reached, and whether
/// the server replayed an earlier answer for the same idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed<T> {
    pub value: T,
    pub seq: u64,
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Why no request may be sent (`VT_CA_CERT` unusable), if so.
    refused: Option<String>,
    /// The server's root URLs: the first given, then the fallbacks.
    bases: Arc<[String]>,
    /// Which of `bases` requests go to (shared by the clones of a client).
    current: Arc<AtomicUsize>,
    token: Option<String>,
    tries: u32,
    backoff: Duration,
}

/// Idempotency keys for a long-lived caller (a node's agent, its edge): `<prefix>-<what>-<ns
/// since the epoch>-<n>`, a new one per call, unique across restarts; a retry of one mutation
/// reuses the key it was given ([`Client`] does).
#[derive(Debug)]
pub struct IdempotencyKeys {
    prefix: String,
    n: std::sync::atomic::AtomicU64,
}

impl IdempotencyKeys {
    pub fn new(prefix: impl Into<String>) -> IdempotencyKeys {
        IdempotencyKeys { prefix: prefix.into(), n: Default::default() }
    }

    /// A new key for a mutation of kind `what` (`register`, `hb`, ...).
    pub fn next(&self, what: &str) -> String {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        format!("{}-{what}-{t}-{n}", self.prefix)
    }
}

fn seg(s: &str) -> String {
    // Names and ids are [a-z0-9_-]; escape anything else rather than let it
    // change the path.
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// `base` is the server's root URL (`http://127.0.0.1:7411`), without `/v1`.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let (builder, refused) = tls::http_builder();
        let http = builder
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("vt/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Client {
            http,
            refused,
            bases: Arc::new([base.trim_end_matches('/').to_owned()]),
            current: Arc::default(),
            token,
            tries: 3,
            backoff: Duration::from_millis(200),
        }
    }

    /// How many times a mutation is tried in all (at least 1), and the first
    /// backoff (doubling after each try).
    pub fn with_retries(mut self, tries: u32, backoff: Duration) -> Self {
        self.tries = tries.max(1);
        self.backoff = backoff;
        self
    }

    /// The same client with more URLs of the same control plane, tried in order after the
    /// first when the one in use cannot be connected to (see the crate's docs).
    pub fn with_fallbacks(mut self, urls: &[String]) -> Self {
        let mut bases = self.bases.to_vec();
        bases.extend(urls.iter().map(|u| u.trim_end_matches('/').to_owned()));
        self.bases = bases.into();
        self
    }

    /// The root URL requests go to now.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{}", self.base(), path)
    }

    /// Requests go to the URL after `from` from now on (unless another request moved on
    /// already); answers the one they go to.
    fn move_on(&self, from: usize) -> usize {
        let next = (from + 1) % self.bases.len();
        match self.current.compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                tracing::warn!(unreachable = %self.bases[from], now = %self.bases[next], "control plane unreachable; using the next URL");
                next
            }
            Err(now) => now % self.bases.len(),
        }
    }

    fn request(&self, method: Method, url: &str, timeout: Option<Duration>) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, url);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        rb
    }

    async fn send(&self, url: &str, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        if let Some(why) = &self.refused {
            return Err(Error::Connect { url: url.to_owned(), message: why.clone() });
        }
        let (url, resp) = self.execute(url, rb).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_response(&url, resp).await)
    }

    /// Send `rb` (built for `url`, under the URL in use); while the server cannot be connected
    /// to, the same request to the next URL, each at most once. Answers the URL that answered.
    async fn execute(&self, url: &str, rb: reqwest::RequestBuilder) -> Result<(String, reqwest::Response)> {
        let now = self.current.load(Ordering::Relaxed) % self.bases.len();
        let under = |i: usize| url.strip_prefix(self.bases[i].as_str()).map(|rest| (i, rest.to_owned()));
        let found = under(now).or_else(|| (0..self.bases.len()).find_map(under));
        let (Some((mut at, rest)), true) = (found, self.bases.len() > 1) else {
            return rb.send().await.map(|r| (url.to_owned(), r)).map_err(|e| transport(url, e));
        };
        let mut req = rb.build().map_err(|e| transport(url, e))?;
        let mut url = url.to_owned();
        for _ in 1..self.bases.len() {
            let again = req.try_clone();
            match self.http.execute(req).await {
                Ok(resp) => return Ok((url, resp)),
                Err(e) if e.is_connect() => {
                    let Some(mut again) = again else { return Err(transport(&url, e)) };
                    at = self.move_on(at);
                    url = format!("{}{rest}", self.bases[at]);
                    *again.url_mut() = reqwest::Url::parse(&url)
                        .map_err(|e| Error::Connect { url: url.clone(), message: e.to_string() })?;
                    req = again;
                }
                Err(e) => return Err(transport(&url, e)),
            }
        }
        match self.http.execute(req).await {
            Ok(resp) => Ok((url, resp)),
            Err(e) => Err(transport(&url, e)),
        }
    }

    /// A WebSocket to `path` on the URL in use; while the server cannot be connected to, to
    /// the next URL, each at most once.
    async fn websocket(&self, path: &str) -> Result<exec::Ws> {
        let mut at = self.current.load(Ordering::Relaxed) % self.bases.len();
        let mut tries = self.bases.len();
        loop {
            let base = &self.bases[at];
            match exec::websocket(base, self.token.as_deref(), path, &format!("{base}{path}")).await {
                Err(Error::Connect { .. } | Error::Timeout { .. }) if tries > 1 => {
                    at = self.move_on(at);
                    tries -= 1;
                }
                other => return other,
            }
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path);
        let resp = self.send(&url, self.request(Method::GET, &url, Some(Duration::from_secs(30)))).await?;
        decode(&url, resp).await
    }

    async fn mutate<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        key: &str,
    ) -> Result<Committed<T>> {
        let url = self.url(path);
        let mut backoff = self.backoff;
        let mut attempt = 1;
        loop {
            let mut rb = self.request(method.clone(), &url, Some(Duration::from_secs(60))).header(IDEMPOTENCY_KEY, key);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            match self.send(&url, rb).await {
                Ok(resp) => {
                    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let seq = header(SEQ_HEADER).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let replayed = header(IDEMPOTENT_REPLAYED).is_some_and(|v| v == "true");
                    return Ok(Committed { value: decode(&url, resp).await?, seq, replayed });
                }
                Err(e) if e.is_transient() && attempt < self.tries => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    // --- orgs, apps, envs

    pub async fn org_create(&self, req: &CreateOrg, key: &str) -> Result<Committed<Org>> {
        self.mutate(Method::POST, "/orgs", Some(req), key).await
    }
    pub async fn org_list(&self) -> Result<List<Org>> {
        self.get("/orgs").await
    }
    pub async fn org_get(&self, org: &str) -> Result<Org> {
        self.get(&format!("/orgs/{}", seg(org))).await
    }
    pub async fn app_create(&self, org: &str, req: &CreateApp, key: &str) -> Result<Committed<App>> {
        self.mutate(Method::POST, &format!("/orgs/{}/apps", seg(org)), Some(req), key).await
    }
    pub async fn app_list(&self, org: &str) -> Result<List<App>> {
        self.get(&format!("/orgs/{}/apps", seg(org))).await
    }
    pub async fn app_get(&self, org: &str, app: &str) -> Result<App> {
        self.get(&format!("/orgs/{}/apps/{}", seg(org), seg(app))).await
    }
    pub async fn env_create(&self, org: &str, app: &str, req: &CreateEnv, key: &str) -> Result<Committed<Env>> {
        self.mutate(Method::POST, &format!("/orgs/{}/apps/{}/envs", seg(org), seg(app)), Some(req), key).await
    }
    pub async fn env_list(&self, org: &str, app: &str) -> Result<List<Env>> {
        self.get(&format!("/orgs/{}/apps/{}/envs", seg(org), seg(app))).await
    }
    pub async fn env_get(&self, org: &str, app: &str, env: &str) -> Result<Env> {
        self.get(&env_path(org, app, env, "")).await
    }

    // --- releases, deploys, scale, instances

    pub async fn release_create(
        &self,
        org: &str,
        app: &str,
        req: &CreateRelease,
        key: &str,
    ) -> Result<Committed<Release>> {
        self.mutate(Method::POST, &format!("/orgs/{}/apps/{}/releases", seg(org), seg(app)), Some(req), key).await
    }
    pub async fn release_list(&self, org: &str, app: &str) -> Result<List<Release>> {
        self.get(&format!("/orgs/{}/apps/{}/releases", seg(org), seg(app))).await
    }
    pub async fn release_get(&self, org: &str, app: &str, release: &str) -> Result<Release> {
        self.get(&format!("/orgs/{}/apps/{}/releases/{}", seg(org), seg(app), seg(release))).await
    }
    pub async fn deploy_create(
        &self,
        org: &str,
        app: &str,
        env: &str,
        req: &CreateDeploy,
        key: &str,
    ) -> Result<Committed<Deploy>> {
        self.mutate(Method::POST, &env_path(org, app, env, "/deploys"), Some(req), key).await
    }
    pub async fn deploy_list(&self, org: &str, app: &str, env: &str) -> Result<List<Deploy>> {
        self.get(&env_path(org, app, env, "/deploys")).await
    }
    pub async fn deploy_get(&self, org: &str, app: &str, env: &str, deploy: &str) -> Result<Deploy> {
        self.get(&env_path(org, app, env, &format!("/deploys/{}", seg(deploy)))).await
    }
    /// A deploy of kind `rollback` to the env's previous release.
    pub async fn env_rollback(&self, org: &str, app: &str, env: &str, key: &str) -> Result<Committed<Deploy>> {
        self.mutate(Method::POST, &env_path(org, app, env, "/rollback"), None::<&()>, key).await
    }
    pub async fn scale_get(&self, org: &str, app: &str, env: &str) -> Result<List<Scale>> {
        self.get(&env_path(org, app, env, "/scale")).await
    }
    /// Answers with every process's scale after the change.
    pub async fn scale_set(
        &self,
        org: &str,
        app: &str,
        env: &str,
        req: &SetScale,
        key: &str,
    ) -> Result<Committed<Vec<Scale>>> {
        self.mutate(Method::PUT, &env_path(org, app, env, "/scale"), Some(req), key).await
    }
    pub async fn instance_list(&self, org: &str, app: &str, env: &str) -> Result<List<Instance>> {
        self.get(&env_path(org, app, env, "/instances")).await
    }
    pub async fn instance_get(&self, instance: &str) -> Result<Instance> {
        self.get(&format!("/instances/{}", seg(instance))).await
    }
    pub async fn env_describe(&self, org: &str, app: &str, env: &str) -> Result<EnvDescription> {
        self.get(&env_path(org, app, env, "/describe")).await
    }

    // --- secrets

    pub async fn secrets_list(&self, org: &str, app: &str, env: &str) -> Result<EnvSecrets> {
        self.get(&env_path(org, app, env, "/secrets")).await
    }
    pub async fn secrets_change(
        &self,
        org: &str,
        app: &str,
        env: &str,
        req: &ChangeSecrets,
        key: &str,
    ) -> Result<Committed<EnvSecrets>> {
        self.mutate(Method::POST, &env_path(org, app, env, "/secrets"), Some(req), key).await
    }
    pub async fn secrets_deploy(&self, org: &str, app: &str, env: &str, key: &str) -> Result<Committed<EnvSecrets>> {
        self.mutate(Method::POST, &env_path(org, app, env, "/secrets/deploy"), None::<&()>, key).await
    }
    /// An instance's secret values (its node only). A decode error says
    /// nothing of the answer, which carries the values.
    pub async fn instance_secrets(&self, instance: &str) -> Result<InstanceSecrets> {
        let url = self.url(&format!("/instances/{}/secrets", seg(instance)));
        let resp = self.send(&url, self.request(Method::GET, &url, Some(Duration::from_secs(30)))).await?;
        let bytes = resp.bytes().await.map_err(|e| transport(&url, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            url,
            message: format!(
                "not the expected shape at line {} column {} (the answer is not shown: it carries secret values)",
                e.line(),
                e.column()
            ),
        })
    }

    // --- routes

    pub async fn route_create(
        &self,
        org: &str,
        app: &str,
        env: &str,
        req: &CreateRoute,
        key: &str,
    ) -> Result<Committed<Route>> {
        self.mutate(Method::POST, &env_path(org, app, env, "/routes"), Some(req), key).await
    }
    pub async fn route_list(&self, org: &str, app: &str, env: &str) -> Result<List<Route>> {
        self.get(&env_path(org, app, env, "/routes")).await
    }
    pub async fn route_get(&self, org: &str, app: &str, env: &str, route: &str) -> Result<Route> {
        self.get(&env_path(org, app, env, &format!("/routes/{}", seg(route)))).await
    }
    /// Every route of every env (admin and node tokens): what an ingress serves.
    pub async fn route_list_all(&self) -> Result<List<Route>> {
        self.get("/routes").await
    }
    pub async fn route_delete(
        &self,
        org: &str,
        app: &str,
        env: &str,
        route: &str,
        key: &str,
    ) -> Result<Committed<Route>> {
        self.mutate(Method::DELETE, &env_path(org, app, env, &format!("/routes/{}", seg(route))), None::<&()>, key)
            .await
    }

    // --- volumes

    pub async fn volume_create(
        &self,
        org: &str,
        app: &str,
        env: &str,
        req: &CreateVolume,
        key: &str,
    ) -> Result<Committed<Volume>> {
        self.mutate(Method::POST, &env_path(org, app, env, "/volumes"), Some(req), key).await
    }
    pub async fn volume_list(&self, org: &str, app: &str, env: &str) -> Result<List<Volume>> {
        self.get(&env_path(org, app, env, "/volumes")).await
    }
    pub async fn volume_get(&self, org: &str, app: &str, env: &str, volume: &str) -> Result<Volume> {
        self.get(&env_path(org, app, env, &format!("/volumes/{}", seg(volume)))).await
    }
    pub async fn volume_extend(
        &self,
        org: &str,
        app: &str,
        env: &str,
        volume: &str,
        req: &ExtendVolume,
        key: &str,
    ) -> Result<Committed<Volume>> {
        let path = env_path(org, app, env, &format!("/volumes/{}/extend", seg(volume)));
        self.mutate(Method::POST, &path, Some(req), key).await
    }
    pub async fn volume_delete(
        &self,
        org: &str,
        app: &str,
        env: &str,
        volume: &str,
        key: &str,
    ) -> Result<Committed<Volume>> {
        self.mutate(Method::DELETE, &env_path(org, app, env, &format!("/volumes/{}", seg(volume))), None::<&()>, key)
            .await
    }

    pub async fn snapshot_create(
        &self,
        org: &str,
        app: &str,
        env: &str,
        volume: &str,
        key: &str,
    ) -> Result<Committed<Snapshot>> {
        let path = env_path(org, app, env, &format!("/volumes/{}/snapshots", seg(volume)));
        self.mutate(Method::POST, &path, None::<&()>, key).await
    }
    pub async fn snapshot_list(&self, org: &str, app: &str, env: &str, volume: &str) -> Result<List<Snapshot>> {
        self.get(&env_path(org, app, env, &format!("/volumes/{}/snapshots", seg(volume)))).await
    }
    pub async fn snapshot_restore(
        &self,
        org: &str,
        app: &str,
        env: &str,
        snapshot: &str,
        req: &RestoreSnapshot,
        key: &str,
    ) -> Result<Committed<Volume>> {
        let path = env_path(org, app, env, &format!("/snapshots/{}/restore", seg(snapshot)));
        self.mutate(Method::POST, &path, Some(req), key).await
    }
    /// A node agent reports a snapshot of one of its volumes.
    pub async fn snapshot_report(
        &self,
        node: &str,
        snapshot: &str,
        req: &ReportSnapshot,
        key: &str,
    ) -> Result<Committed<Snapshot>> {
        self.mutate(Method::POST, &format!("/nodes/{}/snapshots/{}", seg(node), seg(snapshot)), Some(req), key).await
    }

    pub async fn backup_create(
        &self,
        org: &str,
        app: &str,
        env: &str,
        volume: &str,
        key: &str,
    ) -> Result<Committed<Volume>> {
        let path = env_path(org, app, env, &format!("/volumes/{}/backups", seg(volume)));
        self.mutate(Method::POST, &path, None::<&()>, key).await
    }
    pub async fn backup_list(&self, org: &str, app: &str, env: &str, volume: &str) -> Result<List<Backup>> {
        self.get(&env_path(org, app, env, &format!("/volumes/{}/backups", seg(volume)))).await
    }
    pub async fn backup_restore(
        &self,
        org: &str,
        app: &str,
        env: &str,
        backup: &str,
        req: &RestoreBackup,
        key: &str,
    ) -> Result<Committed<Volume>> {
        let path = env_path(org, app, env, &format!("/backups/{}/restore", seg(backup)));
        self.mutate(Method::POST, &path, Some(req), key).await
    }
    /// A node agent reports a backup run of one of its volumes.
    pub async fn backup_report(
        &self,
        node: &str,
        volume: &str,
        req: &ReportBackup,
        key: &str,
    ) -> Result<Committed<Volume>> {
        self.mutate(Method::POST, &format!("/nodes/{}/volumes/{}/backup", seg(node), seg(volume)), Some(req), key).await
    }

    // --- workspaces (named across the platform: `{workspace}` is a name or an id)

    pub async fn workspace_create(&self, req: &CreateWorkspace, key: &str) -> Result<Committed<Workspace>> {
        self.mutate(Method::POST, "/workspaces", Some(req), key).await
    }
    /// Every workspace the token may see, by name; with `org`, that org's only.
    pub async fn workspace_list(&self, org: Option<&str>) -> Result<List<Workspace>> {
        match org {
            Some(org) => self.get(&format!("/workspaces?org={}", seg(org))).await,
            None => self.get("/workspaces").await,
        }
    }
    pub async fn workspace_get(&self, workspace: &str) -> Result<Workspace> {
        self.get(&format!("/workspaces/{}", seg(workspace))).await
    }
    /// A start that does not fit its node is refused (`capacity_exhausted`, naming a workspace to stop).
    pub async fn workspace_start(&self, workspace: &str, key: &str) -> Result<Committed<Workspace>> {
        self.mutate(Method::POST, &format!("/workspaces/{}/start", seg(workspace)), None::<&()>, key).await
    }
    /// `suspend`: save its VM to a snapshot on its node instead (a start resumes it).
    pub async fn workspace_stop(&self, workspace: &str, suspend: bool, key: &str) -> Result<Committed<Workspace>> {
        let query = if suspend { "?suspend=true" } else { "" };
        self.mutate(Method::POST, &format!("/workspaces/{}/stop{query}", seg(workspace)), None::<&()>, key).await
    }
    /// Answers with the workspace in status `deleting`: its VM stops, then its disk goes.
    pub async fn workspace_delete(&self, workspace: &str, key: &str) -> Result<Committed<Workspace>> {
        self.mutate(Method::DELETE, &format!("/workspaces/{}", seg(workspace)), None::<&()>, key).await
    }
    pub async fn workspace_port_list(&self, workspace: &str) -> Result<List<WorkspacePort>> {
        self.get(&format!("/workspaces/{}/ports", seg(workspace))).await
    }
    /// Answers with every registered port after the change.
    pub async fn workspace_port_add(
        &self,
        workspace: &str,
        req: &AddWorkspacePort,
        key: &str,
    ) -> Result<Committed<List<WorkspacePort>>> {
        self.mutate(Method::POST, &format!("/workspaces/{}/ports", seg(workspace)), Some(req), key).await
    }
    /// Answers with every registered port after the change.
    pub async fn workspace_port_remove(
        &self,
        workspace: &str,
        port: u16,
        key: &str,
    ) -> Result<Committed<List<WorkspacePort>>> {
        self.mutate(Method::DELETE, &format!("/workspaces/{}/ports/{port}", seg(workspace)), None::<&()>, key).await
    }

    // --- nodes, events, system

    pub async fn node_list(&self) -> Result<List<Node>> {
        self.get("/nodes").await
    }
    pub async fn node_get(&self, node: &str) -> Result<Node> {
        self.get(&format!("/nodes/{}", seg(node))).await
    }
    /// Register (or re-register) a node by name; a node agent calls it at every start.
    pub async fn node_register(&self, req: &RegisterNode, key: &str) -> Result<Committed<Node>> {
        self.mutate(Method::POST, "/nodes", Some(req), key).await
    }
    pub async fn node_heartbeat(&self, node: &str, req: &Heartbeat, key: &str) -> Result<Committed<Node>> {
        self.mutate(Method::POST, &format!("/nodes/{}/heartbeat", seg(node)), Some(req), key).await
    }
    /// A single-use enrollment token (admin); the answer carries its secret, once.
    pub async fn enroll_token_create(&self, req: &CreateEnrollToken) -> Result<IssuedToken> {
        let url = self.url("/nodes/enroll-tokens");
        let resp = self.send(&url, self.request(Method::POST, &url, Some(Duration::from_secs(60))).json(req)).await?;
        decode(&url, resp).await
    }
    /// Enroll this host as a new node, with the enrollment token as this client's token.
    pub async fn node_enroll(&self, req: &EnrollNode) -> Result<EnrolledNode> {
        let url = self.url("/nodes/enroll");
        let resp = self.send(&url, self.request(Method::POST, &url, Some(Duration::from_secs(60))).json(req)).await?;
        decode(&url, resp).await
    }
    /// Revoke a node (admin).
    pub async fn node_revoke(&self, node: &str, key: &str) -> Result<Committed<Node>> {
        self.mutate::<(), Node>(Method::POST, &format!("/nodes/{}/revoke", seg(node)), None, key).await
    }
    /// The node's channel (its own token): a WebSocket of `vt_api::channel::NodeRequest`s.
    pub async fn node_channel(&self, node: &str) -> Result<exec::Ws> {
        let path = format!("/v1/nodes/{}/channel", seg(node));
        self.websocket(&path).await
    }
    /// The stream of request `request` of the node's channel (its own token): a WebSocket.
    pub async fn node_stream(&self, node: &str, request: &str) -> Result<exec::Ws> {
        let path = format!("/v1/nodes/{}/streams/{}", seg(node), seg(request));
        // Errors never name the request id. The stream goes to the URL in use, never another:
        // the control plane whose channel asked for it (a node's channel loops use a client
        // per control plane).
        let shown = format!("{}/v1/nodes/{}/streams/…", self.base(), seg(node));
        exec::websocket(self.base(), self.token.as_deref(), &path, &shown).await
    }
    /// Every instance placed on a node, desired and current state.
    pub async fn node_instances(&self, node: &str) -> Result<NodeInstances> {
        self.get(&format!("/nodes/{}/instances", seg(node))).await
    }
    /// The node's instances once the views move past `after` (or after `wait`).
    pub async fn node_instances_follow(&self, node: &str, after: u64, wait: Duration) -> Result<NodeInstances> {
        self.get(&format!("/nodes/{}/instances?after={after}&wait_ms={}", seg(node), wait.as_millis())).await
    }
    /// What the node's ingress serves; with `after`, once the views move past it (or after `wait`).
    pub async fn node_routing(&self, node: &str, after: Option<u64>, wait: Duration) -> Result<NodeRouting> {
        match after {
            None => self.get(&format!("/nodes/{}/routing", seg(node))).await,
            Some(after) => {
                self.get(&format!("/nodes/{}/routing?after={after}&wait_ms={}", seg(node), wait.as_millis())).await
            }
        }
    }
    /// The node's ingress reports route listeners that changed.
    pub async fn node_route_listeners(
        &self,
        node: &str,
        reports: &[RouteListenerReport],
        key: &str,
    ) -> Result<Committed<serde_json::Value>> {
        self.mutate(Method::POST, &format!("/nodes/{}/route-listeners", seg(node)), Some(&reports), key).await
    }
    /// A node agent's report of an instance's current status.
    pub async fn instance_report_status(
        &self,
        instance: &str,
        req: &ReportInstanceStatus,
        key: &str,
    ) -> Result<Committed<Instance>> {
        self.mutate(Method::POST, &format!("/instances/{}/status", seg(instance)), Some(req), key).await
    }
    /// An instance's log lines (`<RFC3339> <stream> <text>`): the backlog (its last `tail`
    /// lines), then with `follow` new lines until the instance ends.
    pub async fn instance_logs(&self, instance: &str, follow: bool, tail: Option<usize>) -> Result<LogStream> {
        let mut path = format!("/instances/{}/logs?follow={follow}", seg(instance));
        if let Some(n) = tail {
            path.push_str(&format!("&tail={n}"));
        }
        let url = self.url(&path);
        let timeout = if follow { None } else { Some(Duration::from_secs(30)) };
        let resp = self.send(&url, self.request(Method::GET, &url, timeout)).await?;
        Ok(LogStream { url, resp, buf: Vec::new() })
    }
    /// One page of the log: at most `limit` events with `seq > after`, or, without `after`,
    /// the newest `limit` events; in order either way.
    pub async fn event_list(&self, after: Option<u64>, limit: u32) -> Result<EventPage> {
        match after {
            Some(after) => self.get(&format!("/events?after={after}&limit={limit}")).await,
            None => self.get(&format!("/events?last={limit}")).await,
        }
    }
    /// Every event with `seq > after`, then new ones as they are appended.
    pub async fn event_list_follow(&self, after: u64) -> Result<EventStream> {
        let url = self.url(&format!("/events?after={after}&follow=true"));
        let resp = self.send(&url, self.request(Method::GET, &url, None)).await?;
        Ok(EventStream { url, resp, buf: Vec::new() })
    }
    // --- tokens

    /// Issue a token: the answer carries its secret, once. Not retried, and
    /// sent without an idempotency key: a replay would have to keep the secret.
    pub async fn token_create(&self, req: &CreateToken) -> Result<IssuedToken> {
        let url = self.url("/tokens");
        let resp = self.send(&url, self.request(Method::POST, &url, Some(Duration::from_secs(60))).json(req)).await?;
        decode(&url, resp).await
    }
    pub async fn token_list(&self, q: &TokenQuery) -> Result<List<Token>> {
        let mut query = vec![];
        if let Some(org) = &q.org {
            query.push(format!("org={}", seg(org)));
        }
        if let Some(all) = q.all {
            query.push(format!("all={all}"));
        }
        let path = if query.is_empty() { "/tokens".to_owned() } else { format!("/tokens?{}", query.join("&")) };
        self.get(&path).await
    }
    pub async fn token_revoke(&self, token: &str, key: &str) -> Result<Committed<Token>> {
        self.mutate(Method::DELETE, &format!("/tokens/{}", seg(token)), None::<&()>, key).await
    }

    pub async fn system_status(&self) -> Result<SystemStatus> {
        self.get("/system/status").await
    }
    pub async fn system_scheduler(&self) -> Result<SchedulerStatus> {
        self.get("/system/scheduler").await
    }
    /// Every background task of the server with its status.
    pub async fn system_tasks(&self) -> Result<List<BackgroundTask>> {
        self.get("/system/tasks").await
    }
    /// Per-phase boot-timing percentiles of the instances matching `q`.
    pub async fn system_boot_timings(&self, q: &BootTimingsQuery) -> Result<BootTimingSummary> {
        let filters = [("node", &q.node), ("env", &q.env), ("process", &q.process)];
        let query: Vec<String> =
            filters.iter().filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", seg(v)))).collect();
        let mut path = "/system/boot-timings".to_owned();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        self.get(&path).await
    }
    /// Not idempotent by key: a rebuild is safe to repeat.
    pub async fn system_rebuild_views(&self) -> Result<RebuildReport> {
        let url = self.url("/system/rebuild-views");
        let resp = self.send(&url, self.request(Method::POST, &url, Some(Duration::from_secs(600)))).await?;
        decode(&url, resp).await
    }
    /// Not idempotent by key: a collection is safe to repeat.
    pub async fn system_gc(&self) -> Result<GcReport> {
        let url = self.url("/system/gc");
        let resp = self.send(&url, self.request(Method::POST, &url, Some(Duration::from_secs(600)))).await?;
        decode(&url, resp).await
    }

    // --- exec

    /// Ask for a grant to run a command in an instance. Sent without an idempotency key (a
    /// replay would have to keep the grant) and never retried: a grant is cheap to ask again.
    pub async fn exec_create(&self, instance: &str, req: &CreateExec) -> Result<ExecGrant> {
        let url = self.url(&format!("/instances/{}/exec", seg(instance)));
        let resp = self.send(&url, self.request(Method::POST, &url, Some(Duration::from_secs(60))).json(req)).await?;
        decode(&url, resp).await
    }

    /// Open the session `grant` allows: a WebSocket of `vt_api::exec` frames. A refusal (an
    /// expired or used grant, another token) is [`Error::Api`] with the server's message.
    pub async fn exec_connect(&self, grant: &ExecGrant) -> Result<exec::ExecConnection> {
        exec::connect(self.base(), self.token.as_deref(), &grant.path).await
    }
}

fn env_path(org: &str, app: &str, env: &str, rest: &str) -> String {
    format!("/orgs/{}/apps/{}/envs/{}{}", seg(org), seg(app), seg(env), rest)
}

fn transport(url: &str, e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout { url: url.to_owned() }
    } else if e.is_connect() || e.is_request() {
        Error::Connect { url: url.to_owned(), message: root_cause(&e) }
    } else if e.is_decode() || e.is_body() {
        Error::Decode { url: url.to_owned(), message: chain(&e) }
    } else {
        Error::Connect { url: url.to_owned(), message: chain(&e) }
    }
}

/// The innermost source's message: for a failed connect, the OS's reason
/// (`Connection refused (os error 111)`) says it best.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The error and its sources, innermost last (reqwest's own message is vague).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

async fn decode<T: DeserializeOwned>(url: &str, resp: reqwest::Response) -> Result<T> {
    let bytes = resp.bytes().await.map_err(|e| transport(url, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode { url: url.to_owned(), message: e.to_string() })
}

pub(crate) fn error_body(status: StatusCode, request_id: String, bytes: &[u8]) -> ErrorBody {
    serde_json::from_slice::<ErrorBody>(bytes).unwrap_or_else(|_| {
        // Not our server's error shape (a proxy, say): keep what it said.
        let text = String::from_utf8_lossy(bytes).trim().chars().take(200).collect::<String>();
        let code = match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::CONFLICT => ErrorCode::Conflict,
            StatusCode::GONE => ErrorCode::Gone,
            s if s.is_client_error() => ErrorCode::MalformedRequest,
            _ => ErrorCode::Internal,
        };
        let message = if text.is_empty() { status.to_string() } else { format!("{status}: {text}") };
        ErrorBody { error: ApiError { code, message, field: None, request_id } }
    })
}

async fn error_response(url: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let request_id = resp.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return transport(url, e),
    };
    let body = error_body(status, request_id, &bytes);
    Error::Api { status: status.as_u16(), body }
}

/// The lines of `GET /v1/instances/{id}/logs`.
pub struct LogStream {
    url: String,
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl LogStream {
    /// The next line (without its newline); `None` at the end of the response.
    pub async fn next_line(&mut self) -> Option<Result<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(Ok(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned()));
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) if self.buf.is_empty() => return None,
                Ok(None) => return Some(Ok(String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned())),
                Err(e) => return Some(Err(transport(&self.url, e))),
            }
        }
    }
}

/// The NDJSON stream of `GET /v1/events?follow=true`.
pub struct EventStream {
    url: String,
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<Envelope>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(
                    serde_json::from_slice(line)
                        .map_err(|e| Error::Decode { url: self.url.clone(), message: e.to_string() }),
                );
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => return None,
                Err(e) => return Some(Err(transport(&self.url, e))),
            }
        }
    }
}
