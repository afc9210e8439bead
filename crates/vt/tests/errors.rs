//! Failures: each maps to its documented exit code and says what to do.

mod common;

use common::{vt_isolated, Run, TestServer};

#[test]
fn not_found_is_3() {
    let s = TestServer::start();
    snap!("not_found", s.run(&["org", "get", "nope"]));
}

#[test]
fn name_taken_is_4() {
    let s = TestServer::start();
    s.run(&["org", "create", "acme"]);
    snap!("name_taken", s.run(&["org", "create", "acme"]));
}

#[test]
fn bad_name_is_2_with_the_field() {
    let s = TestServer::start();
    snap!("bad_name", s.run(&["org", "create", "Bad_Name"]));
}

#[test]
fn bad_token_is_6() {
    let s = TestServer::start();
    snap!("bad_token", s.run(&["org", "list", "--token", "not-a-token"]));
}

#[test]
fn unreachable_server_is_5() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let server = format!("http://127.0.0.1:{port}");
    let out =
        vt_isolated(dir.path(), &["org", "create", "acme", "--server", &server, "--token", "t"]).output().unwrap();
    snap!("unreachable", Run::of(out, dir.path()));
}

#[test]
fn usage_errors_are_2() {
    let dir = tempfile::tempdir().unwrap();
    snap!("clap_error", Run::of(vt_isolated(dir.path(), &["org", "frobnicate"]).output().unwrap(), dir.path()));
    let s = TestServer::start();
    snap!("missing_org", s.run(&["app", "list"]));
    s.seed();
    snap!("bad_scale", s.run(&["scale", "web=many"]));
    snap!("deploy_nothing", s.run(&["deploy"]));
    // A node's `--join` names each control plane URL it cannot use, before anything is written.
    let data = dir.path().join("node");
    let join = ["server", "--role", "agent", "--join", "http://cp1.example:7411,ftp://cp2.example", "--data-dir"];
    let mut args = join.to_vec();
    args.push(data.to_str().unwrap());
    let r = Run::of(vt_isolated(dir.path(), &args).output().unwrap(), dir.path());
    assert_eq!(r.code, 2, "{}", r.text);
    assert!(r.text.contains("--join `ftp://cp2.example`: not a control plane URL"), "{}", r.text);
    assert!(!data.exists(), "nothing written");
    // A registry directory it cannot use is said at start, naming the flag.
    let control_plane = |data: &std::path::Path, more: &[&str]| {
        let mut args = vec!["server", "--listen", "127.0.0.1:0", "--no-agent", "--no-ingress", "--no-workspace-origin"];
        args.extend(["--data-dir", data.to_str().unwrap()]);
        args.extend(more);
        Run::of(vt_isolated(dir.path(), &args).output().unwrap(), dir.path())
    };
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let registry = file.join("registry");
    let data = dir.path().join("cp");
    let r = control_plane(&data, &["--registry-dir", registry.to_str().unwrap()]);
    assert_ne!(r.code, 0, "{}", r.text);
    assert!(r.text.contains("--registry-dir [TMP]/a-file/registry: cannot use it: Not a directory"), "{}", r.text);
    assert!(!data.exists(), "nothing written");
    // A registry in the data directory from a newer vt: refused at start, naming it (it used
    // to start with `/v2/` answering 503).
    let data = dir.path().join("newer");
    std::fs::create_dir_all(data.join("registry")).unwrap();
    std::fs::write(data.join("registry/layout-version"), "99\n").unwrap();
    let r = control_plane(&data, &[]);
    assert_ne!(r.code, 0, "{}", r.text);
    assert!(r.text.contains("the registry in [TMP]/newer/registry: cannot use it: "), "{}", r.text);
    assert!(r.text.contains("layout"), "{}", r.text);
}

#[test]
fn local_admin_token_fallback() {
    let s = TestServer::start();
    // No token anywhere: a local server's <data-dir>/admin-token is used.
    let mut c = vt_isolated(s.dir.path(), &["org", "list", "--server", &s.url]);
    c.env("VT_DATA_DIR", s.dir.path().join("data"));
    let r = Run::of(c.output().unwrap(), s.dir.path());
    assert_eq!(r.code, 0, "{}", r.text);
    // Without it, the server says unauthorized.
    let r = Run::of(vt_isolated(s.dir.path(), &["org", "list", "--server", &s.url]).output().unwrap(), s.dir.path());
    assert_eq!(r.code, 6, "{}", r.text);
}
