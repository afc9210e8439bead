#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use vt_registry::{app, StaticToken, Storage};

pub const TOKEN: &str = "vt_test_token";

/// A registry serving `<dir>` on a loopback port.
pub struct TestRegistry {
    pub addr: SocketAddr,
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl TestRegistry {
    pub async fn start(dir: &Path) -> Self {
        let storage = Storage::open(dir).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(storage, Arc::new(StaticToken(TOKEN.into())));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestRegistry { addr, base: format!("http://{addr}"), task }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

pub fn sha(bytes: &[u8]) -> String {
    vt_image::Digest::of(bytes).to_string()
}
