//! `vt server` serves two origins: the API origin (bearer tokens, or the console user's
//! basic auth) and the workspace origin (the console user's basic auth and its own
//! session cookie only). The console password is made on first start, kept across
//! restarts, and replaced after its token is revoked.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use common::{spawn_vt_server_captured, vt_isolated, Run};

/// `GET path` on `addr` with these extra header lines; the whole answer.
fn get(addr: &str, path: &str, headers: &[String]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn basic(password: &str) -> String {
    format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("vt:{password}")))
}

fn status(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {answer}"))
}

fn start(dir: &std::path::Path, data: &std::path::Path) -> (common::ServerChild, String, String, String) {
    let args = common::loopback_args(data, &["--no-agent", "--no-ingress"]);
    let (child, url, workspaces, output) = common::spawn_vt_server_with_origin(dir, &args);
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    (child, url, workspaces, text)
}

#[test]
fn two_origins_with_one_console_user() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url, ws, output) = start(dir.path(), &data);
    let api = url.strip_prefix("http://").unwrap().to_owned();
    let file = data.join("console-password");
    assert!(output.contains(&format!("wrote the console user `vt`'s password to {}", file.display())), "{output}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    assert!(!output.contains(&password), "the password is never printed");

    // The API origin: the console user, or a bearer token.
    assert_eq!(status(&get(&api, "/v1/orgs", &[basic(&password)])), 200);
    assert_eq!(status(&get(&api, "/v1/orgs", &[format!("Authorization: Bearer {admin}")])), 200);
    let wrong = get(&api, "/v1/orgs", &[basic("vt_wrong")]);
    assert_eq!(status(&wrong), 401, "{wrong}");
    let other_user = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"))
    );
    let answer = get(&api, "/v1/orgs", &[other_user]);
    assert_eq!(status(&answer), 401);
    assert!(answer.contains("the console user is `vt`"), "{answer}");

    // The web console on the API origin (docs/console.md): the console user only, asked for by
    // a basic challenge of the realm the API's 401s also name; bearer tokens keep working on /v1.
    let answer = get(&api, "/app/", &[]);
    assert_eq!(status(&answer), 401, "{answer}");
    assert!(answer.contains("www-authenticate: Basic realm=\"vt\""), "{answer}");
    assert_eq!(status(&get(&api, "/app/", &[format!("Authorization: Bearer {admin}")])), 401);
    assert_eq!(status(&get(&api, "/app/", &[basic(&admin)])), 401);
    let answer = get(&api, "/app/workspaces", &[basic(&password)]);
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(
        answer.contains("content-type: text/html; charset=utf-8") && answer.contains("<div id=\"root\">"),
        "{answer}"
    );
    assert!(answer.contains("content-security-policy: default-src 'self'"), "{answer}");
    let answer = get(&api, "/v1/orgs", &[]);
    assert!(answer.contains("www-authenticate: Basic realm=\"vt\""), "{answer}");

    // The workspace origin: the console user only; no bearer token, not the admin token as a password.
    let answer = get(&ws, "/workspace/dev/", &[]);
    assert_eq!(status(&answer), 401);
    assert!(answer.to_ascii_lowercase().contains("www-authenticate: basic"), "{answer}");
    assert_eq!(status(&get(&ws, "/workspace/dev/", &[format!("Authorization: Bearer {password}")])), 401);
    assert_eq!(status(&get(&ws, "/workspace/dev/", &[basic(&admin)])), 401);
    let answer = get(&ws, "/workspace/dev/", &[basic(&password)]);
    assert_eq!(status(&answer), 404, "no such workspace, once signed in: {answer}");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {answer}"))
        .to_owned();
    assert_eq!(status(&get(&ws, "/workspace/dev/", &[format!("Cookie: {cookie}")])), 404);
    // The workspace origin's cookie means nothing on the API origin.
    assert_eq!(status(&get(&api, "/v1/orgs", &[format!("Cookie: {cookie}")])), 401);

    // Both origins are counted.
    let metrics = get(&api, "/metrics", &[format!("Authorization: Bearer {admin}")]);
    assert!(metrics.contains("vt_front_requests_total{origin=\"api\",class=\"2xx\"}"), "{metrics}");
    assert!(metrics.contains("vt_front_requests_total{origin=\"workspace\",class=\"4xx\"} 5"), "{metrics}");

    // Revoking the console token closes both origins to it; the next start makes a new password.
    let vt = |args: &[&str]| {
        let mut c = vt_isolated(dir.path(), args);
        c.env("VT_DATA_DIR", &data).env("VT_SERVER", &url);
        Run::of(c.output().unwrap(), dir.path())
    };
    let tokens = vt(&["token", "list", "-o", "json"]);
    let console = tokens.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "console")
        .unwrap_or_else(|| panic!("no console token: {}", tokens.text))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = vt(&["token", "revoke", &console]);
    assert_eq!(r.code, 0, "{}", r.text);
    assert_eq!(status(&get(&api, "/v1/orgs", &[basic(&password)])), 401);
    // The workspace origin believes a password and its sessions for a few seconds.
    std::thread::sleep(vt_front::auth::VERIFIED_FOR + std::time::Duration::from_millis(500));
    assert_eq!(status(&get(&ws, "/workspace/dev/", &[basic(&password)])), 401);
    assert_eq!(status(&get(&ws, "/workspace/dev/", &[format!("Cookie: {cookie}")])), 401);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());

    let (mut child, url, ws, output) = start(dir.path(), &data);
    let api = url.strip_prefix("http://").unwrap().to_owned();
    assert!(output.contains("wrote the console user"), "{output}");
    let renewed = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_ne!(renewed, password);
    assert_eq!(status(&get(&api, "/v1/orgs", &[basic(&renewed)])), 200);
    assert_eq!(status(&get(&ws, "/workspace/dev/", &[basic(&renewed)])), 404);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
    // A restart keeps it.
    let (mut child, url, _, output) = start(dir.path(), &data);
    let api = url.strip_prefix("http://").unwrap().to_owned();
    assert!(output.contains("kept the console user"), "{output}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), renewed);

    // Guessing the password is limited: past the failures allowed, even the right one waits.
    for _ in 0..vt_front::auth::MAX_FAILURES {
        assert_eq!(status(&get(&api, "/v1/orgs", &[basic("vt_guess")])), 401);
    }
    let answer = get(&api, "/v1/orgs", &[basic(&renewed)]);
    assert_eq!(status(&answer), 429, "{answer}");
    assert!(answer.contains("\"code\":\"rate_limited\"") && answer.contains("retry-after: "), "{answer}");
    // Bearer tokens are not logins: they still work.
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_owned();
    assert_eq!(status(&get(&api, "/v1/orgs", &[format!("Authorization: Bearer {admin}")])), 200);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}

/// Both origins over TLS with the operator's certificate; the CLI trusts it through
/// `VT_CA_CERT` and says what is wrong without it.
#[test]
fn both_origins_serve_tls_and_the_cli_follows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
    let tls = [
        "--no-agent",
        "--no-ingress",
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
        "--workspace-tls-cert",
        cert_arg,
        "--workspace-tls-key",
        key_arg,
    ];
    let args = common::loopback_args(&data, &tls);
    let (mut child, url, output) =
        spawn_vt_server_captured(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    assert!(text.contains("workspaces on https://127.0.0.1:"), "{text}");
    let url = url.replace("127.0.0.1", "localhost");
    let vt = |ca: Option<&str>| {
        let mut c = vt_isolated(dir.path(), &["org", "list"]);
        c.env("VT_DATA_DIR", &data).env("VT_SERVER", &url);
        if let Some(ca) = ca {
            c.env("VT_CA_CERT", ca);
        }
        Run::of(c.output().unwrap(), dir.path())
    };
    let r = vt(Some(cert_arg));
    assert_eq!(r.code, 0, "{}", r.text);
    let r = vt(None);
    assert_ne!(r.code, 0);
    assert!(r.text.contains("certificate"), "untrusted: {}", r.text);
    let r = vt(Some(key_arg));
    assert_ne!(r.code, 0);
    assert!(r.text.contains("VT_CA_CERT=") && r.text.contains("key.pem"), "{}", r.text);
    // Plain HTTP to a TLS origin gets nowhere.
    let plain = url.replace("https://localhost", "127.0.0.1").to_owned();
    let answer = std::panic::catch_unwind(|| get(&plain, "/v1/orgs", &[])).unwrap_or_default();
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}
