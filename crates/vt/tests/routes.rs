//! `vt route create|list|delete` against a real server, in table and JSON form.

mod common;

use common::TestServer;

#[test]
fn route_create_list_delete() {
    let s = TestServer::start();
    s.seed();
    snap!(
        "route_create_tls",
        s.run(&["route", "create", "--hostname", "WWW.example.com", "--process", "web", "--backend-port", "8443"])
    );
    snap!(
        "route_create_tcp_json",
        s.run(&[
            "route",
            "create",
            "--tcp",
            "--process",
            "db",
            "--backend-port",
            "5432",
            "--proxy-protocol",
            "-o",
            "json"
        ])
    );
    snap!(
        "route_taken",
        s.run(&[
            "route",
            "create",
            "--hostname",
            "www.example.com",
            "--port",
            "443",
            "--process",
            "api",
            "--backend-port",
            "1"
        ])
    );
    snap!(
        "route_bad_tcp",
        s.run(&["route", "create", "--tcp", "--hostname", "x.example", "--process", "db", "--backend-port", "1"])
    );
    snap!("route_list", s.run(&["route", "list"]));
    snap!("route_get", s.run(&["route", "get", "www.example.com"]));
    let list = s.run(&["route", "list", "-o", "json"]).json();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let tcp_id = list["items"][1]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["items"][1]["port"], 20000);
    snap!("route_delete", s.run(&["route", "delete", "www.example.com"]));
    let r = s.run(&["route", "delete", &tcp_id, "-o", "json"]);
    assert_eq!((r.code, r.json()["id"].as_str()), (0, Some(tcp_id.as_str())), "{}", r.text);
    snap!("route_delete_missing", s.run(&["route", "delete", &tcp_id]));
    snap!("route_list_empty", s.run(&["route", "list"]));
}
