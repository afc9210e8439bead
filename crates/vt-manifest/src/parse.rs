//! TOML → [`Manifest`], with every error located by TOML path and line/column.
//!
//! The document is parsed with `toml_edit`, which keeps the byte span of
//! every key and value. A walker then reads the expected shape, checking
//! types and field-level rules as it goes and remembering the offset of
//! every path it visits. Rules that relate several fields (uniqueness,
//! references, `timeout < interval`, `min <= max`) run afterwards on the
//! built model and look their location up by path. A cross-field rule is
//! skipped when one of the fields it involves already has an error, so one
//! mistake is reported once.

use std::collections::{BTreeMap, HashMap};

use toml_edit::{Document, Item, TableLike};

use crate::error::{ManifestError, ManifestErrors, Problem};
use crate::rules;
use crate::{
    Healthcheck, HealthcheckKind, Manifest, NetworkClass, Port, PortRef, Process, Protocol, Resources, Scaling, Volume,
    DEFAULT_GRACE_MS, DEFAULT_INTERVAL_MS, DEFAULT_PROCESS, DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS, SCHEMA_VERSION,
};

const TOP_KEYS: &[&str] = &["schema_version", "env", "processes", "volumes"];
const PROCESS_KEYS: &[&str] =
    &["command", "ports", "healthcheck", "resources", "scaling", "user", "env", "secret_env", "network"];
const PORT_KEYS: &[&str] = &["name", "port", "protocol"];
const HEALTHCHECK_KEYS: &[&str] = &["type", "port", "path", "interval", "timeout", "grace", "retries"];
const RESOURCES_KEYS: &[&str] = &["cpu", "memory_mib"];
const SCALING_KEYS: &[&str] = &["min", "max", "suspend"];
const VOLUME_KEYS: &[&str] = &["name", "path", "process"];

/// Parse and validate a TOML manifest.
///
/// On failure, returns every problem found, sorted by position. Each error
/// names the TOML path and the 1-based line and column.
pub fn parse(src: &str) -> Result<Manifest, ManifestErrors> {
    let doc = match Document::parse(src) {
        Ok(d) => d,
        Err(e) => {
            let off = e.span().map(|s| s.start).unwrap_or(0);
            let (line, column) = line_col(src, off);
            let message = e.message().trim().to_string();
            return Err(ManifestErrors(vec![ManifestError {
                path: String::new(),
                line,
                column,
                message: format!("invalid TOML: {message}"),
                hint: None,
            }]));
        }
    };
    let mut w = Walker { errors: Vec::new(), tainted: Vec::new(), offsets: HashMap::new() };
    let m = w.manifest(doc.as_table());
    if w.errors.is_empty() {
        return Ok(m);
    }
    w.errors.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    w.errors.dedup();
    Err(ManifestErrors(
        w.errors
            .into_iter()
            .map(|(off, path, p)| {
                let (line, column) = line_col(src, off);
                ManifestError { path, line, column, message: p.message, hint: p.hint }
            })
            .collect(),
    ))
}

/// 1-based line and column (in chars) of a byte offset.
pub(crate) fn line_col(src: &str, off: usize) -> (usize, usize) {
    let mut off = off.min(src.len());
    while !src.is_char_boundary(off) {
        off -= 1;
    }
    let before = &src[..off];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = src[line_start..off].chars().count() + 1;
    (line, column)
}

/// Append a key to a TOML path, quoting it when it is not a bare key.
pub(crate) fn join(path: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    let k = if bare { key.to_string() } else { serde_json::to_string(key).unwrap_or_default() };
    if path.is_empty() {
        k
    } else {
        format!("{path}.{k}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// True if `a` and `b` are the same path or one contains the other.
fn related(a: &str, b: &str) -> bool {
    let within = |long: &str, short: &str| {
        long.len() > short.len() && long.starts_with(short) && matches!(long.as_bytes()[short.len()], b'.' | b'[')
    };
    a == b || within(a, b) || within(b, a)
}

fn start(span: Option<std::ops::Range<usize>>) -> Option<usize> {
    span.map(|r| r.start)
}

struct Walker {
    errors: Vec<(usize, String, Problem)>,
    tainted: Vec<String>,
    offsets: HashMap<String, usize>,
}

impl Walker {
    fn err(&mut self, off: usize, path: &str, p: Problem) {
        self.tainted.push(path.to_string());
        self.errors.push((off, path.to_string(), p));
    }

    /// Report a cross-field problem at `path`, unless any involved path already has an error.
    fn cross(&mut self, path: &str, involved: &[&str], p: Problem) {
        let blocked =
            std::iter::once(path).chain(involved.iter().copied()).any(|i| self.tainted.iter().any(|t| related(t, i)));
        if !blocked {
            let off = self.offset_of(path);
            self.errors.push((off, path.to_string(), p));
        }
    }

    fn offset_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(o) = self.offsets.get(p) {
                return *o;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return 0,
            }
        }
    }

    fn check_keys(&mut self, path: &str, t: &dyn TableLike, allowed: &[&str], off: usize) {
        let unknown: Vec<(String, usize)> = t
            .iter()
            .filter(|(k, _)| !allowed.contains(k))
            .map(|(k, _)| {
                let o = t.get_key_value(k).and_then(|(key, _)| start(key.span())).unwrap_or(off);
                (k.to_string(), o)
            })
            .collect();
        for (k, o) in unknown {
            let mut p = Problem::new(format!("unknown field `{k}`; expected one of: {}", allowed.join(", ")));
            if let Some(best) = allowed.iter().map(|a| (rules::edit_distance(a, &k), *a)).filter(|(d, _)| *d <= 2).min()
            {
                p = p.hint(format!("did you mean `{}`?", best.1));
            }
            self.err(o, &join(path, &k), p);
        }
    }

    /// Look a field up; returns its path, item and offset, and remembers the offset.
    fn get<'a>(
        &mut self,
        path: &str,
        t: &'a dyn TableLike,
        key: &str,
        off: usize,
    ) -> Option<(String, &'a Item, usize)> {
        let (k, item) = t.get_key_value(key)?;
        let p = join(path, key);
        let o = start(item.span()).or_else(|| start(k.span())).unwrap_or(off);
        self.offsets.insert(p.clone(), o);
        Some((p, item, o))
    }

    fn required<'a>(
        &mut self,
        path: &str,
        t: &'a dyn TableLike,
        key: &str,
        off: usize,
        example: &str,
    ) -> Option<(String, &'a Item, usize)> {
        let r = self.get(path, t, key, off);
        if r.is_none() {
            let p = join(path, key);
            self.err(off, &p, Problem::new(format!("missing required field `{key}`")).hint(format!("add `{example}`")));
        }
        r
    }

    fn type_err(&mut self, path: &str, item: &Item, off: usize, expected: &str) {
        let found = item.type_name();
        self.err(off, path, Problem::new(format!("expected {expected}, found {found}")));
    }

    fn want_str(&mut self, path: &str, item: &Item, off: usize) -> Option<String> {
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.type_err(path, item, off, "a string");
                None
            }
        }
    }

    fn want_int(&mut self, path: &str, item: &Item, off: usize) -> Option<i64> {
        match item.as_integer() {
            Some(i) => Some(i),
            None => {
                self.type_err(path, item, off, "an integer");
                None
            }
        }
    }

    fn want_table<'a>(&mut self, path: &str, item: &'a Item, off: usize) -> Option<&'a dyn TableLike> {
        match item.as_table_like() {
            Some(t) => Some(t),
            None => {
                self.type_err(path, item, off, "a table");
                None
            }
        }
    }

    /// Elements of an array or array of tables, each with its offset.
    fn want_array(&mut self, path: &str, item: &Item, off: usize) -> Option<Vec<(Item, usize)>> {
        if let Some(a) = item.as_array() {
            return Some(
                a.iter()
                    .map(|v| {
                        let o = start(v.span()).unwrap_or(off);
                        (Item::Value(v.clone()), o)
                    })
                    .collect(),
            );
        }
        if let Some(a) = item.as_array_of_tables() {
            return Some(
                a.iter()
                    .map(|t| {
                        let o = start(t.span()).unwrap_or(off);
                        (Item::Table(t.clone()), o)
                    })
                    .collect(),
            );
        }
        self.type_err(path, item, off, "an array");
        None
    }

    /// Read an integer field and check it with `rule`.
    fn int_field<T>(
        &mut self,
        path: &str,
        t: &dyn TableLike,
        key: &str,
        off: usize,
        rule: fn(i64) -> Result<T, Problem>,
    ) -> Option<T> {
        let (p, item, o) = self.get(path, t, key, off)?;
        let v = self.want_int(&p, item, o)?;
        match rule(v) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(o, &p, e);
                None
            }
        }
    }

    fn duration_field(
        &mut self,
        path: &str,
        t: &dyn TableLike,
        key: &str,
        off: usize,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        let (p, item, o) = self.get(path, t, key, off)?;
        let Some(s) = item.as_str() else {
            let found = item.type_name();
            let mut pr = Problem::new(format!("expected a duration string such as \"10s\", found {found}"));
            if let Some(n) = item.as_integer() {
                pr = pr.hint(format!("write \"{n}s\" for {n} seconds or \"{n}ms\" for {n} milliseconds"));
            }
            self.err(o, &p, pr);
            return None;
        };
        match rules::parse_duration(s).and_then(|ms| rules::duration_range(ms, min, max)) {
            Ok(ms) => Some(ms),
            Err(e) => {
                self.err(o, &p, e);
                None
            }
        }
    }

    fn manifest(&mut self, root: &toml_edit::Table) -> Manifest {
        let t: &dyn TableLike = root;
        self.check_keys("", t, TOP_KEYS, 0);
        match self.get("", t, "schema_version", 0) {
            None => self.err(
                0,
                "schema_version",
                Problem::new("missing required field `schema_version`; supported versions: 1")
                    .hint("add `schema_version = 1` as the first line"),
            ),
            Some((p, item, o)) => {
                if let Some(v) = self.want_int(&p, item, o) {
                    if let Err(e) = rules::schema_version(v) {
                        // Nothing else can be judged against an unknown schema.
                        self.errors.clear();
                        self.err(o, &p, e);
                        return Manifest::minimal();
                    }
                }
            }
        }

        let env = match self.get("", t, "env", 0) {
            Some((p, item, o)) => self.env(&p, item, o),
            None => BTreeMap::new(),
        };

        let mut processes = BTreeMap::new();
        match self.get("", t, "processes", 0) {
            None => {
                processes.insert(DEFAULT_PROCESS.to_string(), Process::default());
            }
            Some((pp, item, o)) => {
                if let Some(pt) = self.want_table(&pp, item, o) {
                    if pt.is_empty() {
                        self.err(
                            o,
                            &pp,
                            Problem::new("`processes` must define at least one process").hint(
                                "add `[processes.web]`, or remove `processes` to run the image's entrypoint as `web`",
                            ),
                        );
                    }
                    for (name, _) in pt.iter() {
                        let Some((p, item, po)) = self.get(&pp, pt, name, o) else {
                            continue;
                        };
                        let key_off = pt.get_key_value(name).and_then(|(k, _)| start(k.span())).unwrap_or(po);
                        if let Err(e) = rules::name("process", name) {
                            self.err(key_off, &p, e);
                        }
                        let proc_ = self.process(&p, item, po);
                        processes.insert(name.to_string(), proc_);
                    }
                }
            }
        }

        let mut volumes = Vec::new();
        if let Some((vp, item, o)) = self.get("", t, "volumes", 0) {
            if let Some(arr) = self.want_array(&vp, item, o) {
                for (i, (el, eo)) in arr.iter().enumerate() {
                    let p = index(&vp, i);
                    self.offsets.insert(p.clone(), *eo);
                    volumes.push(self.volume(&p, el, *eo));
                }
            }
        }

        let m = Manifest { schema_version: SCHEMA_VERSION, env, processes, volumes };
        self.cross_checks(&m);
        m
    }

    fn env(&mut self, path: &str, item: &Item, off: usize) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(t) = self.want_table(path, item, off) else {
            return out;
        };
        for (k, _) in t.iter() {
            let key_off = t.get_key_value(k).and_then(|(key, _)| start(key.span())).unwrap_or(off);
            let Some((p, v, vo)) = self.get(path, t, k, off) else {
                continue;
            };
            if let Err(e) = rules::env_name(k) {
                self.err(key_off, &p, e);
            }
            if let Some(s) = self.want_str(&p, v, vo) {
                if let Err(e) = rules::env_value(&s) {
                    self.err(vo, &p, e);
                }
                out.insert(k.to_string(), s);
            }
        }
        out
    }

    fn process(&mut self, path: &str, item: &Item, off: usize) -> Process {
        let mut pr = Process::default();
        let Some(t) = self.want_table(path, item, off) else {
            return pr;
        };
        self.check_keys(path, t, PROCESS_KEYS, off);

        if let Some((cp, it, o)) = self.get(path, t, "command", off) {
            if let Some(arr) = self.want_array(&cp, it, o) {
                if arr.is_empty() {
                    self.err(
                        o,
                        &cp,
                        Problem::new("`command` cannot be empty").hint(
                            "list the program and its arguments, or remove `command` to use the image's entrypoint",
                        ),
                    );
                } else {
                    let mut cmd = Vec::new();
                    for (i, (el, eo)) in arr.iter().enumerate() {
                        let ep = index(&cp, i);
                        if let Some(s) = self.want_str(&ep, el, *eo) {
                            if let Err(e) = rules::command_arg(i, &s) {
                                self.err(*eo, &ep, e);
                            }
                            cmd.push(s);
                        }
                    }
                    pr.command = Some(cmd);
                }
            }
        }

        if let Some((pp, it, o)) = self.get(path, t, "ports", off) {
            if let Some(arr) = self.want_array(&pp, it, o) {
                for (i, (el, eo)) in arr.iter().enumerate() {
                    let p = index(&pp, i);
                    self.offsets.insert(p.clone(), *eo);
                    pr.ports.push(self.port(&p, el, *eo));
                }
            }
        }

        if let Some((hp, it, o)) = self.get(path, t, "healthcheck", off) {
            pr.healthcheck = self.healthcheck(&hp, it, o);
        }

        if let Some((rp, it, o)) = self.get(path, t, "resources", off) {
            if let Some(rt) = self.want_table(&rp, it, o) {
                self.check_keys(&rp, rt, RESOURCES_KEYS, o);
                pr.resources = Resources {
                    cpu: self.cpu(&rp, rt, o).unwrap_or(crate::DEFAULT_CPU),
                    memory_mib: self
                        .int_field(&rp, rt, "memory_mib", o, rules::memory_mib)
                        .unwrap_or(crate::DEFAULT_MEMORY_MIB),
                };
            }
        }

        if let Some((sp, it, o)) = self.get(path, t, "scaling", off) {
            if let Some(st) = self.want_table(&sp, it, o) {
                self.check_keys(&sp, st, SCALING_KEYS, o);
                let d = Scaling::default();
                let min = self.int_field(&sp, st, "min", o, rules::scale).unwrap_or(d.min);
                // Who asks for `min` instances means at least that many: `max` defaults to `min`.
                let max = self.int_field(&sp, st, "max", o, rules::scale).unwrap_or(min.max(d.max));
                let suspend = match self.get(&sp, st, "suspend", o) {
                    Some((bp, item, bo)) => match item.as_bool() {
                        Some(b) => b,
                        None => {
                            self.type_err(&bp, item, bo, "a boolean (true or false)");
                            false
                        }
                    },
                    None => false,
                };
                pr.scaling = Scaling { min, max, suspend };
            }
        }

        if let Some((up, it, o)) = self.get(path, t, "user", off) {
            if let Some(s) = self.want_str(&up, it, o) {
                if let Err(e) = rules::user(&s) {
                    self.err(o, &up, e);
                }
                pr.user = Some(s);
            }
        }

        if let Some((ep, it, o)) = self.get(path, t, "env", off) {
            pr.env = self.env(&ep, it, o);
        }

        if let Some((sp, it, o)) = self.get(path, t, "secret_env", off) {
            if let Some(arr) = self.want_array(&sp, it, o) {
                for (i, (el, eo)) in arr.iter().enumerate() {
                    let ep = index(&sp, i);
                    let Some(name) = self.want_str(&ep, el, *eo) else { continue };
                    if let Err(e) = rules::env_name(&name) {
                        self.err(*eo, &ep, e);
                    } else if pr.secret_env.contains(&name) {
                        self.err(
                            *eo,
                            &ep,
                            Problem::new(format!("`{name}` is listed twice")).hint("list each secret once"),
                        );
                    } else if pr.env.contains_key(&name) {
                        self.err(
                            *eo,
                            &ep,
                            Problem::new(format!("`{name}` is set by the process's `env` too"))
                                .hint("a variable comes from `env` or from a secret, not both: remove one"),
                        );
                    } else {
                        pr.secret_env.push(name);
                    }
                }
            }
        }

        if let Some((np, it, o)) = self.get(path, t, "network", off) {
            if let Some(s) = self.want_str(&np, it, o) {
                match s.as_str() {
                    "private" => pr.network = NetworkClass::Private,
                    "isolated" => pr.network = NetworkClass::Isolated,
                    _ => self.err(
                        o,
                        &np,
                        Problem::new(format!("network must be \"private\" or \"isolated\", got \"{s}\""))
                            .hint("`private`: the org's private network (the default); `isolated`: the internet only"),
                    ),
                }
            }
        }
        pr
    }

    fn cpu(&mut self, path: &str, t: &dyn TableLike, off: usize) -> Option<f64> {
        let (p, item, o) = self.get(path, t, "cpu", off)?;
        let v = match (item.as_float(), item.as_integer()) {
            (Some(f), _) => f,
            (None, Some(i)) => i as f64,
            _ => {
                self.type_err(&p, item, o, "a number");
                return None;
            }
        };
        match rules::cpu(v) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(o, &p, e);
                None
            }
        }
    }

    /// A port entry; invalid fields become placeholders (their paths carry errors).
    fn port(&mut self, path: &str, item: &Item, off: usize) -> Port {
        let mut port = Port { name: String::new(), port: 0, protocol: Protocol::Tcp };
        let Some(t) = self.want_table(path, item, off) else {
            return port;
        };
        self.check_keys(path, t, PORT_KEYS, off);
        if let Some((p, it, o)) = self.required(path, t, "name", off, "name = \"http\"") {
            if let Some(s) = self.want_str(&p, it, o) {
                if let Err(e) = rules::name("port", &s) {
                    self.err(o, &p, e);
                }
                port.name = s;
            }
        }
        if self.required(path, t, "port", off, "port = 8080").is_some() {
            port.port = self.int_field(path, t, "port", off, rules::port).unwrap_or(0);
        }
        if let Some((p, it, o)) = self.get(path, t, "protocol", off) {
            if let Some(s) = self.want_str(&p, it, o) {
                match s.as_str() {
                    "tcp" => port.protocol = Protocol::Tcp,
                    "udp" => port.protocol = Protocol::Udp,
                    _ => self.err(o, &p, Problem::new(format!("protocol must be \"tcp\" or \"udp\", got \"{s}\""))),
                }
            }
        }
        port
    }

    fn healthcheck(&mut self, path: &str, item: &Item, off: usize) -> Option<Healthcheck> {
        let t = self.want_table(path, item, off)?;
        self.check_keys(path, t, HEALTHCHECK_KEYS, off);
        let mut hc = Healthcheck {
            kind: HealthcheckKind::Tcp,
            port: PortRef::Number(0),
            path: None,
            interval_ms: DEFAULT_INTERVAL_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            grace_ms: DEFAULT_GRACE_MS,
            retries: DEFAULT_RETRIES,
        };
        if let Some((p, it, o)) = self.required(path, t, "type", off, "type = \"http\"") {
            if let Some(s) = self.want_str(&p, it, o) {
                match s.as_str() {
                    "tcp" => hc.kind = HealthcheckKind::Tcp,
                    "http" => hc.kind = HealthcheckKind::Http,
                    _ => self.err(
                        o,
                        &p,
                        Problem::new(format!("healthcheck type must be \"tcp\" or \"http\", got \"{s}\"")),
                    ),
                }
            }
        }
        if let Some((p, it, o)) = self.required(path, t, "port", off, "port = \"http\"` (a port name) or `port = 8080")
        {
            if let Some(n) = it.as_integer() {
                match rules::port(n) {
                    Ok(n) => hc.port = PortRef::Number(n),
                    Err(e) => self.err(o, &p, e),
                }
            } else if let Some(s) = it.as_str() {
                hc.port = PortRef::Name(s.to_string());
            } else {
                self.type_err(&p, it, o, "a port name (string) or port number (integer)");
            }
        }
        if let Some((p, it, o)) = self.get(path, t, "path", off) {
            if let Some(s) = self.want_str(&p, it, o) {
                if let Err(e) = rules::http_path(&s) {
                    self.err(o, &p, e);
                }
                hc.path = Some(s);
            }
        }
        if let Some(v) = self.duration_field(path, t, "interval", off, rules::MIN_INTERVAL_MS, rules::MAX_DURATION_MS) {
            hc.interval_ms = v;
        }
        if let Some(v) = self.duration_field(path, t, "timeout", off, rules::MIN_TIMEOUT_MS, rules::MAX_DURATION_MS) {
            hc.timeout_ms = v;
        }
        if let Some(v) = self.duration_field(path, t, "grace", off, 0, rules::MAX_DURATION_MS) {
            hc.grace_ms = v;
        }
        if let Some(v) = self.int_field(path, t, "retries", off, rules::retries) {
            hc.retries = v;
        }
        Some(hc)
    }

    fn volume(&mut self, path: &str, item: &Item, off: usize) -> Volume {
        let mut v = Volume { name: String::new(), path: String::new(), process: None };
        let Some(t) = self.want_table(path, item, off) else {
            return v;
        };
        self.check_keys(path, t, VOLUME_KEYS, off);
        if let Some((p, it, o)) = self.required(path, t, "name", off, "name = \"data\"") {
            if let Some(s) = self.want_str(&p, it, o) {
                if let Err(e) = rules::name("volume", &s) {
                    self.err(o, &p, e);
                }
                v.name = s;
            }
        }
        if let Some((p, it, o)) = self.required(path, t, "path", off, "path = \"/data\"") {
            if let Some(s) = self.want_str(&p, it, o) {
                if let Err(e) = rules::volume_path(&s) {
                    self.err(o, &p, e);
                }
                v.path = s;
            }
        }
        if let Some((p, it, o)) = self.get(path, t, "process", off) {
            if let Some(s) = self.want_str(&p, it, o) {
                v.process = Some(s);
            }
        }
        v
    }

    fn cross_checks(&mut self, m: &Manifest) {
        for (name, pr) in &m.processes {
            let pp = join("processes", name);
            let ports_p = join(&pp, "ports");
            for (i, port) in pr.ports.iter().enumerate() {
                let here = index(&ports_p, i);
                if let Some(j) = pr.ports[..i].iter().position(|q| q.name == port.name) {
                    let a = join(&index(&ports_p, j), "name");
                    let b = join(&here, "name");
                    self.cross(
                        &b,
                        &[&a],
                        Problem::new(format!(
                            "duplicate port name `{}`: already used by {}",
                            port.name,
                            index("ports", j)
                        ))
                        .hint("give each port of a process its own name"),
                    );
                }
                if let Some(j) = pr.ports[..i].iter().position(|q| q.port == port.port && q.protocol == port.protocol) {
                    let a = join(&index(&ports_p, j), "port");
                    let b = join(&here, "port");
                    self.cross(
                        &b,
                        &[&a, &join(&here, "protocol"), &join(&index(&ports_p, j), "protocol")],
                        Problem::new(format!(
                            "duplicate port {}/{}: already declared by {}",
                            port.port,
                            port.protocol.as_str(),
                            index("ports", j)
                        ))
                        .hint("declare each port of a process once"),
                    );
                }
            }

            if let Some(hc) = &pr.healthcheck {
                let hp = join(&pp, "healthcheck");
                let type_p = join(&hp, "type");
                let path_p = join(&hp, "path");
                match (hc.kind, &hc.path) {
                    (HealthcheckKind::Http, None) => self.cross(
                        &path_p,
                        &[&type_p],
                        Problem::new("missing required field `path`: http healthchecks need a request path")
                            .hint("add `path = \"/healthz\"` (any path your app answers with 2xx or 3xx)"),
                    ),
                    (HealthcheckKind::Tcp, Some(_)) => self.cross(
                        &path_p,
                        &[&type_p],
                        Problem::new("`path` only applies to http healthchecks")
                            .hint("remove `path`, or set `type = \"http\"`"),
                    ),
                    _ => {}
                }
                if hc.timeout_ms >= hc.interval_ms {
                    self.cross(
                        &join(&hp, "timeout"),
                        &[&join(&hp, "interval")],
                        Problem::new(format!(
                            "timeout ({}) must be shorter than interval ({})",
                            rules::format_duration(hc.timeout_ms),
                            rules::format_duration(hc.interval_ms)
                        ))
                        .hint("lower `timeout` or raise `interval`"),
                    );
                }
                if let PortRef::Name(n) = &hc.port {
                    let port_p = join(&hp, "port");
                    match pr.ports.iter().find(|p| &p.name == n) {
                        None => {
                            let declared: Vec<&str> = pr.ports.iter().map(|p| p.name.as_str()).collect();
                            let hint = if declared.is_empty() {
                                format!(
                                    "declare it: `ports = [{{ name = \"{n}\", port = 8080 }}]`, or give a port number"
                                )
                            } else {
                                format!("declared ports: {}; or give a port number", declared.join(", "))
                            };
                            self.cross(
                                &port_p,
                                &[&ports_p],
                                Problem::new(format!("no port named `{n}` in {ports_p}")).hint(hint),
                            );
                        }
                        Some(p) if p.protocol == Protocol::Udp => self.cross(
                            &port_p,
                            &[&ports_p],
                            Problem::new(format!(
                                "port `{n}` is udp; {} healthchecks need a tcp port",
                                hc.kind.as_str()
                            )),
                        ),
                        Some(_) => {}
                    }
                }
            }

            if pr.scaling.min > pr.scaling.max {
                let sp = join(&pp, "scaling");
                self.cross(
                    &join(&sp, "min"),
                    &[&join(&sp, "max")],
                    Problem::new(format!("min ({}) must not be greater than max ({})", pr.scaling.min, pr.scaling.max))
                        .hint(format!(
                            "set `max = {}` or more, or leave `max` out (it defaults to `min`)",
                            pr.scaling.min
                        )),
                );
            }
        }

        for (i, v) in m.volumes.iter().enumerate() {
            let here = index("volumes", i);
            if let Some(j) = m.volumes[..i].iter().position(|w| w.name == v.name) {
                self.cross(
                    &join(&here, "name"),
                    &[&join(&index("volumes", j), "name")],
                    Problem::new(format!(
                        "duplicate volume name `{}`: already used by {}",
                        v.name,
                        index("volumes", j)
                    ))
                    .hint("give each volume its own name"),
                );
            }
            if let Some(p) = &v.process {
                if !m.processes.contains_key(p) {
                    let names: Vec<&str> = m.processes.keys().map(String::as_str).collect();
                    self.cross(
                        &join(&here, "process"),
                        &[],
                        Problem::new(format!("no process named `{p}`")).hint(format!(
                            "use one of: {}; or remove `process` to mount it in every process",
                            names.join(", ")
                        )),
                    );
                }
            }
            let overlaps = |w: &Volume| match (&v.process, &w.process) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            if let Some(j) = m.volumes[..i].iter().position(|w| w.path == v.path && overlaps(w)) {
                self.cross(
                    &join(&here, "path"),
                    &[
                        &join(&index("volumes", j), "path"),
                        &join(&here, "process"),
                        &join(&index("volumes", j), "process"),
                    ],
                    Problem::new(format!(
                        "volume path `{}` is already used by {} in the same process",
                        v.path,
                        index("volumes", j)
                    ))
                    .hint("mount each volume at its own path"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let s = "ab\nçd\ne";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 3), (2, 1));
        assert_eq!(line_col(s, 5), (2, 2));
        assert_eq!(line_col(s, 7), (3, 1));
        assert_eq!(line_col(s, 4), (2, 1));
        assert_eq!(line_col(s, 100), (3, 2));
    }

    #[test]
    fn paths() {
        assert_eq!(join("", "env"), "env");
        assert_eq!(join("env", "a.b"), "env.\"a.b\"");
        assert!(related("a.b", "a.b"));
        assert!(related("a.b[0].c", "a.b"));
        assert!(related("a.b", "a.b.c"));
        assert!(!related("a.bc", "a.b"));
    }
}
