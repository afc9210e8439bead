//! For tests: network namespaces the test creates, named `vtn-<what>-<pid>`, deleted when
//! dropped (also when the test fails). Everything a test does to the network happens in
//! them: the host's own interfaces, routes, sysctls and ruleset are never touched.

use std::process::{Command, Output, Stdio};

/// A network namespace of a test; `ip netns del` when dropped, with its `/etc/netns/<name>`.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip netns add vtn-<what>-<pid>` with loopback up.
    pub fn create(what: &str) -> Result<Netns, String> {
        let name = format!("vtn-{what}-{}", std::process::id());
        let _ = run(Command::new("ip").args(["netns", "del", &name]));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// [`Netns::create`] where this process may (root, `ip` and `nft` present); else `None`
    /// after printing why, or a panic under `CI=true` (CI must run these tests).
    pub fn create_or_skip(what: &str) -> Option<Netns> {
        let why = if !is_root() {
            Some("needs root (network namespaces)".to_owned())
        } else if run(Command::new("nft").arg("--version")).is_err() {
            Some("needs nftables (`apt-get install nftables`)".to_owned())
        } else {
            None
        };
        let why = match why {
            Some(w) => w,
            None => match Netns::create(what) {
                Ok(ns) => return Some(ns),
                Err(e) => format!("cannot create a network namespace: {e}"),
            },
        };
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{what}: {why}");
        eprintln!("SKIPPED: {what}: {why}");
        None
    }

    /// `ip netns exec <name> <program>`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `ip -n <name> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `nft ARGS` in the namespace.
    pub fn nft(&self, args: &[&str]) -> Result<String, String> {
        run(self.command("nft").args(args))
    }

    /// `nft -f -` of this script in the namespace.
    pub fn nft_apply(&self, script: &str) -> Result<(), String> {
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        std::fs::write(&path, script).map_err(|e| e.to_string())?;
        let r = run(self.command("nft").arg("-f").arg(&path));
        let _ = std::fs::remove_file(&path);
        r.map(drop)
    }

    /// A sysctl of the namespace (`net.ipv4.ip_forward`): they are per namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        run(self.command("sysctl").args(["-qw", &format!("{key}={value}")])).map(drop)
    }

    /// A veth pair: `a` here, `b` in `other`.
    pub fn veth(&self, a: &str, other: &Netns, b: &str) -> Result<(), String> {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b, "netns", &other.name])?;
        self.ip(&["link", "set", a, "up"])?;
        other.ip(&["link", "set", b, "up"]).map(drop)
    }

    /// Files that `ip netns exec` binds over `/etc` for this namespace (`resolv.conf`).
    pub fn etc_file(&self, file: &str, text: &str) -> Result<(), String> {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join(file), text).map_err(|e| format!("{file}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
    }
}

/// Run a command: its stdout, or its stderr (and exit status) as the error.
pub fn run(c: &mut Command) -> Result<String, String> {
    let out: Output = c.stdin(Stdio::null()).output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{c:?}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
