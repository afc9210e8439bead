//! The built-in OCI registry (`/v2/`, crate `vt-registry`), wired to the API's tokens.
//!
//! Storage lives in `<data-dir>/registry`. Admin tokens may push and pull, node tokens may pull.
//! Without a data directory the registry is off and `/v2/` answers 404.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::Router;
use vt_events::TokenRole;
use vt_registry::{Access, Authorizer, BoxFuture, Storage};
use vt_store::Store;

use crate::{auth, ControlPlane};

/// Authorizes registry requests with the API's bearer tokens.
pub struct TokenAuthorizer {
    pub store: Arc<dyn Store>,
}

impl Authorizer for TokenAuthorizer {
    fn authorize<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Access>, String>> {
        Box::pin(async move {
            let caller = auth::authenticate(self.store.as_ref(), token).await.map_err(|e| e.to_string())?;
            Ok(caller.map(|c| if c.role == TokenRole::Admin { Access::Push } else { Access::Pull }))
        })
    }
}

impl ControlPlane {
    /// The registry's storage (for reads such as tag resolution), if there is a data directory.
    pub fn registry_storage(&self) -> Option<Storage> {
        self.data_dir.as_ref().map(|d| Storage::at(&d.join("registry")))
    }
}

/// The registry's routes, to mount with `.nest_service("/v2", registry::service(&cp))`.
pub fn service(cp: &Arc<ControlPlane>) -> Router {
    let opened = cp.data_dir.as_ref().map(|d| Storage::open(&d.join("registry")));
    match opened {
        Some(Ok(storage)) => vt_registry::router(storage, Arc::new(TokenAuthorizer { store: cp.store.clone() })),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot open the registry storage; /v2/ is off");
            Router::new().fallback(|| async {
                (StatusCode::SERVICE_UNAVAILABLE, "the registry storage could not be opened; see the server log\n")
            })
        }
        None => Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "the registry needs a data directory\n") }),
    }
}
