//! `vt exec`: the real binary against a control plane served by `vt server`'s own listener
//! (`vt_server::serve`, with WebSocket upgrades), whose exec backend runs the command as a
//! local process (`vt_control_plane::exec::testing::LocalProcess`) instead of in a microVM.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use common::{vt_isolated, Run};
use vt_control_plane::testing::admin_token;
use vt_control_plane::{ControlPlane, Settings};
use vt_store::{SqliteStore, Store};

struct ExecServer {
    url: String,
    token: String,
    /// A running instance of process `web` in acme/web/prod.
    instance: String,
    /// An instance that is not running (`stopped`).
    stopped: String,
    dir: tempfile::TempDir,
}

/// The control plane on its own runtime thread, with org acme (app web, env prod), a node,
/// a release deployed at scale 2: one instance reported running, the other stopped.
fn start() -> ExecServer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vt.sqlite");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let store: Arc<dyn Store> =
                Arc::new(SqliteStore::open(&path, vt_store::SqliteOptions { full_sync: false }).await.unwrap());
            let token = admin_token(store.as_ref()).await;
            let settings =
                Settings { exec: Some(Arc::new(vt_control_plane::exec::testing::LocalProcess)), ..Default::default() };
            let cp = ControlPlane::start(store, settings);
            cp.fresh().await.unwrap();
            let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
            let addr = listener.local_addr().unwrap();
            tx.send((addr, token)).unwrap();
            let app = vt_control_plane::http::router(cp);
            vt_front::serve(
                listener,
                None,
                app,
                Default::default(),
                std::time::Duration::from_secs(1),
                std::future::pending(),
            )
            .await
            .unwrap();
        });
    });
    let (addr, token) = rx.recv().unwrap();
    let url = format!("http://{addr}");
    let c = vt_client::Client::new(&url, Some(token.clone()));
    let (instance, stopped) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use vt_api::*;
        let key = || format!("k-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        c.org_create(&serde_json::from_value(serde_json::json!({"name": "acme"})).unwrap(), &key()).await.unwrap();
        c.app_create("acme", &serde_json::from_value(serde_json::json!({"name": "web"})).unwrap(), &key()).await.unwrap();
        c.env_create("acme", "web", &serde_json::from_value(serde_json::json!({"name": "prod"})).unwrap(), &key())
            .await
            .unwrap();
        let node: RegisterNode = serde_json::from_value(
            serde_json::json!({"name": "n1", "capacity": {"cpu_millis": 8000, "memory_mib": 8192}}),
        )
        .unwrap();
        c.node_register(&node, &key()).await.unwrap();
        let manifest = "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/httpd\"]\nscaling = { min = 1, max = 3 }\nresources = { cpu = 0.5, memory_mib = 256 }\n";
        let release: CreateRelease = serde_json::from_value(
            serde_json::json!({"image": common::DIGEST_IMAGE, "manifest": manifest}),
        )
        .unwrap();
        let release = c.release_create("acme", "web", &release, &key()).await.unwrap().value;
        let deploy: CreateDeploy =
            serde_json::from_value(serde_json::json!({"release_id": release.id})).unwrap();
        c.deploy_create("acme", "web", "prod", &deploy, &key()).await.unwrap();
        let scale: SetScale = serde_json::from_value(serde_json::json!({"processes": {"web": 2}})).unwrap();
        c.scale_set("acme", "web", "prod", &scale, &key()).await.unwrap();
        let mut ids = vec![];
        for _ in 0..200 {
            ids = c.instance_list("acme", "web", "prod").await.unwrap().items.into_iter().map(|i| i.id.to_string()).collect();
            if ids.len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(ids.len(), 2, "two instances placed");
        ids.sort();
        let running: ReportInstanceStatus = serde_json::from_value(serde_json::json!({"status": "running"})).unwrap();
        c.instance_report_status(&ids[0], &running, &key()).await.unwrap();
        let stopped: ReportInstanceStatus = serde_json::from_value(serde_json::json!({"status": "stopped"})).unwrap();
        c.instance_report_status(&ids[1], &stopped, &key()).await.unwrap();
        (ids[0].clone(), ids[1].clone())
    });
    ExecServer { url, token, instance, stopped, dir }
}

impl ExecServer {
    fn vt(&self, args: &[&str]) -> std::process::Command {
        let mut c = vt_isolated(self.dir.path(), args);
        c.env("VT_SERVER", &self.url)
            .env("VT_TOKEN", &self.token)
            .env("VT_ORG", "acme")
            .env("VT_APP", "web")
            .env("VT_ENV", "prod");
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::of(self.vt(args).stdin(Stdio::null()).output().unwrap(), self.dir.path())
    }

    fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut child =
            self.vt(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        Run::of(child.wait_with_output().unwrap(), self.dir.path())
    }
}

#[test]
fn the_command_runs_and_its_exit_code_is_vts() {
    let s = start();
    let r = s.run(&["exec", &s.instance, "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (7, "out\n", "err\n"), "{}", r.text);
    // Without `-i` the command reads end of file at once, even with input waiting.
    let r = s.run_with_stdin(&["exec", &s.instance, "--", "cat"], b"ignored\n");
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.text);
    // With `-i` standard input is forwarded, to its end.
    let r = s.run_with_stdin(&["exec", "-i", &s.instance, "--", "sh", "-c", "cat; exit 3"], b"hello\nworld\n");
    assert_eq!((r.code, r.stdout.as_str()), (3, "hello\nworld\n"), "{}", r.text);
    // `-e`, `--process` (the running instance of `web`).
    let r = s.run(&["exec", "--process", "web", "-e", "GREETING=hi", "--", "sh", "-c", "echo $GREETING"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "hi\n"), "{}", r.text);
    // A signal: 128 + n.
    let r = s.run(&["exec", &s.instance, "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(r.code, 128 + 15, "{}", r.text);
}

/// Without `-t`, Ctrl-C (SIGINT to vt) is sent to the command as a signal.
#[test]
fn ctrl_c_is_forwarded_as_sigint() {
    let s = start();
    let script = "trap 'kill $!; echo got INT; exit 5' INT; echo ready; sleep 30 >/dev/null 2>&1 & wait";
    let mut child = s
        .vt(&["exec", &s.instance, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let killed = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!((status.code(), rest.as_str()), (Some(5), "got INT\n"));
}

/// `-t` on a terminal (script(1) gives one): raw mode during the session, the terminal as it
/// was afterwards, whatever the command's exit code.
#[test]
fn a_tty_session_gives_the_terminal_back() {
    let s = start();
    let vt = env!("CARGO_BIN_EXE_vt");
    let line = format!(
        "stty -a | grep -o -- '-\\?icanon'; {vt} exec -t {} -- sh -c 'echo hi; exit 4'; echo rc=$?; stty -a | grep -o -- '-\\?icanon'",
        s.instance
    );
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("VT_SERVER", &s.url)
        .env("VT_TOKEN", &s.token)
        .env("VT_CONFIG", s.dir.path().join("config.toml"))
        .env("HOME", s.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(text, "icanon\nhi\nrc=4\nicanon\n", "{text:?}");
}

#[test]
fn refusals_say_why() {
    let s = start();
    snap!("exec_not_running", s.run(&["exec", &s.stopped, "--", "true"]));
    snap!("exec_unknown_instance", s.run(&["exec", "inst_01jd8x6k3v9q4m2t7r5w0y1zcg", "--", "true"]));
    snap!("exec_json_refused", s.run(&["exec", &s.instance, "--format", "json", "--", "true"]));
    snap!("exec_bad_env", s.run(&["exec", &s.instance, "-e", "NOEQUALS", "--", "true"]));
    snap!("exec_no_such_process", s.run(&["exec", "--process", "worker", "--", "true"]));
}

#[test]
fn help() {
    let dir = tempfile::tempdir().unwrap();
    let r = Run::of(vt_isolated(dir.path(), &["exec", "--help"]).output().unwrap(), dir.path());
    snap!("exec_help", r);
    let r = Run::of(vt_isolated(dir.path(), &["exec", "inst_x"]).output().unwrap(), dir.path());
    snap!("exec_no_command", r);
}
