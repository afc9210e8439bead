//! Uploads bounded by the disk budget and the namespace quota, and garbage
//! collection of unreferenced blobs, over loopback against real files.

mod common;

use std::time::{Duration, SystemTime};

use common::{image_manifest, sha, TestRegistry, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use vt_disk::{DiskBudget, Reserve};
use vt_registry::{Limits, StaticToken, Storage};

async fn send(base: &str, m: Method, path: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new().request(m, format!("{base}{path}")).bearer_auth(TOKEN).body(body).send().await.unwrap()
}

async fn error(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: {e}: {text:?}"));
    let e = &v["errors"][0];
    (status, e["code"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned())
}

/// Monolithic push of `bytes` to `repo`: the response.
async fn push(base: &str, repo: &str, bytes: &[u8]) -> reqwest::Response {
    send(base, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={}", sha(bytes)), bytes.to_vec()).await
}

/// Files under `dir`, recursively (what a refused upload must not leave).
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_namespace_quota_refuses_the_push_that_exceeds_it_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { namespace_quota: Some(100_000), ..Default::default() };
    let storage = Storage::open(dir.path()).unwrap().with_limits(limits);
    let r = TestRegistry::serve(storage, std::sync::Arc::new(StaticToken(TOKEN.into()))).await;
    assert_eq!(push(&r.base, "acme/web", &[1u8; 60_000]).await.status(), StatusCode::CREATED);
    let before = files(dir.path());
    // 60,000 + 50,000 > 100,000: refused, and nothing of it stays.
    let (status, code, message) = error(push(&r.base, "acme/api", &[2u8; 50_000]).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"), "{message}");
    assert!(message.contains("quota of `acme` is 97.7 KiB") && message.contains("hold 58.6 KiB"), "{message}");
    assert!(message.contains("--registry-quota-gib"), "{message}");
    assert_eq!(files(dir.path()), before, "a refused upload leaves nothing");
    // A chunked upload without a length is cut where it passes the quota.
    let resp = send(&r.base, Method::POST, "/v2/acme/api/blobs/uploads/", vec![]).await;
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(vec![3u8; 10_000])),
    ));
    let resp = reqwest::Client::new()
        .patch(format!("{}{location}", r.base))
        .bearer_auth(TOKEN)
        .body(chunked)
        .send()
        .await
        .unwrap();
    let (status, _, message) = error(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{message}");
    assert_eq!(files(dir.path()), before, "the cut upload is gone");
    // Another namespace has its own quota.
    assert_eq!(push(&r.base, "other/web", &[2u8; 50_000]).await.status(), StatusCode::CREATED);
    // A blob already in the namespace counts once.
    assert_eq!(push(&r.base, "acme/api", &[4u8; 30_000]).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_disk_budget_refuses_an_upload_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let probe = DiskBudget::new(dir.path(), Reserve::Bytes(0), "n1");
    let free = probe.available().unwrap();
    // Keep all but 1 MiB free: a 4 MiB upload cannot fit.
    let budget = DiskBudget::new(dir.path(), Reserve::Bytes(free - (1 << 20)), "n1");
    let storage = Storage::open(dir.path()).unwrap().with_limits(Limits { budget: Some(budget), ..Default::default() });
    let r = TestRegistry::serve(storage, std::sync::Arc::new(StaticToken(TOKEN.into()))).await;
    let before = files(dir.path());
    let (status, code, message) = error(push(&r.base, "acme/web", &vec![7u8; 4 << 20]).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::INSUFFICIENT_STORAGE, "DENIED"), "{message}");
    assert!(message.starts_with("an upload to acme/web needs 4 MiB, "), "{message}");
    assert!(message.contains("free on node n1"), "{message}");
    assert_eq!(files(dir.path()), before);
    assert_eq!(push(&r.base, "acme/web", b"small").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn gc_removes_unreferenced_blobs_and_keeps_referenced_ones() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let r = TestRegistry::serve(storage.clone(), std::sync::Arc::new(StaticToken(TOKEN.into()))).await;
    let (config, layer, orphan, kept) = (b"{}".to_vec(), b"layer".to_vec(), b"orphan".to_vec(), b"release".to_vec());
    for b in [&config, &layer, &orphan, &kept] {
        assert_eq!(push(&r.base, "acme/web", b).await.status(), StatusCode::CREATED);
    }
    let resp = reqwest::Client::new()
        .put(format!("{}/v2/acme/web/manifests/v1", r.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(image_manifest(&config, &layer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let blob = |b: &[u8]| dir.path().join("blobs/sha256").join(&sha(b)[7..]);
    // Within the grace period nothing goes (a push in progress uploads layers first).
    let report = storage.gc(&[], Duration::from_secs(3600), SystemTime::now()).unwrap();
    assert_eq!((report.blobs_removed, report.blobs_kept), (0, 5));
    // Past it, the orphan goes; the manifest, its config and layer, and what the caller keeps stay.
    let later = SystemTime::now() + Duration::from_secs(7200);
    let keep = [sha(&kept).parse().unwrap()];
    let report = storage.gc(&keep, Duration::from_secs(3600), later).unwrap();
    assert_eq!((report.blobs_removed, report.bytes_freed, report.blobs_kept), (1, orphan.len() as u64, 4));
    assert!(!blob(&orphan).exists() && blob(&layer).exists() && blob(&config).exists() && blob(&kept).exists());
    assert!(!dir.path().join("repositories/acme/web/_layers/sha256").join(&sha(&orphan)[7..]).exists());
    let resp = send(&r.base, Method::GET, &format!("/v2/acme/web/blobs/{}", sha(&orphan)), vec![]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = send(&r.base, Method::GET, "/v2/acme/web/manifests/v1", vec![]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Idempotent.
    let report = storage.gc(&keep, Duration::from_secs(3600), later).unwrap();
    assert_eq!((report.blobs_removed, report.blobs_kept), (0, 4));
}

/// Two storages on one directory (control planes sharing a registry): gc on one waits for a
/// write referencing blobs on the other, and opening one leaves the other's files in progress
/// in `tmp/` alone.
#[test]
fn storages_sharing_a_directory_stay_out_of_each_others_way() {
    let dir = tempfile::tempdir().unwrap();
    let one = Storage::open(dir.path()).unwrap();
    let other = Storage::at(dir.path());

    let held = one.referencing();
    let (tx, rx) = std::sync::mpsc::channel();
    let collector = std::thread::spawn(move || {
        let report = other.gc(&[], Duration::from_secs(3600), SystemTime::now()).unwrap();
        tx.send(report.blobs_removed).unwrap();
        other
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "gc waits while another storage references");
    drop(held);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 0);
    let other = collector.join().unwrap();

    drop(other);

    // A file another process is writing survives an open; one a crash left an hour ago does not.
    let (young, old) = (dir.path().join("tmp/young"), dir.path().join("tmp/old"));
    std::fs::write(&young, b"in progress").unwrap();
    std::fs::write(&old, b"left by a crash").unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3700);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(hour_ago).unwrap();
    Storage::open(dir.path()).unwrap();
    assert!(young.exists() && !old.exists());
}
