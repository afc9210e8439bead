//! The registry's HTTP API, exercised over loopback.

mod common;

use common::{image_manifest, sha, TestRegistry, TOKEN};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

fn client() -> Client {
    Client::new()
}

async fn req(c: &Client, m: Method, url: String) -> reqwest::RequestBuilder {
    c.request(m, url).bearer_auth(TOKEN)
}

async fn code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    (status, v["errors"][0]["code"].as_str().unwrap().to_owned())
}

/// Push `bytes` monolithically; returns the digest.
async fn push_blob(r: &TestRegistry, repo: &str, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let resp = req(&client(), Method::POST, format!("{}/v2/{repo}/blobs/uploads/?digest={d}", r.base))
        .await
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["docker-content-digest"], d.as_str());
    assert_eq!(resp.headers()["location"], format!("/v2/{repo}/blobs/{d}").as_str());
    d
}

#[tokio::test]
async fn version_check_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    let c = client();
    let resp = c.get(format!("{}/v2/", r.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic realm="));
    assert_eq!(code(resp).await.1, "UNAUTHORIZED");
    let resp = c.get(format!("{}/v2/", r.base)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = c.get(format!("{}/v2/", r.base)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["docker-distribution-api-version"], "registry/2.0");
    // Basic auth: any user name, the token as password.
    let resp = c.get(format!("{}/v2/", r.base)).basic_auth("anyone", Some(TOKEN)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = c.get(format!("{}/v2", r.base)).basic_auth("anyone", Some(TOKEN)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = c.get(format!("{}/v2/", r.base)).basic_auth("anyone", Some("wrong")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Every endpoint needs auth.
    let resp = c.get(format!("{}/v2/acme/web/tags/list", r.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    r.stop();
}

#[tokio::test]
async fn monolithic_upload_and_blob_reads() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    let c = client();
    let d = push_blob(&r, "acme/web", b"hello blob").await;
    let resp = req(&c, Method::HEAD, format!("{}/v2/acme/web/blobs/{d}", r.base)).await.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "10");
    assert_eq!(resp.headers()["docker-content-digest"], d.as_str());
    let resp = req(&c, Method::GET, format!("{}/v2/acme/web/blobs/{d}", r.base)).await.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"hello blob");
    // Stored content-addressed under blobs/sha256/<hex>; no uploads left.
    assert!(dir.path().join("blobs/sha256").join(&d[7..]).is_file());
    assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    // Cross-repository mount of a blob of `from`: 201 at once, and the blob is readable there; of
    // an unknown one, or without `from`: 202 upload.
    let resp = req(&c, Method::POST, format!("{}/v2/other/repo/blobs/uploads/?mount={d}&from=acme/web", r.base))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["location"], format!("/v2/other/repo/blobs/{d}").as_str());
    let resp = req(&c, Method::GET, format!("{}/v2/other/repo/blobs/{d}", r.base)).await.send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"hello blob");
    let resp =
        req(&c, Method::POST, format!("{}/v2/third/repo/blobs/uploads/?mount={d}", r.base)).await.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // Without `from`, a blob already in the repository mounts.
    let resp =
        req(&c, Method::POST, format!("{}/v2/other/repo/blobs/uploads/?mount={d}", r.base)).await.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let unknown = sha(b"unknown");
    let resp = req(&c, Method::POST, format!("{}/v2/other/repo/blobs/uploads/?mount={unknown}&from=acme/web", r.base))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // Unknown blob.
    let resp = req(&c, Method::GET, format!("{}/v2/acme/web/blobs/{unknown}", r.base)).await.send().await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
    let resp = req(&c, Method::HEAD, format!("{}/v2/acme/web/blobs/{unknown}", r.base)).await.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Bad names and digests.
    let resp = req(&c, Method::GET, format!("{}/v2/Acme/blobs/{unknown}", r.base)).await.send().await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::BAD_REQUEST, "NAME_INVALID".into()));
    let resp = req(&c, Method::GET, format!("{}/v2/acme/blobs/sha256:abc", r.base)).await.send().await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    r.stop();
}

#[tokio::test]
async fn chunked_upload_in_order_and_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    let c = client();
    let resp = req(&c, Method::POST, format!("{}/v2/acme/web/blobs/uploads/", r.base)).await.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    let uuid = resp.headers()["docker-upload-uuid"].to_str().unwrap().to_owned();
    assert_eq!(loc, format!("/v2/acme/web/blobs/uploads/{uuid}"));
    assert_eq!(resp.headers()["range"], "0-0");
    let url = format!("{}{loc}", r.base);
    let resp =
        req(&c, Method::PATCH, url.clone()).await.header("Content-Range", "0-4").body("01234").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["range"], "0-4");
    // Out of order: 416 and the current range.
    let resp =
        req(&c, Method::PATCH, url.clone()).await.header("Content-Range", "10-14").body("abcde").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(resp.headers()["range"], "0-4");
    // A length that disagrees with Content-Range is refused and leaves the upload as it was.
    let resp =
        req(&c, Method::PATCH, url.clone()).await.header("Content-Range", "5-9").body("56").send().await.unwrap();
    assert_eq!(code(resp).await.1, "SIZE_INVALID");
    // Status.
    let resp = req(&c, Method::GET, url.clone()).await.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.headers()["range"], "0-4");
    // Streamed chunk without Content-Range, then the last chunk with the PUT.
    let resp = req(&c, Method::PATCH, url.clone()).await.body("56789").send().await.unwrap();
    assert_eq!(resp.headers()["range"], "0-9");
    let d = sha(b"0123456789ab");
    let resp = req(&c, Method::PUT, format!("{url}?digest={d}"))
        .await
        .header("Content-Range", "10-11")
        .body("ab")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["docker-content-digest"], d.as_str());
    let resp = req(&c, Method::GET, format!("{}/v2/acme/web/blobs/{d}", r.base)).await.send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"0123456789ab");
    // The upload is gone.
    let resp = req(&c, Method::PATCH, url.clone()).await.body("x").send().await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
    // Cancel an upload.
    let resp = req(&c, Method::POST, format!("{}/v2/acme/web/blobs/uploads/", r.base)).await.send().await.unwrap();
    let url = format!("{}{}", r.base, resp.headers()["location"].to_str().unwrap());
    assert_eq!(req(&c, Method::DELETE, url.clone()).await.send().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(code(req(&c, Method::DELETE, url).await.send().await.unwrap()).await.1, "BLOB_UPLOAD_UNKNOWN");
    // An upload is bound to its repository.
    let resp = req(&c, Method::POST, format!("{}/v2/acme/web/blobs/uploads/", r.base)).await.send().await.unwrap();
    let uuid = resp.headers()["docker-upload-uuid"].to_str().unwrap().to_owned();
    let resp = req(&c, Method::PATCH, format!("{}/v2/acme/other/blobs/uploads/{uuid}", r.base))
        .await
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(code(resp).await.1, "BLOB_UPLOAD_UNKNOWN");
    r.stop();
}

#[tokio::test]
async fn digest_mismatch_never_becomes_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    let c = client();
    let claimed = sha(b"what the client claims");
    let resp = req(&c, Method::POST, format!("{}/v2/acme/web/blobs/uploads/", r.base)).await.send().await.unwrap();
    let url = format!("{}{}", r.base, resp.headers()["location"].to_str().unwrap());
    req(&c, Method::PATCH, url.clone()).await.body("other bytes").send().await.unwrap();
    let resp = req(&c, Method::PUT, format!("{url}?digest={claimed}")).await.send().await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    // Monolithic too.
    let resp = req(&c, Method::POST, format!("{}/v2/acme/web/blobs/uploads/?digest={claimed}", r.base))
        .await
        .body("more bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(code(resp).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    for d in [claimed, sha(b"other bytes"), sha(b"more bytes")] {
        let resp = req(&c, Method::HEAD, format!("{}/v2/acme/web/blobs/{d}", r.base)).await.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(std::fs::read_dir(dir.path().join("blobs/sha256")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(dir.path().join("uploads")).unwrap().count(), 0);
    r.stop();
}

#[tokio::test]
async fn manifests_tags_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let r = TestRegistry::start(dir.path()).await;
    let c = client();
    let (config, layer) = (br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), b"layer bytes".to_vec());
    let manifest = image_manifest(&config, &layer);
    let md = sha(&manifest);
    let put = |reference: String, body: Vec<u8>, ct: &'static str| {
        let c = c.clone();
        let url = format!("{}/v2/acme/web/manifests/{reference}", r.base);
        async move { c.put(url).bearer_auth(TOKEN).header("Content-Type", ct).body(body).send().await.unwrap() }
    };
    const OCI_M: &str = "application/vnd.oci.image.manifest.v1+json";
    const OCI_I: &str = "application/vnd.oci.image.index.v1+json";
    // Blobs missing: refused.
    let resp = put("v1".into(), manifest.clone(), OCI_M).await;
    assert_eq!(code(resp).await, (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into()));
    push_blob(&r, "acme/web", &config).await;
    let resp = put("v1".into(), manifest.clone(), OCI_M).await;
    assert_eq!(code(resp).await.1, "MANIFEST_BLOB_UNKNOWN");
    push_blob(&r, "acme/web", &layer).await;
    // Invalid manifests.
    assert_eq!(code(put("v1".into(), b"not json".to_vec(), OCI_M).await).await.1, "MANIFEST_INVALID");
    assert_eq!(code(put("v1".into(), manifest.clone(), OCI_I).await).await.1, "MANIFEST_INVALID");
    assert_eq!(code(put(sha(b"x"), manifest.clone(), OCI_M).await).await.1, "DIGEST_INVALID");
    // Good: by tag.
    let resp = put("v1".into(), manifest.clone(), OCI_M).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["docker-content-digest"], md.as_str());
    assert_eq!(resp.headers()["location"], format!("/v2/acme/web/manifests/{md}").as_str());
    for reference in ["v1".to_owned(), md.clone()] {
        let resp =
            req(&c, Method::GET, format!("{}/v2/acme/web/manifests/{reference}", r.base)).await.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], OCI_M);
        assert_eq!(resp.headers()["docker-content-digest"], md.as_str());
        assert_eq!(resp.bytes().await.unwrap().to_vec(), manifest);
        let resp =
            req(&c, Method::HEAD, format!("{}/v2/acme/web/manifests/{reference}", r.base)).await.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-length"], manifest.len().to_string().as_str());
    }
    // An index over it (Docker list too), by digest and by tag.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_I,
        "manifests": [{ "mediaType": OCI_M, "digest": md, "size": manifest.len(), "platform": { "architecture": "amd64", "os": "linux" } }],
    }))
    .unwrap();
    let resp = put(sha(&index), index.clone(), OCI_I).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(put("multi".into(), index.clone(), OCI_I).await.status(), StatusCode::CREATED);
    let bad_index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_I,
        "manifests": [{ "mediaType": OCI_M, "digest": sha(b"nothing"), "size": 7 }],
    }))
    .unwrap();
    assert_eq!(code(put("bad".into(), bad_index, OCI_I).await).await.1, "MANIFEST_BLOB_UNKNOWN");
    // Unknown manifests and repositories.
    let resp = req(&c, Method::GET, format!("{}/v2/acme/web/manifests/v9", r.base)).await.send().await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
    let resp = req(&c, Method::GET, format!("{}/v2/acme/nothing/tags/list", r.base)).await.send().await.unwrap();
    assert_eq!(code(resp).await, (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into()));
    // Tags.
    let tags: Value = req(&c, Method::GET, format!("{}/v2/acme/web/tags/list", r.base))
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags, json!({ "name": "acme/web", "tags": ["multi", "v1"] }));
    let tags: Value = req(&c, Method::GET, format!("{}/v2/acme/web/tags/list?n=1&last=multi", r.base))
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));
    // Re-tag v1 atomically to the index.
    assert_eq!(put("v1".into(), index.clone(), OCI_I).await.status(), StatusCode::CREATED);
    r.stop();
    // Restart on the same directory: tags survive.
    let r = TestRegistry::start(dir.path()).await;
    let resp = req(&c, Method::GET, format!("{}/v2/acme/web/manifests/v1", r.base)).await.send().await.unwrap();
    assert_eq!(resp.headers()["docker-content-digest"], sha(&index).as_str());
    assert_eq!(resp.headers()["content-type"], OCI_I);
    let tags: Value = req(&c, Method::GET, format!("{}/v2/acme/web/tags/list", r.base))
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!(["multi", "v1"]));
    r.stop();
}
