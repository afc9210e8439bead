//! The secrets bundle: every secret of an instance in one file,
//! `/run/secrets/vt.bundle`, beside one file per secret. A fixed, versioned,
//! binary-safe format that any language reads with a few lines and no
//! evaluation (no quoting, no escapes, no shell):
//!
//! ```text
//! VTSECRETS 1\n                      magic and format version
//! version <N>\n                      the env's secrets version, decimal
//! count <n>\n                        how many secrets follow, decimal
//! n times:
//!   <NAME> <LEN>\n                   a name, one space, the value's length in bytes, decimal
//!   <LEN bytes>\n                    the value, raw (any bytes), then a newline
//! end of file
//! ```
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_NAME`] bytes, unique, in
//! ascending byte order. Numbers are decimal without sign or leading zeros
//! (`0` itself is allowed). Nothing may follow the last value's newline.
//! `vt secrets import` reads the same format. See `docs/secrets.md`.

use std::fmt;

/// The first line.
pub const MAGIC_LINE: &[u8] = b"VTSECRETS 1\n";
/// The bundle's file name in `/run/secrets/` (never a secret's name: it has a `.`).
pub const FILE_NAME: &str = "vt.bundle";
/// The longest name.
pub const MAX_NAME: usize = 255;
/// The largest value.
pub const MAX_VALUE: usize = 1 << 20;
/// The most secrets in one bundle.
pub const MAX_COUNT: usize = 10_000;

/// A parsed bundle.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub version: u64,
    /// `(name, value)`, names ascending.
    pub secrets: Vec<(String, Vec<u8>)>,
}

/// Never shows a value.
impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, usize)> = self.secrets.iter().map(|(n, v)| (n.as_str(), v.len())).collect();
        f.debug_struct("Bundle").field("version", &self.version).field("secrets (name, bytes)", &names).finish()
    }
}

/// Why bytes are not a bundle: what, and at which byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError {
    pub offset: usize,
    pub what: String,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for BundleError {}

fn valid_name(n: &[u8]) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && (n[0].is_ascii_alphabetic() || n[0] == b'_')
        && n.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// The bundle of secrets `(name, value)` at `version`. Names are sorted here;
/// the caller gives valid, unique names.
pub fn encode<'a>(version: u64, secrets: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut secrets: Vec<(&str, &[u8])> = secrets.into_iter().collect();
    secrets.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = MAGIC_LINE.to_vec();
    out.extend_from_slice(format!("version {version}\ncount {}\n", secrets.len()).as_bytes());
    for (name, value) in secrets {
        out.extend_from_slice(format!("{name} {}\n", value.len()).as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err<T>(&self, at: usize, what: impl Into<String>) -> Result<T, BundleError> {
        Err(BundleError { offset: at, what: what.into() })
    }

    /// The bytes up to the next newline (not included); the newline is consumed.
    fn line(&mut self, what: &str) -> Result<&'a [u8], BundleError> {
        let rest = &self.b[self.at..];
        match rest.iter().position(|&c| c == b'\n') {
            Some(i) => {
                self.at += i + 1;
                Ok(&rest[..i])
            }
            None => self.err(self.b.len(), format!("the file ends inside {what} (no newline)")),
        }
    }

    /// A decimal number without sign or leading zeros, at most `max`.
    fn number(&self, at: usize, s: &[u8], what: &str, max: u64) -> Result<u64, BundleError> {
        let ok = !s.is_empty() && s.len() <= 20 && s.iter().all(u8::is_ascii_digit) && (s == b"0" || s[0] != b'0');
        let n = if ok { std::str::from_utf8(s).ok().and_then(|s| s.parse::<u64>().ok()) } else { None };
        match n {
            Some(n) if n <= max => Ok(n),
            Some(n) => self.err(at, format!("{what} {n} is more than {max}")),
            None => self.err(at, format!("{what} must be a decimal number without sign or leading zeros")),
        }
    }

    /// `<key> <number>` on its own line.
    fn keyed(&mut self, key: &str, max: u64) -> Result<u64, BundleError> {
        let at = self.at;
        let line = self.line(&format!("the `{key}` line"))?;
        let Some(n) = line.strip_prefix(key.as_bytes()).and_then(|r| r.strip_prefix(b" ")) else {
            return self.err(at, format!("expected `{key} <number>`"));
        };
        self.number(at + key.len() + 1, n, key, max)
    }
}

/// Parse a bundle, refusing anything the format does not allow.
pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
    let mut r = Reader { b: bytes, at: 0 };
    if !bytes.starts_with(MAGIC_LINE) {
        let known = MAGIC_LINE.starts_with(&bytes[..bytes.len().min(MAGIC_LINE.len())]);
        let what = if known {
            "the file ends inside the first line"
        } else {
            "not a secrets bundle: it must start with `VTSECRETS 1`"
        };
        return r.err(0, what);
    }
    r.at = MAGIC_LINE.len();
    let version = r.keyed("version", u64::MAX)?;
    let count = r.keyed("count", MAX_COUNT as u64)? as usize;
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let at = r.at;
        let line = r.line("a secret's header")?;
        let Some(space) = line.iter().position(|&c| c == b' ') else {
            return r.err(at, "expected `<NAME> <LEN>`");
        };
        let (name, len) = (&line[..space], &line[space + 1..]);
        if !valid_name(name) {
            return r.err(at, "a name must be 1-255 characters of A-Z, a-z, 0-9 and '_', not starting with a digit");
        }
        let name = String::from_utf8_lossy(name).into_owned();
        if let Some((prev, _)) = secrets.last() {
            if prev.as_bytes() >= name.as_bytes() {
                let what = if *prev == name { "is listed twice" } else { "is out of order (names ascend)" };
                return r.err(at, format!("secret `{name}` {what}"));
            }
        }
        let len = r.number(at + space + 1, len, "a value's length", MAX_VALUE as u64)? as usize;
        let start = r.at;
        if bytes.len() - start < len + 1 {
            return r.err(bytes.len(), format!("the file ends inside the value of `{name}` ({len} bytes announced)"));
        }
        if bytes[start + len] != b'\n' {
            return r.err(start + len, format!("the value of `{name}` must be followed by a newline"));
        }
        secrets.push((name, bytes[start..start + len].to_vec()));
        r.at = start + len + 1;
    }
    if r.at != bytes.len() {
        return r.err(r.at, format!("{} byte(s) after the last secret", bytes.len() - r.at));
    }
    Ok(Bundle { version, secrets })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &[u8] = b"VTSECRETS 1\nversion 3\ncount 2\nAPI_KEY 0\n\nDATABASE_URL 5\na\nb\x00\xff\n";

    #[test]
    fn golden_bytes() {
        let b = encode(3, [("DATABASE_URL", &b"a\nb\x00\xff"[..]), ("API_KEY", &b""[..])]);
        assert_eq!(b, GOLDEN);
        let parsed = parse(GOLDEN).unwrap();
        assert_eq!(parsed.version, 3);
        assert_eq!(
            parsed.secrets,
            vec![("API_KEY".to_owned(), vec![]), ("DATABASE_URL".to_owned(), b"a\nb\x00\xff".to_vec())]
        );
        assert_eq!(encode(0, []), b"VTSECRETS 1\nversion 0\ncount 0\n");
        assert!(!format!("{parsed:?}").contains("a\\nb"), "Debug shows no value");
    }

    #[test]
    fn every_proper_prefix_is_refused_cleanly() {
        for end in 0..GOLDEN.len() {
            let err = parse(&GOLDEN[..end]).unwrap_err();
            assert!(err.offset <= end, "{end}: {err}");
        }
    }

    #[test]
    fn errors_name_the_byte() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"VTSECRETS 2\n", 0, "must start with"),
            (b"VTSECRETS 1\nversion -1\ncount 0\n", 20, "decimal number"),
            (b"VTSECRETS 1\nversion 01\ncount 0\n", 20, "leading zeros"),
            (b"VTSECRETS 1\nversion 1\ncount 99999\n", 28, "more than"),
            (b"VTSECRETS 1\nversion 1\ncount 1\n1A 1\nx\n", 30, "a name must"),
            (b"VTSECRETS 1\nversion 1\ncount 1\nA x\nx\n", 32, "decimal number"),
            (b"VTSECRETS 1\nversion 1\ncount 1\nA 1\nxy", 35, "followed by a newline"),
            (b"VTSECRETS 1\nversion 1\ncount 2\nB 0\n\nA 0\n\n", 35, "out of order"),
            (b"VTSECRETS 1\nversion 1\ncount 2\nA 0\n\nA 0\n\n", 35, "twice"),
            (b"VTSECRETS 1\nversion 1\ncount 0\nextra", 30, "after the last secret"),
            (b"VTSECRETS 1\nversion 1\ncount 1\nA 5\nab\n", 37, "ends inside the value"),
        ];
        for (bytes, offset, says) in cases {
            let err = parse(bytes).unwrap_err();
            assert_eq!(err.offset, *offset, "{}: {err}", String::from_utf8_lossy(bytes));
            assert!(err.what.contains(says), "{}: {err}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn every_one_byte_mutation_parses_canonically_or_fails() {
        for i in 0..GOLDEN.len() {
            for v in 0..=255u8 {
                let mut b = GOLDEN.to_vec();
                b[i] = v;
                if let Ok(p) = parse(&b) {
                    let again = encode(p.version, p.secrets.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
                    assert_eq!(again, b, "byte {i} = {v:#x} parsed but has another spelling");
                }
            }
        }
    }

    #[test]
    fn arbitrary_values_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        let b = encode(u64::MAX, [("_", &all[..]), ("Z9", &b"\n\n"[..])]);
        let p = parse(&b).unwrap();
        // Byte order: `Z` (0x5a) before `_` (0x5f).
        assert_eq!(p.secrets[0], ("Z9".to_owned(), b"\n\n".to_vec()));
        assert_eq!((p.version, &p.secrets[1].0[..], p.secrets[1].1.as_slice()), (u64::MAX, "_", &all[..]));
    }
}
