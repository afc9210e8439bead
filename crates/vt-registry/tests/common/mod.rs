#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use vt_registry::{app, Access, Authorizer, BoxFuture, StaticToken, Storage, Verdict};

pub const TOKEN: &str = "vt_test_token";

/// Tokens of two organisations: `tok-a` may push and pull `a/...`, `tok-b` may push and pull
/// `b/...`, `tok-a-ro` may only pull `a/...`. Other repositories are denied with the same message
/// whether they exist or not; any other token (or none) is unauthenticated.
pub struct OrgTokens;

pub const UNAUTHENTICATED: &str = "authentication required: present an org token";

impl Authorizer for OrgTokens {
    fn authorize<'a>(
        &'a self,
        token: Option<&'a str>,
        repository: Option<&'a str>,
        access: Access,
    ) -> BoxFuture<'a, Result<Verdict, String>> {
        let (org, may_push) = match token {
            Some("tok-a") => ("a", true),
            Some("tok-b") => ("b", true),
            Some("tok-a-ro") => ("a", false),
            _ => return Box::pin(async { Ok(Verdict::Unauthenticated(UNAUTHENTICATED.into())) }),
        };
        let verdict = match repository {
            None => Verdict::Allow,
            Some(r) if r.strip_prefix(org).is_some_and(|rest| rest.starts_with('/')) => {
                if access == Access::Pull || may_push {
                    Verdict::Allow
                } else {
                    Verdict::Deny(format!("this token may only pull {r}"))
                }
            }
            Some(r) => Verdict::Deny(format!("no access to repository {r}")),
        };
        Box::pin(async move { Ok(verdict) })
    }
}

/// A registry serving `<dir>` on a loopback port.
pub struct TestRegistry {
    pub addr: SocketAddr,
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl TestRegistry {
    /// With [`StaticToken`]`(TOKEN)`.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, Arc::new(StaticToken(TOKEN.into()))).await
    }

    pub async fn start_with(dir: &Path, auth: Arc<dyn Authorizer>) -> Self {
        Self::serve(Storage::open(dir).unwrap(), auth).await
    }

    /// `storage` as it is (say, with a short upload TTL), with [`StaticToken`]`(TOKEN)`.
    pub async fn serve(storage: Storage, auth: Arc<dyn Authorizer>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(storage, auth);
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

/// An OCI image manifest of one config and one uncompressed layer.
pub fn image_manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": layer.len() }],
    }))
    .unwrap()
}
