//! The context file and how settings are resolved: flag > environment >
//! context file > default.
//!
//! The file is TOML at `$VT_CONFIG`, else `$XDG_CONFIG_HOME/vt/config.toml`,
//! else `~/.config/vt/config.toml`, written with mode 0600 (it may hold a
//! token).
//!
//! Token fallback: with no token from any of those, and a server on this
//! machine (`localhost`, `127.0.0.1`, `[::1]`), the CLI reads
//! `<data-dir>/admin-token`, where `<data-dir>` is `$VT_DATA_DIR` or the
//! server's default `./.vt` (relative to the current directory).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::args::GlobalArgs;
use crate::error::{CliError, CliResult};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7411";
pub const DEFAULT_DATA_DIR: &str = "./.vt";

/// What `vt context set` saves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

pub fn config_path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("VT_CONFIG") {
        return Some(p);
    }
    if let Some(x) = var("XDG_CONFIG_HOME") {
        return Some(x.join("vt").join("config.toml"));
    }
    var("HOME").map(|h| h.join(".config").join("vt").join("config.toml"))
}

impl Context {
    pub fn load(path: &Path) -> CliResult<Context> {
        match fs_err::read_to_string(path) {
            Ok(s) => toml::from_str(&s).map_err(|e| {
                CliError::usage(
                    format!("cannot read the context file `{}`: {e}", path.display()),
                    Some("fix or delete it, then run `vt context set`".into()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Context::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn save(&self, path: &Path) -> CliResult<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs_err::create_dir_all(dir)?;
        }
        let text =
            toml::to_string(self).map_err(|e| CliError::failed(format!("cannot write the context: {e}"), None))?;
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut opts = fs_err::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use fs_err::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        fs_err::rename(&tmp, path)?;
        Ok(())
    }
}

/// Where a setting came from, for `vt context show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Flag,
    Env,
    Context,
    AdminTokenFile,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::Context => "context",
            Source::AdminTokenFile => "admin-token file",
            Source::Default => "default",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub value: Option<String>,
    pub source: Option<Source>,
}

/// The effective settings of one invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub config_path: Option<PathBuf>,
    pub server: Setting,
    #[serde(skip)]
    pub token: Setting,
    pub org: Setting,
    pub app: Setting,
    pub env: Setting,
}

fn pick(flag: &Option<String>, env_var: &str, ctx: &Option<String>) -> Setting {
    if let Some(v) = flag {
        return Setting { value: Some(v.clone()), source: Some(Source::Flag) };
    }
    if let Some(v) = std::env::var(env_var).ok().filter(|v| !v.is_empty()) {
        return Setting { value: Some(v), source: Some(Source::Env) };
    }
    if let Some(v) = ctx {
        return Setting { value: Some(v.clone()), source: Some(Source::Context) };
    }
    Setting { value: None, source: None }
}

pub fn resolve(global: &GlobalArgs) -> CliResult<Settings> {
    let config_path = config_path();
    let ctx = match &config_path {
        Some(p) => Context::load(p)?,
        None => Context::default(),
    };
    let mut server = pick(&global.server, "VT_SERVER", &ctx.server);
    if server.value.is_none() {
        server = Setting { value: Some(DEFAULT_SERVER.into()), source: Some(Source::Default) };
    }
    let mut token = pick(&global.token, "VT_TOKEN", &ctx.token);
    if token.value.is_none() && server.value.as_deref().is_some_and(is_local) {
        if let Some(t) = local_admin_token() {
            token = Setting { value: Some(t), source: Some(Source::AdminTokenFile) };
        }
    }
    Ok(Settings {
        config_path,
        server,
        token,
        org: pick(&global.org, "VT_ORG", &ctx.org),
        app: pick(&global.app, "VT_APP", &ctx.app),
        env: pick(&global.env, "VT_ENV", &ctx.env),
    })
}

/// `<data-dir>/admin-token` of a server started here with default settings.
pub fn local_admin_token() -> Option<String> {
    let dir = std::env::var_os("VT_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let t = std::fs::read_to_string(vt_server::DataDir::at(&dir).admin_token()).ok()?;
    Some(t.trim().to_owned()).filter(|t| !t.is_empty())
}

fn is_local(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

impl Settings {
    pub fn org(&self) -> CliResult<&str> {
        need(&self.org, "org", "--org NAME")
    }
    pub fn app(&self) -> CliResult<&str> {
        need(&self.app, "app", "--app NAME")
    }
    pub fn env(&self) -> CliResult<&str> {
        need(&self.env, "env", "--env NAME")
    }

    /// Org, app and env together, for commands that act on an env.
    pub fn env_scope(&self) -> CliResult<(&str, &str, &str)> {
        Ok((self.org()?, self.app()?, self.env()?))
    }
}

fn need<'a>(s: &'a Setting, what: &str, flag: &str) -> CliResult<&'a str> {
    s.value.as_deref().ok_or_else(|| {
        CliError::usage(
            format!("no {what} given"),
            Some(format!("pass `{flag}`, set `VT_{}`, or save it with `vt context set {flag}`", what.to_uppercase())),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn local_servers() {
        assert!(is_local("http://127.0.0.1:7411"));
        assert!(is_local("http://localhost"));
        assert!(is_local("http://[::1]:7411/"));
        assert!(!is_local("https://vt.example.com"));
        assert!(!is_local("http://10.0.0.1:7411"));
    }
}
