//! Standard clients against the registry: Debian's `skopeo` pushes and pulls an OCI layout, and
//! vt-image's `RegistrySource` pulls an image and builds its root disk.
//!
//! Needs `busybox-static`, `skopeo`, `e2fsprogs`. Without skopeo the skopeo test is skipped with
//! a message, except under `CI=true`, where it fails.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use common::{OrgTokens, TestRegistry, TOKEN};
use vt_image::layout::{write_image, LayerFormat, LayoutWriter};
use vt_image::oci::{ImageIndex, RuntimeConfig};
use vt_image::{Digest, ImageStore, OciLayoutSource, RegistrySource, StoreOptions};

/// A busybox image in an OCI layout at `out`, listed in index.json as `latest`.
fn busybox_layout(out: &Path) -> Digest {
    let root = tempfile::tempdir().unwrap();
    vt_image::testing::busybox_rootfs(root.path()).unwrap();
    let rc = RuntimeConfig { cmd: Some(vec!["/bin/sh".into()]), ..Default::default() };
    let img = write_image(root.path(), out, rc, LayerFormat::default()).unwrap();
    let mut desc = img.manifest.clone();
    desc.annotations.insert("org.opencontainers.image.ref.name".into(), "latest".into());
    LayoutWriter::create(out).unwrap().write_index(&[desc]).unwrap();
    img.manifest.digest
}

/// Names of the files in `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}

/// Blobs of an OCI layout (or of the registry's storage).
fn blob_names(layout: &Path) -> BTreeSet<String> {
    names(&layout.join("blobs/sha256"))
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Whether skopeo is there; without it the test is skipped with a message, or fails under `CI=true`.
fn skopeo_or_skip(test: &str) -> bool {
    if have("skopeo") {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("skopeo is not installed (apt-get install -y skopeo); CI=true requires it");
    }
    eprintln!("SKIPPED {test}: skopeo is not installed (apt-get install -y skopeo)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_round_trip_keeps_digests() {
    if !skopeo_or_skip("skopeo_round_trip_keeps_digests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let manifest = busybox_layout(&layout);
    let r = TestRegistry::start(&dir.path().join("registry")).await;
    let addr = r.addr;
    let (src, back) = (layout.clone(), dir.path().join("back"));
    let back2 = back.clone();
    let out = tokio::task::spawn_blocking(move || {
        let creds = format!("x:{TOKEN}");
        let push = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", &creds])
            .arg(format!("oci:{}:latest", src.display()))
            .arg(format!("docker://{addr}/acme/web:v1"))
            .output()
            .unwrap();
        assert!(push.status.success(), "skopeo push failed: {}", String::from_utf8_lossy(&push.stderr));
        let pull = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(format!("docker://{addr}/acme/web:v1"))
            .arg(format!("oci:{}:v1", back2.display()))
            .output()
            .unwrap();
        assert!(pull.status.success(), "skopeo pull failed: {}", String::from_utf8_lossy(&pull.stderr));
        Command::new("skopeo")
            .args(["--insecure-policy", "inspect", "--raw", "--tls-verify=false", "--creds", &creds])
            .arg(format!("docker://{addr}/acme/web:v1"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "skopeo inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(Digest::of(&out.stdout), manifest, "the registry serves the manifest byte for byte");
    let index: ImageIndex = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests.len(), 1);
    assert_eq!(index.manifests[0].digest, manifest);
    assert_eq!(blob_names(&back), blob_names(&layout));
    r.stop();
}

/// `skopeo --insecure-policy <args>` against a plain-HTTP registry.
fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").arg("--insecure-policy").args(args).output().unwrap()
}

/// Two orgs push the same image with skopeo. When b pushes, skopeo's blob info cache says the
/// blobs are in a/app on this registry; it looks for them there (403 for b) and uploads them
/// instead, and b's copy is whole. When a pushes it again to a/other, skopeo mounts them from
/// a/app. b cannot read a's repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_of_one_image_by_two_orgs() {
    if !skopeo_or_skip("skopeo_pushes_of_one_image_by_two_orgs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let manifest = busybox_layout(&layout);
    let registry = dir.path().join("registry");
    let r = TestRegistry::start_with(&registry, Arc::new(OrgTokens)).await;
    let addr = r.addr;
    let (src, back) = (layout.clone(), dir.path().join("back"));
    let back2 = back.clone();
    tokio::task::spawn_blocking(move || {
        let from = format!("oci:{}:latest", src.display());
        for (creds, repo) in [("x:tok-a", "a/app"), ("x:tok-b", "b/app"), ("x:tok-a", "a/other")] {
            let out = skopeo(&[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                creds,
                &from,
                &format!("docker://{addr}/{repo}:v1"),
            ]);
            assert!(out.status.success(), "skopeo push to {repo} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "x:tok-b",
            &format!("docker://{addr}/b/app:v1"),
            &format!("oci:{}:v1", back2.display()),
        ]);
        assert!(out.status.success(), "skopeo pull of b/app failed: {}", String::from_utf8_lossy(&out.stderr));
        let out = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "x:tok-b",
            &format!("docker://{addr}/a/app:v1"),
        ]);
        assert!(!out.status.success(), "b read a/app: {}", String::from_utf8_lossy(&out.stdout));
    })
    .await
    .unwrap();
    let index: ImageIndex = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests[0].digest, manifest);
    assert_eq!(blob_names(&back), blob_names(&layout));
    // Each repository has its own links; the bytes are stored once.
    let links = |repo: &str| names(&registry.join("repositories").join(repo).join("_layers/sha256"));
    assert_eq!(links("a/app"), links("b/app"));
    assert_eq!(links("a/app"), links("a/other"));
    assert_eq!(links("a/app").len() + 1, blob_names(&layout).len(), "config and layers, not the manifest");
    assert_eq!(blob_names(&registry), blob_names(&layout));
    r.stop();
}

/// Push an OCI layout's image (`index.json`'s first manifest) with plain HTTP calls.
async fn push_layout(base: &str, repo: &str, layout: &Path, tag: &str) {
    let c = reqwest::Client::new();
    let src = OciLayoutSource::open(layout).unwrap();
    let index = src.index().unwrap();
    let m = &index.manifests[0];
    let bytes = std::fs::read(layout.join("blobs/sha256").join(m.digest.hex())).unwrap();
    let manifest: vt_image::oci::ImageManifest = serde_json::from_slice(&bytes).unwrap();
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        let blob = std::fs::read(layout.join("blobs/sha256").join(d.digest.hex())).unwrap();
        let resp = c
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={}", d.digest))
            .bearer_auth(TOKEN)
            .body(blob)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let resp = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .bearer_auth(TOKEN)
        .header("Content-Type", m.media_type.as_str())
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_source_pulls_and_builds_a_root_disk() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let manifest = busybox_layout(&layout);
    let r = TestRegistry::start(&dir.path().join("registry")).await;
    push_layout(&r.base, "acme/web", &layout, "v1").await;
    let (base, cache) = (r.base.clone(), dir.path().join("cache"));
    let m2 = manifest.clone();
    let disk = tokio::task::spawn_blocking(move || {
        // A wrong token is refused, and nothing is cached.
        let bad = RegistrySource::new(&base, "acme/web", Some("wrong".into())).unwrap();
        let store = ImageStore::open(&cache, StoreOptions::default()).unwrap();
        assert!(store.ensure_rootdisk(&bad, &m2).is_err());
        // An unknown digest is NotFound.
        let src = RegistrySource::new(&base, "acme/web", Some(TOKEN.into())).unwrap();
        let missing = Digest::of(b"missing");
        assert!(matches!(store.pull(&src, &missing), Err(vt_image::Error::NotFound(_))));
        store.ensure_rootdisk(&src, &m2).unwrap()
    })
    .await
    .unwrap();
    assert!(disk.path.is_file());
    assert_eq!(disk.info.config.config.cmd.as_deref(), Some(&["/bin/sh".to_owned()][..]));
    r.stop();
}
