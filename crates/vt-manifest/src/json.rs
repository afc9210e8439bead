//! Normalized JSON form and hashing.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ManifestError, ManifestErrors};
use crate::Manifest;

pub(crate) fn to_json(m: &Manifest) -> Value {
    // Serializing plain structs, maps of strings and finite floats cannot fail.
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// Compact JSON with object keys sorted at every level, independent of
/// whether `serde_json`'s `preserve_order` feature is enabled elsewhere.
pub(crate) fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

pub(crate) fn hash(m: &Manifest) -> String {
    let mut s = String::new();
    canonical_json(&to_json(m), &mut s);
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn json_error(path: &str, message: impl Into<String>) -> ManifestErrors {
    ManifestErrors(vec![ManifestError {
        path: path.to_string(),
        line: 0,
        column: 0,
        message: message.into(),
        hint: None,
    }])
}

/// Read a manifest from its normalized JSON form (the output of
/// [`Manifest::to_normalized_json`]) and validate it with the same rules as
/// [`crate::parse`]. Every field must be present except optional ones, which
/// may be `null` or absent; unknown fields are rejected. Errors carry TOML-style paths and
/// `line == column == 0`.
pub fn from_normalized_json(v: &Value) -> Result<Manifest, ManifestErrors> {
    let m: Manifest =
        serde_json::from_value(v.clone()).map_err(|e| json_error("", format!("not a normalized manifest: {e}")))?;
    if m.processes.is_empty() {
        return Err(json_error("processes", "`processes` must define at least one process"));
    }
    // Validate by rendering canonical TOML and parsing it: one set of rules.
    let parsed = crate::parse(&m.to_canonical_toml()).map_err(|errs| {
        ManifestErrors(errs.0.into_iter().map(|e| ManifestError { line: 0, column: 0, ..e }).collect())
    })?;
    if parsed != m {
        return Err(json_error("", "not a normalized manifest: it changes when validated"));
    }
    Ok(parsed)
}
