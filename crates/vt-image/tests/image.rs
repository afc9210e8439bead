//! Integration tests: layouts, verified pulls, unpack (hostile layers), root disks, gc.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tar::EntryType;
use vt_image::layout::{write_image, LayerFormat, LayoutWriter};
use vt_image::oci::{media, Descriptor, ImageConfig, ImageIndex, Platform, RootFs, RuntimeConfig};
use vt_image::store::{self, BlobStore};
use vt_image::testing::{busybox_rootfs, TarBuilder};
use vt_image::unpack::{unpack_image, UnpackOptions};
use vt_image::{BlobSource, Digest, Error, ImageStore, OciLayoutSource, StoreOptions};

fn runtime() -> RuntimeConfig {
    RuntimeConfig {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hi".into()]),
        env: Some(vec!["PATH=/bin".into()]),
        working_dir: Some("/".into()),
        user: Some("0:0".into()),
    }
}

/// A layout with the given hand-built layers (uncompressed tar bytes), gzip-compressed.
fn layered_image(out: &Path, layers: &[Vec<u8>]) -> Digest {
    let w = LayoutWriter::create(out).unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, tar) in layers.iter().enumerate() {
        let format = if i % 2 == 0 { LayerFormat::Gzip(6) } else { LayerFormat::Uncompressed };
        let (d, diff) = w.put_layer_tar(tar, format).unwrap();
        descs.push(d);
        diff_ids.push(diff);
    }
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: runtime(),
        rootfs: RootFs { kind: "layers".into(), diff_ids },
    };
    let (m, _) = w.put_image(&descs, &config).unwrap();
    w.write_index(std::slice::from_ref(&m)).unwrap();
    m.digest
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn debugfs(disk: &Path, req: &str) -> String {
    let out = Command::new("debugfs").arg("-R").arg(req).arg(disk).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// (mode, uid, gid) of a path inside an ext4 image, via `debugfs stat`.
fn disk_stat(disk: &Path, path: &str) -> Option<(String, u32, u32)> {
    let s = debugfs(disk, &format!("stat {path}"));
    if s.contains("not found") {
        return None;
    }
    let after = |key: &str| s.split(key).nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    Some((after("Mode:"), after("User:").parse().unwrap(), after("Group:").parse().unwrap()))
}

#[test]
fn layout_is_deterministic_and_readable() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
        busybox_rootfs(d).unwrap();
        std::fs::write(d.join("etc/hardlink-src"), "x").unwrap();
        std::fs::hard_link(d.join("etc/hardlink-src"), d.join("etc/hardlink-dst")).unwrap();
    }
    // Different mtimes/order of creation must not matter.
    std::fs::File::options()
        .write(true)
        .open(b.join("etc/passwd"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(999))
        .unwrap();
    let ia = write_image(&a, &t.path().join("la"), runtime(), LayerFormat::default()).unwrap();
    let ib = write_image(&b, &t.path().join("lb"), runtime(), LayerFormat::default()).unwrap();
    assert_eq!(ia.manifest.digest, ib.manifest.digest);
    assert_eq!(ia.layer.digest, ib.layer.digest);
    let src = OciLayoutSource::open(&t.path().join("la")).unwrap();
    assert_eq!(src.index().unwrap().manifests[0].digest, ia.manifest.digest);
    let store = BlobStore::open(&t.path().join("cache"), &t.path().join("tmp"), 1 << 30).unwrap();
    let img = store::pull(&store, &src, &ia.manifest.digest).unwrap();
    assert_eq!(img.config.config, runtime());
    assert_eq!(img.config.rootfs.diff_ids, vec![ia.diff_id.clone()]);
    let tree = unpack_image(&store, &img, t.path(), UnpackOptions::default()).unwrap();
    let root = tree.path();
    assert_eq!(std::fs::symlink_metadata(root.join("bin/busybox")).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read_link(root.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(std::fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
    let (s, d) = (
        std::fs::metadata(root.join("etc/hardlink-src")).unwrap(),
        std::fs::metadata(root.join("etc/hardlink-dst")).unwrap(),
    );
    assert_eq!(s.ino(), d.ino());
    assert_eq!(std::fs::read(root.join("bin/busybox")).unwrap(), std::fs::read("/bin/busybox").unwrap());
}

#[test]
fn mkimage_binary_writes_a_layout() {
    let t = tempfile::tempdir().unwrap();
    busybox_rootfs(t.path().join("root").as_path()).ok();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    busybox_rootfs(&root).ok();
    let out = Command::new(env!("CARGO_BIN_EXE_vt-mkimage"))
        .arg(&root)
        .arg(t.path().join("l"))
        .args([
            "--entrypoint",
            "/bin/sh",
            "--entrypoint",
            "-c",
            "--cmd",
            "echo hi",
            "--env",
            "A=1",
            "--workdir",
            "/tmp",
            "--user",
            "1:1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let digest: Digest = String::from_utf8(out.stdout).unwrap().trim().parse().unwrap();
    let src = OciLayoutSource::open(&t.path().join("l")).unwrap();
    let store = BlobStore::open(&t.path().join("c"), &t.path().join("tmp"), 1 << 30).unwrap();
    let img = store::pull(&store, &src, &digest).unwrap();
    assert_eq!(img.config.config.entrypoint, Some(vec!["/bin/sh".into(), "-c".into()]));
    assert_eq!(img.config.config.env, Some(vec!["A=1".into()]));
    assert_eq!(img.config.config.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(img.config.config.user.as_deref(), Some("1:1"));
}

/// A source that tampers with one blob.
struct Tamper<'a> {
    inner: &'a OciLayoutSource,
    target: Digest,
    f: fn(Vec<u8>) -> Vec<u8>,
}

impl BlobSource for Tamper<'_> {
    fn open_blob(&self, desc: &Descriptor) -> vt_image::Result<Box<dyn Read + Send + '_>> {
        let mut buf = Vec::new();
        self.inner.open_blob(desc)?.read_to_end(&mut buf)?;
        if desc.digest == self.target {
            buf = (self.f)(buf);
        }
        Ok(Box::new(std::io::Cursor::new(buf)))
    }
    fn fetch_manifest(&self, digest: &Digest) -> vt_image::Result<(Option<String>, Vec<u8>)> {
        let (mt, mut b) = self.inner.fetch_manifest(digest)?;
        if digest == &self.target {
            b = (self.f)(b);
        }
        Ok((mt, b))
    }
}

#[test]
fn pull_rejects_bad_blobs_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let layer = TarBuilder::new().file("hello", &[7u8; 5000]).build();
    let digest = layered_image(&t.path().join("l"), &[layer]);
    let src = OciLayoutSource::open(&t.path().join("l")).unwrap();
    let probe = BlobStore::open(&t.path().join("probe"), &t.path().join("ptmp"), 1 << 30).unwrap();
    let img = store::resolve(&probe, &src, &digest).unwrap();
    let layer = img.manifest.layers[0].digest.clone();

    type Mangle = fn(Vec<u8>) -> Vec<u8>;
    let cases: [(Mangle, &str); 3] = [
        (
            |mut v| {
                v.pop();
                v
            },
            "truncated",
        ),
        (
            |mut v| {
                v.push(0);
                v
            },
            "oversized",
        ),
        (
            |mut v| {
                v[10] ^= 1;
                v
            },
            "mismatch",
        ),
    ];
    for (f, name) in cases {
        let cache = t.path().join(format!("c-{name}"));
        let tmp = t.path().join(format!("t-{name}"));
        let store = BlobStore::open(&cache, &tmp, 1 << 30).unwrap();
        let err = store::pull(&store, &Tamper { inner: &src, target: layer.clone(), f }, &digest).unwrap_err();
        match (name, &err) {
            ("truncated", Error::Truncated { .. })
            | ("oversized", Error::Oversized { .. })
            | ("mismatch", Error::DigestMismatch { .. }) => {}
            _ => panic!("{name}: unexpected {err}"),
        }
        assert!(!store.path(&layer).exists(), "{name}: partial blob left");
        assert!(files_in(&tmp).is_empty(), "{name}: temp files left");
        // A tampered manifest is rejected too (fresh cache: the good manifest is cached above).
        let store = BlobStore::open(&t.path().join(format!("m-{name}")), &tmp, 1 << 30).unwrap();
        let err = store::pull(&store, &Tamper { inner: &src, target: digest.clone(), f }, &digest).unwrap_err();
        assert!(
            matches!(err, Error::DigestMismatch { .. } | Error::Truncated { .. } | Error::Oversized { .. }),
            "{err}"
        );
    }
    // Size limit is enforced before download.
    let store = BlobStore::open(&t.path().join("small"), &t.path().join("stmp"), 100).unwrap();
    assert!(matches!(store::pull(&store, &src, &digest), Err(Error::TooLarge { .. })));
    // Unknown digest.
    let missing = Digest::of(b"nope");
    assert!(matches!(store::pull(&store, &src, &missing), Err(Error::NotFound(_))));
}

#[test]
fn index_resolves_to_linux_amd64() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("l");
    let amd64 = layered_image(&out, &[TarBuilder::new().file("arch", b"amd64").build()]);
    let w = LayoutWriter::create(&out).unwrap();
    let (l, d) = w.put_layer_tar(&TarBuilder::new().file("arch", b"arm64").build(), LayerFormat::Gzip(6)).unwrap();
    let cfg = ImageConfig {
        architecture: "arm64".into(),
        os: "linux".into(),
        config: runtime(),
        rootfs: RootFs { kind: "layers".into(), diff_ids: vec![d] },
    };
    let (mut arm, _) = w.put_image(&[l], &cfg).unwrap();
    arm.platform = Some(Platform { architecture: "arm64".into(), os: "linux".into(), variant: Some("v8".into()) });
    let src = OciLayoutSource::open(&out).unwrap();
    let mut amd = src.index().unwrap().manifests[0].clone();
    amd.platform = Some(Platform { architecture: "amd64".into(), os: "linux".into(), variant: None });
    let index = |m: Vec<Descriptor>| ImageIndex {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        manifests: m,
        annotations: Default::default(),
    };
    let both = w.put_json(media::OCI_INDEX, &index(vec![arm.clone(), amd.clone()])).unwrap();
    let only_arm = w.put_json(media::OCI_INDEX, &index(vec![arm])).unwrap();

    let store = BlobStore::open(&t.path().join("c"), &t.path().join("tmp"), 1 << 30).unwrap();
    let img = store::pull(&store, &src, &both.digest).unwrap();
    assert_eq!(img.digest, both.digest);
    assert_eq!(img.manifest_digest, amd64);
    assert!(matches!(store::pull(&store, &src, &only_arm.digest), Err(Error::NoMatchingPlatform(_))));
}

fn unpack_layers(
    layers: &[Vec<u8>],
    opts: UnpackOptions,
) -> (tempfile::TempDir, vt_image::Result<vt_image::unpack::UnpackedTree>) {
    let t = tempfile::tempdir().unwrap();
    let digest = layered_image(&t.path().join("l"), layers);
    let src = OciLayoutSource::open(&t.path().join("l")).unwrap();
    let store = BlobStore::open(&t.path().join("c"), &t.path().join("tmp"), 1 << 30).unwrap();
    let img = store::pull(&store, &src, &digest).unwrap();
    std::fs::create_dir(t.path().join("work")).unwrap();
    let r = unpack_image(&store, &img, &t.path().join("work"), opts);
    (t, r)
}

#[test]
fn layers_apply_in_order_with_whiteouts() {
    let base = TarBuilder::new()
        .dir("a/", 0o755)
        .dir("a/b/", 0o755)
        .dir("a/b/c/", 0o755)
        .file("a/b/c/bar", b"bar")
        .dir("etc/", 0o755)
        .file("etc/my-app-config", b"cfg")
        .file("etc/keep", b"keep")
        .dir("bin/", 0o755)
        .file("bin/my-app-binary", b"bin")
        .dir("bin/tools/", 0o755)
        .file("bin/tools/one", b"1")
        .owned(EntryType::Regular, "etc/owned", 1000, 1001, 0o4755, b"suid")
        .symlink("etc/link", "keep")
        .dir("ro/", 0o555)
        .file("ro/inside", b"x")
        .file("replaced", b"old")
        .build();
    let second = TarBuilder::new()
        .file("etc/.wh.my-app-config", b"")
        .dir("a/", 0o755)
        .dir("a/b/", 0o750)
        .dir("a/b/c/", 0o755)
        .file("a/b/c/foo", b"foo")
        .file("a/.wh..wh..opq", b"")
        .dir("bin/", 0o755)
        .file("bin/.wh..wh..opq", b"")
        .file("bin/new", b"new")
        .hardlink("bin/new-link", "bin/new")
        .file("replaced", b"new")
        .file("etc/.wh.never-existed", b"")
        .build();
    let (_t, tree) = unpack_layers(&[base, second], UnpackOptions::default());
    let tree = tree.unwrap();
    let r = tree.path();
    assert!(!r.join("etc/my-app-config").exists());
    assert!(!r.join("etc/.wh.my-app-config").exists());
    assert_eq!(std::fs::read(r.join("etc/keep")).unwrap(), b"keep");
    assert!(!r.join("a/b/c/bar").exists(), "opaque must hide lower a/b/c/bar");
    assert_eq!(std::fs::read(r.join("a/b/c/foo")).unwrap(), b"foo");
    assert_eq!(std::fs::metadata(r.join("a/b")).unwrap().permissions().mode() & 0o7777, 0o750);
    assert_eq!(files_in(&r.join("bin")), vec!["new", "new-link"]);
    assert_eq!(
        std::fs::metadata(r.join("bin/new")).unwrap().ino(),
        std::fs::metadata(r.join("bin/new-link")).unwrap().ino()
    );
    assert_eq!(std::fs::read(r.join("replaced")).unwrap(), b"new");
    assert_eq!(std::fs::read_link(r.join("etc/link")).unwrap(), Path::new("keep"));
    assert_eq!(std::fs::metadata(r.join("ro")).unwrap().permissions().mode() & 0o7777, 0o555);
    let owned = std::fs::metadata(r.join("etc/owned")).unwrap();
    assert_eq!(owned.permissions().mode() & 0o7777, 0o4755);
    if vt_image::unpack::running_as_root() {
        assert_eq!((owned.uid(), owned.gid()), (1000, 1001));
    } else {
        assert!(tree.report.owners.iter().any(|o| o.path == "/etc/owned" && o.uid == 1000 && o.gid == 1001));
    }
}

#[test]
fn opaque_keeps_this_layers_content_in_implicit_and_lower_dirs() {
    let base = TarBuilder::new()
        .dir("a/", 0o755)
        .dir("a/b/", 0o755)
        .file("a/b/old", b"old")
        .file("a/gone", b"x")
        .dir("w/", 0o755)
        .dir("w/sub/", 0o755)
        .file("w/sub/old", b"old")
        .build();
    // No directory entries: a/b/ and w/sub/ exist only below; markers come last.
    let top = TarBuilder::new()
        .file("a/b/new", b"new")
        .file("x/y/z", b"implicit")
        .file("w/sub/new", b"new")
        .file("a/.wh..wh..opq", b"")
        .file("x/.wh..wh..opq", b"")
        .file("w/.wh.sub", b"")
        .build();
    let (_t, tree) = unpack_layers(&[base, top], UnpackOptions::default());
    let tree = tree.unwrap();
    let r = tree.path();
    assert_eq!(std::fs::read(r.join("a/b/new")).unwrap(), b"new");
    assert!(!r.join("a/b/old").exists());
    assert!(!r.join("a/gone").exists());
    assert_eq!(std::fs::read(r.join("x/y/z")).unwrap(), b"implicit");
    assert_eq!(std::fs::read(r.join("w/sub/new")).unwrap(), b"new");
    assert!(!r.join("w/sub/old").exists());
}

#[test]
fn absolute_symlinks_resolve_inside_the_root() {
    let host = tempfile::tempdir().unwrap();
    let host_dir = host.path().join("victim");
    let layer = TarBuilder::new().symlink("escape", host_dir.to_str().unwrap()).file("escape/written", b"x").build();
    let (_t, tree) = unpack_layers(&[layer], UnpackOptions::default());
    let tree = tree.unwrap();
    assert!(!host_dir.exists(), "wrote outside the root");
    let inside = tree.path().join(host_dir.strip_prefix("/").unwrap()).join("written");
    assert_eq!(std::fs::read(inside).unwrap(), b"x");
}

#[test]
fn hostile_layers_are_refused_and_leave_nothing() {
    let device = TarBuilder::new().raw(EntryType::Char, "dev/mem", "", 0o600, b"").build();
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("dotdot", vec![TarBuilder::new().file("../evil", b"x").build()]),
        ("inner dotdot", vec![TarBuilder::new().dir("a/", 0o755).file("a/../../evil", b"x").build()]),
        ("absolute", vec![TarBuilder::new().file("/tmp/evil", b"x").build()]),
        (
            "symlink escape",
            vec![TarBuilder::new().symlink("up", "../../../../../../tmp").file("up/evil", b"x").build()],
        ),
        (
            "symlink escape later layer",
            vec![
                TarBuilder::new().dir("d/", 0o755).symlink("d/up", "../..").build(),
                TarBuilder::new().file("d/up/evil", b"x").build(),
            ],
        ),
        (
            "symlink chain escape",
            vec![TarBuilder::new().symlink("a", "b/..").symlink("b", "/..").file("a/evil", b"x").build()],
        ),
        ("hardlink outside", vec![TarBuilder::new().hardlink("passwd", "../../../../etc/passwd").build()]),
        ("hardlink absolute", vec![TarBuilder::new().hardlink("passwd", "/etc/passwd").build()]),
        (
            "hardlink via symlink",
            vec![TarBuilder::new().symlink("up", "../../../../..").hardlink("passwd", "up/etc/passwd").build()],
        ),
        ("hardlink missing", vec![TarBuilder::new().hardlink("x", "nothing").build()]),
        ("hardlink dir", vec![TarBuilder::new().dir("d/", 0o755).hardlink("x", "d").build()]),
        ("device", vec![device]),
        ("whiteout parent", vec![TarBuilder::new().dir("d/", 0o755).file("d/.wh..", b"").build()]),
        ("symlink loop", vec![TarBuilder::new().symlink("a", "b").symlink("b", "a").file("a/x", b"x").build()]),
    ];
    for (name, layers) in cases {
        let (t, r) = unpack_layers(&layers, UnpackOptions::default());
        match r {
            Err(e @ Error::HostileLayer { .. }) => eprintln!("{name}: {e}"),
            Err(e) => panic!("{name}: wrong error {e}"),
            Ok(_) => panic!("{name}: accepted"),
        }
        assert!(files_in(&t.path().join("work")).is_empty(), "{name}: left files behind");
        assert!(!Path::new("/tmp/evil").exists());
    }
    // Too much content for the limit.
    let big = TarBuilder::new().file("a", &[1u8; 4096]).file("b", &[2u8; 4096]).build();
    let (t, r) = unpack_layers(&[big], UnpackOptions { max_bytes: 6000, ..Default::default() });
    assert!(matches!(r, Err(Error::UnpackTooLarge { .. })), "{r:?}");
    assert!(files_in(&t.path().join("work")).is_empty());
}

#[test]
fn fifo_is_skipped() {
    let layer = TarBuilder::new().raw(EntryType::Fifo, "pipe", "", 0o644, b"").file("ok", b"1").build();
    let (_t, tree) = unpack_layers(&[layer], UnpackOptions::default());
    let tree = tree.unwrap();
    assert!(!tree.path().join("pipe").exists());
    assert_eq!(tree.report.skipped, vec!["/pipe".to_owned()]);
}

fn busybox_layers() -> Vec<Vec<u8>> {
    let t = tempfile::tempdir().unwrap();
    busybox_rootfs(t.path()).unwrap();
    std::fs::write(t.path().join("etc/doomed"), "bye").unwrap();
    let mut base = Vec::new();
    vt_image::layout::tar_dir(t.path(), &mut base).unwrap();
    let top = TarBuilder::new()
        .file("etc/.wh.doomed", b"")
        .owned(EntryType::Regular, "etc/app.conf", 1000, 1000, 0o640, b"conf")
        .build();
    vec![base, top]
}

#[test]
fn rootdisk_build_cache_hit_single_flight_and_gc() {
    let t = tempfile::tempdir().unwrap();
    let digest = layered_image(&t.path().join("l"), &busybox_layers());
    let src = Arc::new(OciLayoutSource::open(&t.path().join("l")).unwrap());
    let store = Arc::new(ImageStore::open(&t.path().join("store"), StoreOptions::default()).unwrap());

    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (store, src, digest) = (store.clone(), src.clone(), digest.clone());
            std::thread::spawn(move || store.ensure_rootdisk(&*src, &digest).unwrap())
        })
        .collect();
    let disks: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(store.builds(), 1, "single flight");
    assert_eq!(disks.iter().filter(|d| d.built).count(), 1);
    let disk = &disks[0].path;
    assert_eq!(disks[0].info.config.config, runtime());
    assert_eq!(std::fs::metadata(disk).unwrap().permissions().mode() & 0o777, 0o444);

    let ls = debugfs(disk, "ls -l /bin");
    assert!(ls.contains("busybox"), "{ls}");
    assert_eq!(disk_stat(disk, "/bin/busybox").unwrap(), ("0755".into(), 0, 0));
    assert_eq!(disk_stat(disk, "/etc/app.conf").unwrap(), ("0640".into(), 1000, 1000));
    assert_eq!(disk_stat(disk, "/tmp").unwrap().0, "01777");
    assert!(disk_stat(disk, "/etc/doomed").is_none(), "whiteout must delete");
    assert!(disk_stat(disk, "/etc/.wh.doomed").is_none());
    assert!(disk_stat(disk, "/etc/passwd").is_some());
    assert!(debugfs(disk, "stat /bin/sh").contains("Fast link dest: \"busybox\""));

    // Cache hit.
    let again = store.ensure_rootdisk(&*src, &digest).unwrap();
    assert!(!again.built);
    assert_eq!(store.builds(), 1);
    assert!(files_in(&t.path().join("store/tmp")).is_empty());

    // gc keeping it removes nothing; nor does gc with nothing kept while it is younger than
    // the minimum age; gc with nothing kept and no minimum age removes all.
    let r = store.gc(std::slice::from_ref(&digest), Duration::ZERO).unwrap();
    assert!(r.removed_disks.is_empty() && r.removed_blobs.is_empty(), "{r:?}");
    assert!(store.get(&digest).unwrap().is_some());
    let r = store.gc(&[], Duration::from_secs(3600)).unwrap();
    assert!(r.removed_disks.is_empty() && r.removed_blobs.is_empty(), "young: {r:?}");
    // An hour later (its files made older), a cache hit makes it young again (a caller is
    // about to boot from it); unused for an hour, the minimum age no longer keeps it.
    let age = || {
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3601);
        for dir in ["store/rootdisks", "store/blobs/sha256"] {
            for f in files_in(&t.path().join(dir)) {
                std::fs::File::open(t.path().join(dir).join(f)).unwrap().set_modified(hour_ago).unwrap();
            }
        }
    };
    age();
    assert!(!store.ensure_rootdisk(&*src, &digest).unwrap().built);
    let r = store.gc(&[], Duration::from_secs(3600)).unwrap();
    assert!(r.removed_disks.is_empty() && r.removed_blobs.is_empty(), "used just now: {r:?}");
    age();
    let r = store.gc(&[], Duration::from_secs(3600)).unwrap();
    assert_eq!(r.removed_disks, vec![digest.clone()]);
    assert_eq!(r.removed_blobs.len(), 4, "manifest, config, two layers");
    assert!(store.get(&digest).unwrap().is_none());
    assert!(files_in(&t.path().join("store/rootdisks")).is_empty());
    assert!(files_in(&t.path().join("store/blobs/sha256")).is_empty());
}

#[test]
fn rootdisk_without_privileges_records_ownership_via_debugfs() {
    let t = tempfile::tempdir().unwrap();
    let digest = layered_image(&t.path().join("l"), &busybox_layers());
    let src = OciLayoutSource::open(&t.path().join("l")).unwrap();
    let opts = StoreOptions {
        unpack: UnpackOptions { apply_ownership: Some(false), ..Default::default() },
        ..Default::default()
    };
    let store = ImageStore::open(&t.path().join("store"), opts).unwrap();
    let disk = store.ensure_rootdisk(&src, &digest).unwrap().path;
    assert_eq!(disk_stat(&disk, "/etc/app.conf").unwrap(), ("0640".into(), 1000, 1000));
    assert_eq!(disk_stat(&disk, "/bin/busybox").unwrap(), ("0755".into(), 0, 0));
}

#[test]
fn failed_build_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let layers = vec![TarBuilder::new().file("ok", b"1").build(), TarBuilder::new().file("../evil", b"x").build()];
    let digest = layered_image(&t.path().join("l"), &layers);
    let src = OciLayoutSource::open(&t.path().join("l")).unwrap();
    let store = ImageStore::open(&t.path().join("store"), StoreOptions::default()).unwrap();
    assert!(matches!(store.ensure_rootdisk(&src, &digest), Err(Error::HostileLayer { .. })));
    assert!(files_in(&t.path().join("store/tmp")).is_empty());
    assert!(files_in(&t.path().join("store/rootdisks")).is_empty());
    assert_eq!(store.builds(), 0);
}

#[test]
fn corrupt_cached_blob_is_detected_and_refetched() {
    let t = tempfile::tempdir().unwrap();
    let digest = layered_image(&t.path().join("l"), &[TarBuilder::new().file("a", &[5u8; 10000]).build()]);
    let src = OciLayoutSource::open(&t.path().join("l")).unwrap();
    let store = ImageStore::open(&t.path().join("store"), StoreOptions::default()).unwrap();
    let img = store.pull(&src, &digest).unwrap();
    let blob = store.blobs().path(&img.manifest.layers[0].digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    // Unpacking the bad cached blob fails and drops it ...
    let img = store.pull(&src, &digest).unwrap();
    assert!(img.fetched.is_empty(), "served from the cache");
    let err = unpack_image(store.blobs(), &img, t.path(), UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(!blob.exists());
    // ... and ensure_rootdisk fetches it again on its own.
    std::fs::write(&blob, &bytes).unwrap();
    let disk = store.ensure_rootdisk(&src, &digest).unwrap();
    assert!(disk.built);
    assert_eq!(std::fs::read(&blob).unwrap().len(), bytes.len());
    assert_ne!(std::fs::read(&blob).unwrap(), bytes);
}

#[test]
fn wrong_diff_id_is_rejected() {
    for format in [LayerFormat::Gzip(6), LayerFormat::Uncompressed] {
        let t = tempfile::tempdir().unwrap();
        let w = LayoutWriter::create(&t.path().join("l")).unwrap();
        let (layer, _) = w.put_layer_tar(&TarBuilder::new().file("a", b"a").build(), format).unwrap();
        let config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: runtime(),
            rootfs: RootFs { kind: "layers".into(), diff_ids: vec![Digest::of(b"not it")] },
        };
        let (m, _) = w.put_image(&[layer], &config).unwrap();
        let src = OciLayoutSource::open(&t.path().join("l")).unwrap();
        let store = BlobStore::open(&t.path().join("c"), &t.path().join("tmp"), 1 << 30).unwrap();
        let img = store::pull(&store, &src, &m.digest).unwrap();
        std::fs::create_dir(t.path().join("work")).unwrap();
        let err = unpack_image(&store, &img, &t.path().join("work"), UnpackOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidImage(ref m) if m.contains("diff_id")), "{err}");
        assert!(files_in(&t.path().join("work")).is_empty());
    }
}

/// A gzip bomb (a small compressed layer that unpacks huge) stops at the node's
/// disk budget with a message that says what needed how much, and leaves nothing.
#[test]
fn a_gzip_bomb_stops_at_the_disk_budget_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let bomb = TarBuilder::new().file("zeros", &vec![0u8; 24 << 20]).build();
    let digest = layered_image(&t.path().join("l"), &[bomb]);
    let src = OciLayoutSource::open(&t.path().join("l")).unwrap();
    let free = vt_disk::DiskBudget::new(t.path(), vt_disk::Reserve::Bytes(0), "n1").available().unwrap();
    // 8 MiB left beyond the reserve: the tree may take 4 MiB.
    let budget = vt_disk::DiskBudget::new(t.path(), vt_disk::Reserve::Bytes(free - (8 << 20)), "n1");
    let opts = StoreOptions { budget: Some(budget), ..Default::default() };
    let store = ImageStore::open(&t.path().join("store"), opts).unwrap();
    let err = store.ensure_rootdisk(&src, &digest).unwrap_err();
    let Error::NoSpace(no_space) = &err else { panic!("expected NoSpace, got {err}") };
    assert!(no_space.at_least && no_space.needed > 4 << 20, "{no_space:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("unpacking image {digest} (its files, then a root disk as large) needs at least ")),
        "{msg}"
    );
    assert!(msg.contains("free on node n1"), "{msg}");
    assert!(files_in(&t.path().join("store/tmp")).is_empty(), "no partial tree");
    assert!(files_in(&t.path().join("store/rootdisks")).is_empty());
    assert_eq!(store.builds(), 0);
    // With room, the same image builds.
    let store = ImageStore::open(&t.path().join("store2"), StoreOptions::default()).unwrap();
    assert!(store.ensure_rootdisk(&src, &digest).unwrap().built);
}
