//! The registry accepts exactly what the distribution spec allows (issue #23): references
//! checked before storage, every descriptor verified, index children's sizes checked, no key
//! twice in a manifest, abandoned uploads expired, input echoed only cut.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{sha, TestRegistry, TOKEN};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vt_registry::{StaticToken, Storage};

const OCI_M: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_I: &str = "application/vnd.oci.image.index.v1+json";
const NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

async fn error(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    let e = &v["errors"][0];
    (status, e["code"].as_str().unwrap_or_default().to_owned(), e["message"].as_str().unwrap_or_default().to_owned())
}

fn call(r: &TestRegistry, m: Method, path: &str) -> reqwest::RequestBuilder {
    Client::new().request(m, format!("{}{path}", r.base)).bearer_auth(TOKEN)
}

async fn push_blob(r: &TestRegistry, repo: &str, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let resp = call(r, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    d
}

async fn put_manifest(r: &TestRegistry, reference: &str, ct: &str, body: Vec<u8>) -> reqwest::Response {
    call(r, Method::PUT, &format!("/v2/acme/web/manifests/{reference}"))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A raw request: reqwest would resolve `..` in the path before sending it.
async fn raw(r: &TestRegistry, method: &str, path: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn references_are_a_tag_or_a_digest_before_storage_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    // A repository exists, so `_tags/..` would be a directory.
    push_blob(&r, "acme/web", b"x").await;
    for reference in ["..", ".", "-x", ".hidden", "a%2Fb", "%2e%2e"] {
        for method in ["GET", "HEAD", "PUT"] {
            let answer = raw(&r, method, &format!("/v2/acme/web/manifests/{reference}")).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{method} {reference}: {answer}");
            if method != "HEAD" {
                assert!(answer.contains("MANIFEST_INVALID"), "{method} {reference}: {answer}");
            }
        }
    }
    let (status, code, _) =
        error(call(&r, Method::GET, "/v2/acme/web/manifests/sha256:zz").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    let long = "t".repeat(129);
    let (status, code, message) =
        error(call(&r, Method::GET, &format!("/v2/acme/web/manifests/{long}")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"));
    assert!(message.len() < 300, "{message}");
    let (status, code, message) =
        error(call(&r, Method::GET, &format!("/v2/acme/web/blobs/{}", "d".repeat(5000))).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "DIGEST_INVALID"));
    assert!(message.len() < 300, "{message}");
    // A valid tag that is not there is still just unknown.
    let (status, code, _) = error(call(&r, Method::GET, "/v2/acme/web/manifests/v1").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    r.stop();
}

fn manifest(config: (&str, &str, usize), layers: &[(&str, &str, usize)]) -> Vec<u8> {
    let d = |(media, digest, size): (&str, &str, usize)| json!({"mediaType": media, "digest": digest, "size": size});
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_M,
        "config": d(config),
        "layers": layers.iter().map(|l| d(*l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn every_descriptor_is_verified_whatever_its_media_type() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"layer";
    let config_d = push_blob(&r, "acme/web", config).await;
    let layer_d = push_blob(&r, "acme/web", layer).await;
    let missing = sha(b"never pushed");
    let cfg = ("application/vnd.oci.image.config.v1+json", config_d.as_str(), config.len());
    let cases = [
        // A "non-distributable" config that is not there: once accepted, now refused.
        manifest((NONDIST, missing.as_str(), 12), &[(NONDIST, layer_d.as_str(), layer.len())]),
        manifest(cfg, &[(NONDIST, missing.as_str(), 12)]),
        manifest(cfg, &[("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", missing.as_str(), 12)]),
    ];
    for body in cases {
        let (status, code, _) = error(put_manifest(&r, "v1", OCI_M, body).await).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
    }
    // A non-distributable layer that was pushed is a layer like any other; sizes must match.
    let ok = manifest(cfg, &[(NONDIST, layer_d.as_str(), layer.len())]);
    assert_eq!(put_manifest(&r, "v1", OCI_M, ok).await.status(), StatusCode::CREATED);
    let wrong = manifest(cfg, &[(NONDIST, layer_d.as_str(), layer.len() + 1)]);
    assert_eq!(error(put_manifest(&r, "v2", OCI_M, wrong).await).await.1, "MANIFEST_INVALID");
    r.stop();
}

#[tokio::test]
async fn index_children_are_checked_for_size() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cfg_d = push_blob(&r, "acme/web", config).await;
    let child = manifest(("application/vnd.oci.image.config.v1+json", cfg_d.as_str(), config.len()), &[]);
    let child_d = sha(&child);
    assert_eq!(put_manifest(&r, &child_d, OCI_M, child.clone()).await.status(), StatusCode::CREATED);
    let index = |size: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_I,
            "manifests": [{"mediaType": OCI_M, "digest": child_d, "size": size}],
        }))
        .unwrap()
    };
    for size in [0, child.len() - 1, child.len() + 1] {
        let (status, code, message) = error(put_manifest(&r, "multi", OCI_I, index(size)).await).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"), "{size}: {message}");
    }
    assert_eq!(put_manifest(&r, "multi", OCI_I, index(child.len())).await.status(), StatusCode::CREATED);
    r.stop();
}

#[tokio::test]
async fn manifests_are_strict_json() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cfg_d = push_blob(&r, "acme/web", config).await;
    let good =
        String::from_utf8(manifest(("application/vnd.oci.image.config.v1+json", cfg_d.as_str(), config.len()), &[]))
            .unwrap();
    // The same key twice: two readers could see two manifests under one digest.
    let twice = good.replacen("\"schemaVersion\":2", "\"schemaVersion\":2,\"schemaVersion\":2", 1);
    let shadowed = good.replacen(
        "\"layers\":[]",
        &format!("\"layers\":[],\"layers\":[{{\"mediaType\":\"{NONDIST}\",\"digest\":\"{}\",\"size\":1}}]", sha(b"?")),
        1,
    );
    for body in [twice, shadowed, format!("{good} trailing"), format!("{good}{good}")] {
        assert_ne!(body, good);
        let (status, code, message) = error(put_manifest(&r, "v1", OCI_M, body.into_bytes()).await).await;
        assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"), "{message}");
    }
    assert_eq!(put_manifest(&r, "v1", OCI_M, good.into_bytes()).await.status(), StatusCode::CREATED);
    r.stop();
}

#[tokio::test]
async fn abandoned_uploads_expire() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_millis(300);
    let storage = Storage::open(dir.path()).unwrap().with_upload_ttl(ttl);
    let r = TestRegistry::serve(storage.clone(), Arc::new(StaticToken(TOKEN.into()))).await;
    let start = || async {
        let resp = call(&r, Method::POST, "/v2/acme/web/blobs/uploads/").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        resp.headers()["location"].to_str().unwrap().to_owned()
    };
    let (kept, left) = (start().await, start().await);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Writing keeps an upload alive.
    let resp = call(&r, Method::PATCH, &kept).body(b"abc".to_vec()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Past the TTL without a write: unknown, on access.
    let (status, code, _) = error(call(&r, Method::GET, &left).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"));
    let resp = call(&r, Method::GET, &kept).send().await.unwrap();
    assert_eq!((resp.status(), resp.headers()["range"].to_str().unwrap()), (StatusCode::NO_CONTENT, "0-2"));
    // And swept without being asked about.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(storage.expire_uploads(SystemTime::now()).unwrap(), 1, "the other one was deleted on access");
    assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    // The default is a day.
    assert_eq!(vt_registry::DEFAULT_UPLOAD_TTL, Duration::from_secs(86_400));
    r.stop();
}
