//! Parsing and validation: every rule, with exact paths and locations.

use vt_manifest::{parse, HealthcheckKind, Manifest, ManifestError, PortRef, Protocol};

fn errs(src: &str) -> Vec<ManifestError> {
    match parse(src) {
        Ok(m) => panic!("expected errors, parsed: {m:?}"),
        Err(e) => e.0,
    }
}

/// Exactly one error, at `path`, `line:column`.
#[track_caller]
fn one(src: &str, path: &str, line: usize, column: usize) -> ManifestError {
    let e = errs(src);
    assert_eq!(e.len(), 1, "expected one error, got: {e:#?}");
    let e = e.into_iter().next().unwrap();
    assert_eq!((e.path.as_str(), e.line, e.column), (path, line, column), "{e}");
    e
}

fn proc_(body: &str) -> String {
    format!("schema_version = 1\n[processes.web]\n{body}")
}

const EXAMPLE: &str = include_str!("full.toml");

#[test]
fn example_parses() {
    let m = parse(EXAMPLE).unwrap();
    let web = &m.processes["web"];
    assert_eq!(web.ports[0].port, 8080);
    assert_eq!(web.ports[0].protocol, Protocol::Tcp);
    let hc = web.healthcheck.as_ref().unwrap();
    assert_eq!(hc.kind, HealthcheckKind::Http);
    assert_eq!(hc.port, PortRef::Name("http".into()));
    assert_eq!((hc.interval_ms, hc.timeout_ms, hc.grace_ms, hc.retries), (5000, 1000, 30_000, 3));
    assert_eq!(web.resources.cpu, 0.5);
    assert_eq!((web.scaling.min, web.scaling.max), (2, 10));
    let worker = &m.processes["worker"];
    assert_eq!(worker.resources.memory_mib, 512);
    assert_eq!(m.effective_env("worker").unwrap()["QUEUE"], "default");
    assert_eq!(m.effective_env("worker").unwrap()["RUST_LOG"], "info");
    assert_eq!(m.volumes_for("web").count(), 1);
    assert_eq!(m.volumes_for("worker").count(), 0);
}

#[test]
fn minimal_manifest_has_default_web_process() {
    let m = parse("schema_version = 1\n").unwrap();
    assert_eq!(m, Manifest::minimal());
    let web = &m.processes["web"];
    assert_eq!(web.command, None);
    assert_eq!(web.resources.cpu, 1.0);
    assert_eq!(web.resources.memory_mib, 512);
    assert_eq!((web.scaling.min, web.scaling.max), (1, 1));
}

#[test]
fn healthcheck_defaults() {
    let m = parse(&proc_("ports = [{ name = \"p\", port = 9000 }]\nhealthcheck = { type = \"tcp\", port = \"p\" }\n"))
        .unwrap();
    let hc = m.processes["web"].healthcheck.clone().unwrap();
    assert_eq!((hc.interval_ms, hc.timeout_ms, hc.grace_ms, hc.retries), (10_000, 2_000, 30_000, 3));
    assert_eq!(hc.path, None);
}

#[test]
fn alternative_toml_spellings_are_equivalent() {
    let a = parse(&proc_("ports = [{ name = \"http\", port = 80 }]\nresources.cpu = 2\n")).unwrap();
    let b = parse(
        "schema_version = 1\n[processes.web.resources]\ncpu = 2.0\n[[processes.web.ports]]\nname = \"http\"\nport = 80\nprotocol = \"tcp\"\n",
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn schema_version_rules() {
    let e = one("env = {}\n", "schema_version", 1, 1);
    assert!(e.message.contains("supported versions: 1"), "{e}");
    let e = one("schema_version = 2\n[processes.Web]\n", "schema_version", 1, 18);
    assert_eq!(e.message, "unsupported schema_version 2; supported versions: 1");
    one("schema_version = \"1\"\n", "schema_version", 1, 18);
}

#[test]
fn unknown_fields_everywhere() {
    let e = one("schema_version = 1\nproceses = {}\n", "proceses", 2, 1);
    assert_eq!(e.hint.as_deref(), Some("did you mean `processes`?"));
    one(&proc_("comand = [\"x\"]\n"), "processes.web.comand", 3, 1);
    one(&proc_("ports = [{ name = \"a\", port = 1, proto = \"tcp\" }]\n"), "processes.web.ports[0].proto", 3, 34);
    one(&proc_("resources = { cpus = 1 }\n"), "processes.web.resources.cpus", 3, 15);
    one(&proc_("scaling = { min = 1, maximum = 2 }\n"), "processes.web.scaling.maximum", 3, 22);
    one(
        &proc_("healthcheck = { type = \"tcp\", port = 1, every = \"1s\" }\n"),
        "processes.web.healthcheck.every",
        3,
        41,
    );
    one("schema_version = 1\n[[volumes]]\nname = \"d\"\npath = \"/d\"\nsize = 1\n", "volumes[0].size", 5, 1);
}

#[test]
fn type_errors() {
    let e = one(&proc_("command = \"./server\"\n"), "processes.web.command", 3, 11);
    assert_eq!(e.message, "expected an array, found string");
    one(&proc_("command = [\"a\", 1]\n"), "processes.web.command[1]", 3, 17);
    one(&proc_("user = 1000\n"), "processes.web.user", 3, 8);
    one("schema_version = 1\nprocesses = 3\n", "processes", 2, 13);
    one("schema_version = 1\nvolumes = {}\n", "volumes", 2, 11);
    one(&proc_("resources = { cpu = \"1\" }\n"), "processes.web.resources.cpu", 3, 21);
}

#[test]
fn process_names() {
    let e = one("schema_version = 1\n[processes.Web_1]\n", "processes.Web_1", 2, 12);
    assert_eq!(e.hint.as_deref(), Some("rename it to `web-1`"));
    one("schema_version = 1\n[processes.worker-]\n", "processes.worker-", 2, 12);
    one("schema_version = 1\n[processes.1web]\n", "processes.1web", 2, 12);
    one("schema_version = 1\n[processes]\n", "processes", 2, 1);
    assert!(parse("schema_version = 1\n[processes.a-b-9]\n").is_ok());
}

#[test]
fn command_rules() {
    let e = one(&proc_("command = []\n"), "processes.web.command", 3, 11);
    assert!(e.hint.unwrap().contains("entrypoint"));
    one(&proc_("command = [\"\"]\n"), "processes.web.command[0]", 3, 12);
    one(&proc_("command = [\"a\", \"b\\u0000\"]\n"), "processes.web.command[1]", 3, 17);
    assert!(parse(&proc_("command = [\"a\", \"\"]\n")).is_ok());
}

#[test]
fn port_rules() {
    let src = proc_("ports = [\n  { name = \"http\", port = 8080 },\n  { name = \"x\", port = 70000 },\n]\n");
    let e = one(&src, "processes.web.ports[1].port", 5, 24);
    assert_eq!(e.to_string(), "5:24: processes.web.ports[1].port: must be between 1 and 65535, got 70000");
    one(&proc_("ports = [{ name = \"a\", port = 0 }]\n"), "processes.web.ports[0].port", 3, 31);
    one(&proc_("ports = [{ name = \"a\" }]\n"), "processes.web.ports[0].port", 3, 10);
    one(&proc_("ports = [{ port = 1 }]\n"), "processes.web.ports[0].name", 3, 10);
    one(&proc_("ports = [{ name = \"A\", port = 1 }]\n"), "processes.web.ports[0].name", 3, 19);
    one(
        &proc_("ports = [{ name = \"a\", port = 1, protocol = \"sctp\" }]\n"),
        "processes.web.ports[0].protocol",
        3,
        45,
    );
    one(&proc_("ports = [1]\n"), "processes.web.ports[0]", 3, 10);
    // duplicates
    let e = one(
        &proc_("ports = [\n  { name = \"a\", port = 1 },\n  { name = \"a\", port = 2 },\n]\n"),
        "processes.web.ports[1].name",
        5,
        12,
    );
    assert!(e.message.contains("duplicate port name `a`"), "{e}");
    one(
        &proc_("ports = [\n  { name = \"a\", port = 1 },\n  { name = \"b\", port = 1 },\n]\n"),
        "processes.web.ports[1].port",
        5,
        24,
    );
    // same number, different protocol is fine
    assert!(parse(&proc_("ports = [{ name = \"a\", port = 53 }, { name = \"b\", port = 53, protocol = \"udp\" }]\n"))
        .is_ok());
}

#[test]
fn healthcheck_rules() {
    let ports = "ports = [{ name = \"http\", port = 8080 }, { name = \"dns\", port = 53, protocol = \"udp\" }]\n";
    let hc = |body: &str| proc_(&format!("{ports}[processes.web.healthcheck]\n{body}"));
    assert!(parse(&hc("type = \"http\"\nport = \"http\"\npath = \"/\"\n")).is_ok());
    assert!(parse(&hc("type = \"tcp\"\nport = 9999\n")).is_ok());
    let e = one(&hc("type = \"http\"\nport = \"http\"\n"), "processes.web.healthcheck.path", 4, 1);
    assert_eq!(e.hint.as_deref(), Some("add `path = \"/healthz\"` (any path your app answers with 2xx or 3xx)"));
    one(&hc("type = \"tcp\"\nport = \"http\"\npath = \"/\"\n"), "processes.web.healthcheck.path", 7, 8);
    one(&hc("type = \"http\"\nport = \"http\"\npath = \"healthz\"\n"), "processes.web.healthcheck.path", 7, 8);
    one(&hc("type = \"grpc\"\nport = \"http\"\n"), "processes.web.healthcheck.type", 5, 8);
    one(&hc("port = \"http\"\n"), "processes.web.healthcheck.type", 4, 1);
    one(&hc("type = \"tcp\"\n"), "processes.web.healthcheck.port", 4, 1);
    let e = one(&hc("type = \"tcp\"\nport = \"htp\"\n"), "processes.web.healthcheck.port", 6, 8);
    assert_eq!(e.hint.as_deref(), Some("declared ports: http, dns; or give a port number"));
    one(&hc("type = \"tcp\"\nport = \"dns\"\n"), "processes.web.healthcheck.port", 6, 8);
    one(&hc("type = \"tcp\"\nport = 0\n"), "processes.web.healthcheck.port", 6, 8);
    one(&hc("type = \"tcp\"\nport = true\n"), "processes.web.healthcheck.port", 6, 8);
    let e = one(&hc("type = \"tcp\"\nport = 1\ninterval = 10\n"), "processes.web.healthcheck.interval", 7, 12);
    assert!(e.hint.unwrap().contains("\"10s\""));
    one(&hc("type = \"tcp\"\nport = 1\ninterval = \"10 s\"\n"), "processes.web.healthcheck.interval", 7, 12);
    one(&hc("type = \"tcp\"\nport = 1\ninterval = \"500ms\"\n"), "processes.web.healthcheck.interval", 7, 12);
    one(&hc("type = \"tcp\"\nport = 1\ngrace = \"2h\"\n"), "processes.web.healthcheck.grace", 7, 9);
    let e = one(
        &hc("type = \"tcp\"\nport = 1\ninterval = \"5s\"\ntimeout = \"5s\"\n"),
        "processes.web.healthcheck.timeout",
        8,
        11,
    );
    assert_eq!(e.message, "timeout (5s) must be shorter than interval (5s)");
    one(&hc("type = \"tcp\"\nport = 1\nretries = 0\n"), "processes.web.healthcheck.retries", 7, 11);
    one(&hc("type = \"tcp\"\nport = 1\nretries = 101\n"), "processes.web.healthcheck.retries", 7, 11);
    assert!(parse(&hc("type = \"tcp\"\nport = 1\ngrace = \"0s\"\ntimeout = \"9999ms\"\n")).is_ok());
}

#[test]
fn resources_and_scaling_rules() {
    one(&proc_("resources = { cpu = 0 }\n"), "processes.web.resources.cpu", 3, 21);
    one(&proc_("resources = { cpu = 64.5 }\n"), "processes.web.resources.cpu", 3, 21);
    one(&proc_("resources = { cpu = nan }\n"), "processes.web.resources.cpu", 3, 21);
    one(&proc_("resources = { memory_mib = 63 }\n"), "processes.web.resources.memory_mib", 3, 28);
    one(&proc_("resources = { memory_mib = 262145 }\n"), "processes.web.resources.memory_mib", 3, 28);
    one(&proc_("resources = { memory_mib = 512.0 }\n"), "processes.web.resources.memory_mib", 3, 28);
    assert!(parse(&proc_("resources = { cpu = 0.25, memory_mib = 64 }\n")).is_ok());
    one(&proc_("scaling = { min = -1 }\n"), "processes.web.scaling.min", 3, 19);
    one(&proc_("scaling = { max = 1001 }\n"), "processes.web.scaling.max", 3, 19);
    let e = one(&proc_("scaling = { min = 3, max = 2 }\n"), "processes.web.scaling.min", 3, 19);
    assert_eq!(e.message, "min (3) must not be greater than max (2)");
    assert_eq!(e.hint.as_deref(), Some("set `max = 3` or more, or leave `max` out (it defaults to `min`)"));
    assert!(parse(&proc_("scaling = { min = 0, max = 0 }\n")).is_ok());
}

#[test]
fn max_defaults_to_min() {
    let scaling = |body: &str| {
        let m = parse(&proc_(body)).unwrap();
        let s = m.processes["web"].scaling;
        (s.min, s.max)
    };
    // Who asks for two instances means two.
    assert_eq!(scaling("scaling = { min = 2 }\n"), (2, 2));
    assert_eq!(scaling("scaling.min = 1000\n"), (1000, 1000));
    // `max` alone: one instance, room to scale; `min = 0`: none, room for one; neither: one.
    assert_eq!(scaling("scaling = { max = 10 }\n"), (1, 10));
    assert_eq!(scaling("scaling = { min = 0 }\n"), (0, 1));
    assert_eq!(scaling("scaling = {}\n"), (1, 1));
    // An explicit `max` equal to the default changes nothing: same canonical form, same hash.
    let (a, b) =
        (parse(&proc_("scaling = { min = 2 }\n")).unwrap(), parse(&proc_("scaling = { min = 2, max = 2 }\n")).unwrap());
    assert_eq!((a.to_canonical_toml(), a.hash()), (b.to_canonical_toml(), b.hash()));
    assert!(a.to_canonical_toml().contains("scaling = { min = 2, max = 2 }"), "{}", a.to_canonical_toml());
}

#[test]
fn user_rules() {
    for ok in ["app", "1000", "1000:1000"] {
        assert!(parse(&proc_(&format!("user = \"{ok}\"\n"))).is_ok(), "{ok}");
    }
    one(&proc_("user = \"app:staff\"\n"), "processes.web.user", 3, 8);
}

#[test]
fn env_rules() {
    let e = one("schema_version = 1\n[env]\nVT_TOKEN = \"x\"\n", "env.VT_TOKEN", 3, 1);
    assert!(e.message.contains("reserved"), "{e}");
    one("schema_version = 1\n[env]\n\"1X\" = \"x\"\n", "env.1X", 3, 1);
    one("schema_version = 1\n[env]\n\"A-B\" = \"x\"\n", "env.A-B", 3, 1);
    one("schema_version = 1\n[env]\n\"A.B\" = \"x\"\n", "env.\"A.B\"", 3, 1);
    one("schema_version = 1\n[env]\nA = 1\n", "env.A", 3, 5);
    one(&proc_("env = { VT_X = \"1\" }\n"), "processes.web.env.VT_X", 3, 9);
    assert!(parse("schema_version = 1\n[env]\n_a1 = \"\"\nVTX = \"y\"\n").is_ok());
}

#[test]
fn volume_rules() {
    let v = |body: &str| format!("schema_version = 1\n[processes.web]\n[processes.db]\n[[volumes]]\n{body}");
    assert!(parse(&v("name = \"data\"\npath = \"/data\"\nprocess = \"db\"\n")).is_ok());
    one(&v("name = \"data\"\npath = \"data\"\n"), "volumes[0].path", 6, 8);
    one(&v("name = \"data\"\npath = \"/a/../b\"\n"), "volumes[0].path", 6, 8);
    one(&v("name = \"data\"\npath = \"/data/\"\n"), "volumes[0].path", 6, 8);
    one(&v("name = \"data\"\npath = \"/dev/shm\"\n"), "volumes[0].path", 6, 8);
    one(&v("name = \"data\"\npath = \"/run/secrets\"\n"), "volumes[0].path", 6, 8);
    one(&v("name = \"Data\"\npath = \"/d\"\n"), "volumes[0].name", 5, 8);
    one(&v("path = \"/d\"\n"), "volumes[0].name", 4, 1);
    one(&v("name = \"d\"\n"), "volumes[0].path", 4, 1);
    let e = one(&v("name = \"d\"\npath = \"/d\"\nprocess = \"wbe\"\n"), "volumes[0].process", 7, 11);
    assert_eq!(e.hint.as_deref(), Some("use one of: db, web; or remove `process` to mount it in every process"));
    one(&v("name = \"d\"\npath = \"/d\"\n[[volumes]]\nname = \"d\"\npath = \"/e\"\n"), "volumes[1].name", 8, 8);
    one(&v("name = \"d\"\npath = \"/d\"\n[[volumes]]\nname = \"e\"\npath = \"/d\"\n"), "volumes[1].path", 9, 8);
    // same path in different processes is fine
    assert!(parse(&v(
        "name = \"d\"\npath = \"/d\"\nprocess = \"web\"\n[[volumes]]\nname = \"e\"\npath = \"/d\"\nprocess = \"db\"\n"
    ))
    .is_ok());
    // inline array form
    assert!(parse("schema_version = 1\nvolumes = [{ name = \"d\", path = \"/d\" }]\n").is_ok());
}

#[test]
fn syntax_errors_have_locations() {
    let e = one("schema_version = 1\nx = [", "", 2, 6);
    assert!(e.message.starts_with("invalid TOML"), "{e}");
    one("schema_version = 1\nschema_version = 1\n", "", 2, 1);
}

#[test]
fn all_errors_collected_and_sorted() {
    let src = "schema_version = 1\n\
               [env]\n\
               VT_A = \"1\"\n\
               [processes.web]\n\
               bogus = 1\n\
               ports = [{ name = \"h\", port = 0 }]\n\
               scaling = { min = 5, max = 2 }\n\
               [[volumes]]\n\
               name = \"v\"\n\
               path = \"/proc\"\n";
    let e = errs(src);
    let got: Vec<(&str, usize, usize)> = e.iter().map(|e| (e.path.as_str(), e.line, e.column)).collect();
    assert_eq!(
        got,
        vec![
            ("env.VT_A", 3, 1),
            ("processes.web.bogus", 5, 1),
            ("processes.web.ports[0].port", 6, 31),
            ("processes.web.scaling.min", 7, 19),
            ("volumes[0].path", 10, 8),
        ]
    );
    let text = vt_manifest::ManifestErrors(e).to_string();
    assert!(text.starts_with("3:1: env.VT_A: "), "{text}");
}

#[test]
fn unicode_columns_count_characters() {
    one("schema_version = 1\n[env]\nGREETING = \"héllo\"\nB = 1\n", "env.B", 4, 5);
    one("schema_version = 1\n[env]\nA = \"é\" ; B = 1\n", "", 3, 9);
}

/// Every prefix of a valid manifest either parses or returns located errors; nothing panics.
#[test]
fn every_prefix_parses_or_errors() {
    for (i, _) in EXAMPLE.char_indices().chain(std::iter::once((EXAMPLE.len(), ' '))) {
        let prefix = &EXAMPLE[..i];
        match parse(prefix) {
            Ok(m) => {
                let again = parse(&m.to_canonical_toml()).unwrap();
                assert_eq!(again, m);
            }
            Err(errs) => {
                assert!(!errs.0.is_empty());
                let lines = prefix.lines().count().max(1);
                for e in &errs.0 {
                    assert!(e.line >= 1 && e.line <= lines + 1 && e.column >= 1, "prefix {i}: {e}");
                }
            }
        }
    }
}

#[test]
fn secret_env_names_secrets_to_export() {
    let m = parse(&proc_("secret_env = [\"DATABASE_URL\", \"API_KEY\"]\n")).unwrap();
    assert_eq!(m.processes["web"].secret_env, ["DATABASE_URL", "API_KEY"]);
    // Absent when empty: manifests without it keep their normalized JSON and hash.
    let plain = parse(&proc_("")).unwrap();
    assert!(plain.to_normalized_json()["processes"]["web"].get("secret_env").is_none());
    assert_eq!(parse(&m.to_canonical_toml()).unwrap(), m);
    let e = one(&proc_("secret_env = [\"1X\"]\n"), "processes.web.secret_env[0]", 3, 15);
    assert!(e.message.contains("invalid environment variable name"), "{e}");
    let e = one(&proc_("secret_env = [\"VT_TOKEN\"]\n"), "processes.web.secret_env[0]", 3, 15);
    assert!(e.message.contains("reserved"), "{e}");
    let e = one(&proc_("secret_env = [\"A\", \"A\"]\n"), "processes.web.secret_env[1]", 3, 20);
    assert!(e.message.contains("listed twice"), "{e}");
    let e = one(&proc_("env = { A = \"x\" }\nsecret_env = [\"A\"]\n"), "processes.web.secret_env[0]", 4, 15);
    assert!(e.message.contains("set by the process's `env` too"), "{e}");
}

#[test]
fn scaling_suspend() {
    let suspend = |body: &str| parse(&proc_(body)).unwrap().processes["web"].scaling.suspend;
    assert!(suspend("scaling = { min = 0, suspend = true }\n"));
    assert!(!suspend("scaling = { suspend = false }\n"));
    assert!(!suspend("scaling = { min = 1 }\n"));
    let e = one(&proc_("scaling = { suspend = \"yes\" }\n"), "processes.web.scaling.suspend", 3, 23);
    assert_eq!(e.message, "expected a boolean (true or false), found string");
    // Only written when set: a manifest from before `suspend` keeps its canonical form and hash.
    let (off, unset) = (parse(&proc_("scaling = { suspend = false }\n")).unwrap(), parse(&proc_("")).unwrap());
    assert_eq!((off.to_canonical_toml(), off.hash()), (unset.to_canonical_toml(), unset.hash()));
    assert!(!off.to_normalized_json().to_string().contains("suspend"), "{}", off.to_normalized_json());
    let on = parse(&proc_("scaling = { suspend = true }\n")).unwrap();
    assert!(
        on.to_canonical_toml().contains("scaling = { min = 1, max = 1, suspend = true }"),
        "{}",
        on.to_canonical_toml()
    );
    assert_ne!(on.hash(), unset.hash());
    assert_eq!(vt_manifest::from_normalized_json(&on.to_normalized_json()).unwrap(), on);
}
