//! `vt server`: open the store, make sure an admin token exists, serve the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use vt_store::{PgStore, SqliteOptions, SqliteStore, Store, StoreError};

use crate::{auth, http, ControlPlane};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `postgres://...`; `None` for the embedded SQLite store in `data_dir`.
    pub database_url: Option<String>,
    pub sqlite: SqliteOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bootstrap(#[from] auth::BootstrapError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

pub async fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>, ServerError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| ServerError::DataDir { path: config.data_dir.clone(), source })?;
    Ok(match &config.database_url {
        Some(url) => Arc::new(PgStore::connect(url).await?),
        None => Arc::new(SqliteStore::open(&config.data_dir.join("vt.sqlite"), config.sqlite.clone()).await?),
    })
}

/// A bound, ready server. `run` serves until `shutdown` resolves.
pub struct Server {
    pub control_plane: Arc<ControlPlane>,
    pub listener: tokio::net::TcpListener,
    pub admin_token_written: Option<PathBuf>,
}

impl Server {
    pub async fn bind(config: &ServerConfig) -> Result<Server, ServerError> {
        let store = open_store(config).await?;
        let admin_token_written = auth::bootstrap_admin(store.as_ref(), &config.data_dir).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
        let control_plane = ControlPlane::start(store, Some(config.data_dir.clone()));
        Ok(Server { control_plane, listener, admin_token_written })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let app = http::router(self.control_plane);
        axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await.map_err(ServerError::Serve)
    }
}
