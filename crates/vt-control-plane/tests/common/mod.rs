//! A real server on loopback with a fresh data directory, and a small client.

#![allow(dead_code)]

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use vt_control_plane::server::{Server, ServerConfig};

pub struct TestServer {
    pub addr: SocketAddr,
    pub token: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub cp: std::sync::Arc<vt_control_plane::ControlPlane>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
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

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(None).await
    }

    pub async fn start_with(database_url: Option<String>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            data_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url,
            sqlite: Default::default(),
        };
        let server = Server::bind(&config).await.unwrap();
        let token_path = server.admin_token_written.clone().expect("first start writes the admin token");
        let addr = server.local_addr().unwrap();
        let cp = server.control_plane.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let token = std::fs::read_to_string(token_path).unwrap().trim().to_owned();
        TestServer { addr, token, dir, http: reqwest::Client::new(), cp, stop: Some(tx) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(&self.token);
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
