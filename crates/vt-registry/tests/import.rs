//! `Storage::import_layout`: an OCI image layout on disk into a repository (how `vt server`
//! brings the workspace template into an org), checked blob by blob.

use vt_image::layout::{LayerFormat, LayoutWriter};
use vt_image::oci::ImageConfig;
use vt_registry::Storage;

fn layout(dir: &std::path::Path) -> (LayoutWriter, vt_image::Digest) {
    let w = LayoutWriter::create(dir).unwrap();
    let (layer, _) = w.put_layer_tar(&tar_of(b"hello"), LayerFormat::Gzip(1)).unwrap();
    let (manifest, _) = w.put_image(&[layer], &ImageConfig::default()).unwrap();
    w.write_index(std::slice::from_ref(&manifest)).unwrap();
    (w, manifest.digest)
}

fn tar_of(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(vec![]);
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "hello.txt", content).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn imports_a_layout_into_a_repository_and_links_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let (_, digest) = layout(&dir.path().join("layout"));
    let storage = Storage::open(&dir.path().join("registry")).unwrap();
    let got = storage.import_layout(&dir.path().join("layout"), "acme/workspace", "template").unwrap();
    assert_eq!(got, digest);
    assert_eq!(storage.tag("acme/workspace", "template").unwrap(), Some(digest.clone()));
    assert!(storage.manifest("acme/workspace", &digest).unwrap().is_some());
    // A second org links the blobs already stored; the same digest.
    assert_eq!(storage.import_layout(&dir.path().join("layout"), "other/workspace", "template").unwrap(), digest);
    assert!(storage.has_manifest("other/workspace", &digest));
}

#[test]
fn refuses_a_layout_whose_bytes_do_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let (w, digest) = layout(&dir.path().join("layout"));
    let m: vt_image::oci::ImageManifest =
        serde_json::from_slice(&std::fs::read(w.blob_path(&digest)).unwrap()).unwrap();
    std::fs::write(w.blob_path(&m.layers[0].digest), b"not the layer").unwrap();
    let storage = Storage::open(&dir.path().join("registry")).unwrap();
    let err = storage.import_layout(&dir.path().join("layout"), "acme/workspace", "template").unwrap_err();
    assert!(err.to_string().contains("do not match its digest"), "{err}");
    assert_eq!(storage.tag("acme/workspace", "template").unwrap(), None, "nothing half-imported is tagged");
    let err = storage.import_layout(&dir.path().join("nowhere"), "acme/workspace", "template").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}
