//! Names people give things, parsed once at the boundary.
//!
//! - [`Name`]: orgs, apps, envs, process types, tokens, volumes. A DNS label
//!   that starts with a letter: `[a-z][a-z0-9-]{0,62}`, not ending in `-`.
//!   It can never contain `_`, so it never looks like an id (`org_...`).
//! - [`Hostname`]: node names and the host names of TLS routes. DNS labels
//!   joined by `.`, at most 253 bytes, stored in lower case; not an IP address.
//! - [`EnvVarName`]: an environment variable a user may set (manifest `env`,
//!   secrets): letters, digits and `_`, not starting with a digit, at most
//!   255 bytes, never with the `VT_` prefix the platform keeps for itself.
//! - [`Ref`]: a path segment that names a resource either by id or by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Id, Kind};

/// The longest name.
pub const MAX_NAME: usize = 63;
/// The longest host name (RFC 1035).
pub const MAX_HOSTNAME: usize = 253;

/// The longest environment variable name.
pub const MAX_ENV_VAR_NAME: usize = 255;

/// Why a string is not a [`Name`], a [`Hostname`] or an [`EnvVarName`]. The message says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must be an environment variable name: letters, digits and '_', not starting with a digit, at most 255 characters; got {0}")]
    EnvVar(String),
    #[error("{0} uses the `VT_` prefix, which is reserved for variables the platform sets")]
    Reserved(String),
    #[error("must be 1-63 characters of a-z, 0-9 and '-', start with a letter and not end with '-'; got {0}")]
    Name(String),
    #[error("must be a DNS host name: labels of a-z, 0-9 and '-' joined by '.' (not an IP address, at most 253 characters); got {0}")]
    Hostname(String),
}

/// The most characters of input an error message shows ([`shown`]).
const SHOWN: usize = 80;

/// `s` cut at `max` characters, with `…` when something was cut: how input is echoed, bounded.
pub fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(s),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// `s` for an error message: in backticks, cut at 80 characters. Every message that
/// echoes input (names, ids, references, keys) shows it through this.
pub fn shown(s: &str) -> String {
    format!("`{}`", cut(s, SHOWN))
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS label of a host name: may start with a digit, never with or at the end a `-`.
fn is_host_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The name of an org, app, env, process type, token or volume.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Name, NameError> {
        if is_name(s) {
            Ok(Name(s.to_owned()))
        } else {
            Err(NameError::Name(shown(s)))
        }
    }

    /// True when `s` parses.
    pub fn is_valid(s: &str) -> bool {
        is_name(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A host name: a node's name or a TLS route's server name, in lower case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    /// Parses case-insensitively; the result is lower case.
    pub fn parse(s: &str) -> Result<Hostname, NameError> {
        let lower = s.to_ascii_lowercase();
        let numeric = lower.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !lower.is_empty() && lower.len() <= MAX_HOSTNAME && !numeric && lower.split('.').all(is_host_label) {
            Ok(Hostname(lower))
        } else {
            Err(NameError::Hostname(shown(s)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// An environment variable name a user may set (and the name of a secret).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EnvVarName(String);

impl EnvVarName {
    pub fn parse(s: &str) -> Result<EnvVarName, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_ENV_VAR_NAME
            && (b[0].is_ascii_alphabetic() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !ok {
            return Err(NameError::EnvVar(shown(s)));
        }
        if s.starts_with("VT_") {
            return Err(NameError::Reserved(shown(s)));
        }
        Ok(EnvVarName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

macro_rules! string_like {
    ($t:ident, $example:literal, $pattern:expr, $description:literal) => {
        impl FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .pattern(Some($pattern))
                    .max_length(Some(match stringify!($t) {
                        "Hostname" => MAX_HOSTNAME,
                        "EnvVarName" => MAX_ENV_VAR_NAME,
                        _ => MAX_NAME,
                    }))
                    .description(Some($description))
                    .examples([$example])
                    .into()
            }
        }

        impl utoipa::ToSchema for $t {}
    };
}

string_like!(
    Name,
    "acme",
    "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
    "1-63 characters of a-z, 0-9 and '-', starting with a letter, not ending with '-'"
);
string_like!(
    EnvVarName,
    "DATABASE_URL",
    "^[A-Za-z_][A-Za-z0-9_]*$",
    "an environment variable name: letters, digits and '_', not starting with a digit, not with `VT_`"
);
string_like!(
    Hostname,
    "www.example.com",
    "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
    "a DNS host name (case-insensitive, stored in lower case), not an IP address"
);

/// A resource named by id (`org_...`) or by name (a [`Name`], or a
/// [`Hostname`] for nodes), as path segments do. A string that is neither names
/// nothing: lookups answer "not found" for it.
#[derive(Clone, PartialEq, Eq)]
pub enum Ref<K: Kind, N = Name> {
    Id(Id<K>),
    Name(N),
    /// Neither a well-formed id of this kind nor a valid name.
    Invalid(String),
}

impl<K: Kind, N: FromStr> Ref<K, N> {
    pub fn parse(s: &str) -> Self {
        if s.starts_with(K::PREFIX) && s.as_bytes().get(K::PREFIX.len()) == Some(&b'_') {
            return Id::parse(s).map(Ref::Id).unwrap_or_else(|_| Ref::Invalid(s.to_owned()));
        }
        s.parse().map(Ref::Name).unwrap_or_else(|_| Ref::Invalid(s.to_owned()))
    }
}

impl<K: Kind, N: fmt::Display> fmt::Display for Ref<K, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Id(id) => fmt::Display::fmt(id, f),
            Ref::Name(n) => fmt::Display::fmt(n, f),
            Ref::Invalid(s) => f.write_str(s),
        }
    }
}

impl<K: Kind, N: fmt::Display> fmt::Debug for Ref<K, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ref({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrgId;

    #[test]
    fn names() {
        for good in ["a", "acme", "my-app-2", "a1", &"a".repeat(63)] {
            assert_eq!(Name::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "A", "1app", "app-", "-app", "my_app", "my app", "é", "org_x", &"a".repeat(64)] {
            let err = Name::parse(bad).unwrap_err();
            assert!(err.to_string().contains("start with a letter"), "{err}");
        }
        let err = Name::parse(&"x".repeat(200)).unwrap_err().to_string();
        assert!(err.ends_with("…`"), "long input is cut: {err}");
        assert!(err.len() < 250, "{err}");
    }

    #[test]
    fn cut_counts_characters() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…");
        assert_eq!(cut("ééééé", 2), "éé…");
        assert_eq!(shown(&"y".repeat(1_000_000)).chars().count(), 80 + 3);
    }

    #[test]
    fn hostnames() {
        assert_eq!(Hostname::parse("WWW.Example.com").unwrap().as_str(), "www.example.com");
        for good in ["node-1", "1node", "a.b.c", "xn--bcher-kva.example", &format!("{}.com", "a".repeat(63))] {
            assert!(Hostname::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a..b", ".a", "a.", "-a.com", "a-.com", "10.0.0.1", "1", "a_b.com", "a b", &"a.".repeat(127)] {
            assert!(Hostname::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_var_names() {
        for good in ["PATH", "_x1", "VTX", "database_url", &"A".repeat(255)] {
            assert_eq!(EnvVarName::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "1X", "A-B", "A B", "É", &"A".repeat(256)] {
            assert!(matches!(EnvVarName::parse(bad), Err(NameError::EnvVar(_))), "{bad}");
        }
        assert!(matches!(EnvVarName::parse("VT_APP"), Err(NameError::Reserved(_))));
    }

    #[test]
    fn serde_parses() {
        let n: Name = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(n, "web");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"web\"");
        let err = serde_json::from_str::<Name>("\"Web\"").unwrap_err().to_string();
        assert!(err.contains("start with a letter"), "{err}");
        let h: Hostname = serde_json::from_str("\"API.example.com\"").unwrap();
        assert_eq!(h, "api.example.com");
    }

    #[test]
    fn refs() {
        type OrgRef = Ref<crate::markers::OrgKind>;
        let id = OrgId::new();
        assert!(matches!(OrgRef::parse(&id.to_string()), Ref::Id(i) if i == id));
        assert!(matches!(OrgRef::parse("acme"), Ref::Name(n) if n == "acme"));
        assert!(matches!(OrgRef::parse("org_nope"), Ref::Invalid(_)));
        assert!(matches!(OrgRef::parse("Acme"), Ref::Invalid(_)));
        // An id of another kind is no name either (names have no `_`).
        assert!(matches!(OrgRef::parse(&crate::AppId::new().to_string()), Ref::Invalid(_)));
        type NodeRef = Ref<crate::markers::NodeKind, Hostname>;
        assert!(matches!(NodeRef::parse("Node-1.Example"), Ref::Name(n) if n == "node-1.example"));
        assert_eq!(NodeRef::parse("node-1").to_string(), "node-1");
    }
}
