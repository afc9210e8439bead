//! [`RegistrySource`]: a [`BlobSource`] pulling from an OCI Distribution (v2) registry over HTTP.
//!
//! `GET /v2/<repo>/manifests/<digest>` (with an `Accept` listing OCI and Docker manifest and
//! index types) and `GET /v2/<repo>/blobs/<digest>`, redirects followed. Authentication:
//! a static bearer token (vt's own registry takes the API token), or, when a registry answers
//! 401 with a `Bearer realm=...` challenge, the token it hands out at that realm (anonymous, or
//! with basic credentials). Nothing read here is trusted: the store verifies sizes and digests.
//!
//! Blocking (reqwest's blocking client): call from `spawn_blocking`, not from an async task.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use crate::oci::Descriptor;
use crate::store::{BlobSource, MAX_MANIFEST_SIZE};
use crate::{Digest, Error, Result};

/// Pulls blobs and manifests of one repository from a registry.
pub struct RegistrySource {
    client: Client,
    base: String,
    repo: String,
    /// Basic credentials for a token realm (user, password).
    basic: Option<(String, String)>,
    token: Mutex<Option<String>>,
}

fn source_err(msg: impl Into<String>) -> Error {
    Error::Source(msg.into().into())
}

impl RegistrySource {
    /// `base` is the registry's root URL (`http://127.0.0.1:7411`), `repo` a repository name
    /// (`acme/web`), `token` a bearer token sent with every request (vt's API token).
    pub fn new(base: &str, repo: &str, token: Option<String>) -> Result<Self> {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(None)
            .user_agent(concat!("vt-image/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| source_err(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            repo: repo.to_owned(),
            basic: None,
            token: Mutex::new(token),
        })
    }

    /// Credentials to present to a `Bearer realm` token service (registries other than vt's).
    pub fn with_basic(mut self, user: &str, password: &str) -> Self {
        self.basic = Some((user.to_owned(), password.to_owned()));
        self
    }

    fn url(&self, kind: &str, digest: &Digest) -> String {
        format!("{}/v2/{}/{kind}/{digest}", self.base, self.repo)
    }

    /// GET `url`; on a 401 with a Bearer challenge, fetch a token once and retry.
    fn get(&self, url: &str, accept: Option<&str>, digest: &Digest) -> Result<Response> {
        let build = || -> RequestBuilder {
            let mut rb = self.client.get(url);
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            if let Some(t) = self.token.lock().expect("token lock").as_ref() {
                rb = rb.bearer_auth(t);
            }
            rb
        };
        let send = |rb: RequestBuilder| rb.send().map_err(|e| Error::Unavailable(format!("GET {url}: {e}")));
        let mut resp = send(build())?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(challenge) =
                resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned)
            {
                if challenge.trim_start().to_ascii_lowercase().starts_with("bearer ") {
                    let token = self.fetch_token(&challenge)?;
                    *self.token.lock().expect("token lock") = Some(token);
                    resp = send(build())?;
                }
            }
        }
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(Error::NotFound(digest.clone())),
            s => {
                let body: String = resp.text().unwrap_or_default().chars().take(300).collect();
                let what = format!("GET {url}: {s}: {body}");
                Err(if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS {
                    Error::Unavailable(what)
                } else {
                    source_err(what)
                })
            }
        }
    }

    /// The token service dance: `GET <realm>?service=..&scope=..` → `{"token"|"access_token"}`.
    fn fetch_token(&self, challenge: &str) -> Result<String> {
        let params = parse_challenge(challenge);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| source_err("Bearer challenge without a realm"))?;
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some((_, s)) = params.iter().find(|(k, _)| k == "service") {
            query.push(("service", s.clone()));
        }
        let scope = params
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("repository:{}:pull", self.repo));
        query.push(("scope", scope));
        let mut rb = self.client.get(&realm).query(&query);
        if let Some((u, p)) = &self.basic {
            rb = rb.basic_auth(u, Some(p));
        }
        let resp = rb.send().map_err(|e| source_err(format!("token request to {realm}: {e}")))?;
        if !resp.status().is_success() {
            return Err(source_err(format!("token request to {realm}: {}", resp.status())));
        }
        let v: serde_json::Value = resp.json().map_err(|e| source_err(format!("token response from {realm}: {e}")))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| source_err(format!("token response from {realm} has no token")))
    }
}

/// `Bearer realm="a",service="b",scope="c"` → [(realm, a), (service, b), (scope, c)].
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let rest = s.trim().split_once(' ').map(|(_, r)| r).unwrap_or("");
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                val.push(c);
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_ascii_lowercase(), val));
    }
    out
}

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

impl BlobSource for RegistrySource {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let resp = self.get(&self.url("blobs", &desc.digest), None, &desc.digest)?;
        Ok(Box::new(resp))
    }

    fn fetch_manifest(&self, digest: &Digest) -> Result<(Option<String>, Vec<u8>)> {
        let resp = self.get(&self.url("manifests", digest), Some(MANIFEST_ACCEPT), digest)?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .filter(|t| crate::oci::manifest_kind(t).is_some());
        let mut buf = Vec::new();
        resp.take(MAX_MANIFEST_SIZE + 1).read_to_end(&mut buf)?;
        Ok((media_type, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media;

    #[test]
    fn challenge() {
        let p = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
        assert!(MANIFEST_ACCEPT.contains(media::OCI_INDEX) && MANIFEST_ACCEPT.contains(media::DOCKER_MANIFEST_LIST));
    }
}
