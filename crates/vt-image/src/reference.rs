//! Image references, parsed once: `[registry/]repository[:tag][@sha256:<hex>]`.
//!
//! The grammar is the distribution spec's (repository components and tags), with
//! Docker's rule for telling a registry host from a repository's first component:
//! it contains a `.` or a `:`, or is `localhost`. vt's own registry is addressed
//! without a host: `acme/web:v1`, `acme/web@sha256:...`, and the first component of
//! its repositories is the org that owns them.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+", followed by an alphanumeric.
        let start = i;
        let sep = b[i];
        while i < b.len() && b[i] == sep {
            i += 1;
        }
        let ok = match sep {
            b'.' => i - start == 1,
            b'_' => i - start <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// A registry host: `host[:port]` with a host of letters, digits, `.` and `-`.
fn valid_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a string is not an image reference. The message says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("an image reference is `repository[:tag]` or `repository@sha256:<64 hex>`; got an empty string")]
    Empty,
    #[error("invalid digest `{0}`: expected `sha256:<64 lowercase hex>`")]
    Digest(String),
    #[error("invalid tag `{0}`: 1-128 of A-Z, a-z, 0-9, `_`, `.`, `-`, not starting with `.` or `-`")]
    Tag(String),
    #[error(
        "invalid repository `{0}`: lowercase components of a-z, 0-9 and the separators `.`, `_`, `-`, joined by `/`"
    )]
    Repository(String),
    #[error("invalid registry host `{0}`: expected `host[:port]`")]
    Registry(String),
}

/// A parsed image reference.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]` of another registry; `None` for vt's built-in registry.
    registry: Option<String>,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, RefError> {
        if s.is_empty() {
            return Err(RefError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>().map_err(|_| RefError::Digest(d.to_owned()))?)),
            None => (s, None),
        };
        // A `:` after the last `/` starts a tag; one before it belongs to a registry host.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(RefError::Tag(t.to_owned()));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                if !valid_host(first) {
                    return Err(RefError::Registry(first.to_owned()));
                }
                (Some(first.to_owned()), path)
            }
            _ => (None, name),
        };
        if !valid_repository(repository) {
            return Err(RefError::Repository(repository.to_owned()));
        }
        Ok(ImageRef { registry, repository: repository.to_owned(), tag: tag.map(str::to_owned), digest })
    }

    /// A reference to `repository@digest` in the built-in registry.
    pub fn pinned(repository: &str, digest: Digest) -> Result<ImageRef, RefError> {
        if !valid_repository(repository) {
            return Err(RefError::Repository(repository.to_owned()));
        }
        Ok(ImageRef { registry: None, repository: repository.to_owned(), tag: None, digest: Some(digest) })
    }

    /// The other registry's `host[:port]`; `None` for the built-in registry.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    /// The repository path, without a registry host.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The repository's first component: in the built-in registry, the org that owns it.
    pub fn namespace(&self) -> &str {
        self.repository.split('/').next().unwrap_or_default()
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The tag a reference without digest points at (`latest` when none is given).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

impl FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn repositories_and_tags() {
        for good in ["a", "acme/web", "a.b/c_d/e__f/g--h", "library/busybox", "x0/1y"] {
            assert!(valid_repository(good), "{good}");
        }
        for bad in [
            "",
            "A",
            "acme/",
            "/acme",
            "a//b",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a/.b",
            "a/_tags",
            "..",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(!valid_repository(bad), "{bad}");
        }
        assert!(valid_tag("v1.0_rc-1") && valid_tag("_x") && valid_tag("latest"));
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn parses_the_forms_users_write() {
        let r = ImageRef::parse("acme/web:v1").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag(), r.digest()), (None, "acme/web", Some("v1"), None));
        assert_eq!(r.namespace(), "acme");
        let r = ImageRef::parse("acme/web").unwrap();
        assert_eq!((r.tag(), r.tag_or_latest()), (None, "latest"));
        let r = ImageRef::parse(&format!("acme/web@{}", d('a'))).unwrap();
        assert_eq!(r.digest().map(|d| d.to_string()), Some(d('a')));
        let r = ImageRef::parse(&format!("localhost:5000/acme/web:v2@{}", d('b'))).unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), (Some("localhost:5000"), "acme/web", Some("v2")));
        let r = ImageRef::parse("registry.example/web").unwrap();
        assert_eq!((r.registry(), r.repository()), (Some("registry.example"), "web"));
        for s in ["acme/web:v1", "localhost:5000/a/b:c", &format!("a/b@{}", d('c'))] {
            assert_eq!(ImageRef::parse(s).unwrap().to_string(), *s);
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        assert_eq!(ImageRef::parse(""), Err(RefError::Empty));
        assert_eq!(ImageRef::parse("acme/web@sha512:00"), Err(RefError::Digest("sha512:00".into())));
        assert_eq!(
            ImageRef::parse(&format!("acme/web@sha256:{}", "A".repeat(64))).unwrap_err(),
            RefError::Digest(format!("sha256:{}", "A".repeat(64)))
        );
        assert_eq!(ImageRef::parse("acme/web:.x"), Err(RefError::Tag(".x".into())));
        assert_eq!(ImageRef::parse("Acme/web"), Err(RefError::Repository("Acme/web".into())));
        assert_eq!(ImageRef::parse(&format!("@{}", d('a'))), Err(RefError::Repository(String::new())));
        assert_eq!(ImageRef::parse("a_b.c:x:y/web"), Err(RefError::Registry("a_b.c:x:y".into())));
    }

    #[test]
    fn every_prefix_parses_or_fails_cleanly() {
        let full = format!("localhost:5000/acme/web.app_x:v1.2-rc@{}", d('e'));
        for end in 0..=full.len() {
            let _ = ImageRef::parse(&full[..end]);
        }
    }
}
