//! Field-level validation rules, shared by the TOML parser.

use crate::error::Problem;

pub(crate) const SUPPORTED_SCHEMA_VERSIONS: &[i64] = &[1];

pub(crate) const MIN_MEMORY_MIB: i64 = 64;
pub(crate) const MAX_MEMORY_MIB: i64 = 262_144;
pub(crate) const MAX_CPU: f64 = 64.0;
pub(crate) const MAX_SCALE: i64 = 1000;
pub(crate) const MAX_RETRIES: i64 = 100;
pub(crate) const MIN_INTERVAL_MS: u64 = 1_000;
pub(crate) const MAX_DURATION_MS: u64 = 3_600_000;
pub(crate) const MIN_TIMEOUT_MS: u64 = 10;

/// Paths that volumes may not be mounted on or under.
pub(crate) const RESERVED_MOUNT_PREFIXES: &[&str] = &["/proc", "/sys", "/dev", "/run/secrets"];

/// `[a-z][a-z0-9-]{0,62}`, not ending in `-`: the platform's one name rule ([`vt_ids::Name`]).
pub(crate) fn is_valid_name(s: &str) -> bool {
    vt_ids::Name::is_valid(s)
}

pub(crate) fn name(kind: &str, s: &str) -> Result<(), Problem> {
    if is_valid_name(s) {
        return Ok(());
    }
    let mut suggestion: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect();
    suggestion = suggestion.trim_matches('-').to_string();
    suggestion.truncate(63);
    let suggestion = suggestion.trim_end_matches('-').to_string();
    let p = Problem::new(format!(
        "invalid {kind} name `{s}`: use 1 to 63 characters of lowercase letters, digits and '-', starting with a letter and not ending with '-'"
    ));
    if is_valid_name(&suggestion) {
        Err(p.hint(format!("rename it to `{suggestion}`")))
    } else {
        Err(p)
    }
}

/// An environment variable name: the platform's one rule ([`vt_ids::EnvVarName`]).
pub(crate) fn env_name(s: &str) -> Result<(), Problem> {
    match vt_ids::EnvVarName::parse(s) {
        Ok(_) => Ok(()),
        Err(e @ vt_ids::NameError::Reserved(_)) => Err(Problem::new(format!("environment variable {e}"))
            .hint("rename the variable so it does not start with `VT_`")),
        Err(_) => Err(Problem::new(format!(
            "invalid environment variable name `{s}`: use letters, digits and '_', not starting with a digit"
        ))),
    }
}

pub(crate) fn env_value(s: &str) -> Result<(), Problem> {
    if s.contains('\0') {
        return Err(Problem::new("environment variable values cannot contain NUL characters"));
    }
    Ok(())
}

pub(crate) fn schema_version(v: i64) -> Result<(), Problem> {
    if SUPPORTED_SCHEMA_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(Problem::new(format!("unsupported schema_version {v}; supported versions: 1"))
            .hint("set `schema_version = 1`"))
    }
}

pub(crate) fn port(v: i64) -> Result<u16, Problem> {
    if (1..=65535).contains(&v) {
        Ok(v as u16)
    } else {
        Err(Problem::new(format!("must be between 1 and 65535, got {v}")))
    }
}

pub(crate) fn memory_mib(v: i64) -> Result<u32, Problem> {
    if (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&v) {
        Ok(v as u32)
    } else {
        Err(Problem::new(format!("must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} (MiB), got {v}")))
    }
}

pub(crate) fn cpu(v: f64) -> Result<f64, Problem> {
    if v > 0.0 && v <= MAX_CPU {
        Ok(v)
    } else {
        Err(Problem::new(format!("must be greater than 0 and at most {MAX_CPU} (vCPUs), got {v}"))
            .hint("use a fraction such as 0.5 for half a vCPU"))
    }
}

pub(crate) fn scale(v: i64) -> Result<u32, Problem> {
    if (0..=MAX_SCALE).contains(&v) {
        Ok(v as u32)
    } else {
        Err(Problem::new(format!("must be between 0 and {MAX_SCALE}, got {v}")))
    }
}

pub(crate) fn retries(v: i64) -> Result<u32, Problem> {
    if (1..=MAX_RETRIES).contains(&v) {
        Ok(v as u32)
    } else {
        Err(Problem::new(format!("must be between 1 and {MAX_RETRIES}, got {v}")))
    }
}

/// Parse `<digits><unit>` with unit `ms`, `s`, `m` or `h` into milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<u64, Problem> {
    let bad = || {
        Problem::new(format!("invalid duration `{s}`"))
            .hint("write a whole number followed by a unit: \"500ms\", \"10s\", \"1m\" or \"1h\"")
    };
    let digits_end = s.bytes().position(|c| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits_end == 0 || digits_end > 12 {
        return Err(bad());
    }
    let n: u64 = s[..digits_end].parse().map_err(|_| bad())?;
    let mult = match &s[digits_end..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Inverse of [`parse_duration`], using the largest unit that is exact.
pub(crate) fn format_duration(ms: u64) -> String {
    if ms == 0 {
        "0s".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

pub(crate) fn duration_range(ms: u64, min: u64, max: u64) -> Result<u64, Problem> {
    if (min..=max).contains(&ms) {
        Ok(ms)
    } else {
        Err(Problem::new(format!(
            "must be between {} and {}, got {}",
            format_duration(min),
            format_duration(max),
            format_duration(ms)
        )))
    }
}

/// `name`, `uid` or `uid:gid`.
pub(crate) fn user(s: &str) -> Result<(), Problem> {
    let is_id =
        |p: &str| !p.is_empty() && p.len() <= 10 && p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u32>().is_ok();
    let is_user_name = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty()
            && b.len() <= 32
            && (b[0].is_ascii_lowercase() || b[0] == b'_')
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
    };
    let ok = match s.split_once(':') {
        Some((u, g)) => is_id(u) && is_id(g),
        None => is_id(s) || is_user_name(s),
    };
    if ok {
        Ok(())
    } else {
        Err(Problem::new(format!("invalid user `{s}`"))
            .hint("use a user name (\"app\"), a numeric uid (\"1000\") or uid:gid (\"1000:1000\")"))
    }
}

pub(crate) fn http_path(s: &str) -> Result<(), Problem> {
    if !s.starts_with('/') {
        return Err(Problem::new(format!("healthcheck path `{s}` must start with '/'"))
            .hint(format!("write \"/{}\"", s.trim_start_matches('/'))));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Problem::new("healthcheck path cannot contain whitespace or control characters")
            .hint("percent-encode the characters, e.g. %20 for a space"));
    }
    Ok(())
}

pub(crate) fn volume_path(s: &str) -> Result<(), Problem> {
    if !s.starts_with('/') {
        return Err(Problem::new(format!("volume path `{s}` must be absolute"))
            .hint(format!("write \"/{}\"", s.trim_start_matches("./"))));
    }
    if s == "/" {
        return Err(Problem::new("a volume cannot be mounted on `/`").hint("pick a directory such as \"/data\""));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(Problem::new("volume path cannot contain control characters"));
    }
    let segs: Vec<&str> = s[1..].split('/').collect();
    if segs.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        let norm: Vec<&str> = {
            let mut out: Vec<&str> = Vec::new();
            for p in &segs {
                match *p {
                    "" | "." => {}
                    ".." => {
                        out.pop();
                    }
                    x => out.push(x),
                }
            }
            out
        };
        return Err(Problem::new(format!(
            "volume path `{s}` is not normalized: it must not contain empty, `.` or `..` components or end with '/'"
        ))
        .hint(format!("write \"/{}\"", norm.join("/"))));
    }
    for r in RESERVED_MOUNT_PREFIXES {
        if s == *r || (s.starts_with(r) && s.as_bytes()[r.len()] == b'/') {
            return Err(Problem::new(format!(
                "volume path `{s}` is under `{r}`, which the platform manages; volumes cannot be mounted there"
            ))
            .hint("mount the volume somewhere else, such as \"/data\""));
        }
    }
    Ok(())
}

pub(crate) fn command_arg(i: usize, s: &str) -> Result<(), Problem> {
    if i == 0 && s.is_empty() {
        return Err(Problem::new("the program (first element of command) cannot be empty"));
    }
    if s.contains('\0') {
        return Err(Problem::new("command arguments cannot contain NUL characters"));
    }
    Ok(())
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "a", "worker-2", &"a".repeat(63)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Web", "2web", "web-", "we_b", "-web", &"a".repeat(64), "wéb"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
        assert_eq!(name("process", "My_App").unwrap_err().hint.as_deref(), Some("rename it to `my-app`"));
    }

    #[test]
    fn env_names() {
        assert!(env_name("PATH").is_ok());
        assert!(env_name("_x1").is_ok());
        assert!(env_name("1X").is_err());
        assert!(env_name("A-B").is_err());
        assert!(env_name("").is_err());
        assert!(env_name("VT_APP").is_err());
        assert!(env_name("VTX").is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), 500);
        assert_eq!(parse_duration("10s").unwrap(), 10_000);
        assert_eq!(parse_duration("1m").unwrap(), 60_000);
        assert_eq!(parse_duration("2h").unwrap(), 7_200_000);
        assert_eq!(parse_duration("0s").unwrap(), 0);
        for bad in ["", "10", "s", "1.5s", "10 s", "-1s", "1d", "10S", "9999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for ms in [0, 1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 5_400_000] {
            assert_eq!(parse_duration(&format_duration(ms)).unwrap(), ms);
        }
        assert_eq!(format_duration(90_000), "90s");
    }

    #[test]
    fn users() {
        for ok in ["app", "_svc", "1000", "0:0", "1000:1000", "www-data"] {
            assert!(user(ok).is_ok(), "{ok}");
        }
        for bad in ["", "App", "1000:", ":1", "a:b", "99999999999", "1:2:3", "a b"] {
            assert!(user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_paths() {
        for ok in ["/data", "/var/lib/pg", "/devices", "/run/secretsx", "/proc2"] {
            assert!(volume_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "data",
            "/",
            "/data/",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/proc",
            "/sys/x",
            "/dev/shm",
            "/run/secrets",
            "/run/secrets/k",
        ] {
            assert!(volume_path(bad).is_err(), "{bad}");
        }
        assert_eq!(volume_path("/a/../b/").unwrap_err().hint.as_deref(), Some("write \"/b\""));
    }

    #[test]
    fn numbers() {
        assert!(port(0).is_err() && port(65536).is_err() && port(1).is_ok() && port(65535).is_ok());
        assert!(
            memory_mib(63).is_err()
                && memory_mib(64).is_ok()
                && memory_mib(262_144).is_ok()
                && memory_mib(262_145).is_err()
        );
        assert!(
            cpu(0.0).is_err() && cpu(64.0).is_ok() && cpu(64.01).is_err() && cpu(f64::NAN).is_err() && cpu(0.1).is_ok()
        );
        assert!(scale(-1).is_err() && scale(0).is_ok() && scale(1000).is_ok() && scale(1001).is_err());
        assert!(retries(0).is_err() && retries(1).is_ok() && retries(100).is_ok() && retries(101).is_err());
        assert_eq!(edit_distance("prots", "ports"), 2);
        assert_eq!(edit_distance("comand", "command"), 1);
    }
}
