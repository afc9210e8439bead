//! Formatting, normalized JSON, hashing, snapshots, JSON Schema and properties.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use proptest::prelude::*;
use vt_manifest::{
    from_normalized_json, json_schema, parse, Healthcheck, HealthcheckKind, Manifest, NetworkClass, Port, PortRef,
    Process, Protocol, Resources, Scaling, Volume,
};

const EXAMPLE: &str = include_str!("full.toml");

static VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| jsonschema::validator_for(&json_schema()).expect("schema compiles"));

fn toml_to_json(src: &str) -> serde_json::Value {
    toml::from_str::<serde_json::Value>(src).expect("valid TOML")
}

fn schema_accepts(src: &str) -> bool {
    VALIDATOR.is_valid(&toml_to_json(src))
}

#[test]
fn snapshot_example() {
    let m = parse(EXAMPLE).unwrap();
    insta::assert_snapshot!("example_canonical_toml", m.to_canonical_toml());
    insta::assert_json_snapshot!("example_normalized_json", m.to_normalized_json());
    insta::assert_snapshot!("example_hash", m.hash());
}

#[test]
fn fmt_is_idempotent_on_example() {
    let m = parse(EXAMPLE).unwrap();
    let once = m.to_canonical_toml();
    let m2 = parse(&once).unwrap();
    assert_eq!(m2, m);
    assert_eq!(m2.to_canonical_toml(), once);
    assert!(once.starts_with("schema_version = 1\n"));
}

#[test]
fn hash_format_and_sensitivity() {
    let m = parse(EXAMPLE).unwrap();
    let h = m.hash();
    assert_eq!(h.len(), 7 + 64);
    assert!(h.starts_with("sha256:"));
    assert!(h[7..].bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    let mut m2 = m.clone();
    m2.processes.get_mut("web").unwrap().scaling.max += 1;
    assert_ne!(m2.hash(), h);
    // Comments and layout do not change the hash; explicit defaults do not either.
    let a = parse("schema_version = 1\n").unwrap();
    let b = parse(
        "# hi\nschema_version = 1\n[processes.web]\nresources = { cpu = 1, memory_mib = 512 }\nscaling.min = 1\n",
    )
    .unwrap();
    assert_eq!(a.hash(), b.hash());
    // Pinned: the hash of the minimal manifest is part of the contract. It is the SHA-256
    // (computed independently with `sha256sum`) of this exact compact, key-sorted JSON:
    // {"env":{},"processes":{"web":{"command":null,"env":{},"healthcheck":null,"ports":[],
    //  "resources":{"cpu":1.0,"memory_mib":512},"scaling":{"max":1,"min":1},"user":null}},
    //  "schema_version":1,"volumes":[]}
    assert_eq!(a.hash(), "sha256:9ed788ca2a5ae1c3de11685adacecf760365904a259897a18a1cad74397054de");
}

#[test]
fn normalized_json_round_trips_and_rejects_junk() {
    let m = parse(EXAMPLE).unwrap();
    let j = m.to_normalized_json();
    assert_eq!(from_normalized_json(&j).unwrap(), m);
    assert_eq!(j["processes"]["web"]["healthcheck"]["interval_ms"], 5000);

    let mut bad = j.clone();
    bad["processes"]["web"]["ports"][0]["port"] = 0.into();
    let e = from_normalized_json(&bad).unwrap_err();
    assert_eq!(e.0[0].path, "processes.web.ports[0].port");
    assert_eq!((e.0[0].line, e.0[0].column), (0, 0));

    let mut bad = j.clone();
    bad["extra"] = 1.into();
    assert!(from_normalized_json(&bad).is_err());

    let mut bad = j.clone();
    bad["env"]["VT_X"] = "1".into();
    assert_eq!(from_normalized_json(&bad).unwrap_err().0[0].path, "env.VT_X");

    let mut bad = j.clone();
    bad["processes"] = serde_json::json!({});
    assert!(from_normalized_json(&bad).is_err());

    let mut bad = j;
    bad["schema_version"] = 2.into();
    assert_eq!(from_normalized_json(&bad).unwrap_err().0[0].path, "schema_version");
}

#[test]
fn schema_accepts_valid_examples() {
    assert!(schema_accepts(EXAMPLE));
    assert!(schema_accepts(&parse(EXAMPLE).unwrap().to_canonical_toml()));
    assert!(schema_accepts("schema_version = 1\n"));
    assert!(schema_accepts(
        "schema_version = 1\n[processes.worker]\ncommand = [\"w\"]\nresources = { cpu = 2 }\n\
         [processes.dns]\nports = [{ name = \"dns\", port = 53, protocol = \"udp\" }]\n\
         healthcheck = { type = \"tcp\", port = 53 }\n[[volumes]]\nname = \"d\"\npath = \"/d\"\n"
    ));
}

#[test]
fn schema_rejects_invalid_examples() {
    let cases = [
        "",                                                    // missing schema_version
        "schema_version = 2\n",                                // unsupported version
        "schema_version = 1\nextra = 1\n",                     // unknown field
        "schema_version = 1\n[processes.Web]\n",               // bad process name
        "schema_version = 1\n[processes.web]\ncommand = []\n", // empty command
        "schema_version = 1\n[processes.web]\nports = [{ name = \"a\", port = 70000 }]\n",
        "schema_version = 1\n[processes.web]\nports = [{ name = \"a\", port = 1, protocol = \"sctp\" }]\n",
        "schema_version = 1\n[processes.web]\nhealthcheck = { type = \"http\", port = 1 }\n", // http needs path
        "schema_version = 1\n[processes.web]\nhealthcheck = { type = \"tcp\", port = 1, path = \"/\" }\n",
        "schema_version = 1\n[processes.web]\nhealthcheck = { type = \"tcp\", port = 1, interval = \"10\" }\n",
        "schema_version = 1\n[processes.web]\nresources = { cpu = 0 }\n",
        "schema_version = 1\n[processes.web]\nresources = { memory_mib = 32 }\n",
        "schema_version = 1\n[processes.web]\nscaling = { max = 1001 }\n",
        "schema_version = 1\n[processes.web]\nuser = \"a:b\"\n",
        "schema_version = 1\n[env]\nVT_X = \"1\"\n",
        "schema_version = 1\n[env]\nA = 1\n",
        "schema_version = 1\n[[volumes]]\nname = \"d\"\npath = \"/proc/x\"\n",
        "schema_version = 1\n[[volumes]]\nname = \"d\"\npath = \"/a/../b\"\n",
        "schema_version = 1\n[[volumes]]\nname = \"d\"\npath = \"relative\"\n",
        "schema_version = 1\n[[volumes]]\nname = \"d\"\n",
    ];
    for src in cases {
        assert!(!schema_accepts(src), "schema accepted:\n{src}");
        assert!(parse(src).is_err(), "parser accepted:\n{src}");
    }
}

/// docs/manifest.md's reference tables, as (section, key, default cell).
fn documented_defaults() -> Vec<(String, String, String)> {
    let doc = include_str!("../../../docs/manifest.md");
    let (mut section, mut out) = (String::new(), vec![]);
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            section = h.split_whitespace().next().unwrap_or_default().to_owned();
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| key | type | default | rules |`: the header and the separator start otherwise.
        if cells.len() == 6 && cells[1].starts_with('`') && !section.is_empty() {
            out.push((section.clone(), cells[1].trim_matches('`').to_owned(), cells[3].to_owned()));
        }
    }
    out
}

/// The schema of a key in a documented section.
fn schema_of(schema: &serde_json::Value, section: &str, key: &str) -> serde_json::Value {
    let base = match section {
        "Top" => "/properties".to_owned(),
        "Process" => "/$defs/process/properties".to_owned(),
        "Port" => "/$defs/process/properties/ports/items/properties".to_owned(),
        "Healthcheck" => "/$defs/process/properties/healthcheck/properties".to_owned(),
        "Resources" => "/$defs/process/properties/resources/properties".to_owned(),
        "Scaling" => "/$defs/process/properties/scaling/properties".to_owned(),
        "Volumes" => "/properties/volumes/items/properties".to_owned(),
        other => panic!("docs/manifest.md has a table under `### {other}` this test does not know"),
    };
    schema.pointer(&format!("{base}/{key}")).unwrap_or_else(|| panic!("no schema for {section}: `{key}`")).clone()
}

/// Every default docs/manifest.md names is in the schema `vt manifest schema` prints: a literal
/// default as the schema's `default` (the same value), any other as `Default: ...` in its
/// description. A default added to the docs or the parser without the schema fails here.
#[test]
fn every_documented_default_is_in_the_schema() {
    let schema = json_schema();
    let rows = documented_defaults();
    assert!(rows.len() > 25, "the reference tables were found: {rows:?}");
    for (section, key, default) in rows {
        if default == "required" || default == "none" {
            continue;
        }
        let node = schema_of(&schema, &section, &key);
        // One backticked literal (`"10s"`, `3`, `{ cpu = 1.0, memory_mib = 512 }`): the schema's `default`.
        let literal = default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
            .and_then(|d| toml::from_str::<serde_json::Value>(&format!("v = {d}")).ok())
            .map(|v| v["v"].clone());
        match literal {
            Some(want) => {
                let got =
                    node.get("default").unwrap_or_else(|| panic!("{section}: `{key}` has no default in the schema"));
                assert!(
                    same_json(got, &want),
                    "{section}: `{key}`: the schema's default {got} is not the documented {want}"
                );
            }
            None => {
                let description = node["description"].as_str().unwrap_or_default();
                assert!(
                    description.contains("Default: "),
                    "{section}: `{key}` defaults to {default} (docs), the schema does not say so: {node}"
                );
            }
        }
    }
}

/// Equal JSON, numbers compared as numbers (`1.0` = `1`).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => x.as_f64() == y.as_f64(),
        (Object(x), Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_json(v, w)),
        _ => a == b,
    }
}

// ---- property tests ----

fn name() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,8}[a-z0-9])?"
}

fn env_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        "[A-Za-z_][A-Za-z0-9_]{0,8}".prop_filter("reserved", |k| !k.starts_with("VT_")),
        any::<String>().prop_map(|s| s.replace('\0', "")),
        0..4,
    )
}

fn duration(min: u64, max: u64) -> impl Strategy<Value = u64> {
    // Bias towards whole seconds and minutes, which format with larger units.
    (min..=max, 0usize..3).prop_map(move |(ms, unit)| {
        let u = [1, 1000, 60_000][unit];
        let rounded = ms / u * u;
        if rounded >= min {
            rounded
        } else {
            ms
        }
    })
}

fn process() -> impl Strategy<Value = Process> {
    let command = prop::option::of(
        ("[a-z./]{1,10}", prop::collection::vec(any::<String>().prop_map(|s| s.replace('\0', "")), 0..3)).prop_map(
            |(p, mut args)| {
                args.insert(0, p);
                args
            },
        ),
    );
    let ports = prop::collection::vec((1u16..=65535, prop::bool::ANY), 0..4).prop_map(|v| {
        let mut seen = BTreeSet::new();
        v.into_iter()
            .filter(|k| seen.insert(*k))
            .enumerate()
            .map(|(i, (port, udp))| Port {
                name: format!("p{i}"),
                port,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            })
            .collect::<Vec<_>>()
    });
    let cpu = prop_oneof![(1u32..=64_000).prop_map(|k| f64::from(k) / 1000.0), (0.0001f64..=64.0)];
    let resources = (cpu, 64u32..=262_144).prop_map(|(cpu, memory_mib)| Resources { cpu, memory_mib });
    let scaling = (0u32..=1000, any::<bool>())
        .prop_flat_map(|(min, suspend)| (Just(min), min..=1000, Just(suspend)))
        .prop_map(|(min, max, suspend)| Scaling { min, max, suspend });
    let user = prop::option::of(prop_oneof![
        Just("app".to_string()),
        (0u32..=u32::MAX).prop_map(|u| u.to_string()),
        (0u32..70000, 0u32..70000).prop_map(|(u, g)| format!("{u}:{g}")),
    ]);
    (command, ports, resources, scaling, user, env_map())
        .prop_flat_map(|(command, ports, resources, scaling, user, env)| {
            let tcp: Vec<String> =
                ports.iter().filter(|p| p.protocol == Protocol::Tcp).map(|p| p.name.clone()).collect();
            let port_ref = if tcp.is_empty() {
                (1u16..=65535).prop_map(PortRef::Number).boxed()
            } else {
                prop_oneof![(1u16..=65535).prop_map(PortRef::Number), prop::sample::select(tcp).prop_map(PortRef::Name)]
                    .boxed()
            };
            let hc = prop::option::of(
                (
                    prop::bool::ANY,
                    port_ref,
                    "/[a-zA-Z0-9/._?=&-]{0,20}",
                    duration(1000, 3_600_000),
                    duration(0, 3_600_000),
                    1u32..=100,
                )
                    .prop_flat_map(|(http, port, path, interval_ms, grace_ms, retries)| {
                        (duration(10, interval_ms - 1), Just((http, port, path, interval_ms, grace_ms, retries)))
                    })
                    .prop_map(|(timeout_ms, (http, port, path, interval_ms, grace_ms, retries))| {
                        Healthcheck {
                            kind: if http { HealthcheckKind::Http } else { HealthcheckKind::Tcp },
                            port,
                            path: http.then_some(path),
                            interval_ms,
                            timeout_ms,
                            grace_ms,
                            retries,
                        }
                    }),
            );
            (Just((command, ports, resources, scaling, user, env)), hc)
        })
        .prop_map(|((command, ports, resources, scaling, user, env), healthcheck)| {
            // Secrets as variables: names the process's `env` does not set.
            let secret_env = ["DATABASE_URL", "API_KEY", "_TOKEN"]
                .iter()
                .filter(|n| !env.contains_key(**n))
                .map(|n| n.to_string())
                .collect();
            // Both network classes, by whether the process has ports.
            let network = if ports.is_empty() { NetworkClass::Isolated } else { NetworkClass::Private };
            Process { command, env, healthcheck, ports, resources, scaling, user, secret_env, network }
        })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (env_map(), prop::collection::btree_map(name(), process(), 1..4))
        .prop_flat_map(|(env, processes)| {
            let names: Vec<String> = processes.keys().cloned().collect();
            let volumes = prop::collection::vec(
                ("/[a-z0-9._-]{1,6}(/[a-z0-9_-]{1,6}){0,2}", prop::option::of(prop::sample::select(names))),
                0..3,
            );
            (Just(env), Just(processes), volumes)
        })
        .prop_map(|(env, processes, vols)| {
            let mut seen = BTreeSet::new();
            let volumes = vols
                .into_iter()
                .enumerate()
                .filter(|(_, (path, _))| {
                    !path.split('/').any(|s| s == "." || s == "..")
                        && !["/proc", "/sys", "/dev"].iter().any(|r| path == r || path.starts_with(&format!("{r}/")))
                        && seen.insert(path.clone())
                })
                .map(|(i, (path, process))| Volume { name: format!("vol-{i}"), path, process })
                .collect();
            Manifest { schema_version: 1, env, processes, volumes }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fmt_round_trips(m in manifest()) {
        let text = m.to_canonical_toml();
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n---\n{text}")))?;
        prop_assert_eq!(&parsed, &m);
        // fmt(fmt(x)) == fmt(x)
        prop_assert_eq!(parsed.to_canonical_toml(), text.clone());
        prop_assert!(schema_accepts(&text), "schema rejected canonical TOML:\n{}", text);
    }

    #[test]
    fn json_round_trips(m in manifest()) {
        let j = m.to_normalized_json();
        let back = from_normalized_json(&j).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &m);
        // through a string too, as the control plane stores it
        let s = serde_json::to_string(&j).unwrap();
        let back2 = from_normalized_json(&serde_json::from_str(&s).unwrap()).unwrap();
        prop_assert_eq!(back2, m);
    }

    #[test]
    fn hash_is_stable(m in manifest()) {
        let h = m.hash();
        prop_assert_eq!(m.hash(), h.clone());
        prop_assert_eq!(m.clone().hash(), h.clone());
        prop_assert_eq!(parse(&m.to_canonical_toml()).unwrap().hash(), h.clone());
        prop_assert_eq!(from_normalized_json(&m.to_normalized_json()).unwrap().hash(), h);
    }

    #[test]
    fn arbitrary_input_never_panics(s in any::<String>()) {
        let _ = parse(&s);
    }

    #[test]
    fn mutated_example_never_panics(pos in 0usize..EXAMPLE.len(), byte in prop::sample::select(b"\"[]{}=,.\n #0a-/".to_vec())) {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        bytes[pos] = byte;
        if let Ok(s) = String::from_utf8(bytes) {
            match parse(&s) {
                Ok(m) => prop_assert_eq!(parse(&m.to_canonical_toml()).unwrap(), m),
                Err(e) => prop_assert!(e.0.iter().all(|e| e.line >= 1 && e.column >= 1)),
            }
        }
    }
}
