//! Bounds of request fields that need more than a `#[schema(...)]` attribute: the schemas of
//! maps (their keys, values and sizes), built from named constants. The OpenAPI document
//! carries these schemas and the control plane checks requests against the document, so
//! each rule is written once, here.

use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, Object, ObjectBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::PartialSchema;

/// Node labels (`RegisterNode.labels`): at most this many per node.
pub const MAX_LABELS: usize = 64;
/// A label key: an optional prefix of DNS labels (lower case) ending in `/`, then a name of
/// 1-63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric: `zone`,
/// `example.com/gpu`. No `..`, no empty segments, no spaces.
pub const LABEL_KEY_PATTERN: &str = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$";
/// The longest label key, prefix included.
pub const MAX_LABEL_KEY: usize = 128;
/// A label value: any characters but control characters.
pub const LABEL_VALUE_PATTERN: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";
/// The longest label value.
pub const MAX_LABEL_VALUE: usize = 256;

/// Processes one scale request may name (`SetScale.processes`).
pub const MAX_SCALE_PROCESSES: usize = 64;
/// The most instances of one process (the manifest's `scaling.max` is at most this too).
pub const MAX_INSTANCES: u32 = 1000;

/// Secrets one change may name, set and unset each (an env holds at most this many; `vt-secrets`).
pub const MAX_SECRETS: usize = 200;
/// The longest base64 value of a secret: 64 KiB of bytes, encoded (`vt-secrets` limits the bytes).
pub const MAX_SECRET_BASE64: usize = (64 * 1024usize).div_ceil(3) * 4;

fn env_var_name() -> Option<Object> {
    match <vt_ids::EnvVarName as PartialSchema>::schema() {
        RefOr::T(utoipa::openapi::schema::Schema::Object(name)) => Some(name),
        _ => None,
    }
}

/// The schema of `ChangeSecrets.set`: names to base64 values. No pattern on a value: a
/// refusal would quote it.
pub fn secrets_set_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .max_properties(Some(MAX_SECRETS))
        .property_names(env_var_name())
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .max_length(Some(MAX_SECRET_BASE64))
                .description(Some("the value's bytes, base64 (standard alphabet, padded)"))
                .build()
                .into(),
        )))
        .description(Some(format!(
            "At most {MAX_SECRETS} names (environment variable names), each with its value in base64 (at most 64 KiB of bytes)."
        )))
        .build()
}

/// The schema of `ChangeSecrets.unset`: names.
pub fn secrets_unset_schema() -> utoipa::openapi::schema::Array {
    let name = env_var_name().map(RefOr::from).unwrap_or_else(|| RefOr::T(Object::new().into()));
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(name)
        .max_items(Some(MAX_SECRETS))
        .description(Some(format!("At most {MAX_SECRETS} names to remove.")))
        .build()
}

fn string(max_length: usize, pattern: &str, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .max_length(Some(max_length))
        .pattern(Some(pattern))
        .description(Some(description))
        .build()
}

/// The schema of `RegisterNode.labels`.
pub fn labels_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .max_properties(Some(MAX_LABELS))
        .property_names(Some(string(
            MAX_LABEL_KEY,
            LABEL_KEY_PATTERN,
            "`name` or `prefix/name`: a name is 1-63 of [A-Za-z0-9._-], starting and ending alphanumeric; a prefix is lower-case DNS labels joined by `.`",
        )))
        .additional_properties(Some(AdditionalProperties::RefOr(
            string(MAX_LABEL_VALUE, LABEL_VALUE_PATTERN, "no control characters").into(),
        )))
        .description(Some(format!(
            "At most {MAX_LABELS} labels; keys up to {MAX_LABEL_KEY} characters, values up to {MAX_LABEL_VALUE}."
        )))
        .build()
}

/// The schema of `SetScale.processes`.
pub fn scale_schema() -> Object {
    let count = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Integer))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(0))
        .maximum(Some(MAX_INSTANCES));
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .min_properties(Some(1))
        .max_properties(Some(MAX_SCALE_PROCESSES))
        .property_names(match <vt_ids::Name as PartialSchema>::schema() {
            RefOr::T(name) => Some(name),
            RefOr::Ref(_) => None,
        })
        .additional_properties(Some(AdditionalProperties::RefOr(count.build().into())))
        .build()
}
