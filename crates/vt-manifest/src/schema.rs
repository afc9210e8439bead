//! JSON Schema of the TOML authoring form, for editors.
//!
//! Every default the parser fills in is here: as `default` where it is a value, and in the
//! `description` (`Default: ...`) where it depends on something else (the image's entrypoint,
//! `min`). A test holds this to docs/manifest.md's tables.

use serde_json::{json, Value};

/// A JSON Schema (draft 2020-12) describing the TOML authoring form of the
/// manifest, for editors such as taplo / Even Better TOML.
///
/// It checks structure, types, ranges, name and env var patterns and
/// duration syntax. Rules that relate several fields (unique names,
/// references to port names and processes, `timeout < interval`,
/// `min <= max`, reserved volume paths) are only enforced by [`crate::parse`].
pub fn json_schema() -> Value {
    let name = json!({
        "type": "string",
        "pattern": "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
        "description": "1 to 63 lowercase letters, digits and '-', starting with a letter, not ending with '-'"
    });
    let env = json!({
        "type": "object",
        "description": "Environment variables. Names starting with VT_ are reserved for the platform.",
        "default": {},
        "propertyNames": {
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
            "not": { "pattern": "^VT_" }
        },
        "additionalProperties": { "type": "string" }
    });
    let duration = |default: &str, desc: &str| {
        json!({
            "type": "string",
            "pattern": "^[0-9]{1,12}(ms|s|m|h)$",
            "default": default,
            "description": desc
        })
    };
    let port_number = json!({ "type": "integer", "minimum": 1, "maximum": 65535 });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://vt.invalid/schemas/manifest-v1.json",
        "title": "vt application manifest",
        "type": "object",
        "additionalProperties": false,
        "required": ["schema_version"],
        "properties": {
            "schema_version": {
                "description": "Manifest format version. Supported: 1.",
                "const": 1
            },
            "env": env,
            "processes": {
                "type": "object",
                "description": "Processes by name. Default: one process `web` running the image's entrypoint with every default.",
                "minProperties": 1,
                "propertyNames": name,
                "additionalProperties": { "$ref": "#/$defs/process" }
            },
            "volumes": {
                "type": "array",
                "description": "Volumes: named disks mounted at a path; each instance takes a free volume of the name in its env (docs/volumes.md).",
                "default": [],
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name", "path"],
                    "properties": {
                        "name": name,
                        "path": {
                            "type": "string",
                            "description": "Absolute, normalized mount path; not under /proc, /sys, /dev or /run/secrets.",
                            "pattern": "^(/[^/]+)+$",
                            "not": { "pattern": "^/(proc|sys|dev|run/secrets)(/|$)|/\\.\\.?(/|$)" }
                        },
                        "process": {
                            "type": "string",
                            "description": "Process the volume is mounted in. Default: every process."
                        }
                    }
                }
            }
        },
        "$defs": {
            "process": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "command": {
                        "type": "array",
                        "description": "Program and arguments; overrides the image's Entrypoint and Cmd. Default: the image's Entrypoint + Cmd.",
                        "minItems": 1,
                        "items": { "type": "string" }
                    },
                    "ports": {
                        "type": "array",
                        "default": [],
                        "items": {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["name", "port"],
                            "properties": {
                                "name": name,
                                "port": port_number,
                                "protocol": { "enum": ["tcp", "udp"], "default": "tcp" }
                            }
                        }
                    },
                    "healthcheck": {
                        "type": "object",
                        "description": "How the platform checks the process. Default: none (healthy once started).",
                        "additionalProperties": false,
                        "required": ["type", "port"],
                        "properties": {
                            "type": { "enum": ["tcp", "http"] },
                            "port": {
                                "description": "A port name of this process, or a port number.",
                                "anyOf": [ { "type": "string" }, port_number ]
                            },
                            "path": {
                                "type": "string",
                                "pattern": "^/",
                                "description": "Request path; required for http, not allowed for tcp."
                            },
                            "interval": duration("10s", "Time between checks, 1s to 1h."),
                            "timeout": duration("2s", "Time one check may take; less than interval."),
                            "grace": duration("30s", "Time after start during which failures do not count."),
                            "retries": { "type": "integer", "minimum": 1, "maximum": 100, "default": 3 }
                        },
                        "if": { "properties": { "type": { "const": "http" } } },
                        "then": { "required": ["path"] },
                        "else": { "not": { "required": ["path"] } }
                    },
                    "resources": {
                        "type": "object",
                        "default": { "cpu": 1.0, "memory_mib": 512 },
                        "additionalProperties": false,
                        "properties": {
                            "cpu": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": 64,
                                "default": 1.0,
                                "description": "Fractional vCPUs."
                            },
                            "memory_mib": {
                                "type": "integer",
                                "minimum": 64,
                                "maximum": 262144,
                                "default": 512,
                                "description": "Memory in MiB. A hard cap: the process is OOM-killed beyond it."
                            }
                        }
                    },
                    "scaling": {
                        "type": "object",
                        "default": { "min": 1, "max": 1 },
                        "additionalProperties": false,
                        "properties": {
                            "min": {
                                "type": "integer", "minimum": 0, "maximum": 1000, "default": 1,
                                "description": "Instances to run; at most `max`."
                            },
                            "max": {
                                "type": "integer", "minimum": 0, "maximum": 1000,
                                "description": "Most instances `vt scale` may set. Default: `min` (1 when `min` is 0 or not set)."
                            },
                            "suspend": {
                                "type": "boolean", "default": false,
                                "description": "A scale to 0 suspends the running instances (saved to a snapshot on their node) instead of stopping them; a scale up resumes them first."
                            }
                        }
                    },
                    "user": {
                        "type": "string",
                        "pattern": "^([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10}|[0-9]{1,10}:[0-9]{1,10})$",
                        "description": "\"name\", \"uid\" or \"uid:gid\". Default: the image's user."
                    },
                    "secret_env": {
                        "type": "array",
                        "default": [],
                        "uniqueItems": true,
                        "items": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 255 },
                        "description": "Secrets of the env to also set as environment variables of this process (they are always files in /run/secrets/)."
                    },
                    "network": {
                        "type": "string",
                        "enum": ["private", "isolated"],
                        "default": "private",
                        "description": "private: the org's private network (reaches and is reached by the org's other private instances over IPv6) and the internet; isolated: the internet only (what workspaces get)."
                    },
                    "env": env
                }
            }
        }
    })
}
