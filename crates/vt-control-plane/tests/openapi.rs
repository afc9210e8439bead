//! The committed OpenAPI document must match the code.
//! Regenerate with `VT_UPDATE_OPENAPI=1 cargo test -p vt-control-plane --test openapi`.

#[test]
fn committed_openapi_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../api/openapi.json");
    let generated = vt_control_plane::http::openapi_json();
    if std::env::var_os("VT_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "api/openapi.json differs from the code; run `VT_UPDATE_OPENAPI=1 cargo test -p vt-control-plane --test openapi` and commit it"
    );
}
