//! Requests checked against the schemas the OpenAPI document publishes.
//!
//! A request type's schema (`utoipa::ToSchema`, with its `#[schema(minimum, maximum,
//! max_length, ...)]` attributes) and a query type's parameters (`utoipa::IntoParams`) are turned
//! into the JSON the document carries, and incoming values are checked against that JSON. The
//! document and the checks are one thing, so they cannot disagree: a bound added to a type is
//! published and enforced at once, and schemathesis (`scripts/schemathesis.sh`) tests the
//! server against the same document.
//!
//! The vocabulary is the subset of JSON Schema 2020-12 utoipa emits (`KEYWORDS`; a test walks
//! the whole document and fails on anything else), plus the OpenAPI integer formats `int32` and
//! `int64` as ranges. Messages name the field as a path into the request (`capacity.cpu_millis`,
//! `labels.<key>`) and never echo more than a cut of the input.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::{Map, Value};

/// Keywords the checker understands: constraints it enforces and annotations it ignores.
#[cfg(test)]
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "format",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    // Annotations.
    "description",
    "title",
    "examples",
    "example",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
];

/// Longest key shown in a path.
const KEY_SHOWN: usize = 64;

/// Where a value breaks its schema, and how, in words for the caller.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Violation {
    /// A path into the request (`capacity.cpu_millis`, `items[2]`); empty for the whole value.
    pub path: String,
    pub message: String,
    /// An object has a key its schema does not allow.
    pub unknown_field: bool,
}

/// Which keywords a pass checks: `Shape` leaves `pattern` to the types' own parsers (their
/// messages say what is allowed), `Full` checks everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Shape,
    Full,
}

/// A schema as the document has it (JSON), with the components it refers to.
#[derive(Debug)]
pub(crate) struct Schema {
    root: Value,
    components: HashMap<String, Value>,
}

impl Schema {
    pub(crate) fn new(root: Value, components: HashMap<String, Value>) -> Schema {
        Schema { root, components }
    }

    /// The schema of request type `T`, built once.
    pub(crate) fn of<T: utoipa::ToSchema + 'static>() -> Arc<Schema> {
        cached::<T>("body", || {
            let mut parts = Vec::new();
            T::schemas(&mut parts);
            let components =
                parts.into_iter().map(|(name, s)| (name, serde_json::to_value(s).unwrap_or(Value::Null))).collect();
            Schema::new(serde_json::to_value(T::schema()).unwrap_or(Value::Null), components)
        })
    }

    /// The query parameters of `T` as one object schema (`additionalProperties: false`).
    pub(crate) fn query<T: utoipa::IntoParams + 'static>() -> Arc<Schema> {
        cached::<T>("query", || {
            let params = T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query));
            let mut properties = Map::new();
            let mut required = Vec::new();
            for p in params {
                let p = serde_json::to_value(p).unwrap_or(Value::Null);
                let Some(name) = p["name"].as_str() else { continue };
                if p["required"] == Value::Bool(true) {
                    required.push(Value::String(name.to_owned()));
                }
                properties.insert(name.to_owned(), p["schema"].clone());
            }
            let root = serde_json::json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            });
            Schema::new(root, HashMap::new())
        })
    }

    /// The schema of one property of the root object (query parameters: the parameter's).
    pub(crate) fn property(&self, name: &str) -> Option<&Value> {
        self.root.get("properties")?.get(name)
    }

    /// The names of the root object's properties, for "one of" messages.
    pub(crate) fn property_names(&self) -> Vec<&str> {
        self.root
            .get("properties")
            .and_then(Value::as_object)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    pub(crate) fn check(&self, v: &Value, pass: Pass) -> Result<(), Violation> {
        let mut path = String::new();
        Checker { components: &self.components, pass }.check(&self.root, v, &mut path)
    }
}

/// One schema per (type, kind), built on first use.
fn cached<T: 'static>(kind: &'static str, build: impl FnOnce() -> Schema) -> Arc<Schema> {
    type Cache = RwLock<HashMap<(TypeId, &'static str), Arc<Schema>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (TypeId::of::<T>(), kind);
    if let Some(s) = cache.read().ok().and_then(|c| c.get(&key).cloned()) {
        return s;
    }
    let schema = Arc::new(build());
    if let Ok(mut c) = cache.write() {
        c.insert(key, schema.clone());
    }
    schema
}

/// `pattern` compiled once per pattern.
fn matches(pattern: &str, s: &str) -> Result<bool, regex::Error> {
    static COMPILED: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let mut compiled = COMPILED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = compiled.get(pattern) {
        return Ok(re.is_match(s));
    }
    let re = regex::Regex::new(pattern)?;
    let found = re.is_match(s);
    compiled.insert(pattern.to_owned(), re);
    Ok(found)
}

/// A JSON number, exactly: integers as `i128`, everything else as `f64`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(v: &Value) -> Option<Num> {
        let n = v.as_number()?;
        Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Num::Int(i.into()),
            (_, Some(u), _) => Num::Int(u.into()),
            (_, _, Some(f)) => Num::Float(f),
            _ => return None,
        })
    }

    fn is_integer(self) -> bool {
        match self {
            Num::Int(_) => true,
            Num::Float(f) => f.is_finite() && f.fract() == 0.0,
        }
    }

    fn cmp(self, other: Num) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

/// The range an OpenAPI integer `format` implies.
fn format_range(format: &str) -> Option<(i128, i128)> {
    match format {
        "int8" => Some((i8::MIN.into(), i8::MAX.into())),
        "int16" => Some((i16::MIN.into(), i16::MAX.into())),
        "int32" => Some((i32::MIN.into(), i32::MAX.into())),
        "int64" => Some((i64::MIN.into(), i64::MAX.into())),
        "uint8" => Some((0, u8::MAX.into())),
        "uint16" => Some((0, u16::MAX.into())),
        "uint32" => Some((0, u32::MAX.into())),
        "uint64" => Some((0, u64::MAX.into())),
        _ => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if Num::of(v).is_some_and(Num::is_integer) && !n.is_f64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => Num::of(v).is_some_and(Num::is_integer),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

fn expected(t: &str) -> String {
    match t {
        "null" => "null".into(),
        "boolean" => "`true` or `false`".into(),
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "string" => "a string".into(),
        "array" => "a JSON array".into(),
        "object" => "a JSON object".into(),
        other => format!("of type `{other}`"),
    }
}

struct Checker<'a> {
    components: &'a HashMap<String, Value>,
    pass: Pass,
}

impl Checker<'_> {
    fn fail(&self, path: &str, message: String) -> Result<(), Violation> {
        Err(Violation { path: path.to_owned(), message, unknown_field: false })
    }

    fn check(&self, schema: &Value, v: &Value, path: &mut String) -> Result<(), Violation> {
        let Some(s) = schema.as_object() else {
            // `true`/`false` schemas.
            return match schema {
                Value::Bool(false) => self.fail(path, format!("{} is not allowed here", field(path))),
                _ => Ok(()),
            };
        };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or(r);
            match self.components.get(name) {
                Some(target) => self.check(target, v, path)?,
                None => return self.fail(path, format!("the schema of {} is missing ({r})", field(path))),
            }
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !types.is_empty() && !types.iter().any(|t| is_type(v, t)) {
                let want: Vec<String> = types.iter().map(|t| expected(t)).collect();
                let hint = if types.contains(&"object") && v.is_array() {
                    " (send the fields by name, as an object)"
                } else {
                    ""
                };
                return self
                    .fail(path, format!("{} must be {}, not {}{hint}", field(path), want.join(" or "), type_name(v)));
            }
        }
        if let Some(options) = s.get("enum").and_then(Value::as_array) {
            if !options.contains(v) {
                return self.fail(path, format!("{} must be one of {}", field(path), listed(options)));
            }
        }
        if let Some(c) = s.get("const") {
            if c != v {
                return self.fail(path, format!("{} must be {c}", field(path)));
            }
        }
        if let Some(n) = Num::of(v) {
            self.number(s, n, path)?;
        }
        if let Value::String(text) = v {
            self.string(s, text, path)?;
        }
        if let Value::Array(items) = v {
            self.array(s, items, path)?;
        }
        if let Value::Object(map) = v {
            self.object(s, map, path)?;
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, v, path)?;
            }
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
            self.alternatives(any, v, path, false)?;
        }
        if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
            self.alternatives(one, v, path, true)?;
        }
        if let Some(not) = s.get("not") {
            if self.check(not, v, &mut path.clone()).is_ok() {
                return self.fail(path, format!("{} has a form that is not allowed here", field(path)));
            }
        }
        Ok(())
    }

    /// `oneOf` (exactly one) and `anyOf` (at least one). When none fits, the error of the
    /// alternative that got furthest into the value says why (for `Option<T>`, `T`'s).
    fn alternatives(&self, options: &[Value], v: &Value, path: &str, exactly_one: bool) -> Result<(), Violation> {
        let mut passed = 0;
        let mut best: Option<Violation> = None;
        for o in options {
            match self.check(o, v, &mut path.to_owned()) {
                Ok(()) => passed += 1,
                Err(e) => {
                    // Ties go to the later alternative: `Option<T>` is `oneOf: [null, T]`.
                    if best.as_ref().is_none_or(|b| e.path.len() >= b.path.len()) {
                        best = Some(e);
                    }
                }
            }
        }
        match passed {
            0 => Err(best.unwrap_or_else(|| Violation {
                path: path.to_owned(),
                message: format!("{} has none of the allowed forms", field(path)),
                unknown_field: false,
            })),
            1 => Ok(()),
            _ if exactly_one => self.fail(path, format!("{} fits more than one of the allowed forms", field(path))),
            _ => Ok(()),
        }
    }

    fn number(&self, s: &Map<String, Value>, n: Num, path: &str) -> Result<(), Violation> {
        let bound = |k: &str| s.get(k).and_then(Num::of);
        let f = field(path);
        if let Some(min) = bound("minimum") {
            if n.cmp(min) == Some(std::cmp::Ordering::Less) {
                return self.fail(path, format!("{f} must be at least {min}; got {n}"));
            }
        }
        if let Some(max) = bound("maximum") {
            if n.cmp(max) == Some(std::cmp::Ordering::Greater) {
                return self.fail(path, format!("{f} must be at most {max}; got {n}"));
            }
        }
        if let Some(min) = bound("exclusiveMinimum") {
            if n.cmp(min) != Some(std::cmp::Ordering::Greater) {
                return self.fail(path, format!("{f} must be more than {min}; got {n}"));
            }
        }
        if let Some(max) = bound("exclusiveMaximum") {
            if n.cmp(max) != Some(std::cmp::Ordering::Less) {
                return self.fail(path, format!("{f} must be less than {max}; got {n}"));
            }
        }
        // The format's range, after the stated bounds (whose messages are closer to the point).
        if let Some((lo, hi)) = s.get("format").and_then(Value::as_str).and_then(format_range) {
            let (below, above) = (n.cmp(Num::Int(lo)), n.cmp(Num::Int(hi)));
            if below == Some(std::cmp::Ordering::Less) || above == Some(std::cmp::Ordering::Greater) {
                return self.fail(path, format!("{f} must be between {lo} and {hi}; got {n}"));
            }
        }
        if let Some(m) = bound("multipleOf") {
            let ok = match (n, m) {
                (Num::Int(a), Num::Int(b)) if b != 0 => a % b == 0,
                (a, b) => (a.as_f64() / b.as_f64()).fract() == 0.0,
            };
            if !ok {
                return self.fail(path, format!("{f} must be a multiple of {m}; got {n}"));
            }
        }
        Ok(())
    }

    fn string(&self, s: &Map<String, Value>, text: &str, path: &str) -> Result<(), Violation> {
        let len = || text.chars().count();
        let f = field(path);
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if len() as u64 > max {
                return self.fail(path, format!("{f} is longer than {max} characters ({})", len()));
            }
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if (len() as u64) < min {
                return self.fail(path, format!("{f} is shorter than {min} characters"));
            }
        }
        if self.pass == Pass::Full {
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                match matches(p, text) {
                    Ok(true) => {}
                    Ok(false) => {
                        let what = s.get("description").and_then(Value::as_str).unwrap_or("");
                        let what = if what.is_empty() { String::new() } else { format!(": {what}") };
                        return self.fail(path, format!("{f} must match `{p}`{what}; got {}", vt_ids::shown(text)));
                    }
                    Err(e) => return self.fail(path, format!("the pattern of {f} does not compile: {e}")),
                }
            }
        }
        Ok(())
    }

    fn array(&self, s: &Map<String, Value>, items: &[Value], path: &mut String) -> Result<(), Violation> {
        let f = field(path);
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if items.len() as u64 > max {
                return self.fail(path, format!("{f} has {} items; at most {max} are allowed", items.len()));
            }
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                return self.fail(path, format!("{f} has {} items; at least {min} are needed", items.len()));
            }
        }
        if s.get("uniqueItems") == Some(&Value::Bool(true)) {
            for (i, a) in items.iter().enumerate() {
                if items[..i].contains(a) {
                    return self.fail(path, format!("{f} has item {i} twice"));
                }
            }
        }
        if let Some(item) = s.get("items") {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                self.check(item, v, path)?;
                path.truncate(len);
            }
        }
        Ok(())
    }

    fn object(&self, s: &Map<String, Value>, map: &Map<String, Value>, path: &mut String) -> Result<(), Violation> {
        let f = field(path);
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
            if map.len() as u64 > max {
                return self.fail(path, format!("{f} has {} entries; at most {max} are allowed", map.len()));
            }
        }
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
            if (map.len() as u64) < min {
                return self.fail(path, format!("{f} has {} entries; at least {min} are needed", map.len()));
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    let at = join(path, name);
                    return self.fail(&at, format!("missing field `{at}`"));
                }
            }
        }
        for (key, v) in map {
            let len = path.len();
            path.push_str(&join_segment(len == 0, key));
            if let Some(names) = s.get("propertyNames") {
                let key_value = Value::String(key.clone());
                if let Err(e) = self.check(names, &key_value, &mut path.clone()) {
                    return self.fail(path, format!("the key of {}", e.message));
                }
            }
            match (properties.and_then(|p| p.get(key)), s.get("additionalProperties")) {
                (Some(p), _) => self.check(p, v, path)?,
                (None, Some(Value::Bool(false))) => {
                    let known: Vec<&str> =
                        properties.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                    let message = if known.is_empty() {
                        format!("unknown field {}; remove it", vt_ids::shown(key))
                    } else {
                        format!(
                            "unknown field {}; remove it or check its spelling (fields: {})",
                            vt_ids::shown(key),
                            known.join(", ")
                        )
                    };
                    return Err(Violation { path: path.clone(), message, unknown_field: true });
                }
                (None, Some(extra)) => self.check(extra, v, path)?,
                (None, None) => {}
            }
            path.truncate(len);
        }
        Ok(())
    }
}

/// `path.name`, or `name` at the top.
fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn join_segment(top: bool, key: &str) -> String {
    let key = vt_ids::cut(key, KEY_SHOWN);
    if top {
        key.into_owned()
    } else {
        format!(".{key}")
    }
}

/// How a message names a path: in backticks, or "the body" for the whole value.
fn field(path: &str) -> String {
    if path.is_empty() {
        "the body".to_owned()
    } else {
        format!("`{path}`")
    }
}

fn listed(options: &[Value]) -> String {
    let shown: Vec<String> = options
        .iter()
        .map(|o| match o {
            Value::String(s) => format!("`{s}`"),
            other => other.to_string(),
        })
        .collect();
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema of the document, and where it is.
    fn walk<'v>(v: &'v Value, at: String, out: &mut Vec<(String, &'v Map<String, Value>)>) {
        match v {
            Value::Object(m) => {
                if m.contains_key("type") || m.contains_key("$ref") || m.contains_key("oneOf") {
                    out.push((at.clone(), m));
                }
                for (k, v) in m {
                    walk(v, format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_checker_knows_every_keyword_of_the_document() {
        let doc = serde_json::to_value(crate::http::api()).unwrap();
        let mut schemas = vec![];
        walk(&doc["components"]["schemas"], String::new(), &mut schemas);
        walk(&doc["paths"], String::new(), &mut schemas);
        assert!(schemas.len() > 100);
        for (at, s) in schemas {
            // `properties` holds names, not keywords.
            if at.ends_with("/properties") {
                continue;
            }
            for k in s.keys() {
                assert!(KEYWORDS.contains(&k.as_str()), "{at}: keyword `{k}` is not checked");
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                assert!(regex::Regex::new(p).is_ok(), "{at}: pattern {p} does not compile");
            }
        }
    }

    /// The schemas a request can carry: bodies and query parameters, with what they refer to.
    fn request_schemas(doc: &Value) -> Vec<(String, Value)> {
        let mut roots = vec![];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(s) = op.pointer("/requestBody/content/application~1json/schema") {
                    roots.push((format!("{method} {path} body"), s.clone()));
                }
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "query" {
                        roots.push((format!("{method} {path} ?{}", p["name"]), p["schema"].clone()));
                    }
                }
            }
        }
        let mut out = vec![];
        let mut seen = std::collections::HashSet::new();
        while let Some((at, s)) = roots.pop() {
            if let Some(r) = s["$ref"].as_str() {
                let name = r.rsplit('/').next().unwrap().to_owned();
                if seen.insert(name.clone()) {
                    roots.push((format!("{at} -> {name}"), doc["components"]["schemas"][&name].clone()));
                }
            }
            for key in ["properties"] {
                for (k, v) in s[key].as_object().into_iter().flatten() {
                    roots.push((format!("{at}.{k}"), v.clone()));
                }
            }
            for key in ["items", "additionalProperties", "propertyNames"] {
                if s[key].is_object() {
                    roots.push((format!("{at}.{key}"), s[key].clone()));
                }
            }
            for key in ["oneOf", "anyOf", "allOf"] {
                for v in s[key].as_array().into_iter().flatten() {
                    roots.push((at.clone(), v.clone()));
                }
            }
            out.push((at, s));
        }
        out
    }

    #[test]
    fn every_number_and_string_a_request_carries_is_bounded_in_the_document() {
        let doc = serde_json::to_value(crate::http::api()).unwrap();
        let schemas = request_schemas(&doc);
        assert!(schemas.len() > 50, "{}", schemas.len());
        for (at, s) in schemas {
            let types: Vec<&str> = match &s["type"] {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if types.contains(&"integer") || types.contains(&"number") {
                assert!(s.get("maximum").is_some(), "{at}: no `maximum` in {s}");
            }
            if types.contains(&"string") && s.get("enum").is_none() {
                assert!(s.get("maxLength").is_some(), "{at}: no `maxLength` in {s}");
            }
            if types.contains(&"object") && s.get("additionalProperties").is_some_and(Value::is_object) {
                assert!(s.get("maxProperties").is_some(), "{at}: a map without `maxProperties`");
            }
        }
    }

    fn check(schema: Value, v: Value) -> Result<(), Violation> {
        Schema::new(schema, HashMap::new()).check(&v, Pass::Full)
    }

    #[test]
    fn numbers_are_compared_exactly() {
        let s = serde_json::json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX});
        assert!(check(s.clone(), serde_json::json!(i64::MAX)).is_ok());
        let e = check(s.clone(), serde_json::json!(i64::MAX as u64 + 1)).unwrap_err();
        assert!(e.message.contains("at most 9223372036854775807"), "{e:?}");
        assert!(check(s.clone(), serde_json::json!(-1)).is_err());
        assert!(check(s.clone(), serde_json::json!(1.5)).is_err());
        assert!(check(s, serde_json::json!(1e30)).is_err());
        let int32 = serde_json::json!({"type": "integer", "format": "int32", "minimum": 0});
        assert!(check(int32.clone(), serde_json::json!(i32::MAX)).is_ok());
        assert!(check(int32, serde_json::json!(u32::MAX)).is_err(), "the format is a range");
    }

    #[test]
    fn objects_arrays_strings_and_alternatives() {
        let capacity = serde_json::json!({
            "type": "object",
            "required": ["a"],
            "properties": {"a": {"type": "integer", "maximum": 10}, "b": {"type": ["string", "null"], "maxLength": 2}},
            "additionalProperties": false
        });
        let e = check(capacity.clone(), serde_json::json!([1, 2])).unwrap_err();
        assert!(e.message.contains("must be a JSON object, not an array"), "{e:?}");
        let e = check(capacity.clone(), serde_json::json!({"a": 11})).unwrap_err();
        assert_eq!(e.path, "a");
        let e = check(capacity.clone(), serde_json::json!({"a": 1, "b": "xyz"})).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.contains("longer than 2")), ("b", true));
        let e = check(capacity.clone(), serde_json::json!({"a": 1, "zz": 1})).unwrap_err();
        assert!(e.unknown_field && e.path == "zz", "{e:?}");
        let e = check(capacity.clone(), serde_json::json!({})).unwrap_err();
        assert_eq!(e.message, "missing field `a`");
        let long = "k".repeat(100_000);
        let e = check(capacity.clone(), serde_json::json!({"a": 1, long.clone(): 1})).unwrap_err();
        assert!(e.path.len() < 100 && e.message.len() < 300, "{e:?}");
        let optional = serde_json::json!({"oneOf": [{"type": "null"}, capacity]});
        assert!(check(optional.clone(), Value::Null).is_ok());
        let e = check(optional, serde_json::json!({"a": 20})).unwrap_err();
        assert_eq!(e.path, "a", "the alternative that got further says why: {e:?}");
        let map = serde_json::json!({
            "type": "object", "maxProperties": 2,
            "propertyNames": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
            "additionalProperties": {"type": "string", "maxLength": 3}
        });
        assert!(check(map.clone(), serde_json::json!({"ab": "x"})).is_ok());
        assert!(check(map.clone(), serde_json::json!({"a": "", "b": "", "c": ""})).is_err());
        let e = check(map.clone(), serde_json::json!({"../x": "v"})).unwrap_err();
        assert!(e.message.starts_with("the key of"), "{e:?}");
        assert!(check(map, serde_json::json!({"a": "long"})).is_err());
    }
}
