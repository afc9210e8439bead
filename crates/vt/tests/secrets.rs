//! `vt secrets`: receipts that say which version, which deploy and what to run
//! next; lists of names and metadata; bad input refused without echoing a
//! value. (The values reaching a real microVM, and the leak scan: `secrets_e2e.rs`.)

mod common;

use common::TestServer;

const VALUE: &str = "hunter2-never-printed";

/// No output of the run holds the value (raw, or base64 as the API carries it).
fn clean(r: &common::Run) -> &common::Run {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE);
    assert!(!r.text.contains(VALUE) && !r.text.contains(&b64), "a value in the output:\n{}", r.text);
    r
}

#[test]
fn secrets_are_set_staged_deployed_and_listed_without_values() {
    let s = TestServer::start();
    s.seed();
    let run = |args: &[&str]| {
        let r = s.run(args);
        clean(&r);
        r
    };
    snap!("secrets_list_empty", run(&["secrets", "list"]));
    // No release yet: a version, no deploy.
    snap!("secrets_set", run(&["secrets", "set", &format!("DATABASE_URL={VALUE}"), "API_KEY=k1"]));
    // Staged: nothing rolls out.
    let file = s.dir.path().join("tls.key");
    std::fs::write(&file, format!("{VALUE}\n\0binary")).unwrap();
    snap!(
        "secrets_set_from_file_staged",
        run(&["secrets", "set", "TLS_KEY", "--from-file", file.to_str().unwrap(), "--stage"])
    );
    snap!("secrets_unset_staged", run(&["secrets", "unset", "API_KEY", "--stage"]));
    snap!("secrets_list_staged", run(&["secrets", "list"]));
    snap!("secrets_deploy", run(&["secrets", "deploy"]));
    snap!("secrets_deploy_nothing_staged", run(&["secrets", "deploy"]));
    // The same value again: nothing changes.
    snap!("secrets_set_unchanged", run(&["secrets", "set", &format!("DATABASE_URL={VALUE}")]));
    let json = run(&["secrets", "list", "-o", "json"]);
    snap!("secrets_list_json", json);
    let names: Vec<String> =
        json.json()["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["DATABASE_URL", "TLS_KEY"]);

    // A bundle, the format of /run/secrets/vt.bundle.
    let bundle = s.dir.path().join("prod.bundle");
    std::fs::write(
        &bundle,
        vt_guest_proto::bundle::encode(7, [("A", VALUE.as_bytes()), ("B", b"\x00\xff".as_slice())]),
    )
    .unwrap();
    snap!("secrets_import", run(&["secrets", "import", bundle.to_str().unwrap()]));
}

#[test]
fn bad_secrets_input_is_refused_and_never_echoed() {
    let s = TestServer::start();
    s.seed();
    let run = |args: &[&str]| {
        let r = s.run(args);
        clean(&r);
        assert_ne!(r.code, 0, "{}", r.text);
        r
    };
    // A value typed without its name: named by position, not shown.
    snap!("secrets_set_no_equals", run(&["secrets", "set", VALUE]));
    snap!("secrets_set_bad_name", run(&["secrets", "set", &format!("db-url={VALUE}")]));
    snap!("secrets_set_empty", run(&["secrets", "set", "EMPTY="]));
    snap!("secrets_set_twice", run(&["secrets", "set", "A=1", &format!("A={VALUE}")]));
    snap!("secrets_from_file_with_value", run(&["secrets", "set", &format!("A={VALUE}"), "--from-file", "x"]));
    snap!("secrets_unset_unknown", run(&["secrets", "unset", "NOPE"]));
    let bad = s.dir.path().join("bad.bundle");
    std::fs::write(&bad, format!("VTSECRETS 1\nversion 1\ncount 1\nA 99\n{VALUE}\n")).unwrap();
    snap!("secrets_import_bad", run(&["secrets", "import", bad.to_str().unwrap()]));
    let big = s.dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1]).unwrap();
    snap!("secrets_set_too_large", run(&["secrets", "set", "BIG", "--from-file", big.to_str().unwrap()]));
    // A viewer lists but does not set.
    let viewer = s.run(&["token", "create", "eyes", "--role", "viewer", "-o", "json"]).json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s.run_with(&["secrets", "set", &format!("A={VALUE}")], &[("VT_TOKEN", &viewer)]);
    clean(&r);
    snap!("secrets_viewer_forbidden", r);
}
