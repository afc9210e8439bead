//! The vt application manifest.
//!
//! Users author the manifest in TOML (`vt.toml`); see `docs/manifest.md` for
//! the full reference. This crate parses and validates it ([`parse`]),
//! formats it canonically ([`Manifest::to_canonical_toml`]), converts it to
//! and from a normalized JSON form ([`Manifest::to_normalized_json`],
//! [`from_normalized_json`]), hashes it ([`Manifest::hash`]) and publishes a
//! JSON Schema of the TOML authoring form for editors ([`json_schema`]).
//!
//! ```
//! let m = vt_manifest::parse("schema_version = 1\n[processes.web]\ncommand = [\"./server\"]\n").unwrap();
//! assert_eq!(m.processes["web"].resources.memory_mib, 512);
//! assert_eq!(vt_manifest::parse(&m.to_canonical_toml()).unwrap(), m);
//! assert!(m.hash().starts_with("sha256:"));
//!
//! let err = vt_manifest::parse("schema_version = 1\n[processes.web]\nports = [{ name = \"http\", port = 70000 }]\n")
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "3:34: processes.web.ports[0].port: must be between 1 and 65535, got 70000"
//! );
//! ```
//!
//! # Errors
//!
//! Parsing is strict: unknown keys are rejected, and every error names the
//! TOML path (`processes.web.ports[1].port`) and the 1-based line and column
//! in the source. All errors are collected and returned sorted by position.
//!
//! # Canonical TOML
//!
//! [`Manifest::to_canonical_toml`] writes `schema_version` first, then `env`,
//! then the processes sorted by name, then `[[volumes]]` in their order.
//! Every default is written out explicitly (resources, scaling, and every
//! healthcheck field), so the file shows exactly what will run. Comments and
//! the original layout are not preserved. Formatting is idempotent:
//! `parse(fmt(m)) == m` and `fmt(parse(fmt(m))) == fmt(m)`.
//!
//! # Normalized JSON
//!
//! [`Manifest::to_normalized_json`] is the serde form of [`Manifest`]: every
//! default filled in, every optional field present (as `null` when unset),
//! durations as integer milliseconds in fields named `interval_ms`,
//! `timeout_ms`, `grace_ms`, maps sorted by key:
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "env": {"KEY": "value"},
//!   "processes": {
//!     "web": {
//!       "command": ["./server"] | null,
//!       "env": {},
//!       "healthcheck": {
//!         "type": "http" | "tcp",
//!         "port": "http" | 8080,
//!         "path": "/healthz" | null,
//!         "interval_ms": 10000, "timeout_ms": 2000, "grace_ms": 30000,
//!         "retries": 3
//!       } | null,
//!       "ports": [{"name": "http", "port": 8080, "protocol": "tcp"}],
//!       "resources": {"cpu": 1.0, "memory_mib": 512},
//!       "scaling": {"min": 1, "max": 1},
//!       "user": "1000:1000" | null,
//!       "secret_env": ["DATABASE_URL"]        (absent when empty)
//!       "network": "isolated"                 (absent when "private")
//!     }
//!   },
//!   "volumes": [{"name": "data", "path": "/data", "process": "web" | null}]
//! }
//! ```
//!
//! # Hash
//!
//! [`Manifest::hash`] is `"sha256:"` followed by the lowercase hex SHA-256 of
//! the compact JSON serialization of the normalized JSON with object keys
//! sorted bytewise at every level, no whitespace, strings escaped as
//! `serde_json` does, and numbers as `serde_json` prints them (`cpu` is always
//! a float such as `1.0`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod canonical;
mod error;
mod json;
mod parse;
mod rules;
mod schema;

pub use error::{ManifestError, ManifestErrors};
pub use json::from_normalized_json;
pub use parse::parse;
pub use schema::json_schema;

/// The only schema version this crate understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Name of the process a manifest has when it declares no `processes`.
pub const DEFAULT_PROCESS: &str = "web";

/// A validated application manifest with all defaults filled in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Environment variables for every process (a process's own `env` wins).
    pub env: BTreeMap<String, String>,
    /// Processes by name. Never empty: a manifest without a `processes`
    /// table has a single process `web` with no command.
    pub processes: BTreeMap<String, Process>,
    /// Persistent volumes, in declaration order.
    pub volumes: Vec<Volume>,
}

/// One kind of process of the application; the scheduler runs
/// `scaling.min..=scaling.max` instances of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Program and arguments. Overrides the image's Entrypoint and Cmd;
    /// `None` runs the image's own entrypoint.
    pub command: Option<Vec<String>>,
    /// Environment variables for this process, overriding the app's.
    pub env: BTreeMap<String, String>,
    /// Health check; `None` means instances are healthy once started.
    pub healthcheck: Option<Healthcheck>,
    /// Ports the process listens on.
    pub ports: Vec<Port>,
    pub resources: Resources,
    pub scaling: Scaling,
    /// `name`, `uid` or `uid:gid`; `None` uses the image's user.
    pub user: Option<String>,
    /// Secrets of the env to also set as environment variables of this
    /// process, by name (they are always files in `/run/secrets/`). An
    /// instance whose env lacks one of them does not start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Which instances this process's instances may reach and be reached by
    /// (docs/network.md). The default, `private`, is left out of the JSON.
    #[serde(default, skip_serializing_if = "NetworkClass::is_private")]
    pub network: NetworkClass,
}

/// Where a process sits in its org's private network (docs/network.md).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkClass {
    /// In the org's private network: reaches the org's other private
    /// instances over IPv6 on any port (and is reached by them), and the internet.
    #[default]
    Private,
    /// Reaches the internet only; no other instance reaches it. What a
    /// workspace gets (a stand-in for workspaces until they are their own kind).
    Isolated,
}

impl NetworkClass {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkClass::Private => "private",
            NetworkClass::Isolated => "isolated",
        }
    }

    pub fn is_private(&self) -> bool {
        *self == NetworkClass::Private
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Name, unique within the process; a healthcheck can refer to it.
    pub name: String,
    /// 1..=65535; a (port, protocol) pair is unique within the process.
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    #[serde(rename = "type")]
    pub kind: HealthcheckKind,
    /// A port name of this process or a port number.
    pub port: PortRef,
    /// Request path for `http` checks (starts with `/`); `None` for `tcp`.
    pub path: Option<String>,
    /// Time between checks. Default 10s, 1s..=1h.
    pub interval_ms: u64,
    /// Time one check may take. Default 2s, at least 10ms, less than the interval.
    pub timeout_ms: u64,
    /// Time after start during which failures do not count. Default 30s, 0..=1h.
    pub grace_ms: u64,
    /// Consecutive failures before the instance is unhealthy. Default 3, 1..=100.
    pub retries: u32,
}

pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_GRACE_MS: u64 = 30_000;
pub const DEFAULT_RETRIES: u32 = 3;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthcheckKind {
    /// Healthy when a TCP connection to the port succeeds.
    Tcp,
    /// Healthy when `GET path` answers with a 2xx or 3xx status.
    Http,
}

impl HealthcheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthcheckKind::Tcp => "tcp",
            HealthcheckKind::Http => "http",
        }
    }
}

/// How a healthcheck names its port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Fractional vCPUs, `0 < cpu <= 64`. Default 1.0.
    pub cpu: f64,
    /// Memory in MiB, 64..=262144. Default 512. This is a hard cap: the
    /// microVM has exactly this much RAM, and a process that needs more is
    /// killed by the guest's OOM killer rather than throttled.
    pub memory_mib: u32,
}

pub const DEFAULT_CPU: f64 = 1.0;
pub const DEFAULT_MEMORY_MIB: u32 = 512;

impl Default for Resources {
    fn default() -> Self {
        Resources { cpu: DEFAULT_CPU, memory_mib: DEFAULT_MEMORY_MIB }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    /// 0..=max. Default 1.
    pub min: u32,
    /// min..=1000. Default `min` (1 when `min` is 0): who asks for `min` instances means that many.
    pub max: u32,
    /// A scale to 0 suspends the running instances (saved to a snapshot on their node, memory
    /// and all) instead of stopping them; a scale up resumes them first. Default false (absent
    /// from the canonical forms when false, so manifests written before it keep their digest).
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling { min: 1, max: 1, suspend: false }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Unique volume name.
    pub name: String,
    /// Absolute, normalized mount path, not under /proc, /sys, /dev or /run/secrets.
    pub path: String,
    /// The process the volume is mounted in; `None` mounts it in every process.
    pub process: Option<String>,
}

impl Manifest {
    /// The manifest used when a file declares only `schema_version = 1`.
    pub fn minimal() -> Self {
        let mut processes = BTreeMap::new();
        processes.insert(DEFAULT_PROCESS.to_string(), Process::default());
        Manifest { schema_version: SCHEMA_VERSION, env: BTreeMap::new(), processes, volumes: Vec::new() }
    }

    /// Canonical TOML text (see the crate docs). Comments are not preserved.
    pub fn to_canonical_toml(&self) -> String {
        canonical::to_toml(self)
    }

    /// The normalized JSON form (see the crate docs).
    pub fn to_normalized_json(&self) -> serde_json::Value {
        json::to_json(self)
    }

    /// `sha256:<hex>` of the compact, key-sorted normalized JSON.
    pub fn hash(&self) -> String {
        json::hash(self)
    }

    /// The effective environment of a process: app env overlaid with the
    /// process env. `None` if there is no such process.
    pub fn effective_env(&self, process: &str) -> Option<BTreeMap<String, String>> {
        let p = self.processes.get(process)?;
        let mut env = self.env.clone();
        env.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Some(env)
    }

    /// The volumes mounted in a process.
    pub fn volumes_for<'a>(&'a self, process: &'a str) -> impl Iterator<Item = &'a Volume> + 'a {
        self.volumes.iter().filter(move |v| v.process.as_deref().is_none_or(|p| p == process))
    }
}
