//! The built-in registry mounted at `/v2/`, and releases created from its tags.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

fn sha(b: &[u8]) -> String {
    vt_image::Digest::of(b).to_string()
}

const OCI_M: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_I: &str = "application/vnd.oci.image.index.v1+json";

async fn push_blob(s: &TestServer, bytes: &[u8]) {
    let r = s
        .http
        .post(s.url(&format!("/v2/acme/web/blobs/uploads/?digest={}", sha(bytes))))
        .bearer_auth(&s.token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn put_manifest(s: &TestServer, reference: &str, media_type: &str, body: &[u8]) {
    let r = s
        .http
        .put(s.url(&format!("/v2/acme/web/manifests/{reference}")))
        .bearer_auth(&s.token)
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn registry_uses_api_tokens_and_releases_resolve_tags() {
    let s = TestServer::start().await;
    s.post("/v1/orgs", json!({"name": "acme"})).await;
    s.post("/v1/orgs/acme/apps", json!({"name": "web"})).await;
    // Auth: 401 with a challenge; admin token as bearer or basic password.
    let r = s.http.get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(s.http.get(s.url("/v2/")).bearer_auth(&s.token).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        s.http.get(s.url("/v2/")).basic_auth("vt", Some(&s.token)).send().await.unwrap().status(),
        StatusCode::OK
    );
    // A node token passes the version check but cannot push.
    let node = s.issue(json!({"name": "agent", "role": "node", "node": "n1"})).await;
    assert_eq!(s.http.get(s.url("/v2/")).bearer_auth(&node).send().await.unwrap().status(), StatusCode::OK);
    let r = s.http.post(s.url("/v2/acme/web/blobs/uploads/")).bearer_auth(&node).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Push an image (tag v1) and an index over it (tag multi).
    let (config, layer) = (br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), b"layer".to_vec());
    push_blob(&s, &config).await;
    push_blob(&s, &layer).await;
    let image = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_M,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&layer), "size": layer.len() }],
    }))
    .unwrap();
    put_manifest(&s, "v1", OCI_M, &image).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_I,
        "manifests": [{ "mediaType": OCI_M, "digest": sha(&image), "size": image.len(), "platform": { "architecture": "amd64", "os": "linux" } }],
    }))
    .unwrap();
    put_manifest(&s, "multi", OCI_I, &index).await;

    // By tag: pinned, and the resolution recorded.
    let rel = s.post("/v1/orgs/acme/apps/web/releases", json!({"image": "acme/web:v1", "manifest": manifest()})).await;
    assert_eq!(rel.status, StatusCode::CREATED, "{}", rel.body);
    assert_eq!(rel.body["image_ref"], format!("acme/web@{}", sha(&image)));
    assert_eq!(rel.body["image_digest"], sha(&image));
    assert_eq!(rel.body["resolved_from"], "acme/web:v1");
    // An index: image_ref pins the index, image_digest is its linux/amd64 manifest.
    let rel =
        s.post("/v1/orgs/acme/apps/web/releases", json!({"image": "acme/web:multi", "manifest": manifest()})).await;
    assert_eq!(rel.status, StatusCode::CREATED, "{}", rel.body);
    assert_eq!(rel.body["image_ref"], format!("acme/web@{}", sha(&index)));
    assert_eq!(rel.body["image_digest"], sha(&image));
    assert_eq!(rel.body["resolved_from"], "acme/web:multi");
    // The same index by digest.
    let rel = s
        .post(
            "/v1/orgs/acme/apps/web/releases",
            json!({"image": format!("acme/web@{}", sha(&index)), "manifest": manifest()}),
        )
        .await;
    assert_eq!(rel.body["image_digest"], sha(&image));
    assert_eq!(rel.body["resolved_from"], serde_json::Value::Null);
    // Unknown tags and repositories: 422 naming `image`.
    for image in ["acme/web:v9", "acme/web", "acme/nothing:v1"] {
        let r = s.post("/v1/orgs/acme/apps/web/releases", json!({"image": image, "manifest": manifest()})).await;
        assert_eq!(
            (r.status, r.error_code(), r.error_field()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "image"),
            "{image}: {}",
            r.body
        );
    }
    // The events record the resolution.
    let events = s.get("/v1/events?limit=1000").await.body.to_string();
    assert!(events.contains("\"resolved_from\":\"acme/web:v1\""), "{events}");
}

/// The registry's answer to `token` for `method path`: status and the spec's error code.
async fn reg(s: &TestServer, token: &str, method: reqwest::Method, path: &str) -> (StatusCode, String) {
    let r = s.http.request(method, s.url(path)).bearer_auth(token).send().await.unwrap();
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (status, body["errors"][0]["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn registry_access_follows_orgs_and_nodes() {
    use reqwest::Method;
    let s = TestServer::start().await;
    for org in ["acme", "other"] {
        s.post("/v1/orgs", json!({"name": org})).await;
    }
    s.post("/v1/orgs/acme/apps", json!({"name": "web"})).await;
    s.post("/v1/orgs/acme/apps/web/envs", json!({"name": "prod"})).await;
    let deployer = s.issue(json!({"name": "ci", "role": "deployer", "org": "acme"})).await;
    let viewer = s.issue(json!({"name": "eyes", "role": "viewer", "org": "acme"})).await;
    let stranger = s.issue(json!({"name": "them", "role": "owner", "org": "other"})).await;
    let node = s.issue(json!({"name": "agent", "role": "node", "node": "n1"})).await;

    // The org's deployer pushes an image into the org's repository.
    let (config, layer) = (br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), b"layer".to_vec());
    for b in [&config, &layer] {
        let r = s
            .http
            .post(s.url(&format!("/v2/acme/web/blobs/uploads/?digest={}", sha(b))))
            .bearer_auth(&deployer)
            .body(b.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let image = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_M,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&layer), "size": layer.len() }],
    }))
    .unwrap();
    let r = s
        .http
        .put(s.url("/v2/acme/web/manifests/v1"))
        .bearer_auth(&deployer)
        .header("content-type", OCI_M)
        .body(image.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest_path = format!("/v2/acme/web/manifests/{}", sha(&image));
    let blob_path = format!("/v2/acme/web/blobs/{}", sha(&layer));

    // Its viewer pulls and cannot push; the deployer cannot push to another org's namespace.
    assert_eq!(reg(&s, &viewer, Method::GET, &manifest_path).await.0, StatusCode::OK);
    assert_eq!(
        reg(&s, &viewer, Method::POST, "/v2/acme/web/blobs/uploads/").await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    assert_eq!(
        reg(&s, &deployer, Method::POST, "/v2/other/web/blobs/uploads/").await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );
    // Another org's token learns nothing: the same answer for what exists and what does not.
    let denied = (StatusCode::FORBIDDEN, "DENIED".to_owned());
    for path in
        [&manifest_path, &blob_path, &"/v2/acme/nothing/manifests/v1".to_owned(), &"/v2/nope/web/tags/list".to_owned()]
    {
        assert_eq!(reg(&s, &stranger, Method::GET, path).await, denied, "{path}");
    }
    // A node pulls only images of instances placed on it.
    assert_eq!(reg(&s, &node, Method::GET, &manifest_path).await, denied);
    let register = json!({"name": "n1", "capacity": {"cpu_millis": 4000, "memory_mib": 4096}}).to_string();
    let r = s.call_as(Some(&node), Method::POST, "/v1/nodes", Some(&register), &[]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rel = s.post("/v1/orgs/acme/apps/web/releases", json!({"image": "acme/web:v1", "manifest": manifest()})).await;
    let dep = s.post("/v1/orgs/acme/apps/web/envs/prod/deploys", json!({"release_id": rel.body["id"]})).await;
    assert_eq!(dep.status, StatusCode::CREATED, "{}", dep.body);
    until(&s, "/v1/orgs/acme/apps/web/envs/prod/instances", "an instance on n1", |b| {
        !b["items"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(reg(&s, &node, Method::GET, &manifest_path).await.0, StatusCode::OK);
    assert_eq!(reg(&s, &node, Method::GET, &blob_path).await.0, StatusCode::OK);
    assert_eq!(reg(&s, &node, Method::POST, "/v2/acme/web/blobs/uploads/").await, denied);
    // A release cannot name another org's image (its nodes would pull it).
    let r = s.post("/v1/orgs/other/apps", json!({"name": "thief"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = s
        .post(
            "/v1/orgs/other/apps/thief/releases",
            json!({"image": format!("acme/web@{}", sha(&image)), "manifest": manifest()}),
        )
        .await;
    assert_eq!((r.status, r.error_field()), (StatusCode::UNPROCESSABLE_ENTITY, "image"), "{}", r.body);
}
