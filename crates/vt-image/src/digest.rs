//! Strict sha256 digests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// A `sha256:<64 lowercase hex>` content digest. Parsing is strict: no other algorithm, no
/// uppercase, no whitespace, exactly 64 hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// Wrap a raw sha256 output.
    pub fn from_sha256(raw: [u8; 32]) -> Self {
        Self { hex: hex::encode(raw) }
    }

    /// The 64 lowercase hex digits (used as the file name in blob stores).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Parse bare 64-hex (e.g. a blob file name).
    pub fn from_hex(hex: &str) -> Result<Self, Error> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self { hex: hex.to_owned() })
        } else {
            Err(Error::InvalidDigest(hex.to_owned()))
        }
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Self::from_hex(hex).map_err(|_| Error::InvalidDigest(s.to_owned())),
            None => Err(Error::InvalidDigest(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Incremental sha256 + byte count.
#[derive(Default, Clone)]
pub(crate) struct Hasher {
    inner: Sha256,
    pub(crate) len: u64,
}

impl Hasher {
    pub(crate) fn update(&mut self, buf: &[u8]) {
        self.inner.update(buf);
        self.len += buf.len() as u64;
    }
    pub(crate) fn finish(self) -> Digest {
        Digest::from_sha256(self.inner.finalize().into())
    }
}

/// A writer adapter that hashes everything written through it.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    pub(crate) hasher: Hasher,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(good.parse::<Digest>().unwrap().to_string(), good);
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha512:{}", "a".repeat(64)),
            format!("SHA256:{}", "a".repeat(64)),
            format!(" sha256:{}", "a".repeat(64)),
            format!("sha256:{}g", "a".repeat(63)),
            "a".repeat(64),
            String::new(),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
        let d = Digest::of(b"");
        assert_eq!(d.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
