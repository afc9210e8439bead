//! The real interface: the kernel's WireGuard or boringtun, configured with `wg` and `ip`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::plan::{plan, Changes, Current, PeerChange};
use crate::{Ensured, Interface, MeshError, Peer, Wireguard, KEEPALIVE_SECS, MTU};

/// The variable naming the `boringtun-cli` binary (else it is looked up on `PATH`).
pub const BORINGTUN_ENV: &str = "VT_BORINGTUN";
/// The version of `boringtun-cli` vt is tested with (`scripts/mesh-tools.sh` installs it).
pub const BORINGTUN_VERSION: &str = "0.7.1";

/// How long a new device may take to show its interface and answer `wg`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which device holds the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The kernel's WireGuard (`ip link add NAME type wireguard`).
    Kernel,
    /// `boringtun-cli`: a TUN device and a userspace process speaking WireGuard's UAPI.
    Boringtun,
}

/// The kernel's WireGuard where the module exists, boringtun otherwise, through Debian's `wg`
/// (wireguard-tools) and `ip` (iproute2). A boringtun started here is this value's child:
/// [`Wireguard::ensure`] starts it again (and the peers are set again) when it has died. One
/// started by an earlier process on this host (an agent that crashed) keeps serving and is
/// adopted.
#[derive(Debug)]
pub struct WgTools {
    netns: Option<String>,
    wg: PathBuf,
    ip: PathBuf,
    boringtun: Option<PathBuf>,
    log: Option<PathBuf>,
    device: Mutex<Device>,
}

#[derive(Debug, Default)]
struct Device {
    backend: Option<Backend>,
    child: Option<Child>,
    /// The private key this value gave the device: boringtun does not show it back.
    key_set: Option<String>,
    /// The endpoint this value gave each peer (`Current::configured`).
    endpoints: std::collections::BTreeMap<String, std::net::SocketAddr>,
}

/// `ip -j -d link show dev NAME`, the parts we read.
#[derive(Debug, serde::Deserialize)]
struct Link {
    mtu: u32,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
}

#[derive(Debug, serde::Deserialize)]
struct LinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Addr {
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Debug, serde::Deserialize)]
struct AddrInfo {
    local: String,
    prefixlen: u8,
}

impl WgTools {
    /// `wg` and `ip` from `PATH` (else an error naming the package), `boringtun-cli` from
    /// [`BORINGTUN_ENV`] or `PATH` (needed only where the kernel has no WireGuard).
    pub fn probe() -> Result<WgTools, MeshError> {
        let wg = find("wg").ok_or_else(|| MeshError::Missing {
            tool: "wg",
            install: "install Debian's `wireguard-tools` (`apt-get install wireguard-tools`)".into(),
        })?;
        let ip = find("ip").ok_or_else(|| MeshError::Missing {
            tool: "ip",
            install: "install Debian's `iproute2` (`apt-get install iproute2`)".into(),
        })?;
        let boringtun = match std::env::var_os(BORINGTUN_ENV) {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => find("boringtun-cli"),
        };
        Ok(WgTools { netns: None, wg, ip, boringtun, log: None, device: Mutex::default() })
    }

    /// Which device a new interface gets here: the kernel's when `ip link add type wireguard`
    /// works (a probe interface is made and deleted), else boringtun, which must then be
    /// installed ([`MeshError::Missing`] says how).
    pub fn check(&self) -> Result<Backend, MeshError> {
        let probe = format!("vtwgprobe{}", std::process::id() % 100_000);
        match self.ip(&["link", "add", "dev", &probe, "type", "wireguard"]) {
            Ok(_) => {
                self.ip(&["link", "del", "dev", &probe])?;
                Ok(Backend::Kernel)
            }
            Err(MeshError::Failed { detail, .. }) => match &self.boringtun {
                Some(_) => Ok(Backend::Boringtun),
                None => Err(no_boringtun(&detail)),
            },
            Err(e) => Err(e),
        }
    }

    /// Run everything in the named network namespace (`ip netns exec NAME`).
    pub fn in_netns(mut self, name: &str) -> WgTools {
        self.netns = Some(name.to_owned());
        self
    }

    /// Append boringtun's output to this file (else it is discarded).
    pub fn log_to(mut self, path: PathBuf) -> WgTools {
        self.log = Some(path);
        self
    }

    /// The device holding the interface, once [`Wireguard::ensure`] has run.
    pub fn backend(&self) -> Option<Backend> {
        self.lock().backend
    }

    /// The process id of the boringtun this value started, while it runs.
    pub fn device_pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    /// What the interface holds (`None`: there is no such interface), with its routes.
    pub fn current(&self, name: &str) -> Result<Option<Current>, MeshError> {
        if self.link(name)?.is_none() {
            return Ok(None);
        }
        let mut current = self.dump(name)?;
        current.routes = self.routes(name)?;
        Ok(Some(current))
    }

    /// The interface's MTU (`None`: no such interface).
    pub fn mtu(&self, name: &str) -> Result<Option<u32>, MeshError> {
        Ok(self.link(name)?.map(|l| l.mtu))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new(&self.ip);
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, program: &Path, args: &[&str]) -> Result<String, MeshError> {
        let mut c = self.command(program);
        c.args(args);
        let shown = || format!("{} {}", program.display(), args.join(" "));
        let out = c.output().map_err(|source| MeshError::Spawn { program: shown(), source })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(MeshError::Failed {
                command: shown(),
                detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            })
        }
    }

    fn ip(&self, args: &[&str]) -> Result<String, MeshError> {
        self.run(&self.ip, args)
    }

    fn wg(&self, args: &[&str]) -> Result<String, MeshError> {
        self.run(&self.wg, args)
    }

    fn link(&self, name: &str) -> Result<Option<Link>, MeshError> {
        match self.ip(&["-j", "-d", "link", "show", "dev", name]) {
            Ok(json) => {
                let mut links: Vec<Link> = serde_json::from_str(&json).map_err(|e| MeshError::Unparsable {
                    command: format!("ip -j -d link show dev {name}"),
                    detail: e.to_string(),
                })?;
                Ok(links.pop())
            }
            Err(MeshError::Failed { detail, .. }) if detail.contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn dump(&self, name: &str) -> Result<Current, MeshError> {
        let text = self.wg(&["show", name, "dump"])?;
        Current::parse_dump(&text)
            .map_err(|detail| MeshError::Unparsable { command: format!("wg show {name} dump"), detail })
    }

    fn routes(&self, name: &str) -> Result<std::collections::BTreeSet<IpNet>, MeshError> {
        let mut all = std::collections::BTreeSet::new();
        for family in ["-4", "-6"] {
            let json = self.ip(&[family, "-j", "route", "show", "dev", name, "proto", "static"])?;
            all.extend(Current::parse_routes(&json).map_err(|detail| MeshError::Unparsable {
                command: format!("ip {family} -j route show dev {name} proto static"),
                detail,
            })?);
        }
        Ok(all)
    }

    /// Start a handshake with each of these (new) peers now rather than at the first keepalive:
    /// one empty datagram into the tunnel to the peer's overlay address (`<its /64>::1`, the
    /// discard port). WireGuard initiates a handshake for a peer it has data for and no session
    /// with, and a peer still holding a session with this device's previous run (a boringtun
    /// that died) takes the new one. Failures are ignored: the keepalive does it within 25 s.
    fn nudge(&self, peers: &[&Peer]) {
        let targets: Vec<std::net::SocketAddr> = peers
            .iter()
            .filter_map(|p| {
                p.allowed_ips.iter().find_map(|n| match n {
                    IpNet::V6(n) => {
                        let mut seg = n.network().segments();
                        seg[7] = 1;
                        Some(std::net::SocketAddr::new(std::net::Ipv6Addr::from(seg).into(), 9))
                    }
                    IpNet::V4(_) => None,
                })
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let netns = self.netns.clone();
        let send = move || -> std::io::Result<()> {
            if let Some(ns) = &netns {
                let file = std::fs::File::open(Path::new("/run/netns").join(ns))?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&file),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
            }
            let socket = std::net::UdpSocket::bind("[::]:0")?;
            for t in &targets {
                let _ = socket.send_to(&[], t);
            }
            Ok(())
        };
        // Entering a namespace moves the calling thread only: a thread of its own, which ends.
        let sent = if self.netns.is_some() {
            std::thread::spawn(send).join().unwrap_or_else(|_| Err(std::io::Error::other("the thread panicked")))
        } else {
            send()
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "no early handshake; the keepalive will start it");
        }
    }

    /// Make the interface: the kernel's if it has WireGuard, else a boringtun child.
    fn create(&self, dev: &mut Device, name: &str) -> Result<(), MeshError> {
        dev.key_set = None;
        dev.endpoints.clear();
        let kernel = match self.ip(&["link", "add", "dev", name, "type", "wireguard"]) {
            Ok(_) => {
                dev.backend = Some(Backend::Kernel);
                return Ok(());
            }
            Err(MeshError::Failed { detail, .. }) => detail,
            Err(e) => return Err(e),
        };
        let Some(bin) = self.boringtun.clone() else { return Err(no_boringtun(&kernel)) };
        let mut c = self.command(&bin);
        // In the foreground it is our child and we supervise it. It keeps root: its way of
        // dropping privileges asks `getlogin()`, which a service does not have.
        c.args(["--foreground", "--disable-drop-privileges", name]);
        match &self.log {
            Some(path) => {
                let file = OpenOptions::new().create(true).append(true).open(path).map_err(|source| {
                    MeshError::Spawn { program: format!("boringtun-cli (its log {})", path.display()), source }
                })?;
                let err =
                    file.try_clone().map_err(|source| MeshError::Spawn { program: "boringtun-cli".into(), source })?;
                c.stdout(file).stderr(err);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let mut child = c.spawn().map_err(|source| MeshError::Spawn { program: bin.display().to_string(), source })?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let output = self.log.as_deref().map(tail).unwrap_or_else(|| "(no log)".into());
                return Err(MeshError::DeviceExited { interface: name.into(), status: status.to_string(), output });
            }
            if self.link(name)?.is_some() && self.dump(name).is_ok() {
                break;
            }
            if start.elapsed() > READY_TIMEOUT {
                stop(&mut child);
                return Err(MeshError::NotReady { interface: name.into(), secs: READY_TIMEOUT.as_secs() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(interface = name, pid = child.id(), "the mesh runs on boringtun (no WireGuard in this kernel)");
        dev.backend = Some(Backend::Boringtun);
        dev.child = Some(child);
        Ok(())
    }
}

impl Wireguard for WgTools {
    fn ensure(&self, iface: &Interface) -> Result<Ensured, MeshError> {
        let name = iface.name.as_str();
        check_name(name)?;
        let mut dev = self.lock();
        // Supervision: a device that died is made again (and set again by the caller).
        if let Some(child) = dev.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                tracing::warn!(interface = name, %status, "boringtun exited; starting it again");
                dev.child = None;
            }
        }
        let mut ensured = Ensured::Unchanged;
        let existing = self.link(name)?;
        let kind = existing.as_ref().and_then(|l| l.linkinfo.as_ref()?.info_kind.clone());
        match (&existing, kind.as_deref()) {
            (None, _) => {
                self.create(&mut dev, name)?;
                ensured = Ensured::Created;
            }
            (Some(_), Some("wireguard")) => dev.backend = Some(Backend::Kernel),
            (Some(_), _) if dev.child.is_some() => {}
            (Some(_), _) => {
                // Not ours: an earlier process's boringtun still serving it is adopted; anything
                // else under our name (a dead device's leftover) is replaced.
                if self.dump(name).is_ok() {
                    tracing::info!(interface = name, "adopting the running userspace WireGuard device");
                    dev.backend = Some(Backend::Boringtun);
                } else {
                    self.ip(&["link", "del", "dev", name])?;
                    self.create(&mut dev, name)?;
                    ensured = Ensured::Created;
                }
            }
        }
        let reconfigured = |e: &mut Ensured| {
            if *e == Ensured::Unchanged {
                *e = Ensured::Reconfigured;
            }
        };
        let key = std::fs::read_to_string(&iface.private_key)
            .map_err(|source| MeshError::KeyFile { path: iface.private_key.clone(), source })?;
        let key = key.trim();
        let current = self.dump(name)?;
        // The kernel shows its key; boringtun shows none, so what this value set is compared.
        let key_differs = match current.private_key.as_deref() {
            Some(held) => held != key,
            None => dev.key_set.as_deref() != Some(key),
        };
        if key_differs || current.listen_port != iface.listen_port {
            let port = iface.listen_port.to_string();
            let key_path = iface.private_key.to_string_lossy();
            self.wg(&["set", name, "private-key", &key_path, "listen-port", &port])?;
            dev.key_set = Some(key.to_owned());
            reconfigured(&mut ensured);
        }
        drop(dev);
        let link = self.link(name)?.ok_or_else(|| MeshError::NotReady { interface: name.into(), secs: 0 })?;
        if link.mtu != u32::from(MTU) || !link.flags.iter().any(|f| f == "UP") {
            self.ip(&["link", "set", "dev", name, "mtu", &MTU.to_string(), "up"])?;
            reconfigured(&mut ensured);
        }
        if let Some(address) = iface.address {
            let json = self.ip(&["-6", "-j", "addr", "show", "dev", name])?;
            let addrs: Vec<Addr> = serde_json::from_str(&json).map_err(|e| MeshError::Unparsable {
                command: format!("ip -6 -j addr show dev {name}"),
                detail: e.to_string(),
            })?;
            let has = addrs
                .iter()
                .flat_map(|a| &a.addr_info)
                .any(|a| a.local.parse() == Ok(address.addr()) && a.prefixlen == address.prefix_len());
            if !has {
                // `nodad`: the address is the node's own by allocation; no wait before it is usable.
                self.ip(&["-6", "addr", "replace", &address.to_string(), "dev", name, "nodad"])?;
                reconfigured(&mut ensured);
            }
        }
        Ok(ensured)
    }

    fn set_peers(&self, iface: &Interface, peers: &[Peer]) -> Result<Changes, MeshError> {
        let name = iface.name.as_str();
        let mut current = self.dump(name)?;
        current.routes = self.routes(name)?;
        let mut dev = self.lock();
        current.configured = dev.endpoints.clone();
        let changes = plan(&current, peers);
        for r in &changes.routes_removed {
            let dst = r.to_string();
            self.ip(&["route", "del", &dst, "dev", name, "proto", "static"])?;
        }
        for c in &changes.peers {
            match c {
                PeerChange::Remove(key) => {
                    self.wg(&["set", name, "peer", key, "remove"])?;
                    dev.endpoints.remove(key);
                }
                PeerChange::Add(p) | PeerChange::Update(p) => {
                    let endpoint = p.endpoint.to_string();
                    let ips = p.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                    let keepalive = KEEPALIVE_SECS.to_string();
                    self.wg(&[
                        "set",
                        name,
                        "peer",
                        &p.public_key,
                        "endpoint",
                        &endpoint,
                        "persistent-keepalive",
                        &keepalive,
                        "allowed-ips",
                        &ips,
                    ])?;
                    dev.endpoints.insert(p.public_key.clone(), p.endpoint);
                }
            }
        }
        drop(dev);
        for r in &changes.routes_added {
            let dst = r.to_string();
            self.ip(&["route", "replace", &dst, "dev", name, "proto", "static"])?;
        }
        let added: Vec<&Peer> =
            changes.peers.iter().filter_map(|c| if let PeerChange::Add(p) = c { Some(p) } else { None }).collect();
        self.nudge(&added);
        Ok(changes)
    }

    fn remove(&self, iface: &Interface) -> Result<(), MeshError> {
        let name = iface.name.as_str();
        check_name(name)?;
        let mut dev = self.lock();
        if let Some(mut child) = dev.child.take() {
            stop(&mut child);
        }
        dev.backend = None;
        drop(dev);
        // The kernel's interface, or an adopted device's: deleting the link ends that device too.
        match self.ip(&["link", "del", "dev", name]) {
            Ok(_) => Ok(()),
            Err(MeshError::Failed { detail, .. }) if detail.contains("Cannot find device") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for WgTools {
    /// A device this value started does not outlive it unsupervised: dropping it stops the
    /// device (and the interface goes with it). [`Wireguard::remove`] is the orderly way.
    fn drop(&mut self) {
        if let Some(mut child) = self.lock().child.take() {
            stop(&mut child);
        }
    }
}

/// SIGTERM (boringtun removes its interface and socket), then SIGKILL after 2 s.
fn stop(child: &mut Child) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(child), rustix::process::Signal::TERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn no_boringtun(kernel: &str) -> MeshError {
    MeshError::Missing {
        tool: "boringtun-cli",
        install: format!(
            "the kernel has no WireGuard (`ip link add type wireguard`: {kernel}); install the userspace device: \
             `cargo install boringtun-cli --locked --version {BORINGTUN_VERSION}` (on PATH, or set {BORINGTUN_ENV} \
             to it)"
        ),
    }
}

/// The last lines of a log, for an error.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = lines[lines.len().saturating_sub(5)..].join(" | ");
    if last.is_empty() {
        format!("nothing in {}", path.display())
    } else {
        last
    }
}

/// A Linux interface name vt accepts: 1 to 15 of letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), MeshError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(MeshError::InterfaceName(name.to_owned()))
    }
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}
