//! Test doubles: a fake Firecracker API server on a Unix socket that records every request
//! and answers 204 (or a configured error), and a fake `firecracker` executable (a shell
//! script) that links that server's socket where `--api-sock` says and runs until the test
//! "powers the guest off".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: String,
}

impl Recorded {
    pub fn line(&self) -> String {
        format!("{} {} {}", self.method, self.path, self.body)
    }
}

/// How the fake answers.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Answer requests to this path with this status and body.
    pub fail: Option<(String, u16, String)>,
    /// Create this file when `SendCtrlAltDel` arrives (the fake VMM then exits).
    pub ctrl_alt_del_creates: Option<PathBuf>,
}

pub struct FakeApi {
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub fn start(socket: &Path, rules: Rules) -> Self {
        let listener = UnixListener::bind(socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rec = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, rec.clone(), rules.clone()));
            }
        });
        Self { socket: socket.to_owned(), requests, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait until a request to `path` arrived.
    pub async fn wait_for(&self, path: &str) {
        for _ in 0..2000 {
            if self.requests().iter().any(|r| r.path == path) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("no request to {path}: {:?}", self.requests());
    }
}

async fn serve(mut s: UnixStream, rec: Arc<Mutex<Vec<Recorded>>>, rules: Rules) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: head, then Content-Length bytes of body.
        let (head_end, length) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.trim().parse::<usize>().unwrap())
                    .unwrap_or(0);
                break (end, length);
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + 4 + length {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + length]).into_owned();
        buf.drain(..head_end + 4 + length);
        let mut words = head.lines().next().unwrap_or("").split(' ');
        let r = Recorded { method: words.next().unwrap_or("").into(), path: words.next().unwrap_or("").into(), body };
        if r.path == "/snapshot/create" {
            // Firecracker writes the two files before it answers.
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            for (k, data) in [("snapshot_path", &b"state"[..]), ("mem_file_path", &b"memory"[..])] {
                std::fs::write(v[k].as_str().unwrap(), data).unwrap();
            }
        }
        if r.body.contains("SendCtrlAltDel") {
            if let Some(f) = &rules.ctrl_alt_del_creates {
                std::fs::write(f, b"").unwrap();
            }
        }
        let reply = match &rules.fail {
            Some((path, status, body)) if *path == r.path => format!(
                "HTTP/1.1 {status} Bad Request\r\nServer: Firecracker API\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            _ => "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n".into(),
        };
        rec.lock().unwrap().push(r);
        if s.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Write a fake `firecracker` into `dir`: it links `api` at its `--api-sock` and runs until
/// `dir/poweroff` exists, then exits 0. Returns its path.
pub fn fake_firecracker(dir: &Path, api: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("firecracker");
    let script = format!(
        "#!/bin/sh\n\
         while [ $# -gt 0 ]; do\n  if [ \"$1\" = --api-sock ]; then sock=$2; shift; fi\n  shift\ndone\n\
         echo \"fake firecracker: api at $sock\"\n\
         ln -s '{api}' \"$sock\" || exit 3\n\
         while [ ! -e '{off}' ]; do sleep 0.02; done\n\
         exit 0\n",
        api = api.display(),
        off = dir.join("poweroff").display()
    );
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}
