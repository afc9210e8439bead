//! `vt token`: create (the secret once), list (never secrets), revoke; and
//! what an org's token can and cannot do through the CLI.

mod common;

use common::TestServer;

/// The secret in `vt token create -o json`'s answer.
fn secret(r: &common::Run) -> String {
    r.json()["secret"].as_str().unwrap().to_owned()
}

#[test]
fn tokens_are_created_listed_and_revoked() {
    let s = TestServer::start();
    s.seed();
    let r = s.run(&["token", "create", "ci", "--role", "deployer"]);
    snap!("token_create", r);
    assert!(r.stdout.contains("secret: vt_"), "{}", r.text);
    let json = s.run(&["token", "create", "eyes", "--role", "viewer", "--expires-in", "30d", "-o", "json"]);
    snap!("token_create_json", json);
    let viewer = secret(&json);
    snap!("token_list", s.run(&["token", "list", "--org", "acme"]));
    let list = s.run(&["token", "list", "-o", "json"]);
    assert_eq!(list.code, 0, "{}", list.text);
    assert!(!list.stdout.contains("vt_") && !list.stdout.contains(&viewer[3..]), "no secret is listed");
    let names: Vec<String> =
        list.json()["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["admin", "console", "ci", "eyes"], "the console user's password is a token too");

    // The viewer reads its org and nothing else; it cannot change it.
    let as_viewer = |args: &[&str]| s.run_with(args, &[("VT_TOKEN", &viewer)]);
    let r = as_viewer(&["org", "list", "-o", "json"]);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1, "{}", r.text);
    snap!("token_viewer_forbidden", as_viewer(&["scale", "web=2"]));

    let id = json.json()["id"].as_str().unwrap().to_owned();
    snap!("token_revoke", s.run(&["token", "revoke", &id]));
    snap!("token_revoked_refused", as_viewer(&["org", "list"]));
    snap!("token_list_all", s.run(&["token", "list", "--all"]));
}

#[test]
fn bad_token_input_is_refused_before_the_server() {
    let s = TestServer::start();
    s.seed();
    snap!("token_bad_expiry", s.run(&["token", "create", "x", "--role", "viewer", "--expires-in", "3w"]));
    snap!("token_bad_role", s.run(&["token", "create", "x", "--role", "root"]));
    // The server names the field it refuses.
    snap!("token_node_without_node", s.run(&["token", "create", "x", "--role", "node"]));
    snap!("token_revoke_missing", s.run(&["token", "revoke", "tok_01jd8x6k3v9q4m2t7r5w0y1zcj"]));
}
