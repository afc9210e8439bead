//! Golden bytes for every message, every-prefix and corruption tests.

use vt_guest_proto::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// (message, its exact frame in hex). Changing any of these is a protocol version bump.
fn golden() -> Vec<(Message, Vec<u8>)> {
    vec![
        (
            Message::Hello { role: Role::Guest, min_version: 1, max_version: 2, software: "vt".into() },
            hex("5654 01 01 0000000b  02 0001 0002 00000002 7674"),
        ),
        (
            Message::Hello { role: Role::Host, min_version: 1, max_version: 1, software: "".into() },
            hex("5654 01 01 00000009  01 0001 0001 00000000"),
        ),
        (
            Message::Launch(Launch {
                argv: vec!["sh".into(), "-c".into()],
                env: vec![("A".into(), "b".into())],
                cwd: "/".into(),
                user: "0".into(),
                hostname: "h".into(),
                ..Launch::default()
            }),
            hex("5654 01 02 00000042
                 00000002 00000002 7368 00000002 2d63
                 00000001 00000001 41 00000001 62
                 00000001 2f  00000001 30  00000001 68
                 00  00000000  00000000  0000000000000000  00000000"),
        ),
        (
            Message::Launch(Launch {
                argv: vec!["x".into()],
                network: Some(Network {
                    addresses: vec![("fd00::2".parse().unwrap(), 64), ("10.0.0.2".parse().unwrap(), 30)],
                    gateways: vec!["fe80::1".parse().unwrap()],
                    mtu: 1420,
                    dns: vec!["10.0.0.1".parse().unwrap()],
                }),
                volumes: vec![Volume { name: "v".into(), label: "l".into(), path: "/p".into() }],
                secrets: vec![Secret { name: "k".into(), data: vec![0, 0xff] }],
                secrets_version: 3,
                secret_env: vec!["k".into()],
                ..Launch::default()
            }),
            hex("5654 01 02 0000008a
                 00000001 00000001 78  00000000  00000000 00000000 00000000
                 01
                 00000002 06 fd000000000000000000000000000002 40  04 0a000002 1e
                 00000001 06 fe800000000000000000000000000001
                 058c
                 00000001 04 0a000001
                 00000001 00000001 76 00000001 6c 00000002 2f70
                 00000001 00000001 6b 00000002 00ff
                 0000000000000003  00000001 00000001 6b"),
        ),
        (
            Message::Ready { pid: 2, init_started_us: 0x0102, entrypoint_started_us: 0x0a0b0c, now_us: 0x0d },
            hex("5654 01 03 0000001c 00000002 0000000000000102 00000000000a0b0c 000000000000000d"),
        ),
        (
            Message::Log { seq: 1, at_us: 7, stream: Stream::Stdout, data: b"hi\n".to_vec() },
            hex("5654 01 04 00000018 0000000000000001 0000000000000007 01 00000003 68690a"),
        ),
        (
            Message::Log { seq: 0x0102, at_us: 0, stream: Stream::Stderr, data: vec![] },
            hex("5654 01 04 00000015 0000000000000102 0000000000000000 02 00000000"),
        ),
        (
            Message::Exited { seq: 2, status: ExitStatus::Code(7) },
            hex("5654 01 05 0000000d 0000000000000002 01 00000007"),
        ),
        (
            Message::Exited { seq: 3, status: ExitStatus::Signal(9) },
            hex("5654 01 05 0000000d 0000000000000003 02 00000009"),
        ),
        (Message::Failed { reason: "no".into() }, hex("5654 01 06 00000006 00000002 6e6f")),
        (Message::Signal { signo: 15 }, hex("5654 01 07 00000004 0000000f")),
        (Message::Shutdown, hex("5654 01 08 00000000")),
        (Message::Ack { seq: 5 }, hex("5654 01 09 00000008 0000000000000005")),
        (Message::Resume, hex("5654 01 0a 00000000")),
        (Message::LogLost { seq: 4, bytes: 4096 }, hex("5654 01 0b 00000010 0000000000000004 0000000000001000")),
        (Message::Restored { wall_clock_us: 1_700_000_000_123_456 }, hex("5654 01 0c 00000008 00060a2418202240")),
        (
            Message::ExecStart {
                id: 1,
                argv: vec!["ls".into()],
                env: vec![],
                cwd: "".into(),
                user: "".into(),
                tty: Some((24, 80)),
            },
            hex("5654 01 10 0000001f 00000001 00000001 00000002 6c73 00000000 00000000 00000000 01 0018 0050"),
        ),
        (
            Message::ExecStart {
                id: 2,
                argv: vec!["x".into()],
                env: vec![("K".into(), "v".into())],
                cwd: "/".into(),
                user: "app".into(),
                tty: None,
            },
            hex("5654 01 10 00000028 00000002 00000001 00000001 78 00000001 00000001 4b 00000001 76
                 00000001 2f 00000003 617070 00"),
        ),
        (Message::ExecStdin { id: 1, data: b"x".to_vec() }, hex("5654 01 11 00000009 00000001 00000001 78")),
        (Message::ExecStdin { id: 1, data: vec![] }, hex("5654 01 11 00000008 00000001 00000000")),
        (
            Message::ExecOutput { id: 1, stream: Stream::Stderr, data: b"x".to_vec() },
            hex("5654 01 12 0000000a 00000001 02 00000001 78"),
        ),
        (Message::ExecExit { id: 3, status: ExitStatus::Code(-1) }, hex("5654 01 13 00000009 00000003 01 ffffffff")),
        (Message::ExecResize { id: 3, rows: 50, cols: 132 }, hex("5654 01 14 00000008 00000003 0032 0084")),
        (Message::ExecSignal { id: 3, signo: 2 }, hex("5654 01 15 00000008 00000003 00000002")),
        (Message::ExecClose { id: 3 }, hex("5654 01 16 00000004 00000003")),
        (Message::ExecWindow { id: 3, bytes: 65536 }, hex("5654 01 17 00000008 00000003 00010000")),
    ]
}

#[test]
fn golden_bytes_encode_and_decode() {
    let mut seen = std::collections::HashSet::new();
    for (msg, bytes) in golden() {
        assert_eq!(msg.encode().unwrap(), bytes, "encoding of {msg:?}");
        let (back, used) = Message::decode(&bytes).unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, bytes.len());
        seen.insert(msg.message_type());
    }
    for t in MessageType::ALL {
        assert!(seen.contains(&t), "no golden frame for {t:?}");
    }
}

#[test]
fn every_prefix_needs_more() {
    for (msg, bytes) in golden() {
        for n in 0..bytes.len() {
            assert_eq!(Message::decode(&bytes[..n]), Err(DecodeError::NeedMore), "prefix {n} of {msg:?}");
        }
    }
}

#[test]
fn frame_buffer_reassembles_byte_by_byte() {
    let mut all = Vec::new();
    for (_, b) in golden() {
        all.extend_from_slice(&b);
    }
    let mut fb = FrameBuffer::new();
    let mut got = Vec::new();
    for b in &all {
        fb.push(std::slice::from_ref(b));
        while let Some(m) = fb.next_message().unwrap() {
            got.push(m);
        }
    }
    let want: Vec<Message> = golden().into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, want);
    assert_eq!(fb.pending(), 0);
}

#[test]
fn invalid_frames() {
    use Invalid::*;
    let inv = |b: &[u8]| match Message::decode(b) {
        Err(DecodeError::Invalid(i)) => i,
        other => panic!("{b:02x?}: {other:?}"),
    };
    assert_eq!(inv(b"X"), BadMagic);
    assert_eq!(inv(b"VX"), BadMagic);
    assert_eq!(inv(&hex("5654 02")), FrameVersion(2));
    assert_eq!(inv(&hex("5654 01 7f")), UnknownType(0x7f));
    assert_eq!(inv(&hex("5654 01 04 00400001")), TooLarge((4 << 20) + 1));
    // A Shutdown with a payload byte.
    assert_eq!(inv(&hex("5654 01 08 00000001 00")), TrailingBytes);
    // Log whose inner length runs past the payload.
    assert_eq!(inv(&hex("5654 01 04 00000015 0000000000000001 0000000000000000 01 00000009")), Truncated);
    assert_eq!(inv(&hex("5654 01 04 00000015 0000000000000001 0000000000000000 03 00000000")), BadValue("stream", 3));
    assert_eq!(
        inv(&hex("5654 01 10 00000015 00000001 00000000 00000000 00000000 00000000 02")),
        BadValue("tty present", 2)
    );
    assert_eq!(inv(&hex("5654 01 06 00000005 00000001 ff")), Utf8);
    // A list count that could not fit the payload is refused without allocating.
    assert_eq!(inv(&hex("5654 01 02 00000004 ffffffff")), Truncated);
}

#[test]
fn oversized_payload_is_refused_on_encode() {
    let m = Message::Log { seq: 1, at_us: 0, stream: Stream::Stdout, data: vec![0; MAX_PAYLOAD as usize] };
    let mut out = vec![1, 2, 3];
    assert!(matches!(m.encode_into(&mut out), Err(EncodeError::TooLarge(_))));
    assert_eq!(out, vec![1, 2, 3]);
}

#[test]
fn log_frames_are_chunked() {
    let data = vec![b'a'; MAX_LOG_CHUNK * 2 + 1];
    let mut out = Vec::new();
    assert_eq!(log_frames(7, 99, Stream::Stderr, &data, &mut out), 10);
    let mut fb = FrameBuffer::new();
    fb.push(&out);
    let mut total = 0;
    let mut n = 0;
    while let Some(Message::Log { seq, at_us, stream, data }) = fb.next_message().unwrap() {
        assert_eq!((seq, at_us, stream), (7 + n as u64, 99, Stream::Stderr));
        assert!(data.len() <= MAX_LOG_CHUNK);
        total += data.len();
        n += 1;
    }
    assert_eq!((n, total), (3, data.len()));
}

#[test]
fn pseudo_random_bytes_never_panic() {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in 0..2000usize {
        let mut b = Vec::with_capacity(len % 64);
        for _ in 0..len % 64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.push(x as u8);
        }
        if len % 3 == 0 && b.len() >= 4 {
            b[..4].copy_from_slice(&hex("5654 01 02"));
        }
        let _ = Message::decode(&b);
    }
}

#[test]
fn resync_finds_the_next_frame() {
    let mut fb = FrameBuffer::new();
    let ack = Message::Ack { seq: 9 }.encode().unwrap();
    // The tail of a frame from an earlier connection, then a whole one.
    fb.push(&hex("01 0004 56"));
    fb.push(&ack);
    assert!(fb.next_message().is_err());
    assert_eq!(fb.resync(), 4);
    assert_eq!(fb.next_message().unwrap(), Some(Message::Ack { seq: 9 }));
    fb.push(b"xyz");
    assert_eq!(fb.resync(), 3);
    assert_eq!(fb.pending(), 0);
}
