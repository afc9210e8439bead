//! PROXY protocol version 2 (binary header), as specified in HAProxy's
//! `proxy-protocol.txt`, section 2.2.
//!
//! Layout: 12-byte signature, one byte version (high nibble, always 2) and
//! command (low nibble: 0 LOCAL, 1 PROXY), one byte address family (high
//! nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport (low nibble:
//! 0 UNSPEC, 1 STREAM, 2 DGRAM), a big-endian u16 length of what follows,
//! then the address block (source address, destination address, source
//! port, destination port; 12 bytes for INET, 36 for INET6, 216 for UNIX),
//! then optional TLVs up to the announced length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

const VERSION_2: u8 = 0x20;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const FAM_UNSPEC: u8 = 0x0;
const FAM_INET: u8 = 0x1;
const FAM_INET6: u8 = 0x2;
const FAM_UNIX: u8 = 0x3;
const PROTO_STREAM: u8 = 0x1;
const PROTO_DGRAM: u8 = 0x2;
const FIXED_LEN: usize = 16;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection was made by the proxy itself (e.g. a health check);
    /// the receiver uses the real connection endpoints.
    Local,
    /// A relayed TCP connection from `src` (the real client) to `dst` (the
    /// address the client connected to).
    Proxy { src: SocketAddr, dst: SocketAddr },
    /// PROXY command with an address family or transport we do not carry
    /// (UNSPEC, UNIX, DGRAM): valid, but the addresses are not usable.
    ProxyUnknown,
}

/// Outcome of decoding a byte prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Consistent with a v2 header so far, but incomplete.
    NeedMore,
    /// Not a valid v2 header.
    Invalid(&'static str),
    /// A complete header occupying the first `len` bytes (TLVs included).
    Complete { header: Header, len: usize },
}

/// Encode a LOCAL header (no addresses).
pub fn encode_local() -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2 | CMD_LOCAL);
    out.push(FAM_UNSPEC << 4);
    out.extend_from_slice(&0u16.to_be_bytes());
    out
}

/// Encode a PROXY header for a TCP connection from `src` (client) to `dst`
/// (the address it connected to).
///
/// IPv4-mapped IPv6 addresses (as seen on a dual-stack socket) are sent as
/// IPv4. If the two families still differ, the IPv4 one is mapped into IPv6
/// so that the header carries a single family.
pub fn encode_proxy(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let src_ip = unmap(src.ip());
    let dst_ip = unmap(dst.ip());
    let mut out = Vec::with_capacity(FIXED_LEN + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2 | CMD_PROXY);
    match (src_ip, dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push((FAM_INET << 4) | PROTO_STREAM);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push((FAM_INET6 << 4) | PROTO_STREAM);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&to_v6(s).octets());
            out.extend_from_slice(&to_v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// Encode any [`Header`]. `ProxyUnknown` is encoded as PROXY/UNSPEC with an
/// empty address block.
pub fn encode(header: &Header) -> Vec<u8> {
    match *header {
        Header::Local => encode_local(),
        Header::Proxy { src, dst } => encode_proxy(src, dst),
        Header::ProxyUnknown => {
            let mut out = encode_local();
            out[12] = VERSION_2 | CMD_PROXY;
            out
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Decode a v2 header from the start of `buf`. Every strict prefix of a valid
/// header yields `NeedMore`; bytes that cannot start a v2 header yield
/// `Invalid` as soon as they are seen.
pub fn decode(buf: &[u8]) -> Decoded {
    let sig_seen = buf.len().min(SIGNATURE.len());
    if buf[..sig_seen] != SIGNATURE[..sig_seen] {
        return Decoded::Invalid("bad signature");
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Decoded::NeedMore;
    };
    if ver_cmd & 0xF0 != VERSION_2 {
        return Decoded::Invalid("unsupported version");
    }
    let cmd = ver_cmd & 0x0F;
    if cmd != CMD_LOCAL && cmd != CMD_PROXY {
        return Decoded::Invalid("unknown command");
    }
    let Some(&fam_proto) = buf.get(13) else {
        return Decoded::NeedMore;
    };
    let fam = fam_proto >> 4;
    let proto = fam_proto & 0x0F;
    if fam > FAM_UNIX {
        return Decoded::Invalid("unknown address family");
    }
    if proto > PROTO_DGRAM {
        return Decoded::Invalid("unknown transport protocol");
    }
    let (Some(&l0), Some(&l1)) = (buf.get(14), buf.get(15)) else {
        return Decoded::NeedMore;
    };
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let addr_len = match fam {
        FAM_INET => 12,
        FAM_INET6 => 36,
        FAM_UNIX => 216,
        _ => 0,
    };
    // The length must cover the address block (for LOCAL too: the receiver
    // skips it, but a shorter block is still malformed).
    if len < addr_len {
        return Decoded::Invalid("length shorter than address block");
    }
    let total = FIXED_LEN + len;
    if buf.len() < total {
        return Decoded::NeedMore;
    }
    let block = &buf[FIXED_LEN..total];
    let header = if cmd == CMD_LOCAL {
        Header::Local
    } else if proto != PROTO_STREAM {
        Header::ProxyUnknown
    } else {
        match fam {
            FAM_INET => {
                let s = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
                let d = Ipv4Addr::new(block[4], block[5], block[6], block[7]);
                let sp = u16::from_be_bytes([block[8], block[9]]);
                let dp = u16::from_be_bytes([block[10], block[11]]);
                Header::Proxy { src: SocketAddr::new(IpAddr::V4(s), sp), dst: SocketAddr::new(IpAddr::V4(d), dp) }
            }
            FAM_INET6 => {
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s.copy_from_slice(&block[0..16]);
                d.copy_from_slice(&block[16..32]);
                let sp = u16::from_be_bytes([block[32], block[33]]);
                let dp = u16::from_be_bytes([block[34], block[35]]);
                Header::Proxy {
                    src: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s)), sp),
                    dst: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d)), dp),
                }
            }
            _ => Header::ProxyUnknown,
        }
    };
    Decoded::Complete { header, len: total }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn golden_ipv4() {
        let bytes = encode_proxy(v4("192.0.2.10:51234"), v4("198.51.100.7:443"));
        #[rustfmt::skip]
        let want: &[u8] = &[
            // signature
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
            0x21,       // version 2, PROXY
            0x11,       // AF_INET, STREAM
            0x00, 0x0C, // 12 bytes of addresses
            192, 0, 2, 10,    // src addr
            198, 51, 100, 7,  // dst addr
            0xC8, 0x22,       // src port 51234
            0x01, 0xBB,       // dst port 443
        ];
        assert_eq!(bytes, want);
        assert_eq!(
            decode(&bytes),
            Decoded::Complete {
                header: Header::Proxy { src: v4("192.0.2.10:51234"), dst: v4("198.51.100.7:443") },
                len: 28
            }
        );
    }

    #[test]
    fn golden_ipv6() {
        let src: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8:0:1::ff]:8443".parse().unwrap();
        let bytes = encode_proxy(src, dst);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
            0x21,       // version 2, PROXY
            0x21,       // AF_INET6, STREAM
            0x00, 0x24, // 36 bytes of addresses
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xff,
            0x9C, 0x40, // 40000
            0x20, 0xFB, // 8443
        ];
        assert_eq!(bytes, want);
        assert_eq!(decode(&bytes), Decoded::Complete { header: Header::Proxy { src, dst }, len: 52 });
    }

    #[test]
    fn golden_local() {
        let bytes = encode_local();
        let want: &[u8] =
            &[0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00];
        assert_eq!(bytes, want);
        assert_eq!(decode(&bytes), Decoded::Complete { header: Header::Local, len: 16 });
        assert_eq!(encode(&Header::Local), want);
    }

    #[test]
    fn mapped_and_mixed_families() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1000".parse().unwrap();
        let bytes = encode_proxy(mapped, v4("127.0.0.1:443"));
        assert_eq!(bytes[13], 0x11);
        let six: SocketAddr = "[::1]:443".parse().unwrap();
        let bytes = encode_proxy(v4("10.0.0.1:5"), six);
        assert_eq!(bytes[13], 0x21);
        let Decoded::Complete { header: Header::Proxy { src, .. }, .. } = decode(&bytes) else { panic!("decode") };
        assert_eq!(src.ip(), "::ffff:10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn every_prefix_needs_more() {
        for bytes in [
            encode_proxy(v4("1.2.3.4:5"), v4("6.7.8.9:10")),
            encode_proxy("[::1]:1".parse().unwrap(), "[::2]:2".parse().unwrap()),
            encode_local(),
        ] {
            for n in 0..bytes.len() {
                assert_eq!(decode(&bytes[..n]), Decoded::NeedMore, "prefix {n}");
            }
        }
    }

    #[test]
    fn tlvs_and_trailing_payload() {
        let mut bytes = encode_proxy(v4("1.2.3.4:5"), v4("6.7.8.9:10"));
        // Append a NOOP TLV (type 0x04, length 2) and announce it.
        bytes[15] += 5;
        bytes.extend_from_slice(&[0x04, 0x00, 0x02, 0xAA, 0xBB]);
        bytes.extend_from_slice(b"payload");
        assert!(matches!(decode(&bytes), Decoded::Complete { len: 33, .. }));
    }

    #[test]
    fn invalid_headers() {
        assert!(matches!(decode(b"PROXY TCP4 1.2.3.4"), Decoded::Invalid(_)));
        assert!(matches!(decode(b"\r\n\r\n\0\r\nQUIX"), Decoded::Invalid(_)));
        let good = encode_proxy(v4("1.2.3.4:5"), v4("6.7.8.9:10"));
        let mut m = good.clone();
        m[12] = 0x11; // version 1 in the binary format
        assert_eq!(decode(&m), Decoded::Invalid("unsupported version"));
        let mut m = good.clone();
        m[12] = 0x22; // command 2
        assert_eq!(decode(&m), Decoded::Invalid("unknown command"));
        let mut m = good.clone();
        m[13] = 0x41; // family 4
        assert_eq!(decode(&m), Decoded::Invalid("unknown address family"));
        let mut m = good.clone();
        m[13] = 0x13; // transport 3
        assert_eq!(decode(&m), Decoded::Invalid("unknown transport protocol"));
        let mut m = good.clone();
        m[15] = 11; // INET with an 11-byte block
        assert_eq!(decode(&m), Decoded::Invalid("length shorter than address block"));
    }

    #[test]
    fn unix_and_dgram_are_proxy_unknown() {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x31, 0x00, 216]);
        h.extend_from_slice(&[0u8; 216]);
        assert_eq!(decode(&h), Decoded::Complete { header: Header::ProxyUnknown, len: 232 });
        let mut g = encode_proxy(v4("1.2.3.4:5"), v4("6.7.8.9:10"));
        g[13] = 0x12;
        assert!(matches!(decode(&g), Decoded::Complete { header: Header::ProxyUnknown, .. }));
        let u = encode(&Header::ProxyUnknown);
        assert_eq!(decode(&u), Decoded::Complete { header: Header::ProxyUnknown, len: 16 });
    }
}
