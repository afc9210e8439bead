//! Secrets end to end with real parts: `vt server` (control plane, agent,
//! ingress) boots a busybox microVM whose process serves, from a tmpfs, copies
//! of `/run/secrets/*` and the value of one secret it reads as an environment
//! variable. Through the ingress:
//!
//! - two secrets staged, one `vt secrets deploy` → exactly one rollout; the
//!   guest has both files, the bundle (parsed with the format's own parser),
//!   and the environment variable;
//! - one secret rotated → the instance is replaced and serves the new value;
//! - a leak scan: the data directory (database, logs, agent records, registry,
//!   disks), the server's output, every API answer and every event hold none
//!   of the values, raw, base64 (at each alignment) or hex;
//! - `vt server rotate-master-key` offline, then a restart: the guest boots
//!   again with every value readable; a wrong key file fails the start.
//!
//! Needs what the core loop test needs (guest kernel, qemu, busybox, taps).

mod common;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{acme_with_busybox, http_get as get, ingress_server_args, spawn_vt_server_captured, vt_at};

const MANIFEST: &str = r#"schema_version = 1

[processes.web]
command = ["/bin/sh", "-c", "mkdir -p /tmp/www && cp /run/secrets/* /tmp/www/ && printf '%s' \"$API_KEY\" > /tmp/www/env_API_KEY && echo ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
ports = [{ name = "http", port = 8080 }]
resources = { cpu = 0.5, memory_mib = 128 }
scaling = { min = 1, max = 1 }
secret_env = ["API_KEY"]

[processes.web.healthcheck]
type = "http"
port = "http"
path = "/"
interval = "1s"
timeout = "500ms"
"#;

/// `n` random bytes from the kernel.
fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    b
}

/// A random value of 32 letters and digits (fit for an environment variable).
fn token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random(32).iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Wait until `path` through the ingress answers `want`.
fn until_get(port: u16, path: &str, want: &[u8], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match get(port, path) {
            Ok(b) if b == want => return,
            other => assert!(
                Instant::now() < deadline,
                "{path}: expected {} bytes, got {:?}",
                want.len(),
                other.map(|b| b.len())
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Wait until deploy `id` has succeeded.
fn until_succeeded(vt: &dyn Fn(&[&str]) -> common::Run, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = vt(&["deploy", "get", id, "-o", "json"]).json();
        match d["status"].as_str() {
            Some("succeeded") => return,
            Some("failed" | "superseded") => panic!("deploy {id}: {d}"),
            _ => assert!(Instant::now() < deadline, "deploy {id} did not succeed: {d}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every form a value could leak in: raw, base64 (standard and URL-safe, at
/// each of the three alignments inside a longer encoding) and hex.
fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![value.to_vec(), hex_lower(value).into_bytes(), hex_lower(value).to_uppercase().into_bytes()];
    for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
        for pad in 0..3 {
            let mut v = vec![b'\x07'; pad];
            v.extend_from_slice(value);
            v.extend_from_slice(b"\x07\x07\x07");
            let text = engine.encode(&v);
            // The characters that depend on the value alone.
            let start = (pad * 4).div_ceil(3) + 1;
            let end = ((pad + value.len()) * 4) / 3 - 1;
            out.push(text.as_bytes()[start..end].to_vec());
        }
    }
    out
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Files under `dir` holding any of `patterns` (GNU grep, bytes as they are).
fn files_holding(dir: &Path, patterns: &[Vec<u8>]) -> Vec<String> {
    let list = dir.join("../leak-patterns");
    let mut text = vec![];
    for p in patterns {
        assert!(!p.contains(&b'\n') && !p.contains(&0), "a grep pattern is one line");
        text.extend_from_slice(p);
        text.push(b'\n');
    }
    std::fs::write(&list, text).unwrap();
    let out = std::process::Command::new("grep")
        .args(["-r", "-a", "-l", "-F", "-f"])
        .arg(&list)
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "grep: {out:?}");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn secrets_reach_a_real_microvm_roll_out_once_rotate_and_leak_nowhere() {
    if vt_runtime::testing::networked_guest_or_skip("the secrets test", &[vt_image::testing::BUSYBOX]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let args = ingress_server_args(&data, port);
    let server_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, url, server_output) = spawn_vt_server_captured(dir.path(), &server_args);
    // Every answer the CLI got, for the leak scan.
    let answers = std::sync::Mutex::new(Vec::<u8>::new());
    let vt = |args: &[&str]| {
        let r = vt_at(dir.path(), &data, &url, args);
        answers.lock().unwrap().extend_from_slice(r.text.as_bytes());
        r
    };
    let image = acme_with_busybox(dir.path(), &data, &url);
    vt(&["route", "create", "--tcp", "--process", "web", "--backend-port", "8080"]);
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (api1, api2, db) = (token(), token(), token());
    // Binary: high bytes around a NUL (the two halves are what grep looks for).
    let blob: Vec<u8> = [
        random(16).iter().map(|b| b | 0x80).collect::<Vec<u8>>(),
        vec![0],
        random(16).iter().map(|b| b | 0x80).collect(),
    ]
    .concat();

    // Version 1: the secret the manifest reads as an environment variable, set before the first deploy.
    let r = vt(&["secrets", "set", &format!("API_KEY={api1}"), "-o", "json"]);
    assert_eq!(r.json()["new_version"], 1, "{}", r.text);
    let manifest = file("vt.toml", MANIFEST.as_bytes());
    let t = Instant::now();
    vt(&["deploy", "--wait", "--image", &image, "--manifest", &manifest]);
    println!("first deploy (secrets version 1) took {:?}", t.elapsed());
    until_get(port, "/env_API_KEY", api1.as_bytes(), Duration::from_secs(30));
    until_get(port, "/API_KEY", api1.as_bytes(), Duration::from_secs(5));
    let deploys = |vt: &dyn Fn(&[&str]) -> common::Run| {
        vt(&["deploy", "list", "-o", "json"]).json()["items"].as_array().unwrap().len()
    };
    let before = deploys(&vt);

    // Two staged secrets: nothing rolls out until one `vt secrets deploy`, which rolls out once.
    vt(&["secrets", "set", "DB_URL", "--from-file", &file("db", db.as_bytes()), "--stage"]);
    vt(&["secrets", "set", "BLOB", "--from-file", &file("blob", &blob), "--stage"]);
    assert_eq!(deploys(&vt), before, "staging rolls nothing out");
    let r = vt(&["secrets", "deploy", "-o", "json"]).json();
    assert_eq!((r["new_version"].as_u64(), r["deploy"]["kind"].as_str()), (Some(2), Some("secrets")), "{r}");
    let t = Instant::now();
    until_succeeded(&vt, r["deploy"]["id"].as_str().unwrap());
    println!("secrets rollout (version 2) took {:?}", t.elapsed());
    assert_eq!(deploys(&vt), before + 1, "exactly one rollout for two staged secrets");
    until_get(port, "/DB_URL", db.as_bytes(), Duration::from_secs(30));
    assert_eq!(get(port, "/BLOB").unwrap(), blob, "binary values arrive byte for byte");
    assert_eq!(get(port, "/env_API_KEY").unwrap(), api1.as_bytes());
    let bundle = vt_guest_proto::bundle::parse(&get(port, "/vt.bundle").unwrap()).unwrap();
    assert_eq!(bundle.version, 2);
    assert_eq!(
        bundle.secrets,
        [
            ("API_KEY".to_owned(), api1.clone().into_bytes()),
            ("BLOB".to_owned(), blob.clone()),
            ("DB_URL".to_owned(), db.clone().into_bytes())
        ]
    );
    let instances = vt(&["instances", "-o", "json"]).json();
    let live: Vec<(String, u64)> = instances["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "running" && i["desired_state"] == "running")
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i["secrets_version"].as_u64().unwrap()))
        .collect();
    assert_eq!(live.len(), 1, "{instances}");
    assert_eq!(live[0].1, 2);

    // Rotate one (not staged): a new version, the instance replaced, the new value served.
    let r = vt(&["secrets", "set", "API_KEY", "--from-file", &file("api2", api2.as_bytes()), "-o", "json"]).json();
    assert_eq!(r["new_version"], 3, "{r}");
    let t = Instant::now();
    until_succeeded(&vt, r["deploy"]["id"].as_str().unwrap());
    println!("rotation rollout (version 3) took {:?}", t.elapsed());
    until_get(port, "/env_API_KEY", api2.as_bytes(), Duration::from_secs(30));
    assert_eq!(get(port, "/API_KEY").unwrap(), api2.as_bytes());
    let instances = vt(&["instances", "-o", "json"]).json();
    let running: Vec<&serde_json::Value> = instances["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "running" && i["desired_state"] == "running")
        .collect();
    assert_eq!(running.len(), 1);
    assert_ne!(running[0]["id"].as_str().unwrap(), live[0].0, "the instance was replaced");
    assert_eq!(running[0]["secrets_version"], 3);
    let d = vt(&["describe", "-o", "json"]).json();
    assert_eq!(d["processes"][0]["differences"], serde_json::json!([]), "{d}");

    // The API's answers: events (all of them), lists, describe.
    for args in [
        &["events", "--limit", "1000", "-o", "json"][..],
        &["secrets", "list", "-o", "json"],
        &["deploy", "list", "-o", "json"],
        &["instances", "-o", "json"],
        &["describe", "-o", "json"],
        &["system", "tasks", "-o", "json"],
        &["logs", "--tail", "1000"],
    ] {
        vt(args);
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());

    // The leak scan.
    let values: Vec<(&str, Vec<u8>)> = vec![
        ("API_KEY v1", api1.clone().into_bytes()),
        ("API_KEY v3", api2.clone().into_bytes()),
        ("DB_URL", db.clone().into_bytes()),
        ("BLOB first half", blob[..16].to_vec()),
        ("BLOB second half", blob[17..].to_vec()),
        ("BLOB", blob.clone()),
    ];
    let answers = answers.lock().unwrap().clone();
    let output = server_output.lock().unwrap().clone();
    assert!(contains(&answers, b"secrets.version_created"), "the events were read");
    let mut grep_patterns = vec![];
    for (what, v) in &values {
        for form in forms(v) {
            assert!(!contains(&answers, &form), "{what} in an API answer (form {form:?})");
            assert!(!contains(&output, &form), "{what} in the server's output");
            if !form.contains(&0) {
                grep_patterns.push(form);
            }
        }
    }
    // The scan finds what is there (the event names are in the store), so it can find a value.
    assert!(!files_holding(&data, &[b"secrets.version_created".to_vec()]).is_empty(), "the scan reads the store");
    let leaked = files_holding(&data, &grep_patterns);
    assert!(leaked.is_empty(), "secret values in the data directory: {leaked:?}");
    let files = walk(&data);
    println!("leak scan: {} values × their forms over {} files of the data directory, the server's output ({} bytes) and the API's answers ({} bytes): none found", values.len(), files, output.len(), answers.len());

    // Rotate the master key offline; the next start boots the instance again, every value readable.
    let r = vt(&["server", "rotate-master-key", "--data-dir", data.to_str().unwrap()]);
    assert!(r.stdout.contains("1 env key(s) re-wrapped"), "{}", r.text);
    let (mut child, _url2, _) = spawn_vt_server_captured(dir.path(), &server_args);
    until_get(port, "/DB_URL", db.as_bytes(), Duration::from_secs(60));
    assert_eq!(get(port, "/env_API_KEY").unwrap(), api2.as_bytes());
    assert_eq!(get(port, "/BLOB").unwrap(), blob);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());

    // A wrong key: the server refuses to start, and says what to do.
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, format!("{}\n", hex_lower(&random(32)))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut args = server_args.to_vec();
    args.extend(["--master-key-file", wrong.to_str().unwrap()]);
    let mut full = vec!["server"];
    full.extend(args);
    let out = common::vt_isolated(dir.path(), &full).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is not the one the store's secrets are wrapped by"), "{stderr}");
}

/// How many files are under `dir`.
fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| if e.file_type().map(|t| t.is_dir()).unwrap_or(false) { walk(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}
