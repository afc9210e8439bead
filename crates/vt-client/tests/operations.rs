//! The client is the API: one method per operation of the OpenAPI document,
//! named after its operation id (`_follow` marks the streaming form of one).

use std::collections::BTreeSet;

/// The names of the `pub async fn`s of `impl Client` in the client's source.
fn client_methods() -> BTreeSet<String> {
    let src = include_str!("../src/lib.rs");
    let start = src.find("impl Client {").expect("impl Client");
    let end = start + src[start..].find("\n}\n").expect("the end of impl Client");
    src[start..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub async fn "))
        .map(|rest| rest.split(['(', '<']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_client_method_is_an_operation_and_every_operation_has_one() {
    let doc = vt_control_plane::http::api();
    let operations: BTreeSet<String> = doc
        .paths
        .paths
        .values()
        .flat_map(|item| [&item.get, &item.post, &item.put, &item.delete, &item.patch])
        .flatten()
        .map(|op| op.operation_id.clone().expect("every operation has an id"))
        .collect();
    let methods = client_methods();
    assert!(methods.len() >= operations.len(), "{methods:?}");
    for m in &methods {
        let op = m.strip_suffix("_follow").unwrap_or(m);
        assert!(operations.contains(op), "client method `{m}` is no operation of the API (ids: {operations:?})");
    }
    for op in &operations {
        assert!(methods.contains(op), "operation `{op}` has no client method `Client::{op}`");
    }
}
