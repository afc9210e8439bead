//! Typed identifiers, and the names people give things ([`Name`], [`Hostname`]).
//!
//! Every resource id is `<prefix>_<ulid>` in lower case, for example
//! `app_01jd8x6k3v9q4m2t7r5w0y1zcb`. The prefix makes ids readable in logs and
//! lets the API reject an id of the wrong kind with a precise message; the ULID
//! makes ids unique without coordination and sortable by creation time.
//!
//! Ids are parsed, never trusted: [`Id::parse`] checks the prefix, the length and
//! the alphabet, so a value of type `OrgId` is always a well-formed org id.

use std::{fmt, marker::PhantomData, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod name;
pub use name::{cut, shown, EnvVarName, Hostname, Name, NameError, Ref, MAX_ENV_VAR_NAME, MAX_HOSTNAME, MAX_NAME};

/// A kind of resource that has ids. Implemented by the zero-sized marker types below.
pub trait Kind: 'static + Send + Sync {
    /// The readable prefix, without the underscore.
    const PREFIX: &'static str;
    /// Human name of the kind, for error messages.
    const NAME: &'static str;
    /// The Rust alias of its id type (`OrgId`): the id's schema name in the OpenAPI document.
    const TYPE_NAME: &'static str;
}

/// An id of resource kind `K`.
pub struct Id<K: Kind> {
    ulid: ulid::Ulid,
    _kind: PhantomData<fn() -> K>,
}

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// `got` is the input as [`shown`]: quoted, cut at 80 characters.
    #[error("expected {kind} id starting with `{prefix}_`, got {got}")]
    WrongPrefix { kind: &'static str, prefix: &'static str, got: String },
    #[error("{got} is not a valid {kind} id: after `{prefix}_` expect 26 characters of Crockford base32")]
    Malformed { kind: &'static str, prefix: &'static str, got: String },
}

impl<K: Kind> Id<K> {
    /// A fresh id.
    pub fn new() -> Self {
        Self::from_ulid(ulid::Ulid::new())
    }

    pub fn from_ulid(ulid: ulid::Ulid) -> Self {
        Self { ulid, _kind: PhantomData }
    }

    pub fn ulid(&self) -> ulid::Ulid {
        self.ulid
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let shown = shown(s);
        let rest = s.strip_prefix(K::PREFIX).and_then(|r| r.strip_prefix('_')).ok_or_else(|| IdError::WrongPrefix {
            kind: K::NAME,
            prefix: K::PREFIX,
            got: shown.clone(),
        })?;
        // Only the canonical lower-case spelling is accepted, so that one id has one string.
        if rest.len() != 26 || rest.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(IdError::Malformed { kind: K::NAME, prefix: K::PREFIX, got: shown });
        }
        let ulid = ulid::Ulid::from_string(rest).map_err(|_| IdError::Malformed {
            kind: K::NAME,
            prefix: K::PREFIX,
            got: shown,
        })?;
        Ok(Self::from_ulid(ulid))
    }
}

impl<K: Kind> Default for Id<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Kind> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: Kind> Copy for Id<K> {}
impl<K: Kind> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.ulid == other.ulid
    }
}
impl<K: Kind> Eq for Id<K> {}
impl<K: Kind> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Kind> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.ulid.cmp(&other.ulid)
    }
}
impl<K: Kind> std::hash::Hash for Id<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.ulid.hash(state)
    }
}

impl<K: Kind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", K::PREFIX, self.ulid.to_string().to_ascii_lowercase())
    }
}

impl<K: Kind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<K: Kind> FromStr for Id<K> {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<K: Kind> Serialize for Id<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de, K: Kind> Deserialize<'de> for Id<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<K: Kind> utoipa::PartialSchema for Id<K> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .pattern(Some(format!("^{}_[0-9a-hjkmnp-tv-z]{{26}}$", K::PREFIX)))
            .min_length(Some(K::PREFIX.len() + 27))
            .max_length(Some(K::PREFIX.len() + 27))
            .description(Some(format!("{} id", K::NAME)))
            .into()
    }
}

/// Named per kind (`OrgId`, `AppId`, ...): one shared name would make every id an org id in the document.
impl<K: Kind> utoipa::ToSchema for Id<K> {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(K::TYPE_NAME)
    }
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $marker:ident, $alias:ident, $prefix:literal, $name:literal;)*) => {
        /// Zero-sized marker types, one per kind of id.
        pub mod markers {
            $(
                $(#[$doc])*
                #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
                pub enum $marker {}
            )*
        }
        $(
            impl Kind for markers::$marker {
                const PREFIX: &'static str = $prefix;
                const NAME: &'static str = $name;
                const TYPE_NAME: &'static str = stringify!($alias);
            }
            $(#[$doc])*
            pub type $alias = Id<markers::$marker>;
        )*

        /// Every id prefix in use, for the tests and for documentation.
        pub const PREFIXES: &[&str] = &[$($prefix),*];
    };
}

kinds! {
    /// An organization (tenant).
    OrgKind, OrgId, "org", "org";
    /// An application inside an org.
    AppKind, AppId, "app", "app";
    /// An environment of an app (`prod`, `staging`).
    EnvKind, EnvId, "env", "env";
    /// An immutable release: image digest plus manifest hash.
    ReleaseKind, ReleaseId, "rel", "release";
    /// A deploy of a release onto an env.
    DeployKind, DeployId, "dep", "deploy";
    /// One instance (one microVM) of a process type.
    InstanceKind, InstanceId, "inst", "instance";
    /// A node (host) running the agent.
    NodeKind, NodeId, "node", "node";
    /// An event in the log.
    EventKind, EventId, "evt", "event";
    /// An API request, carried into events as correlation.
    RequestKind, RequestId, "req", "request";
    /// An API token.
    TokenKind, TokenId, "tok", "token";
    /// An ingress route: hostname and listener port to an env's process.
    RouteKind, RouteId, "route", "route";
    /// A volume: a local ext4 disk of an env, on one node.
    VolumeKind, VolumeId, "vol", "volume";
    /// A snapshot of a volume, on the volume's node.
    SnapshotKind, SnapshotId, "snap", "snapshot";
    /// A backup run of a volume (the backup itself is a restic snapshot).
    BackupKind, BackupId, "bak", "backup";
    /// One `vt exec` session into an instance (its grant, then its run).
    ExecKind, ExecId, "exec", "exec session";
    /// A workspace: a browser development environment (one microVM and its home disk).
    WorkspaceKind, WorkspaceId, "ws", "workspace";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = AppId::new();
        let s = id.to_string();
        assert!(s.starts_with("app_"));
        assert_eq!(s.len(), 4 + 26);
        assert_eq!(AppId::parse(&s).unwrap(), id);
    }

    #[test]
    fn rejects_wrong_prefix_with_kind_in_message() {
        let org = OrgId::new().to_string();
        let err = AppId::parse(&org).unwrap_err();
        assert!(matches!(err, IdError::WrongPrefix { .. }));
        assert!(err.to_string().contains("expected app id starting with `app_`"), "{err}");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "app_",
            "app_123",
            "app_01JD8X6K3V9Q4M2T7R5W0Y1ZCB",
            "app_01jd8x6k3v9q4m2t7r5w0y1zcbx",
            "app_01jd8x6k3v9q4m2t7r5w0y1zc!",
            "app01jd8x6k3v9q4m2t7r5w0y1zcb",
            "",
        ] {
            assert!(AppId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let id = NodeId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        let back: NodeId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<NodeId>("\"org_01jd8x6k3v9q4m2t7r5w0y1zcb\"").is_err());
    }

    #[test]
    fn prefixes_are_unique() {
        let mut p = PREFIXES.to_vec();
        p.sort();
        p.dedup();
        assert_eq!(p.len(), PREFIXES.len());
    }
}
