#![no_main]
//! Any byte string, as a frame from a client or from a server: decoding never panics, and a
//! decoded frame re-encodes to exactly its bytes (each frame has one spelling).

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use vt_api::exec::{ClientFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(f) = ClientFrame::decode(bytes.clone()) {
        assert_eq!(&f.encode()[..], data);
    }
    if let Ok(f) = ServerFrame::decode(bytes) {
        assert_eq!(&f.encode()[..], data);
    }
});
