//! Pushing to the server's OCI registry (`/v2/`): blobs (HEAD first, then a monolithic or a
//! chunked upload) and manifests. Authenticates with the API token as a bearer token.

use std::io::Read;
use std::path::Path;

use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

/// Blobs up to this size go in one request; bigger ones in chunks of this size.
pub const CHUNK: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach the registry at {url}: {message}")]
    Connect { url: String, message: String },
    /// The registry answered with an error (`code` from the spec's error body when present).
    #[error("{method} {url}: {status} {code}: {message}")]
    Api { method: String, url: String, status: u16, code: String, message: String },
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// Already in the registry (HEAD said so).
    Skipped,
    Uploaded,
}

pub struct RegistryClient {
    http: reqwest::Client,
    /// Why no request may be sent (`VT_CA_CERT` unusable), if so.
    refused: Option<String>,
    base: String,
    token: Option<String>,
}

impl RegistryClient {
    /// `base` is the server's root URL (the registry is at `<base>/v2/`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let (builder, refused) = crate::tls::http_builder();
        let http = builder.user_agent(concat!("vt/", env!("CARGO_PKG_VERSION"))).build().unwrap_or_default();
        RegistryClient { http, refused, base: base.trim_end_matches('/').to_owned(), token }
    }

    fn req(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        rb: reqwest::RequestBuilder,
        ok: &[StatusCode],
    ) -> Result<reqwest::Response, RegistryError> {
        if let Some(why) = &self.refused {
            return Err(RegistryError::Connect { url: url.to_owned(), message: why.clone() });
        }
        let resp =
            rb.send().await.map_err(|e| RegistryError::Connect { url: url.to_owned(), message: e.to_string() })?;
        if ok.contains(&resp.status()) {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let err = &body["errors"][0];
        Err(RegistryError::Api {
            method: method.to_string(),
            url: url.to_owned(),
            status,
            code: err["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
            message: err["message"].as_str().unwrap_or("").to_owned(),
        })
    }

    /// Absolute URL of a `Location` header (which may be a path).
    fn location(&self, resp: &reqwest::Response) -> Result<String, RegistryError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol("upload response has no Location".into()))?;
        Ok(if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_owned()
        } else {
            format!("{}{}", self.base, loc)
        })
    }

    /// `GET /v2/`: checks that the registry is there and the token works.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        self.send(Method::GET, &url, self.req(Method::GET, &url), &[StatusCode::OK]).await.map(|_| ())
    }

    pub async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let resp = self
            .send(Method::HEAD, &url, self.req(Method::HEAD, &url), &[StatusCode::OK, StatusCode::NOT_FOUND])
            .await?;
        Ok(resp.status() == StatusCode::OK)
    }

    /// Push the file at `path` as blob `digest` (skipped when the registry has it).
    pub async fn push_blob(&self, repo: &str, digest: &str, path: &Path) -> Result<BlobPush, RegistryError> {
        if self.has_blob(repo, digest).await? {
            return Ok(BlobPush::Skipped);
        }
        let size = std::fs::metadata(path)?.len();
        if size <= CHUNK {
            let bytes = std::fs::read(path)?;
            let url = format!("{}/v2/{repo}/blobs/uploads/?digest={digest}", self.base);
            let rb = self.req(Method::POST, &url).header(CONTENT_TYPE, "application/octet-stream").body(bytes);
            self.send(Method::POST, &url, rb, &[StatusCode::CREATED]).await?;
            return Ok(BlobPush::Uploaded);
        }
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let resp = self.send(Method::POST, &url, self.req(Method::POST, &url), &[StatusCode::ACCEPTED]).await?;
        let mut loc = self.location(&resp)?;
        let mut f = std::fs::File::open(path)?;
        let mut offset = 0u64;
        while offset < size {
            let mut buf = Vec::with_capacity(CHUNK as usize);
            (&mut f).take(CHUNK).read_to_end(&mut buf)?;
            if buf.is_empty() {
                return Err(RegistryError::Protocol(format!("{} shrank while being pushed", path.display())));
            }
            let end = offset + buf.len() as u64 - 1;
            let rb = self
                .req(Method::PATCH, &loc)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{offset}-{end}"))
                .body(buf);
            let resp = self.send(Method::PATCH, &loc, rb, &[StatusCode::ACCEPTED]).await?;
            loc = self.location(&resp)?;
            offset = end + 1;
        }
        let sep = if loc.contains('?') { '&' } else { '?' };
        let url = format!("{loc}{sep}digest={digest}");
        self.send(Method::PUT, &url, self.req(Method::PUT, &url), &[StatusCode::CREATED]).await?;
        Ok(BlobPush::Uploaded)
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; returns the digest the registry reports.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, RegistryError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let rb = self.req(Method::PUT, &url).header(CONTENT_TYPE, media_type).body(bytes);
        let resp = self.send(Method::PUT, &url, rb, &[StatusCode::CREATED]).await?;
        resp.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::Protocol("manifest response has no Docker-Content-Digest".into()))
    }
}
