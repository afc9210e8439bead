//! Server Name Indication detection from the first bytes of a TLS connection.
//!
//! [`detect`] looks at a byte prefix received from a client and tells apart:
//! more bytes are needed ([`Detect::NeedMore`]), the bytes cannot be the start of
//! a TLS ClientHello ([`Detect::NotTls`]), a complete ClientHello without a
//! `server_name` extension ([`Detect::NoSni`]), and a complete ClientHello that
//! names a host ([`Detect::Sni`]).
//!
//! The parser never allocates except for the returned host name, never panics
//! on any input (see the fuzz targets), and never reports `NotTls` for a strict
//! prefix of a valid ClientHello. A ClientHello fragmented over several TLS
//! records is reassembled. The whole ClientHello handshake message is capped at
//! [`MAX_CLIENT_HELLO`] bytes.

/// Largest ClientHello handshake message (header included) we accept.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Largest number of bytes [`detect`] will ever need from the wire: the capped
/// handshake message plus a 5-byte header for each of at most 256 records.
pub const MAX_WIRE_PREFIX: usize = MAX_CLIENT_HELLO + 5 * MAX_RECORDS;

const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST_NAME: u8 = 0;
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const MAX_RECORDS: usize = 256;

/// Outcome of looking at a byte prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detect {
    /// The prefix is consistent with a ClientHello but is not complete yet.
    NeedMore,
    /// The bytes are not (or cannot become) a TLS ClientHello we accept.
    NotTls(&'static str),
    /// A complete ClientHello without a host_name server name.
    NoSni,
    /// A complete ClientHello naming this host (validated, lowercased).
    Sni(String),
}

/// Inspect `buf`, the bytes received so far from the client.
pub fn detect(buf: &[u8]) -> Detect {
    // Reassemble the handshake message from consecutive handshake records
    // into a fixed-size stack buffer (no allocation, bounded).
    let mut hs = [0u8; MAX_CLIENT_HELLO];
    let mut hs_len = 0usize;
    let mut pos = 0usize;
    let mut records = 0usize;
    loop {
        // Record header: type(1) version(2) length(2).
        let Some(&ct) = buf.get(pos) else {
            return Detect::NeedMore;
        };
        if ct != CONTENT_TYPE_HANDSHAKE {
            return Detect::NotTls("record is not a handshake record");
        }
        if let Some(&major) = buf.get(pos + 1) {
            if major != 3 {
                return Detect::NotTls("record version major is not 3");
            }
        }
        if let Some(&minor) = buf.get(pos + 2) {
            if minor > 4 {
                return Detect::NotTls("record version minor is unknown");
            }
        }
        let (Some(&l0), Some(&l1)) = (buf.get(pos + 3), buf.get(pos + 4)) else {
            return Detect::NeedMore;
        };
        let rec_len = usize::from(u16::from_be_bytes([l0, l1]));
        if rec_len == 0 {
            return Detect::NotTls("empty handshake record");
        }
        if rec_len > MAX_RECORD_PAYLOAD {
            return Detect::NotTls("record longer than 2^14");
        }
        records += 1;
        if records > MAX_RECORDS {
            return Detect::NotTls("client hello split over too many records");
        }
        let body_start = pos + 5;
        let available = buf.len().saturating_sub(body_start).min(rec_len);
        let frag = &buf[body_start..body_start + available];
        let take = frag.len().min(MAX_CLIENT_HELLO - hs_len);
        hs[hs_len..hs_len + take].copy_from_slice(&frag[..take]);
        hs_len += take;

        // Check the handshake header as soon as its bytes are present.
        if let Some(&ty) = hs[..hs_len].first() {
            if ty != HANDSHAKE_CLIENT_HELLO {
                return Detect::NotTls("first handshake message is not a ClientHello");
            }
        }
        if hs_len >= 4 {
            let msg_len = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
            let total = 4 + msg_len;
            if total > MAX_CLIENT_HELLO {
                return Detect::NotTls("ClientHello larger than 16 KiB");
            }
            if hs_len >= total {
                // Bytes after the ClientHello in its last record are left to
                // the backend's TLS stack to refuse. Ignoring them keeps the
                // answer monotonic: once a prefix gets a definite answer,
                // every longer input gets the same one.
                return parse_client_hello(&hs[4..total]);
            }
        }
        if available < rec_len {
            return Detect::NeedMore;
        }
        if take < frag.len() {
            return Detect::NotTls("ClientHello larger than 16 KiB");
        }
        pos = body_start + rec_len;
    }
}

/// A tiny cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Parse a complete ClientHello body (after the 4-byte handshake header).
fn parse_client_hello(body: &[u8]) -> Detect {
    match parse_client_hello_inner(body) {
        Ok(d) => d,
        Err(reason) => Detect::NotTls(reason),
    }
}

fn parse_client_hello_inner(body: &[u8]) -> Result<Detect, &'static str> {
    let mut r = Reader { buf: body };
    let version = r.u16().ok_or("truncated client_version")?;
    if version >> 8 != 3 {
        return Err("client_version major is not 3");
    }
    r.take(32).ok_or("truncated random")?;
    let sid_len = r.u8().ok_or("truncated session id")?;
    if sid_len > 32 {
        return Err("session id longer than 32");
    }
    r.take(usize::from(sid_len)).ok_or("truncated session id")?;
    let cs_len = r.u16().ok_or("truncated cipher suites")?;
    if cs_len < 2 || cs_len % 2 != 0 {
        return Err("bad cipher suites length");
    }
    r.take(usize::from(cs_len)).ok_or("truncated cipher suites")?;
    let comp_len = r.u8().ok_or("truncated compression methods")?;
    if comp_len < 1 {
        return Err("no compression methods");
    }
    r.take(usize::from(comp_len)).ok_or("truncated compression methods")?;
    if r.is_empty() {
        // No extensions at all (legal before TLS 1.3).
        return Ok(Detect::NoSni);
    }
    let ext_len = r.u16().ok_or("truncated extensions length")?;
    let ext_block = r.take(usize::from(ext_len)).ok_or("truncated extensions")?;
    if !r.is_empty() {
        return Err("bytes after extensions");
    }
    let mut exts = Reader { buf: ext_block };
    let mut found: Option<String> = None;
    let mut seen_sni = false;
    while !exts.is_empty() {
        let ty = exts.u16().ok_or("truncated extension header")?;
        let len = exts.u16().ok_or("truncated extension header")?;
        let data = exts.take(usize::from(len)).ok_or("truncated extension")?;
        if ty != EXT_SERVER_NAME {
            continue;
        }
        if seen_sni {
            return Err("duplicate server_name extension");
        }
        seen_sni = true;
        found = parse_server_name(data)?;
    }
    Ok(match found {
        Some(h) => Detect::Sni(h),
        None => Detect::NoSni,
    })
}

fn parse_server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader { buf: data };
    let list_len = r.u16().ok_or("truncated server_name list")?;
    let list = r.take(usize::from(list_len)).ok_or("truncated server_name list")?;
    if !r.is_empty() {
        return Err("bytes after server_name list");
    }
    if list.is_empty() {
        return Err("empty server_name list");
    }
    let mut names = Reader { buf: list };
    let mut host = None;
    while !names.is_empty() {
        let name_type = names.u8().ok_or("truncated server name")?;
        let len = names.u16().ok_or("truncated server name")?;
        let name = names.take(usize::from(len)).ok_or("truncated server name")?;
        if name_type == NAME_TYPE_HOST_NAME {
            if host.is_some() {
                return Err("more than one host_name");
            }
            host = Some(normalize_hostname(name).ok_or("invalid host_name")?);
        }
    }
    Ok(host)
}

/// Validate a DNS host name (as sent in SNI or configured on a route) and
/// return it lowercased. Accepts letters, digits, `-` and `_` in labels of
/// 1..=63 bytes, at most 253 bytes overall, no trailing dot, no IP literal
/// restriction (SNI must not carry IP literals but we do not need to care).
pub fn normalize_hostname(name: &[u8]) -> Option<String> {
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return None;
        }
        if !label.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
    }
    // All bytes are ASCII here.
    Some(name.iter().map(|b| char::from(b.to_ascii_lowercase())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello for `golden.example.com` captured from rustls 0.23
    /// (ring provider) and committed, so the parser is checked against bytes
    /// that do not depend on the rustls version in use. Fragment boundaries:
    /// a single record.
    pub(crate) fn golden() -> Vec<u8> {
        crate::sni_golden::GOLDEN_CLIENT_HELLO.to_vec()
    }

    #[test]
    fn golden_client_hello() {
        assert_eq!(detect(&golden()), Detect::Sni("golden.example.com".into()));
    }

    #[test]
    fn golden_every_prefix_needs_more() {
        let g = golden();
        for n in 0..g.len() {
            assert_eq!(detect(&g[..n]), Detect::NeedMore, "prefix of {n} bytes");
        }
    }

    /// Split a single-record ClientHello into records of `chunk` payload bytes.
    fn refragment(single: &[u8], chunk: usize) -> Vec<u8> {
        let version = [single[1], single[2]];
        let payload = &single[5..];
        let mut out = Vec::new();
        for piece in payload.chunks(chunk) {
            out.push(22);
            out.extend_from_slice(&version);
            out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            out.extend_from_slice(piece);
        }
        out
    }

    #[test]
    fn multi_record_client_hello() {
        let g = golden();
        for chunk in [2usize, 3, 7, 50, 100, 500] {
            let frag = refragment(&g, chunk);
            assert_eq!(detect(&frag), Detect::Sni("golden.example.com".into()), "chunk {chunk}");
            for n in 0..frag.len() {
                assert_eq!(detect(&frag[..n]), Detect::NeedMore, "chunk {chunk} prefix {n}");
            }
        }
    }

    #[test]
    fn bytes_after_client_hello_are_ignored() {
        let mut g = golden();
        g.extend_from_slice(b"\x17\x03\x03\x00\x01x");
        assert_eq!(detect(&g), Detect::Sni("golden.example.com".into()));
    }

    #[test]
    fn not_tls_inputs() {
        assert!(matches!(detect(b"GET / HTTP/1.1\r\n"), Detect::NotTls(_)));
        assert!(matches!(detect(b"SSH-2.0-OpenSSH"), Detect::NotTls(_)));
        assert!(matches!(detect(&[22, 2]), Detect::NotTls(_)));
        assert!(matches!(detect(&[22, 3, 9]), Detect::NotTls(_)));
        assert!(matches!(detect(&[22, 3, 1, 0, 0]), Detect::NotTls(_)));
        assert!(matches!(detect(&[22, 3, 1, 0x40, 1]), Detect::NotTls(_)));
        // A ServerHello (type 2) instead of a ClientHello.
        assert!(matches!(detect(&[22, 3, 1, 0, 4, 2]), Detect::NotTls(_)));
        // A ClientHello claiming to be larger than the cap.
        assert!(matches!(detect(&[22, 3, 1, 0, 4, 1, 0, 0x50, 0]), Detect::NotTls(_)));
    }

    #[test]
    fn mutations_are_not_tls() {
        let g = golden();
        // Record content type.
        let mut m = g.clone();
        m[0] = 23;
        assert!(matches!(detect(&m), Detect::NotTls(_)));
        // Record length shorter than the handshake message: the handshake
        // then continues in a "next record" whose header is garbage.
        let mut m = g.clone();
        let rl = u16::from_be_bytes([m[3], m[4]]) - 1;
        m[3..5].copy_from_slice(&rl.to_be_bytes());
        assert!(matches!(detect(&m), Detect::NotTls(_)));
        // Handshake length one shorter than the record: the extensions
        // block no longer fits in the message.
        let mut m = g.clone();
        m[8] = m[8].wrapping_sub(1);
        assert!(matches!(detect(&m), Detect::NotTls(_)));
        // Session id length > 32.
        let mut m = g.clone();
        m[5 + 4 + 2 + 32] = 33;
        assert!(matches!(detect(&m), Detect::NotTls(_)));
        // Extensions length too long for the message.
        let mut m = g.clone();
        let sid = usize::from(m[5 + 4 + 2 + 32]);
        let mut p = 5 + 4 + 2 + 32 + 1 + sid;
        let cs = usize::from(u16::from_be_bytes([m[p], m[p + 1]]));
        p += 2 + cs;
        let comp = usize::from(m[p]);
        p += 1 + comp;
        let el = u16::from_be_bytes([m[p], m[p + 1]]) + 1;
        m[p..p + 2].copy_from_slice(&el.to_be_bytes());
        assert!(matches!(detect(&m), Detect::NotTls(_)));
        // Invalid host name character in SNI.
        let mut m = g.clone();
        let at = find(&m, b"golden.example.com").unwrap();
        m[at] = b'/';
        assert_eq!(detect(&m), Detect::NotTls("invalid host_name"));
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn single_byte_flips_never_panic() {
        let g = golden();
        for i in 0..g.len() {
            for bit in 0..8 {
                let mut m = g.clone();
                m[i] ^= 1 << bit;
                let whole = detect(&m);
                // Monotonic: a definite answer on a prefix is the answer.
                for n in [i, i + 1, m.len() - 1] {
                    let prefix = detect(&m[..n.min(m.len())]);
                    if prefix != Detect::NeedMore {
                        assert_eq!(prefix, whole, "flip {i}/{bit} prefix {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn hostname_rules() {
        assert_eq!(normalize_hostname(b"A.Example.COM").as_deref(), Some("a.example.com"));
        assert_eq!(normalize_hostname(b"x_y-1.test").as_deref(), Some("x_y-1.test"));
        assert_eq!(normalize_hostname(b""), None);
        assert_eq!(normalize_hostname(b"a..b"), None);
        assert_eq!(normalize_hostname(b"a.b."), None);
        assert_eq!(normalize_hostname(b"-a.b"), None);
        assert_eq!(normalize_hostname(b"a b"), None);
        assert_eq!(normalize_hostname("é.test".as_bytes()), None);
        assert_eq!(normalize_hostname(&[b'a'; 64]), None);
    }

    #[test]
    fn no_extensions_is_no_sni() {
        // Minimal ClientHello: version, random, empty session id, one suite,
        // one compression method, no extensions.
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        let mut hs = vec![1, 0, 0, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1, 0, hs.len() as u8];
        rec.extend_from_slice(&hs);
        assert_eq!(detect(&rec), Detect::NoSni);
        for n in 0..rec.len() {
            assert_eq!(detect(&rec[..n]), Detect::NeedMore);
        }
    }
}

#[cfg(test)]
mod rustls_tests {
    use super::*;

    #[test]
    fn live_rustls_client_hello() {
        for host in ["a.test", "Mixed.Case.Example", "x.y.z.example.org"] {
            let hello = crate::testing::rustls_client_hello(host);
            assert_eq!(detect(&hello), Detect::Sni(host.to_ascii_lowercase()));
            for n in 0..hello.len() {
                assert_eq!(detect(&hello[..n]), Detect::NeedMore, "{host} prefix {n}");
            }
        }
    }
}
