#![no_main]

use libfuzzer_sys::fuzz_target;
use vt_ingress::proxy_v2::{decode, encode, Decoded, Header};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Decoded::Complete { header, len } => {
            assert!(len >= 16 && len <= data.len());
            // Re-encoding is stable: encode(decode(encode(h))) == encode(h).
            // (Not decode(encode(h)) == h: IPv4-mapped IPv6 addresses are
            // re-encoded as IPv4 on purpose.)
            if let Header::Proxy { .. } | Header::Local = header {
                let again = encode(&header);
                match decode(&again) {
                    Decoded::Complete {
                        header: h2,
                        len: l2,
                    } => {
                        assert_eq!(l2, again.len());
                        assert_eq!(encode(&h2), again);
                    }
                    other => panic!("re-encoded header does not decode: {other:?}"),
                }
            }
            // Every strict prefix of a complete header needs more.
            for n in 0..len {
                assert_eq!(decode(&data[..n]), Decoded::NeedMore);
            }
        }
        Decoded::NeedMore | Decoded::Invalid(_) => {}
    }
});
