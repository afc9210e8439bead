//! Canonical TOML output.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::rules::format_duration;
use crate::{Manifest, PortRef};

/// A TOML basic string.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key, bare when possible.
fn key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
        k.to_string()
    } else {
        string(k)
    }
}

fn float(f: f64) -> String {
    // `{:?}` prints the shortest representation that round-trips and always
    // includes a `.` or an exponent, both of which are valid TOML floats.
    let s = format!("{f:?}");
    if s.contains(['.', 'e', 'E', 'n', 'i']) {
        s
    } else {
        format!("{s}.0")
    }
}

fn env_table(out: &mut String, header: &str, env: &BTreeMap<String, String>) {
    if env.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n[{header}]");
    for (k, v) in env {
        let _ = writeln!(out, "{} = {}", key(k), string(v));
    }
}

pub(crate) fn to_toml(m: &Manifest) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "schema_version = {}", m.schema_version);
    env_table(&mut out, "env", &m.env);

    for (name, p) in &m.processes {
        let base = format!("processes.{}", key(name));
        let _ = writeln!(out, "\n[{base}]");
        if let Some(cmd) = &p.command {
            let items: Vec<String> = cmd.iter().map(|a| string(a)).collect();
            let _ = writeln!(out, "command = [{}]", items.join(", "));
        }
        if let Some(u) = &p.user {
            let _ = writeln!(out, "user = {}", string(u));
        }
        if !p.secret_env.is_empty() {
            let items: Vec<String> = p.secret_env.iter().map(|a| string(a)).collect();
            let _ = writeln!(out, "secret_env = [{}]", items.join(", "));
        }
        if !p.network.is_private() {
            let _ = writeln!(out, "network = {}", string(p.network.as_str()));
        }
        if !p.ports.is_empty() {
            out.push_str("ports = [\n");
            for port in &p.ports {
                let _ = writeln!(
                    out,
                    "  {{ name = {}, port = {}, protocol = {} }},",
                    string(&port.name),
                    port.port,
                    string(port.protocol.as_str())
                );
            }
            out.push_str("]\n");
        }
        let _ = writeln!(
            out,
            "resources = {{ cpu = {}, memory_mib = {} }}",
            float(p.resources.cpu),
            p.resources.memory_mib
        );
        // `suspend` only when set: the canonical form of a manifest written before it is unchanged.
        let suspend = if p.scaling.suspend { ", suspend = true" } else { "" };
        let _ = writeln!(out, "scaling = {{ min = {}, max = {}{suspend} }}", p.scaling.min, p.scaling.max);

        if let Some(hc) = &p.healthcheck {
            let _ = writeln!(out, "\n[{base}.healthcheck]");
            let _ = writeln!(out, "type = {}", string(hc.kind.as_str()));
            match &hc.port {
                PortRef::Number(n) => {
                    let _ = writeln!(out, "port = {n}");
                }
                PortRef::Name(s) => {
                    let _ = writeln!(out, "port = {}", string(s));
                }
            }
            if let Some(path) = &hc.path {
                let _ = writeln!(out, "path = {}", string(path));
            }
            let _ = writeln!(out, "interval = {}", string(&format_duration(hc.interval_ms)));
            let _ = writeln!(out, "timeout = {}", string(&format_duration(hc.timeout_ms)));
            let _ = writeln!(out, "grace = {}", string(&format_duration(hc.grace_ms)));
            let _ = writeln!(out, "retries = {}", hc.retries);
        }
        env_table(&mut out, &format!("{base}.env"), &p.env);
    }

    for v in &m.volumes {
        out.push_str("\n[[volumes]]\n");
        let _ = writeln!(out, "name = {}", string(&v.name));
        let _ = writeln!(out, "path = {}", string(&v.path));
        if let Some(p) = &v.process {
            let _ = writeln!(out, "process = {}", string(p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(key("A_1"), "A_1");
        assert_eq!(key("a.b"), "\"a.b\"");
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(0.25), "0.25");
        assert_eq!(float(1e-7), "1e-7");
    }
}
