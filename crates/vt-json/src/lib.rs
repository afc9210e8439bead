//! Strict JSON for what crosses a boundary (API request bodies, registry manifests).
//!
//! `serde_json` on its own keeps the last of two equal keys (`{"a":1,"a":2}` is `{"a":2}`),
//! while other parsers keep the first: two readers of one document could disagree on what it
//! says, and a digest would not pin one meaning. [`parse`] refuses such a document, requires
//! exactly one value with nothing but whitespace after it (`{} garbage` and `{}{}` are refused),
//! and keeps `serde_json`'s nesting limit (128), so hostile input cannot exhaust the stack.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why bytes are not strict JSON.
#[derive(Debug)]
pub enum JsonError {
    /// Not JSON, cut short, or followed by more than whitespace; `serde_json` says where (line and column).
    Syntax(serde_json::Error),
    /// An object has the same key twice. `path` is the object's place in the document (`""` for
    /// the top level, `a.b[2]` below it), with every key cut for messages.
    DuplicateKey { path: String, key: String },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(e) => write!(f, "{e}"),
            JsonError::DuplicateKey { path, key } if path.is_empty() => {
                write!(f, "the key {} appears twice; send each key once", vt_ids::shown(key))
            }
            JsonError::DuplicateKey { path, key } => {
                write!(f, "the key {} appears twice in `{path}`; send each key once", vt_ids::shown(key))
            }
        }
    }
}

impl std::error::Error for JsonError {}

/// The one JSON value in `bytes` (see the crate docs for what is refused).
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict { duplicate: &duplicate }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate.into_inner()) {
        (_, Some(Duplicate { path, key })) => {
            let path = path.concat();
            Err(JsonError::DuplicateKey { path: path.strip_prefix('.').unwrap_or(&path).to_owned(), key })
        }
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(JsonError::Syntax(e)),
    }
}

/// A duplicate key found while parsing; `path` is filled in, innermost first, as the error unwinds.
struct Duplicate {
    path: Vec<String>,
    key: String,
}

/// Longest key shown in a path segment.
const SEGMENT: usize = 64;

/// A `serde_json::Value`, refusing duplicate keys (recorded in `duplicate`).
#[derive(Clone, Copy)]
struct Strict<'a> {
    duplicate: &'a RefCell<Option<Duplicate>>,
}

impl Strict<'_> {
    /// On the way out of an error: prefix the duplicate's path with the segment we were in.
    fn unwind(&self, segment: impl FnOnce() -> String) {
        if let Some(d) = self.duplicate.borrow_mut().as_mut() {
            d.path.insert(0, segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => items.push(v),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    let i = items.len();
                    self.unwind(|| format!("[{i}]"));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(Duplicate { path: vec![], key });
                return Err(de::Error::custom("duplicate key"));
            }
            match access.next_value_seed(self) {
                Ok(v) => {
                    map.insert(key, v);
                }
                Err(e) => {
                    self.unwind(|| format!(".{}", vt_ids::cut(&key, SEGMENT)));
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(s: &str) -> (String, String) {
        match parse(s.as_bytes()) {
            Err(JsonError::DuplicateKey { path, key }) => (path, key),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn accepts_one_value_with_whitespace_around_it() {
        let v = parse(b" \n{\"a\": [1, -2, 2.5, true, null, \"x\"], \"b\": {}}\t\r\n").unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, -2, 2.5, true, null, "x"], "b": {}}));
        assert_eq!(parse(b"18446744073709551615").unwrap(), serde_json::json!(u64::MAX));
        // Equal keys in different objects are fine.
        assert!(parse(br#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_ok());
    }

    #[test]
    fn refuses_anything_after_the_value() {
        for s in ["{} garbage", "{}{}", "{\"name\":\"x\"} x", "1 2", "[] ]", "{}\u{0}"] {
            assert!(matches!(parse(s.as_bytes()), Err(JsonError::Syntax(_))), "{s}");
        }
    }

    #[test]
    fn refuses_duplicate_keys_naming_where() {
        assert_eq!(dup(r#"{"a": 1, "a": 2}"#), ("".into(), "a".into()));
        assert_eq!(dup(r#"{"x": 1, "b": {"c": [0, {"d": 1, "d": 1}]}}"#), ("b.c[1]".into(), "d".into()));
        assert_eq!(dup(r#"[{"k": 1, "k": 1}]"#), ("[0]".into(), "k".into()));
        // A key spelled with an escape is the same key.
        assert_eq!(dup(r#"{"ab": 1, "a\u0062": 2}"#), ("".into(), "ab".into()));
        let long = "k".repeat(10_000);
        let e = parse(format!(r#"{{"{long}": {{"a": 1, "a": 1}}}}"#).as_bytes()).unwrap_err().to_string();
        assert!(e.len() < 300, "keys in messages are cut: {e}");
    }

    #[test]
    fn every_prefix_of_a_document_is_an_error_not_a_panic() {
        let doc = br#"{"a": [1, {"b": "c\u00e9"}], "d": -1.5e3, "e": null}"#;
        for n in 0..doc.len() {
            assert!(parse(&doc[..n]).is_err(), "{n}");
        }
        assert!(parse(doc).is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(parse(deep.as_bytes()), Err(JsonError::Syntax(_))));
    }
}
