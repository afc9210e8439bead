//! The console user on the workspace origin and at the web console (`/app/` on the API
//! origin): basic auth with user `vt` and the console token's secret as the password
//! (`tokens::console_password`), checked against the store; a revoked console token stops
//! letting anyone in (password or session cookie) within `vt_front::auth::VERIFIED_FOR`.

use std::sync::Arc;

use vt_control_plane::auth;
use vt_control_plane::authz::Caller;
use vt_front::auth::{BoxFuture, Credentials, CONSOLE_USER};
use vt_ids::TokenId;
use vt_store::Store;
use vt_views::{TokenView, ViewKind};

pub struct ConsoleLogin {
    pub store: Arc<dyn Store>,
    /// The console token; no other token opens the workspace origin.
    pub token: TokenId,
}

impl Credentials for ConsoleLogin {
    fn verify<'a>(&'a self, user: &'a str, password: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            if user != CONSOLE_USER {
                return Ok(false);
            }
            match auth::authenticate(self.store.as_ref(), password, chrono::Utc::now()).await {
                Ok(Ok(Caller::Admin { token })) => Ok(token == self.token),
                Ok(_) => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn active(&self) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            let view: Option<TokenView> = self
                .store
                .view_get(ViewKind::Token, &self.token.to_string())
                .await
                .map_err(|e| e.to_string())?
                .and_then(|r| r.decode().ok());
            let now = chrono::Utc::now();
            Ok(view.is_some_and(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now)))
        })
    }
}
