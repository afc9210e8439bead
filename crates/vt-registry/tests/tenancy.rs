//! Per-repository authorization and blob ownership, over loopback, with [`common::OrgTokens`]:
//! `tok-a` owns `a/...`, `tok-b` owns `b/...`, `tok-a-ro` may only pull `a/...`.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{sha, OrgTokens, TestRegistry, UNAUTHENTICATED};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vt_registry::{Storage, LAYOUT_VERSION};

const OCI_M: &str = "application/vnd.oci.image.manifest.v1+json";

async fn start(dir: &Path) -> TestRegistry {
    TestRegistry::start_with(dir, Arc::new(OrgTokens)).await
}

/// `method url` with `token` as bearer (none when `None`).
async fn send(method: Method, url: String, token: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut rb = reqwest::Client::new().request(method, url).body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap()
}

/// Status, error code and message of an error answer.
async fn error(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    let e = &v["errors"][0];
    (status, e["code"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned())
}

/// Push `bytes` to `repo` monolithically as `token`; returns the digest.
async fn push_blob(r: &TestRegistry, token: &str, repo: &str, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let resp =
        send(Method::POST, format!("{}/v2/{repo}/blobs/uploads/?digest={d}", r.base), Some(token), bytes.to_vec())
            .await;
    assert_eq!(resp.status(), StatusCode::CREATED, "push {d} to {repo}");
    d
}

fn image_manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_M,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": layer.len() }],
    }))
    .unwrap()
}

async fn put_manifest(r: &TestRegistry, token: &str, repo: &str, tag: &str, manifest: &[u8]) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("{}/v2/{repo}/manifests/{tag}", r.base))
        .bearer_auth(token)
        .header("Content-Type", OCI_M)
        .body(manifest.to_vec())
        .send()
        .await
        .unwrap()
}

/// Push a config + layer image to `repo:tag` as `token`; returns (config, layer, manifest) digests.
async fn push_image(r: &TestRegistry, token: &str, repo: &str, tag: &str, seed: &str) -> (String, String, String) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#).into_bytes();
    let layer = format!("layer of {seed}").into_bytes();
    let c = push_blob(r, token, repo, &config).await;
    let l = push_blob(r, token, repo, &layer).await;
    let manifest = image_manifest(&config, &layer);
    let resp = put_manifest(r, token, repo, tag, &manifest).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "manifest of {repo}:{tag}");
    (c, l, sha(&manifest))
}

async fn status(r: &TestRegistry, method: Method, path: &str, token: &str) -> StatusCode {
    send(method, format!("{}{path}", r.base), Some(token), vec![]).await.status()
}

fn blob_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count()
}

#[tokio::test]
async fn unauthenticated_and_denied() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path()).await;
    // No credentials, and a token the authorizer does not know: 401 with its message and the challenge.
    for token in [None, Some("tok-wrong")] {
        for path in ["/v2/", "/v2/a/app/tags/list", "/v2/a/app/nowhere"] {
            let resp = send(Method::GET, format!("{}{path}", r.base), token, vec![]).await;
            assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"vt\"");
            assert_eq!(
                error(resp).await,
                (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into(), UNAUTHENTICATED.into()),
                "{path} with {token:?}"
            );
        }
    }
    // Basic auth with the token as password is the same token.
    let resp =
        reqwest::Client::new().get(format!("{}/v2/", r.base)).basic_auth("x", Some("tok-b")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Valid tokens: the version check, then the authorizer's answer per repository.
    assert_eq!(status(&r, Method::GET, "/v2/", "tok-b").await, StatusCode::OK);
    assert_eq!(status(&r, Method::GET, "/v2/", "tok-a-ro").await, StatusCode::OK);
    let resp = send(Method::POST, format!("{}/v2/a/app/blobs/uploads/", r.base), Some("tok-b"), vec![]).await;
    assert_eq!(error(resp).await, (StatusCode::FORBIDDEN, "DENIED".into(), "no access to repository a/app".into()));
    // A pull-only token may not push, nor look at uploads.
    let resp = send(Method::POST, format!("{}/v2/a/app/blobs/uploads/", r.base), Some("tok-a-ro"), vec![]).await;
    assert_eq!(error(resp).await, (StatusCode::FORBIDDEN, "DENIED".into(), "this token may only pull a/app".into()));
    let resp = send(Method::POST, format!("{}/v2/a/app/blobs/uploads/", r.base), Some("tok-a"), vec![]).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let upload = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(status(&r, Method::GET, &upload, "tok-a-ro").await, StatusCode::FORBIDDEN);
    assert_eq!(status(&r, Method::GET, &upload, "tok-a").await, StatusCode::NO_CONTENT);
    let resp = put_manifest(&r, "tok-a-ro", "a/app", "v1", b"{}").await;
    assert_eq!(error(resp).await.1, "DENIED");
    // Invalid names are refused before anyone is asked (the answer depends on the request alone);
    // unknown endpoints need valid credentials, then are 404.
    for token in [None, Some("tok-b")] {
        let resp = send(Method::GET, format!("{}/v2/A/app/tags/list", r.base), token, vec![]).await;
        assert_eq!(error(resp).await.1, "NAME_INVALID");
    }
    assert_eq!(status(&r, Method::GET, "/v2/a/app/nowhere", "tok-a").await, StatusCode::NOT_FOUND);
    r.stop();
}

#[tokio::test]
async fn other_orgs_are_denied_the_same_for_existing_and_missing_repos() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path()).await;
    let (config, layer, manifest) = push_image(&r, "tok-a", "a/app", "v1", "a").await;
    // The owner reads everything.
    for path in [
        format!("/v2/a/app/blobs/{config}"),
        format!("/v2/a/app/blobs/{layer}"),
        "/v2/a/app/manifests/v1".to_owned(),
        format!("/v2/a/app/manifests/{manifest}"),
        "/v2/a/app/tags/list".to_owned(),
    ] {
        assert_eq!(status(&r, Method::GET, &path, "tok-a").await, StatusCode::OK, "{path}");
        assert_eq!(status(&r, Method::GET, &path, "tok-a-ro").await, StatusCode::OK, "{path}");
    }
    // Another org: 403 with the authorizer's message, byte for byte the same for a repository
    // that does not exist, for blobs, manifests and tags, GET and HEAD.
    for (existing, missing) in [
        (format!("/v2/a/app/blobs/{layer}"), format!("/v2/a/nothing/blobs/{layer}")),
        (format!("/v2/a/app/blobs/{config}"), format!("/v2/a/nothing/blobs/{config}")),
        ("/v2/a/app/manifests/v1".to_owned(), "/v2/a/nothing/manifests/v1".to_owned()),
        (format!("/v2/a/app/manifests/{manifest}"), format!("/v2/a/nothing/manifests/{manifest}")),
        ("/v2/a/app/tags/list".to_owned(), "/v2/a/nothing/tags/list".to_owned()),
    ] {
        let seen = send(Method::GET, format!("{}{existing}", r.base), Some("tok-b"), vec![]).await;
        let seen_headers = seen.headers().clone();
        let seen = (seen.status(), seen.bytes().await.unwrap());
        let not = send(Method::GET, format!("{}{missing}", r.base), Some("tok-b"), vec![]).await;
        let not_headers = not.headers().clone();
        let not = (not.status(), not.bytes().await.unwrap());
        assert_eq!(seen.0, StatusCode::FORBIDDEN, "{existing}");
        let v: Value = serde_json::from_slice(&seen.1).unwrap();
        assert_eq!(v["errors"][0]["code"], "DENIED");
        assert_eq!(v["errors"][0]["message"], "no access to repository a/app");
        let expected = seen.1.as_ref().to_vec();
        let expected = String::from_utf8(expected).unwrap().replace("a/app", "a/nothing");
        assert_eq!((not.0, String::from_utf8(not.1.to_vec()).unwrap()), (seen.0, expected), "{missing}");
        for h in ["content-type", "www-authenticate", "docker-content-digest"] {
            assert_eq!(seen_headers.get(h), not_headers.get(h), "{h}");
        }
        for path in [&existing, &missing] {
            assert_eq!(status(&r, Method::HEAD, path, "tok-b").await, StatusCode::FORBIDDEN, "HEAD {path}");
        }
    }
    r.stop();
}

#[tokio::test]
async fn blobs_belong_to_the_repositories_they_were_pushed_to() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path()).await;
    let (_, secret, manifest) = push_image(&r, "tok-a", "a/app", "v1", "secret").await;
    let own = push_blob(&r, "tok-b", "b/app", b"b's own blob").await;
    assert_eq!(status(&r, Method::GET, &format!("/v2/b/app/blobs/{own}"), "tok-b").await, StatusCode::OK);
    // A digest learned elsewhere does not open a/app's blob (nor its manifest) through b/app.
    for d in [&secret, &manifest] {
        let resp = send(Method::GET, format!("{}/v2/b/app/blobs/{d}", r.base), Some("tok-b"), vec![]).await;
        assert_eq!(error(resp).await.1, "BLOB_UNKNOWN");
        assert_eq!(status(&r, Method::HEAD, &format!("/v2/b/app/blobs/{d}"), "tok-b").await, StatusCode::NOT_FOUND);
    }
    // Nor through another repository of a's own org it was not pushed to.
    assert_eq!(status(&r, Method::GET, &format!("/v2/a/other/blobs/{secret}"), "tok-a").await, StatusCode::NOT_FOUND);
    // A manifest of the repository may be read as one of its blobs.
    assert_eq!(status(&r, Method::GET, &format!("/v2/a/app/blobs/{manifest}"), "tok-a").await, StatusCode::OK);
    // Once b pushes the same bytes, b/app has the blob; the bytes are stored once.
    let files = blob_files(dir.path());
    assert_eq!(push_blob(&r, "tok-b", "b/app", b"layer of secret").await, secret);
    let resp = send(Method::GET, format!("{}/v2/b/app/blobs/{secret}", r.base), Some("tok-b"), vec![]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"layer of secret");
    assert_eq!(blob_files(dir.path()), files);
    assert!(dir.path().join("blobs/sha256").join(&secret[7..]).is_file());
    assert!(dir.path().join("repositories/a/app/_layers/sha256").join(&secret[7..]).is_file());
    assert!(dir.path().join("repositories/b/app/_layers/sha256").join(&secret[7..]).is_file());
    // A chunked upload links too.
    let resp = send(Method::POST, format!("{}/v2/b/app/blobs/uploads/", r.base), Some("tok-b"), vec![]).await;
    let url = format!("{}{}", r.base, resp.headers()["location"].to_str().unwrap());
    send(Method::PATCH, url.clone(), Some("tok-b"), b"chunked".to_vec()).await;
    let d = sha(b"chunked");
    assert_eq!(
        send(Method::PUT, format!("{url}?digest={d}"), Some("tok-b"), vec![]).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(status(&r, Method::HEAD, &format!("/v2/b/app/blobs/{d}"), "tok-b").await, StatusCode::OK);
    assert_eq!(status(&r, Method::HEAD, &format!("/v2/b/other/blobs/{d}"), "tok-b").await, StatusCode::NOT_FOUND);
    r.stop();
}

#[tokio::test]
async fn cross_repo_mount_needs_pull_on_from_and_the_blob_there() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path()).await;
    let (_, layer, _) = push_image(&r, "tok-a", "a/app", "v1", "mounted").await;
    let mount = |token: &'static str, into: &'static str, query: String| {
        let url = format!("{}/v2/{into}/blobs/uploads/?{query}", r.base);
        async move { send(Method::POST, url, Some(token), vec![]).await }
    };
    // b may not pull a/app: a normal upload starts instead (as for a missing repository or blob),
    // and the blob stays unreadable in b/app.
    for from in ["a/app", "a/nothing", "Not/Valid"] {
        let resp = mount("tok-b", "b/app", format!("mount={layer}&from={from}")).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "from {from}");
        assert!(resp.headers()["location"].to_str().unwrap().starts_with("/v2/b/app/blobs/uploads/"));
    }
    assert_eq!(mount("tok-b", "b/app", format!("mount={layer}")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(status(&r, Method::GET, &format!("/v2/b/app/blobs/{layer}"), "tok-b").await, StatusCode::NOT_FOUND);
    assert!(!dir.path().join("repositories/b/app/_layers/sha256").join(&layer[7..]).exists());
    // The fallback upload is a real one: the pusher can finish it.
    let resp = mount("tok-b", "b/app", format!("mount={layer}&from=a/app")).await;
    let url = format!("{}{}", r.base, resp.headers()["location"].to_str().unwrap());
    let resp = send(Method::PUT, format!("{url}?digest={layer}"), Some("tok-b"), b"layer of mounted".to_vec()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(status(&r, Method::GET, &format!("/v2/b/app/blobs/{layer}"), "tok-b").await, StatusCode::OK);
    // Into a repository the caller may not push: denied before anything else.
    let resp = mount("tok-b", "a/other", format!("mount={layer}&from=b/app")).await;
    assert_eq!(error(resp).await.1, "DENIED");
    // A blob that is not in `from` does not mount, even if it is stored for someone else.
    let only_b = push_blob(&r, "tok-b", "b/app", b"only in b").await;
    assert_eq!(mount("tok-a", "a/other", format!("mount={only_b}&from=a/app")).await.status(), StatusCode::ACCEPTED);
    // a mounts its own blob into another of its repositories: 201, readable there.
    let resp = mount("tok-a", "a/other", format!("mount={layer}&from=a/app")).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["location"], format!("/v2/a/other/blobs/{layer}").as_str());
    assert_eq!(resp.headers()["docker-content-digest"], layer.as_str());
    let resp = send(Method::GET, format!("{}/v2/a/other/blobs/{layer}", r.base), Some("tok-a"), vec![]).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"layer of mounted");
    // Now in a/other, it mounts there without `from` too; a pull-only token may not mount.
    assert_eq!(mount("tok-a", "a/other", format!("mount={layer}")).await.status(), StatusCode::CREATED);
    assert_eq!(error(mount("tok-a-ro", "a/third", format!("mount={layer}&from=a/app")).await).await.1, "DENIED");
    r.stop();
}

#[tokio::test]
async fn manifests_may_only_reference_blobs_of_their_repository() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path()).await;
    let (config, layer) = (br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), b"a layer".to_vec());
    push_blob(&r, "tok-a", "a/app", &config).await;
    push_blob(&r, "tok-a", "a/app", &layer).await;
    let manifest = image_manifest(&config, &layer);
    // In b/app, the blobs are a's: refused, naming the first missing digest.
    let resp = put_manifest(&r, "tok-b", "b/app", "v1", &manifest).await;
    let (status, code, message) = error(resp).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"));
    assert!(message.contains(&sha(&config)) && message.contains("b/app"), "{message}");
    // With only the config pushed to b/app, the layer is named.
    push_blob(&r, "tok-b", "b/app", &config).await;
    let resp = put_manifest(&r, "tok-b", "b/app", "v1", &manifest).await;
    let (_, code, message) = error(resp).await;
    assert_eq!(code, "MANIFEST_BLOB_UNKNOWN");
    assert!(message.contains(&sha(&layer)), "{message}");
    // The size check still applies.
    let wrong_size = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_M,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": 1 },
        "layers": [],
    }))
    .unwrap();
    assert_eq!(error(put_manifest(&r, "tok-b", "b/app", "v1", &wrong_size).await).await.1, "MANIFEST_INVALID");
    // The owner's repository accepts it; b once both blobs are its own.
    assert_eq!(put_manifest(&r, "tok-a", "a/app", "v1", &manifest).await.status(), StatusCode::CREATED);
    push_blob(&r, "tok-b", "b/app", &layer).await;
    assert_eq!(put_manifest(&r, "tok-b", "b/app", "v1", &manifest).await.status(), StatusCode::CREATED);
    r.stop();
}

#[tokio::test]
async fn migration_links_the_blobs_of_stored_images_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let r = start(root).await;
    let (c1, l1, _) = push_image(&r, "tok-a", "a/app", "v1", "one").await;
    let (c2, l2, _) = push_image(&r, "tok-a", "a/app/sub", "v1", "nested").await;
    let (cb, lb, _) = push_image(&r, "tok-b", "b/app", "v1", "b").await;
    // A blob pushed without a manifest, and an index (nothing to link for it).
    let loose = push_blob(&r, "tok-a", "a/app", b"loose blob").await;
    let (config, layer) = (br#"{"architecture":"amd64","os":"linux","seed":"one"}"#, b"layer of one");
    let m1 = image_manifest(config, layer);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{ "mediaType": OCI_M, "digest": sha(&m1), "size": m1.len() }],
    }))
    .unwrap();
    let resp = reqwest::Client::new()
        .put(format!("{}/v2/a/app/manifests/multi", r.base))
        .bearer_auth("tok-a")
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    r.stop();
    assert_eq!(std::fs::read_to_string(root.join("layout-version")).unwrap().trim(), LAYOUT_VERSION.to_string());

    // Make it a layout 1 store: no links, no marker.
    let remove_links = || {
        for repo in ["a/app", "a/app/sub", "b/app"] {
            std::fs::remove_dir_all(root.join("repositories").join(repo).join("_layers")).unwrap();
        }
    };
    remove_links();
    std::fs::remove_file(root.join("layout-version")).unwrap();
    let blobs = blob_files(root);

    // Opening migrates: each image's blobs are readable through its own repository only.
    let r = start(root).await;
    assert_eq!(std::fs::read_to_string(root.join("layout-version")).unwrap(), format!("{LAYOUT_VERSION}\n"));
    for (token, repo, d) in [("tok-a", "a/app", &c1), ("tok-a", "a/app", &l1), ("tok-a", "a/app/sub", &c2)] {
        assert_eq!(
            status(&r, Method::GET, &format!("/v2/{repo}/blobs/{d}"), token).await,
            StatusCode::OK,
            "{repo} {d}"
        );
    }
    for (token, repo, d) in [("tok-a", "a/app/sub", &l2), ("tok-b", "b/app", &cb), ("tok-b", "b/app", &lb)] {
        assert_eq!(
            status(&r, Method::GET, &format!("/v2/{repo}/blobs/{d}"), token).await,
            StatusCode::OK,
            "{repo} {d}"
        );
    }
    for (token, repo, d) in [("tok-a", "a/app", &l2), ("tok-a", "a/app/sub", &l1), ("tok-b", "b/app", &l1)] {
        let path = format!("/v2/{repo}/blobs/{d}");
        assert_eq!(status(&r, Method::GET, &path, token).await, StatusCode::NOT_FOUND, "{path}");
    }
    // A blob no stored manifest references stays unlinked (its pusher pushes it again).
    assert_eq!(status(&r, Method::GET, &format!("/v2/a/app/blobs/{loose}"), "tok-a").await, StatusCode::NOT_FOUND);
    // Manifests and tags are as they were; no blob was copied.
    assert_eq!(status(&r, Method::GET, "/v2/a/app/manifests/multi", "tok-a").await, StatusCode::OK);
    assert_eq!(blob_files(root), blobs);
    r.stop();

    // A second open does nothing: with the marker present, removed links stay removed.
    remove_links();
    drop(Storage::open(root).unwrap());
    assert!(!root.join("repositories/a/app/_layers").exists());
    let st = Storage::open(root).unwrap();
    assert_eq!(st.blob_size_in("a/app", &c1.parse().unwrap()).unwrap(), None);

    // A marker from a newer layout is refused with what to do; an unreadable one too.
    std::fs::write(root.join("layout-version"), "3\n").unwrap();
    let e = Storage::open(root).unwrap_err().to_string();
    assert!(e.contains("layout 3 is newer") && e.contains("run a newer vt"), "{e}");
    std::fs::write(root.join("layout-version"), "two").unwrap();
    let e = Storage::open(root).unwrap_err().to_string();
    assert!(e.contains("expected layout version 2") && e.contains("remove the file"), "{e}");
}
