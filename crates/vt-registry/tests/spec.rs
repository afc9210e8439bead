//! The OCI distribution spec's workflows, one test per section that matters here (pull, push,
//! content discovery, content management), in the order and with the checks of the spec's
//! conformance suite. The suite itself is Go and cannot be built on this machine (no Go module
//! proxy reachable; docs/registry.md), so these stand in for it.

mod common;

use common::{sha, TestRegistry, TOKEN};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{json, Value};

const OCI_M: &str = "application/vnd.oci.image.manifest.v1+json";

struct Reg {
    r: TestRegistry,
    c: Client,
}

impl Reg {
    async fn start(dir: &std::path::Path) -> Reg {
        Reg { r: TestRegistry::start(dir).await, c: Client::new() }
    }
    async fn send(&self, m: Method, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Response {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.r.base) };
        let mut req = self.c.request(m, url).bearer_auth(TOKEN);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.unwrap()
    }
    /// The spec's two-step monolithic push: POST for a session, PUT with the whole blob.
    async fn push(&self, name: &str, bytes: &[u8]) -> String {
        let d = sha(bytes);
        let started = self.send(Method::POST, &format!("/v2/{name}/blobs/uploads/"), None, &[]).await;
        assert_eq!(started.status(), StatusCode::ACCEPTED);
        let loc = header(&started, "location");
        let len = bytes.len().to_string();
        let headers = [("content-type", "application/octet-stream"), ("content-length", len.as_str())];
        let done = self.send(Method::PUT, &format!("{loc}?digest={d}"), Some(bytes.to_vec()), &headers).await;
        assert_eq!(done.status(), StatusCode::CREATED);
        assert_eq!(header(&done, "location"), format!("/v2/{name}/blobs/{d}"));
        d
    }
}

fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn error_code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    // The spec's error shape: {"errors": [{"code", "message", "detail"?}]}.
    let e = &body["errors"][0];
    assert!(e["message"].is_string(), "{body}");
    (status, e["code"].as_str().unwrap().to_owned())
}

fn image(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_M,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(layer), "size": layer.len()}],
    }))
    .unwrap()
}

#[tokio::test]
async fn pull() {
    let dir = tempfile::tempdir().unwrap();
    let g = Reg::start(dir.path()).await;
    let (config, layer) = (br#"{"architecture":"amd64","os":"linux"}"#, b"layer");
    let (cd, ld) = (g.push("acme/pull", config).await, g.push("acme/pull", layer).await);
    let m = image(config, layer);
    let md = sha(&m);
    let put =
        g.send(Method::PUT, "/v2/acme/pull/manifests/tagtest0", Some(m.clone()), &[("content-type", OCI_M)]).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    // Manifests by tag and by digest: HEAD and GET, with type, digest and length.
    for reference in ["tagtest0", md.as_str()] {
        let head = g.send(Method::HEAD, &format!("/v2/acme/pull/manifests/{reference}"), None, &[]).await;
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(header(&head, "docker-content-digest"), md);
        assert_eq!(header(&head, "content-length"), m.len().to_string());
        let get = g.send(Method::GET, &format!("/v2/acme/pull/manifests/{reference}"), None, &[]).await;
        assert_eq!((get.status(), header(&get, "content-type")), (StatusCode::OK, OCI_M.to_owned()));
        assert_eq!(get.bytes().await.unwrap().to_vec(), m);
    }
    // Blobs: HEAD gives the length, GET the bytes.
    for (d, bytes) in [(cd, config.as_slice()), (ld, layer.as_slice())] {
        let head = g.send(Method::HEAD, &format!("/v2/acme/pull/blobs/{d}"), None, &[]).await;
        assert_eq!((head.status(), header(&head, "content-length")), (StatusCode::OK, bytes.len().to_string()));
        let get = g.send(Method::GET, &format!("/v2/acme/pull/blobs/{d}"), None, &[]).await;
        assert_eq!(get.bytes().await.unwrap().as_ref(), bytes);
    }
    // What is not there: 404 with the spec's codes.
    let missing = sha(b"missing");
    let r = g.send(Method::GET, &format!("/v2/acme/pull/blobs/{missing}"), None, &[]).await;
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
    let r = g.send(Method::GET, &format!("/v2/acme/pull/manifests/{missing}"), None, &[]).await;
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
    assert_eq!(g.send(Method::HEAD, "/v2/acme/pull/manifests/nope", None, &[]).await.status(), StatusCode::NOT_FOUND);
    g.r.stop();
}

#[tokio::test]
async fn push() {
    let dir = tempfile::tempdir().unwrap();
    let g = Reg::start(dir.path()).await;
    // Monolithic in two steps (POST, PUT) and in one (POST with the digest).
    g.push("acme/push", b"two steps").await;
    let one = sha(b"one step");
    let r = g
        .send(Method::POST, &format!("/v2/acme/push/blobs/uploads/?digest={one}"), Some(b"one step".to_vec()), &[])
        .await;
    assert_eq!((r.status(), header(&r, "location")), (StatusCode::CREATED, format!("/v2/acme/push/blobs/{one}")));
    // Chunked: POST, PATCHes in order with Content-Range, the last chunk with the PUT.
    let r = g.send(Method::POST, "/v2/acme/push/blobs/uploads/", None, &[]).await;
    let mut loc = header(&r, "location");
    for (range, chunk, received) in [("0-3", "abcd", "0-3"), ("4-7", "efgh", "0-7")] {
        let headers = [("content-type", "application/octet-stream"), ("content-range", range)];
        let r = g.send(Method::PATCH, &loc, Some(chunk.as_bytes().to_vec()), &headers).await;
        assert_eq!((r.status(), header(&r, "range")), (StatusCode::ACCEPTED, received.to_owned()));
        loc = header(&r, "location");
    }
    // Out of order: 416, and the session goes on.
    let r = g.send(Method::PATCH, &loc, Some(b"zz".to_vec()), &[("content-range", "20-21")]).await;
    assert_eq!((r.status(), header(&r, "range")), (StatusCode::RANGE_NOT_SATISFIABLE, "0-7".into()));
    let status = g.send(Method::GET, &loc, None, &[]).await;
    assert_eq!((status.status(), header(&status, "range")), (StatusCode::NO_CONTENT, "0-7".into()));
    let d = sha(b"abcdefghij");
    let r = g.send(Method::PUT, &format!("{loc}?digest={d}"), Some(b"ij".to_vec()), &[("content-range", "8-9")]).await;
    assert_eq!((r.status(), header(&r, "docker-content-digest")), (StatusCode::CREATED, d.clone()));
    // A blob of another repository is mounted (201); an unknown one starts an upload (202).
    let r = g.send(Method::POST, &format!("/v2/acme/other/blobs/uploads/?mount={d}&from=acme/push"), None, &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = g
        .send(Method::POST, &format!("/v2/acme/other/blobs/uploads/?mount={}&from=acme/push", sha(b"?")), None, &[])
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Manifests: by tag and by digest, 201 with Location; referencing a missing blob, refused.
    let (config, layer) = (br#"{"os":"linux"}"#, b"l");
    g.push("acme/push", config).await;
    let m = image(config, layer);
    let r = g.send(Method::PUT, "/v2/acme/push/manifests/v1", Some(m.clone()), &[("content-type", OCI_M)]).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into()));
    g.push("acme/push", layer).await;
    let md = sha(&m);
    for reference in ["v1", md.as_str()] {
        let r = g
            .send(
                Method::PUT,
                &format!("/v2/acme/push/manifests/{reference}"),
                Some(m.clone()),
                &[("content-type", OCI_M)],
            )
            .await;
        assert_eq!(
            (r.status(), header(&r, "location")),
            (StatusCode::CREATED, format!("/v2/acme/push/manifests/{md}"))
        );
    }
    // A digest that does not match the content: refused, nothing stored.
    let r = g
        .send(Method::POST, &format!("/v2/acme/push/blobs/uploads/?digest={}", sha(b"x")), Some(b"y".to_vec()), &[])
        .await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    g.r.stop();
}

#[tokio::test]
async fn content_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let g = Reg::start(dir.path()).await;
    let config = br#"{"os":"linux"}"#;
    g.push("acme/tags", config).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_M,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": config.len()},
        "layers": [],
    }))
    .unwrap();
    for tag in ["test3", "test0", "test2", "test1"] {
        let r = g
            .send(Method::PUT, &format!("/v2/acme/tags/manifests/{tag}"), Some(m.clone()), &[("content-type", OCI_M)])
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let list = |q: &'static str| {
        let g = &g;
        async move {
            let r = g.send(Method::GET, &format!("/v2/acme/tags/tags/list{q}"), None, &[]).await;
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(list("").await, json!({"name": "acme/tags", "tags": ["test0", "test1", "test2", "test3"]}));
    assert_eq!(list("?n=2").await["tags"], json!(["test0", "test1"]));
    assert_eq!(list("?n=2&last=test1").await["tags"], json!(["test2", "test3"]));
    assert_eq!(list("?last=test3").await["tags"], json!([]));
    let r = g.send(Method::GET, "/v2/acme/none/tags/list", None, &[]).await;
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into()));
    g.r.stop();
}

#[tokio::test]
async fn content_management() {
    let dir = tempfile::tempdir().unwrap();
    let g = Reg::start(dir.path()).await;
    let d = g.push("acme/mgmt", b"kept").await;
    // Deletion is not supported (no garbage collection yet): 405 UNSUPPORTED, as the spec allows,
    // and the content stays.
    for path in [format!("/v2/acme/mgmt/blobs/{d}"), "/v2/acme/mgmt/manifests/v1".to_owned()] {
        let r = g.send(Method::DELETE, &path, None, &[]).await;
        assert_eq!(error_code(r).await, (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED".into()));
    }
    assert_eq!(g.send(Method::HEAD, &format!("/v2/acme/mgmt/blobs/{d}"), None, &[]).await.status(), StatusCode::OK);
    // An upload session can be cancelled; after that it is unknown.
    let r = g.send(Method::POST, "/v2/acme/mgmt/blobs/uploads/", None, &[]).await;
    let loc = header(&r, "location");
    assert_eq!(g.send(Method::DELETE, &loc, None, &[]).await.status(), StatusCode::NO_CONTENT);
    let r = g.send(Method::GET, &loc, None, &[]).await;
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
    g.r.stop();
}
