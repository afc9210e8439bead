#![no_main]
//! Any byte string: the secrets bundle parser never panics; a parsed bundle
//! re-encodes to exactly the bytes it came from (the format has one spelling).

use libfuzzer_sys::fuzz_target;
use vt_guest_proto::bundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = bundle::parse(data) {
        let again = bundle::encode(b.version, b.secrets.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        assert_eq!(again, data);
    }
});
