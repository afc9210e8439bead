//! A real server on loopback with a fresh data directory, and a small client.

#![allow(dead_code)]

use std::net::SocketAddr;

use std::path::Path;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use vt_control_plane::{ControlPlane, Settings};
use vt_store::{PgStore, SqliteStore, Store};

pub mod env;

/// The store in `dir` (SQLite), or at `database_url`.
pub async fn open(dir: &Path, database_url: Option<&str>) -> Arc<dyn Store> {
    match database_url {
        Some(url) => Arc::new(PgStore::connect(url).await.unwrap()),
        None => Arc::new(
            SqliteStore::open(&dir.join("vt.sqlite"), vt_store::SqliteOptions { full_sync: false }).await.unwrap(),
        ),
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// An admin token.
    pub token: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub cp: Arc<ControlPlane>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
    pub fn error_field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or_default()
    }
}

pub use vt_control_plane::testing::admin_token;

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(None).await
    }

    /// On PostgreSQL at `database_url`, or SQLite in a fresh directory.
    pub async fn start_with(database_url: Option<String>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), database_url.as_deref()).await;
        let token = admin_token(store.as_ref()).await;
        Self::serve(dir, store, token).await
    }

    /// The control plane over `store`, its registry in `dir`, on 127.0.0.1:0.
    pub async fn serve(dir: tempfile::TempDir, store: Arc<dyn Store>, token: String) -> TestServer {
        Self::serve_with_logs(dir, store, token, None).await
    }

    /// The same, serving instance logs from `logs`.
    pub async fn serve_with_logs(
        dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        token: String,
        logs: Option<Arc<dyn vt_control_plane::logs::LogSource>>,
    ) -> TestServer {
        Self::serve_with(dir, store, token, logs, None, None).await
    }

    /// A fresh server (SQLite) opening exec sessions with `exec`, its grants valid for `ttl`.
    pub async fn start_with_exec(
        exec: Arc<dyn vt_control_plane::exec::ExecBackend>,
        ttl: Option<std::time::Duration>,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), None).await;
        let token = admin_token(store.as_ref()).await;
        Self::serve_with(dir, store, token, None, Some(exec), ttl).await
    }

    pub async fn serve_with(
        dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        token: String,
        logs: Option<Arc<dyn vt_control_plane::logs::LogSource>>,
        exec: Option<Arc<dyn vt_control_plane::exec::ExecBackend>>,
        exec_grant_ttl: Option<std::time::Duration>,
    ) -> TestServer {
        // One master key per data directory, as `vt server` keeps it.
        let key_file = dir.path().join("master.key");
        if !key_file.exists() {
            vt_secrets::MasterKey::generate().unwrap().write_new(&key_file).unwrap();
        }
        let master_key = Some(Arc::new(vt_secrets::MasterKey::read(&key_file).unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = Settings {
            registry: Some(vt_registry::Storage::open(&dir.path().join("registry")).unwrap()),
            logs,
            master_key,
            api_port: Some(addr.port()),
            network: Default::default(),
            registry_limits: Default::default(),
            exec,
            exec_grant_ttl,
            workspaces: Default::default(),
        };
        let cp = ControlPlane::start(store, settings);
        // The views show what is already in the log (the admin token's creation, say).
        cp.fresh().await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = vt_control_plane::http::router(cp.clone());
        let served = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestServer { addr, token, dir, http: reqwest::Client::new(), cp, stop: Some(tx), served: Some(served) }
    }

    /// Stop serving and the control plane's reconcilers; give back the directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap();
        }
        self.cp.shutdown();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// A token with `body` (`{"name", "role", "org"?, "node"?}`), made by the admin; its secret.
    pub async fn issue(&self, body: Value) -> String {
        let r = self.post("/v1/tokens", body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{body}: {}", r.body);
        r.body["secret"].as_str().unwrap().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Resp {
        self.call_as(Some(&self.token), method, path, body, headers).await
    }

    /// A request with `token` (`None`: no credentials).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                req = req.header("content-type", "application/json");
            }
            req = req.body(b.to_owned());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(&body.to_string()), &[]).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(&body.to_string()), &[]).await
    }

    pub async fn head(&self) -> u64 {
        self.get("/v1/system/status").await.body["head"].as_u64().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.cp.shutdown();
    }
}

pub fn manifest() -> &'static str {
    "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/httpd\", \"-f\"]\nports = [{ name = \"http\", port = 8080 }]\nscaling = { min = 1, max = 3 }\n\n[processes.web.healthcheck]\ntype = \"http\"\nport = \"http\"\npath = \"/\"\n"
}

pub fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// Poll `path` until `ok` holds for its body (10 s at most).
pub async fn until(s: &TestServer, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let body = s.get(path).await.body;
        if ok(&body) {
            return body;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "timed out waiting for {what}: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
