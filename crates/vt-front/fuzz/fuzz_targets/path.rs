#![no_main]

use libfuzzer_sys::fuzz_target;
use vt_front::path::{route, Target, MAX_PATH};

// Any request path: routed or refused, never a panic; what is routed stays inside the
// workspace it names (the prefix plus the rest is the path, the rest has no dot segment).
fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    match route(path) {
        Ok(Target::Ide { name, rest }) => {
            assert!(rest.starts_with('/'));
            assert_eq!(format!("/workspace/{name}{rest}"), path);
            assert!(!rest.split('/').any(|s| s == "." || s == ".."));
        }
        Ok(Target::Port { name, port, rest }) => {
            assert!(rest.starts_with('/') && port != 0);
            assert_eq!(format!("/workspace/{name}/port/{port}{rest}"), path);
            assert!(!rest.split('/').any(|s| s == "." || s == ".."));
        }
        Ok(Target::Redirect(to)) => assert_eq!(to, format!("{path}/")),
        Ok(Target::Elsewhere) => {}
        Err(e) => {
            assert!(path.len() > MAX_PATH || e.to_string().chars().count() < 300);
        }
    }
});
