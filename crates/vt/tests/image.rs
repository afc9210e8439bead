//! `vt image push` against a real server's registry: an OCI layout directory, an OCI archive
//! and a docker archive; then a release created from the pushed tag.

mod common;

use std::path::Path;

use common::TestServer;
use vt_image::layout::{write_image, LayerFormat};
use vt_image::oci::RuntimeConfig;

macro_rules! snap_digests {
    ($name:expr, $run:expr) => {{
        let mut filters = common::filters();
        filters.push((r"sha256:[0-9a-f]{64}", "sha256:[digest]"));
        insta::with_settings!({ filters => filters, prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!($name, $run.text);
        })
    }};
}

/// A tiny deterministic image layout; returns its manifest digest.
fn layout(dir: &Path) -> String {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    let rc = RuntimeConfig { cmd: Some(vec!["/bin/hello".into()]), ..Default::default() };
    write_image(&root, &dir.join("layout"), rc, LayerFormat::Uncompressed).unwrap().manifest.digest.to_string()
}

fn tar_dir(src: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", src).unwrap();
    b.finish().unwrap();
}

#[test]
fn image_push_layout_archives_and_release_by_tag() {
    let s = TestServer::start();
    s.seed();
    let digest = layout(s.dir.path());
    let layout_dir = s.dir.path().join("layout");
    let layout_arg = layout_dir.to_str().unwrap();

    snap_digests!("image_push", s.run(&["image", "push", layout_arg, "--repo", "acme/web", "--tag", "v1"]));
    // Again, as JSON: every blob is already there.
    let r = s.run(&["image", "push", layout_arg, "--repo", "acme/web", "--tag", "v1", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    let j = r.json();
    assert_eq!(j["digest"], digest.as_str());
    assert_eq!(j["image"], format!("acme/web@{digest}"));
    assert_eq!((j["blobs_uploaded"].as_u64(), j["blobs_skipped"].as_u64()), (Some(0), Some(2)));
    // The default repository is <org>/<app> of the context.
    let r = s.run(&["image", "push", layout_arg, "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_eq!((r.json()["repository"].as_str(), r.json()["tag"].as_str()), (Some("acme/web"), Some("latest")));

    // An OCI archive of the same layout: the same digest.
    let oci_tar = s.dir.path().join("image.oci.tar");
    tar_dir(&layout_dir, &oci_tar);
    let r =
        s.run(&["image", "push", oci_tar.to_str().unwrap(), "--repo", "acme/archive", "--tag", "oci", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_eq!(r.json()["digest"], digest.as_str());

    // A docker archive (`docker save` shape): converted to an OCI manifest over the same blobs.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout_dir.join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap();
    let (config, layer) =
        (manifest["config"]["digest"].as_str().unwrap(), manifest["layers"][0]["digest"].as_str().unwrap());
    let docker = s.dir.path().join("docker");
    std::fs::create_dir_all(docker.join("l1")).unwrap();
    std::fs::copy(layout_dir.join("blobs/sha256").join(&config[7..]), docker.join("config.json")).unwrap();
    std::fs::copy(layout_dir.join("blobs/sha256").join(&layer[7..]), docker.join("l1/layer.tar")).unwrap();
    std::fs::write(
        docker.join("manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["web:v1"],"Layers":["l1/layer.tar"]}]"#,
    )
    .unwrap();
    let docker_tar = s.dir.path().join("image.docker.tar");
    tar_dir(&docker, &docker_tar);
    let r =
        s.run(&["image", "push", docker_tar.to_str().unwrap(), "--repo", "acme/docker", "--tag", "d1", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    // Blobs belong to repositories: a new one gets them uploaded (their bytes are stored once).
    assert_eq!(r.json()["blobs_uploaded"].as_u64(), Some(2), "{}", r.text);

    // A release from the pushed tag records the resolution.
    let manifest_path = s.manifest();
    let r = s.run(&[
        "release",
        "create",
        "--image",
        "acme/web:v1",
        "--manifest",
        manifest_path.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_eq!(r.json()["image_ref"], format!("acme/web@{digest}"));
    assert_eq!(r.json()["resolved_from"], "acme/web:v1");

    // Errors: a missing path and a bad repository name are usage errors (exit 2).
    let r = s.run(&["image", "push", "nope", "--repo", "acme/web"]);
    assert_eq!(r.code, 2, "{}", r.text);
    snap_digests!("image_push_bad_repo", s.run(&["image", "push", layout_arg, "--repo", "Acme"]));
}

#[test]
fn image_push_chunks_big_blobs() {
    let s = TestServer::start();
    s.seed();
    // A 20 MiB incompressible file: above the 16 MiB single-request limit, so sent in chunks.
    let root = s.dir.path().join("big");
    std::fs::create_dir_all(&root).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let data: Vec<u8> = (0..20 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("blob.bin"), &data).unwrap();
    let out = s.dir.path().join("big-layout");
    let img = write_image(&root, &out, RuntimeConfig::default(), LayerFormat::Uncompressed).unwrap();
    let r = s.run(&["image", "push", out.to_str().unwrap(), "--repo", "acme/big", "--tag", "v1", "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_eq!(r.json()["digest"], img.manifest.digest.to_string());
    assert_eq!(r.json()["blobs_uploaded"].as_u64(), Some(2));
    // The server holds the layer byte for byte.
    let blob = s.dir.path().join("data/registry/blobs/sha256").join(img.layer.digest.hex());
    assert_eq!(std::fs::metadata(blob).unwrap().len(), img.layer.size);
}
