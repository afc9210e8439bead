#![no_main]

use libfuzzer_sys::fuzz_target;
use vt_ingress::sni::{detect, Detect};

fuzz_target!(|data: &[u8]| {
    let whole = detect(data);
    if let Detect::Sni(host) = &whole {
        assert!(!host.is_empty() && host.len() <= 253);
        assert_eq!(host, &host.to_ascii_lowercase());
    }
    // Monotonic: a definite answer on a prefix is the answer for the whole.
    for n in [data.len() / 2, data.len().saturating_sub(1)] {
        let prefix = detect(&data[..n]);
        if prefix != Detect::NeedMore {
            assert_eq!(prefix, whole);
        }
    }
});
