#![no_main]

use libfuzzer_sys::fuzz_target;
use vt_ingress::proxy_v2::{decode, encode, Decoded, Header};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Decoded::Complete { header, len } => {
            assert!(len >= 16 && len <= data.len());
            // What we decode re-encodes to something that decodes the same.
            if let Header::Proxy { .. } | Header::Local = header {
                let again = encode(&header);
                assert_eq!(decode(&again), Decoded::Complete { header, len: again.len() });
            }
            // Every strict prefix of a complete header needs more.
            for n in 0..len {
                assert_eq!(decode(&data[..n]), Decoded::NeedMore);
            }
        }
        Decoded::NeedMore | Decoded::Invalid(_) => {}
    }
});
