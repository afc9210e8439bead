#![no_main]
//! Any byte string: decode never panics; a decoded frame re-encodes to exactly the bytes it
//! used; every shorter prefix of a valid frame is NeedMore; the streaming buffer agrees.

use libfuzzer_sys::fuzz_target;
use vt_guest_proto::{DecodeError, FrameBuffer, Message};

fuzz_target!(|data: &[u8]| {
    match Message::decode(data) {
        Ok((msg, used)) => {
            assert_eq!(msg.encode().unwrap(), &data[..used]);
            for n in 0..used {
                assert_eq!(Message::decode(&data[..n]), Err(DecodeError::NeedMore));
            }
        }
        Err(_) => {}
    }
    let mut fb = FrameBuffer::new();
    for chunk in data.chunks(7) {
        fb.push(chunk);
        loop {
            match fb.next_message() {
                Ok(Some(m)) => {
                    let _ = m.encode().unwrap();
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
