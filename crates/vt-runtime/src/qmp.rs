//! A minimal client of QEMU's machine protocol (QMP) on the VMM's `qmp.sock`: the greeting,
//! `qmp_capabilities`, then one command at a time (asynchronous events are skipped).
//! Used to pause, save and resume VMs (`crate::qemu`'s suspend and restore).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

pub(crate) struct Qmp {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Qmp {
    /// Connect (retrying while the socket does not accept yet, up to `timeout`) and leave
    /// negotiation mode.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("connect to {}: {e}", path.display()))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let (rd, wr) = stream.into_split();
        let mut q = Qmp { rd: BufReader::new(rd), wr };
        let greeting = q.read().await?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        q.execute("qmp_capabilities", json!({})).await?;
        Ok(q)
    }

    async fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self.rd.read_line(&mut line).await.map_err(|e| format!("QMP read: {e}"))?;
        if n == 0 {
            return Err("QMP: the VMM closed its monitor".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line:?}"))
    }

    /// Run `command` with `arguments`; its `return` value, or QMP's error description.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let mut req = serde_json::to_vec(&json!({ "execute": command, "arguments": arguments }))
            .map_err(|e| format!("QMP {command}: {e}"))?;
        req.push(b'\n');
        self.wr.write_all(&req).await.map_err(|e| format!("QMP {command}: {e}"))?;
        loop {
            let v = self.read().await?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(format!("QMP {command}: {desc}"));
            }
            // An event ({"event": ...}): not the answer.
        }
    }

    /// `query-status`'s `status` (`running`, `paused`, `inmigrate`, `postmigrate`, …).
    pub async fn status(&mut self) -> Result<String, String> {
        let r = self.execute("query-status", json!({})).await?;
        Ok(r.get("status").and_then(Value::as_str).unwrap_or("").to_owned())
    }

    /// Poll `query-migrate` until the migration ends: `Ok` when `completed`.
    pub async fn wait_migration(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.execute("query-migrate", json!({})).await?;
            match r.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => {
                    let why = r.get("error-desc").and_then(Value::as_str).unwrap_or("no reason given");
                    return Err(format!("saving the VM state failed: {why}"));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("saving the VM state did not finish within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A path for a shell command inside an `exec:` migration URI (QEMU runs it with `sh -c`).
pub(crate) fn shell_path(p: &Path) -> Result<String, String> {
    let s = p.display().to_string();
    if s.contains('\'') {
        return Err(format!("path {s:?} contains a single quote"));
    }
    Ok(format!("'{s}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake QMP server (the real one is exercised by the tests that boot VMs).
    #[tokio::test]
    async fn commands_skip_events_and_report_errors() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("qmp.sock");
        let l = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut rd = BufReader::new(rd);
            wr.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n").await.unwrap();
            let mut seen = Vec::new();
            let mut line = String::new();
            while rd.read_line(&mut line).await.unwrap() > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                let cmd = v["execute"].as_str().unwrap().to_owned();
                line.clear();
                let answer = match cmd.as_str() {
                    "stop" => "{\"event\": \"STOP\"}\n{\"return\": {}}\n".to_string(),
                    "query-status" => "{\"return\": {\"status\": \"paused\", \"running\": false}}\n".to_string(),
                    "migrate" => "{\"error\": {\"class\": \"GenericError\", \"desc\": \"busy\"}}\n".to_string(),
                    _ => "{\"return\": {}}\n".to_string(),
                };
                seen.push(cmd);
                wr.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).await.unwrap();
        q.execute("stop", json!({})).await.unwrap();
        assert_eq!(q.status().await.unwrap(), "paused");
        assert_eq!(q.execute("migrate", json!({"uri": "exec:cat"})).await.unwrap_err(), "QMP migrate: busy");
        drop(q);
        assert_eq!(server.await.unwrap(), ["qmp_capabilities", "stop", "query-status", "migrate"]);
        assert_eq!(shell_path(Path::new("/a b/c")).unwrap(), "'/a b/c'");
        assert!(shell_path(Path::new("/a'b")).is_err());
    }
}
