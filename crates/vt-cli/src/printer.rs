//! All output goes through here: data on stdout, diagnostics on stderr.
//!
//! - Table mode: tables with fixed columns in the API's order, key/value
//!   blocks for single objects, receipts after mutations.
//! - JSON mode: exactly one JSON document on stdout (the API's JSON), or
//!   NDJSON for streams; nothing else.
//! - stderr: `error: ...`, `warning: ...`, `hint: ...`; progress only when
//!   stderr is a terminal.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::args::Format;
use crate::error::CliError;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
}

/// What a mutation did, for people: one line, the ids, the next command.
pub struct Receipt {
    pub what: String,
    pub ids: Vec<(&'static str, String)>,
    /// More for people (a table of the new state), before the next steps.
    pub details: Option<String>,
    pub next: Vec<String>,
}

impl Receipt {
    /// The receipt as people read it: the line, the ids indented, the details, `next:` lines.
    pub fn render(&self) -> String {
        let mut s = format!("{}\n", self.what);
        let width = self.ids.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.ids {
            s.push_str(&format!("  {k:width$}  {v}\n"));
        }
        if let Some(d) = &self.details {
            s.push_str(d);
        }
        for n in &self.next {
            s.push_str(&format!("next: {n}\n"));
        }
        s
    }
}

impl Printer {
    pub fn new(format: Format) -> Self {
        Printer { format }
    }

    pub fn json_mode(&self) -> bool {
        self.format == Format::Json
    }

    /// One JSON document, pretty, on stdout.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) {
        let s = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
        out(&format!("{s}\n"));
    }

    /// One JSON document on one line (NDJSON streams).
    pub fn json_line<T: Serialize + ?Sized>(&self, value: &T) {
        let s = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        out(&format!("{s}\n"));
    }

    /// Either the value as JSON or the table `render` builds.
    pub fn show<T: Serialize + ?Sized>(&self, value: &T, render: impl FnOnce() -> String) {
        if self.json_mode() {
            self.json(value)
        } else {
            out(&render())
        }
    }

    /// A mutation's answer: the JSON object, or the receipt.
    pub fn receipt<T: Serialize + ?Sized>(&self, value: &T, receipt: Receipt) {
        if self.json_mode() {
            return self.json(value);
        }
        out(&receipt.render());
    }

    pub fn text(&self, s: &str) {
        out(s)
    }

    /// Bytes as they are, on stdout (a remote command's output, `vt exec`).
    pub fn raw_out(&self, b: &[u8]) {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(b).and_then(|_| o.flush());
    }

    /// Bytes as they are, on stderr.
    pub fn raw_err(&self, b: &[u8]) {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(b).and_then(|_| e.flush());
    }

    /// A line for people on stderr, whatever the format (server start-up).
    pub fn notice(&self, msg: &str) {
        err(&format!("{msg}\n"));
    }

    pub fn warning(&self, msg: &str) {
        err(&format!("warning: {msg}\n"));
    }

    pub fn hint(&self, msg: &str) {
        err(&format!("hint: {msg}\n"));
    }

    /// Lines quoted for people under a title on stderr (the log lines of a
    /// failed instance), indented; says so when there are none.
    pub fn excerpt(&self, title: &str, lines: &[String]) {
        let mut s = format!("{title}\n");
        if lines.is_empty() {
            s.push_str("  (no lines)\n");
        }
        for l in lines {
            s.push_str(&format!("  {l}\n"));
        }
        err(&s);
    }

    /// Progress for people watching: only when stderr is a terminal.
    /// A question for the person at the terminal (stderr), then their answer's line from stdin.
    pub fn ask(&self, question: &str) -> std::io::Result<String> {
        let mut err = std::io::stderr().lock();
        write!(err, "{question} ")?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok(answer.trim().to_owned())
    }

    pub fn progress(&self, msg: &str) {
        if std::io::stderr().is_terminal() {
            err(&format!("{msg}\n"));
        }
    }

    pub fn error(&self, e: &CliError) {
        let mut s = String::new();
        match e {
            CliError::Usage { message, hint } | CliError::Failed { message, hint } => {
                s.push_str(&format!("error: {message}\n"));
                if let Some(h) = hint {
                    s.push_str(&format!("hint: {h}\n"));
                }
            }
            CliError::Client(vt_client::Error::Api { status, body }) => {
                let a = &body.error;
                s.push_str(&format!("error: {}\n", a.message));
                s.push_str(&format!("  code: {} (HTTP {status})\n", a.code.as_str()));
                if let Some(f) = &a.field {
                    s.push_str(&format!("  field: `{f}`\n"));
                }
                s.push_str(&format!("  request id: {}\n", a.request_id));
                if let Some(h) = api_hint(a.code) {
                    s.push_str(&format!("hint: {h}\n"));
                }
            }
            CliError::Client(c @ (vt_client::Error::Connect { .. } | vt_client::Error::Timeout { .. })) => {
                s.push_str(&format!("error: {c}\n"));
                s.push_str("hint: is `vt server` running? Pass `--server URL`, set `VT_SERVER`, or run `vt context set --server URL`\n");
            }
            CliError::Manifest { path, errors } => {
                for m in errors.iter() {
                    s.push_str(&format!("error: {}:{}:{}: ", path.display(), m.line, m.column));
                    if !m.path.is_empty() {
                        s.push_str(&format!("`{}`: ", m.path));
                    }
                    s.push_str(&format!("{}\n", m.message));
                    if let Some(h) = &m.hint {
                        s.push_str(&format!("  hint: {h}\n"));
                    }
                }
            }
            other => s.push_str(&format!("error: {other}\n")),
        }
        err(&s);
    }
}

fn api_hint(code: vt_api::ErrorCode) -> Option<&'static str> {
    use vt_api::ErrorCode::*;
    match code {
        Unauthorized => Some("pass `--token`, set `VT_TOKEN`, or run `vt context set --token T`; the admin token is in <data-dir>/admin-token"),
        Forbidden => Some("the token's role does not allow this; `vt token list` (as an owner or admin) shows who holds which role"),
        IdempotencyKeyReused => Some("the same idempotency key was used for a different request; run the command again"),
        ProjectionLag => Some("the change is committed; views are catching up, retry the read"),
        Gone => Some("run the command again: it asks for a new grant"),
        CapacityExhausted => Some("stop a running workspace (`vt workspace stop NAME`), then start this one again"),
        _ => None,
    }
}

fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    // A closed pipe (`vt org list | head`) is not worth a panic.
    let _ = o.write_all(s.as_bytes()).and_then(|_| o.flush());
}

fn err(s: &str) {
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

/// A table with fixed columns; rows in the order given (the API's order).
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table { headers: headers.to_vec(), rows: vec![] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:w$}  "));
                }
            }
            format!("{}\n", s.trim_end())
        };
        let mut s = line(self.headers.clone());
        for r in &self.rows {
            s.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        s
    }
}

/// `key  value` lines for one object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k:width$}  {v}\n")).collect()
}

/// A serde enum's wire name (`succeeded`), or the JSON of anything else.
pub fn label<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_else(|| "-".into())
}

/// How long ago `t` was, in the largest unit that fits: `42s`, `5m`, `3h`, `2d`.
pub fn age(t: &chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (now - *t).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// RFC 3339 in UTC, to the second.
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
