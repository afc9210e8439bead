//! Where a request on the workspace origin goes, from its path alone.
//!
//! ```text
//! /workspace/{name}                  → 308 /workspace/{name}/
//! /workspace/{name}/{rest}           → the workspace's IDE, at /{rest}
//! /workspace/{name}/port/{N}         → 308 /workspace/{name}/port/{N}/
//! /workspace/{name}/port/{N}/{rest}  → port N of the workspace, at /{rest}
//! ```
//!
//! Paths are hostile input: a `.` or `..` segment (raw or percent-encoded), an encoded `/`
//! or `\`, a NUL, a raw `\` or an overlong path is refused (400/414) before anything is
//! looked up, so a prefix strip can never climb out of the workspace it names.

use vt_ids::Name;

/// The longest path (bytes, without the query) the front routes.
pub const MAX_PATH: usize = 8 * 1024;

/// The prefix every workspace path starts with.
pub const PREFIX: &str = "/workspace/";

/// Where a path goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// The same path with a `/` at the end (its prefix without one).
    Redirect(String),
    /// The workspace's IDE; `rest` starts with `/`.
    Ide { name: Name, rest: &'a str },
    /// A registered port of the workspace; `rest` starts with `/`.
    Port { name: Name, port: u16, rest: &'a str },
    /// Not under `/workspace/`.
    Elsewhere,
}

impl Target<'_> {
    /// The workspace it names, if any.
    pub fn workspace(&self) -> Option<&Name> {
        match self {
            Target::Ide { name, .. } | Target::Port { name, .. } => Some(name),
            Target::Redirect(_) | Target::Elsewhere => None,
        }
    }

    /// The prefix stripped from the path (`X-Forwarded-Prefix`).
    pub fn prefix(&self) -> Option<String> {
        match self {
            Target::Ide { name, .. } => Some(format!("/workspace/{name}")),
            Target::Port { name, port, .. } => Some(format!("/workspace/{name}/port/{port}")),
            Target::Redirect(_) | Target::Elsewhere => None,
        }
    }
}

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("the path has a `.` or `..` segment; give the path without it")]
    DotSegment,
    #[error("the path has an encoded `/`, `\\` or NUL (`%2F`, `%5C`, `%00`) or a raw `\\`; these are not routed")]
    EncodedSeparator,
    #[error("{0} is not a workspace name: lowercase letters, digits and `-`, starting with a letter, at most 63")]
    Name(String),
    #[error("{0} is not a port: give a number from 1 to 65535")]
    Port(String),
}

/// Where `path` (the request target's path, without the query) goes.
pub fn route(path: &str) -> Result<Target<'_>, PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    check_segments(path)?;
    let Some(after) = path.strip_prefix(PREFIX) else {
        return Ok(if path == "/workspace" { Target::Redirect(PREFIX.to_owned()) } else { Target::Elsewhere });
    };
    let (name, rest) = split(after);
    if name.is_empty() {
        return Ok(Target::Elsewhere);
    }
    let name = Name::parse(name).map_err(|_| PathError::Name(vt_ids::shown(name)))?;
    let Some(rest) = rest else { return Ok(Target::Redirect(format!("{path}/"))) };
    let Some(after_port) = rest.strip_prefix("/port/") else { return Ok(Target::Ide { name, rest }) };
    let (number, port_rest) = split(after_port);
    let port = parse_port(number).ok_or_else(|| PathError::Port(vt_ids::shown(number)))?;
    match port_rest {
        None => Ok(Target::Redirect(format!("{path}/"))),
        Some(rest) => Ok(Target::Port { name, port, rest }),
    }
}

/// `s` up to its first `/`, and the rest from that `/` on.
fn split(s: &str) -> (&str, Option<&str>) {
    match s.find('/') {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    }
}

/// A port number as written in a path: 1 to 65535, digits only, no leading zero.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p != 0)
}

fn check_segments(path: &str) -> Result<(), PathError> {
    if path.contains('\\') {
        return Err(PathError::EncodedSeparator);
    }
    for segment in path.split('/') {
        if is_dot_segment(segment)? {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

/// Whether a segment is `.` or `..` once its percent-encoded dots are decoded; an encoded
/// `/`, `\` or NUL is refused. Other escapes are kept as written (the upstream decodes them).
fn is_dot_segment(segment: &str) -> Result<bool, PathError> {
    let b = segment.as_bytes();
    let (mut dots, mut other) = (0usize, false);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            match [b[i + 1].to_ascii_lowercase(), b[i + 2].to_ascii_lowercase()] {
                [b'2', b'e'] => {
                    dots += 1;
                    i += 3;
                    continue;
                }
                [b'2', b'f'] | [b'5', b'c'] | [b'0', b'0'] => return Err(PathError::EncodedSeparator),
                _ => {}
            }
        }
        if b[i] == b'.' {
            dots += 1;
        } else {
            other = true;
        }
        i += 1;
    }
    Ok(!other && (dots == 1 || dots == 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(route("/workspace/dev/"), Ok(Target::Ide { name: name("dev"), rest: "/" }));
        assert_eq!(route("/workspace/dev/a/b.js"), Ok(Target::Ide { name: name("dev"), rest: "/a/b.js" }));
        assert_eq!(route("/workspace/dev"), Ok(Target::Redirect("/workspace/dev/".into())));
        assert_eq!(route("/workspace"), Ok(Target::Redirect("/workspace/".into())));
        assert_eq!(route("/workspace/"), Ok(Target::Elsewhere));
        assert_eq!(route("/"), Ok(Target::Elsewhere));
        assert_eq!(route("/workspaces/dev/"), Ok(Target::Elsewhere));
        assert_eq!(route("/workspace/dev/port/3000/x"), Ok(Target::Port { name: name("dev"), port: 3000, rest: "/x" }));
        assert_eq!(route("/workspace/dev/port/3000/"), Ok(Target::Port { name: name("dev"), port: 3000, rest: "/" }));
        assert_eq!(route("/workspace/dev/port/3000"), Ok(Target::Redirect("/workspace/dev/port/3000/".into())));
        // `port` alone is a path of the IDE.
        assert_eq!(route("/workspace/dev/port"), Ok(Target::Ide { name: name("dev"), rest: "/port" }));
        assert_eq!(route("/workspace/dev/ports/1/"), Ok(Target::Ide { name: name("dev"), rest: "/ports/1/" }));
        // Other escapes pass through as written.
        assert_eq!(route("/workspace/dev/a%20b"), Ok(Target::Ide { name: name("dev"), rest: "/a%20b" }));
        assert_eq!(route("/workspace/dev/%2"), Ok(Target::Ide { name: name("dev"), rest: "/%2" }));
    }

    #[test]
    fn prefixes() {
        let t = route("/workspace/dev/port/80/x").unwrap();
        assert_eq!(t.prefix().as_deref(), Some("/workspace/dev/port/80"));
        assert_eq!(t.workspace(), Some(&name("dev")));
        assert_eq!(route("/workspace/dev/x").unwrap().prefix().as_deref(), Some("/workspace/dev"));
        // The front strips what comes before `rest`: always the prefix as `prefix` spells it.
        for p in ["/workspace/dev/", "/workspace/a-1/x/y?", "/workspace/dev/port/65535/", "/workspace/dev/port/8/a/b"] {
            let t = route(p).unwrap();
            let (Target::Ide { rest, .. } | Target::Port { rest, .. }) = &t else { panic!("{p}") };
            assert_eq!(format!("{}{rest}", t.prefix().unwrap()), p);
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        for p in [
            "/workspace/dev/../other/",
            "/workspace/dev/%2e%2e/other/",
            "/workspace/dev/%2E./x",
            "/workspace/dev/./x",
            "/workspace/../etc",
            "/workspace/dev/.%2e",
        ] {
            assert_eq!(route(p), Err(PathError::DotSegment), "{p}");
        }
        for p in ["/workspace/dev%2Fx/", "/workspace/dev/a%2fb", "/workspace/dev/a%5Cb", "/workspace/dev/a\\b", "/x%00"]
        {
            assert_eq!(route(p), Err(PathError::EncodedSeparator), "{p}");
        }
        assert!(matches!(route("/workspace/Dev/"), Err(PathError::Name(_))));
        assert!(matches!(route(&format!("/workspace/{}/", "a".repeat(64))), Err(PathError::Name(_))));
        for p in ["0", "65536", "08080", "x", "", "99999999999"] {
            assert!(matches!(route(&format!("/workspace/dev/port/{p}/")), Err(PathError::Port(_))), "{p}");
        }
        assert_eq!(route(&format!("/workspace/dev/{}", "a".repeat(MAX_PATH))), Err(PathError::TooLong));
        // `...` is a name, not a dot segment.
        assert_eq!(route("/workspace/dev/.../"), Ok(Target::Ide { name: name("dev"), rest: "/.../" }));
    }

    /// Every prefix of every path routes or is refused; none panics, and a refused path's
    /// message never runs past the bound.
    #[test]
    fn every_prefix() {
        for p in [
            "/workspace/dev/port/3000/a%2e%2E/b?c",
            "/workspace/my-ws/port/65535/static/%2F/x",
            "/workspace/a/../../%00/\\",
            "/workspace/é/port/1/",
        ] {
            for end in 0..=p.len() {
                if let Some(prefix) = p.get(..end) {
                    if let Err(e) = route(prefix) {
                        assert!(e.to_string().chars().count() < 200, "{e}");
                    }
                }
            }
        }
    }
}
