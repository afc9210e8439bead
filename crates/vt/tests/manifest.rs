//! `vt manifest`: local checks, no server.

mod common;

use common::{vt_isolated, Run};

fn run(dir: &std::path::Path, args: &[&str]) -> Run {
    Run::of(vt_isolated(dir, args).output().unwrap(), dir)
}

const BAD: &str = "schema_version = 1\n\n[processes.web]\nports = [{ name = \"http\", port = 99999 }]\nbogus = true\n";
const MESSY: &str = "schema_version=1\n[processes.web]\ncommand=[\"./server\"]\n  scaling.max = 3\n";

#[test]
fn validate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), BAD).unwrap();
    std::fs::write(dir.path().join("good.toml"), include_str!("../../vt-manifest/tests/full.toml")).unwrap();
    snap!("validate_ok", run(dir.path(), &["manifest", "validate", "good.toml"]));
    snap!("validate_errors", run(dir.path(), &["manifest", "validate", "bad.toml"]));
    snap!("validate_errors_json", run(dir.path(), &["manifest", "validate", "bad.toml", "-o", "json"]));
    snap!("missing_file", run(dir.path(), &["manifest", "validate", "nope.toml"]));
}

#[test]
fn fmt_check_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vt.toml"), MESSY).unwrap();
    snap!("fmt", run(dir.path(), &["manifest", "fmt", "vt.toml"]));
    snap!("fmt_check_dirty", run(dir.path(), &["manifest", "fmt", "--check", "vt.toml"]));
    snap!("fmt_write", run(dir.path(), &["manifest", "fmt", "--write", "vt.toml"]));
    let r = run(dir.path(), &["manifest", "fmt", "--check", "vt.toml"]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_eq!(r.stdout, "");
}

#[test]
fn json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vt.toml"), MESSY).unwrap();
    snap!("json", run(dir.path(), &["manifest", "json", "vt.toml"]));
}

#[test]
fn release_create_checks_the_manifest_locally() {
    // Exit 2 with line:column before any request (the server here does not exist).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), BAD).unwrap();
    let r = run(
        dir.path(),
        &[
            "release",
            "create",
            "--image",
            common::DIGEST_IMAGE,
            "--manifest",
            "bad.toml",
            "--org",
            "a",
            "--app",
            "b",
            "--server",
            "http://127.0.0.1:9",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.text);
    assert!(r.stderr.contains("bad.toml:4:"), "{}", r.text);
}
