//! One tap device per instance, IPv6 first.
//!
//! Addressing (docs/network.md): the control plane gives each node a /64 of the cluster's
//! ULA /48; an instance's address is that /64 plus an interface id derived from its instance
//! id, so the node, the control plane and the ingress all agree on it without a lease table.
//! The guest holds the address as a /128 with a default route via `fe80::1`; the host side of
//! the tap holds `fe80::1/64` and a /128 route to the guest. With egress, the instance also
//! gets a private IPv4 from its node's range (leased by the agent) with the range's `.1` as
//! its gateway. The node's own addresses in both (`<subnet>::1`, the range's `.1`) are on
//! every tap: the guest's resolver answers there. Nothing else is on the link, so each
//! instance is its own L2 segment: what it reaches beyond the host is the node's ruleset's
//! decision (vt-firewall), which exists before the tap does.
//!
//! The tap is created (and replaced, when a previous run left it behind) with iproute2's `ip`
//! before the VMM starts and removed after it ends. This needs `CAP_NET_ADMIN`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use tokio::process::Command;

/// The host's address on every tap, the guest's IPv6 gateway.
pub const HOST_LINK_ADDR: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The host side of one instance's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Tap device name (at most 15 bytes).
    pub tap: String,
    /// The instance's address.
    pub address: Ipv6Addr,
    /// 0: the kernel's default (1500).
    pub mtu: u16,
    /// The node's address in its /64 (`<subnet>::1`), put on the tap: the guest's resolver.
    pub gateway6: Option<Ipv6Addr>,
    /// The instance's private IPv4 for egress, with its gateway (the node's range's `.1`,
    /// put on the tap) and the range's prefix length.
    pub ipv4: Option<Ipv4Net>,
    /// Name servers the guest is given (`/etc/resolv.conf`).
    pub dns: Vec<IpAddr>,
}

/// An instance's IPv4 on its tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("subnet `{0}` is not an IPv6 /64 (like `fd12:3456:789a:1::/64`)")]
    BadSubnet(String),
    #[error("`{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
}

/// FNV-1a, 64 bits: a stable spread of instance ids (not a security boundary).
pub(crate) fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl NetworkSpec {
    /// The network of instance `id` on a node whose subnet is `subnet` (`<prefix>::/64`).
    pub fn for_instance(id: &str, subnet: &str) -> Result<Self, NetError> {
        let bad = || NetError::BadSubnet(subnet.to_owned());
        let prefix: Ipv6Addr = subnet.strip_suffix("/64").ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let h = fnv64(id);
        // Interface ids 0..=1 are the subnet-router anycast and the customary gateway.
        let iid = if h < 2 { h + 2 } else { h };
        let net = u128::from(prefix) & !u128::from(u64::MAX);
        Ok(NetworkSpec {
            tap: format!("vt{:012x}", h >> 16),
            address: Ipv6Addr::from(net | u128::from(iid)),
            mtu: 0,
            gateway6: None,
            ipv4: None,
            dns: vec![],
        })
    }

    /// What guest init configures: the address as a /128 and the default route via the host;
    /// with egress, the IPv4 address in its range and the default route via the range's `.1`.
    pub fn guest_config(&self) -> vt_guest_proto::Network {
        let mut addresses = vec![(IpAddr::V6(self.address), 128)];
        let mut gateways = vec![IpAddr::V6(HOST_LINK_ADDR)];
        if let Some(v4) = self.ipv4 {
            addresses.push((IpAddr::V4(v4.address), v4.prefix_len));
            gateways.push(IpAddr::V4(v4.gateway));
        }
        vt_guest_proto::Network { addresses, gateways, mtu: self.mtu, dns: self.dns.clone() }
    }

    /// A locally administered MAC, stable per tap.
    pub fn mac(&self) -> String {
        let h = fnv64(&self.tap).to_be_bytes();
        format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2], h[3])
    }

    /// The host end's MAC, also stable per tap: a VM restored from a snapshot finds `fe80::1`
    /// at the address its neighbour cache holds (a new random one would be unreachable
    /// until the guest probes again).
    pub fn host_mac(&self) -> String {
        let h = fnv64(&self.tap).to_be_bytes();
        format!("52:56:{:02x}:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2], h[3])
    }

    /// Create the tap (replacing a leftover of the same name), give it `fe80::1`, route the
    /// instance's address to it.
    pub async fn create_tap(&self) -> Result<(), NetError> {
        delete_tap(&self.tap).await?;
        ip(&["tuntap", "add", "dev", &self.tap, "mode", "tap"]).await?;
        self.configure_host_side().await
    }

    /// The instance's network for a VMM in network namespace `netns` (Firecracker's jailer
    /// `--netns`), run as `owner` (uid, gid): a namespace of its own, made afresh (a leftover
    /// of the same name is deleted first), holding a tap of the same name as
    /// [`NetworkSpec::tap`] that `owner` may open (the VMM has no `CAP_NET_ADMIN`), and
    /// `veth0`, whose peer on the host is named [`NetworkSpec::tap`] and is configured
    /// exactly as [`NetworkSpec::create_tap`] configures a tap. Inside the namespace every
    /// frame is passed from `veth0` to the tap and back by `tc` (ingress → mirred redirect),
    /// and the namespace's own IPv6 is off: it is a wire, the guest and the host share one
    /// L2 segment as with a plain tap. So the host sees one `vt<12 hex>` interface per
    /// instance with the same addresses and routes as before, and the node's nftables rules
    /// (which match that name) apply unchanged.
    pub async fn create_in_netns(&self, netns: &str, owner: (u32, u32)) -> Result<(), NetError> {
        delete_tap(&self.tap).await?;
        delete_netns(netns).await?;
        create_netns(netns).await?;
        let t = self.tap.as_str();
        ip(&["link", "add", t, "type", "veth", "peer", "name", NETNS_VETH, "netns", netns]).await?;
        let (uid, gid) = (owner.0.to_string(), owner.1.to_string());
        ip(&["-n", netns, "tuntap", "add", "dev", t, "mode", "tap", "user", &uid, "group", &gid]).await?;
        let mtu = self.mtu.to_string();
        for dev in [NETNS_VETH, t] {
            if self.mtu != 0 {
                ip(&["-n", netns, "link", "set", "dev", dev, "mtu", &mtu]).await?;
            }
            ip(&["-n", netns, "link", "set", "dev", dev, "up"]).await?;
        }
        for (from, to) in [(NETNS_VETH, t), (t, NETNS_VETH)] {
            tc(&["-n", netns, "qdisc", "add", "dev", from, "ingress"]).await?;
            tc(&[
                "-n", netns, "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match", "u8",
                "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ])
            .await?;
        }
        self.configure_host_side().await
    }

    /// The host side of the instance's link (a tap, or the host end of the veth pair):
    /// no DAD, no router advertisements, MTU, up, `fe80::1`, the routes to the instance.
    async fn configure_host_side(&self) -> Result<(), NetError> {
        let t = self.tap.as_str();
        let addr = format!("{}/128", self.address);
        // Before the link goes up: no duplicate address detection on a point-to-point link.
        let _ = std::fs::write(PathBuf::from(format!("/proc/sys/net/ipv6/conf/{t}/accept_dad")), "0");
        let _ = std::fs::write(PathBuf::from(format!("/proc/sys/net/ipv6/conf/{t}/disable_ipv6")), "0");
        // The host never learns routes from a guest.
        let _ = std::fs::write(PathBuf::from(format!("/proc/sys/net/ipv6/conf/{t}/accept_ra")), "0");
        let mtu = self.mtu.to_string();
        if self.mtu != 0 {
            ip(&["link", "set", "dev", t, "mtu", &mtu]).await?;
        }
        ip(&["link", "set", "dev", t, "address", &self.host_mac()]).await?;
        ip(&["link", "set", "dev", t, "up"]).await?;
        ip(&["-6", "addr", "add", &format!("{HOST_LINK_ADDR}/64"), "dev", t, "nodad"]).await?;
        ip(&["-6", "route", "replace", &addr, "dev", t]).await?;
        if let Some(gw) = self.gateway6 {
            ip(&["-6", "addr", "add", &format!("{gw}/128"), "dev", t, "nodad"]).await?;
        }
        if let Some(v4) = self.ipv4 {
            ip(&["addr", "add", &format!("{}/32", v4.gateway), "dev", t]).await?;
            ip(&["route", "replace", &format!("{}/32", v4.address), "dev", t, "src", &v4.gateway.to_string()]).await?;
        }
        Ok(())
    }
}

/// The name of the veth end inside an instance's network namespace (its peer on the host is
/// named after the tap).
pub const NETNS_VETH: &str = "veth0";

/// Create network namespace `name` in which nothing speaks IPv6 of its own (router
/// solicitations, DAD): a VMM's namespace is a wire between its tap and the host.
pub async fn create_netns(name: &str) -> Result<(), NetError> {
    ip(&["netns", "add", name]).await?;
    let sysctl = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"];
    let mut args = vec!["netns", "exec", name, "sysctl", "-q", "-w"];
    args.extend(sysctl);
    ip(&args).await
}

/// Delete network namespace `name` (`/var/run/netns/<name>`) when it exists. The namespace
/// itself (with its tap and veth, whose host end goes with it) ends when no process is left
/// in it: at once, or when the VMM that joined it exits.
pub async fn delete_netns(name: &str) -> Result<(), NetError> {
    if !netns_path(name).exists() {
        return Ok(());
    }
    ip(&["netns", "del", name]).await
}

/// `/var/run/netns/<name>`: what `ip netns add` creates and the jailer's `--netns` takes.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// Deletes the network namespace it names when dropped (as [`TapGuard`] does for a tap).
#[derive(Debug)]
pub struct NetnsGuard(pub String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if !netns_path(&self.0).exists() {
            return;
        }
        let done = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !matches!(done, Ok(s) if s.success()) {
            tracing::warn!(netns = %self.0, "network namespace not removed; the next start of this instance replaces it");
        }
    }
}

/// Removes the tap it names when dropped: at the end of the task that drives a VM, and also
/// when that task is aborted (the VM is killed with it: `kill_on_drop`). A VM that outlives
/// its agent process (SIGKILL) keeps its tap: no destructor runs, and the next agent adopts
/// both (and removes the tap when that VM ends).
#[derive(Debug)]
pub struct TapGuard(pub String);

impl Drop for TapGuard {
    fn drop(&mut self) {
        if !std::path::Path::new("/sys/class/net").join(&self.0).exists() {
            return;
        }
        let done = std::process::Command::new("ip")
            .args(["link", "del", "dev", &self.0])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !matches!(done, Ok(s) if s.success()) {
            tracing::warn!(tap = %self.0, "tap not removed; the next start of this instance replaces it");
        }
    }
}

/// Remove a tap (and with it its address and route); nothing to do when it does not exist.
pub async fn delete_tap(name: &str) -> Result<(), NetError> {
    if !std::path::Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    ip(&["link", "del", "dev", name]).await
}

async fn ip(args: &[&str]) -> Result<(), NetError> {
    run("ip", args).await
}

/// iproute2's `tc`: the redirects inside a namespace.
async fn tc(args: &[&str]) -> Result<(), NetError> {
    run("tc", args).await
}

async fn run(prog: &str, args: &[&str]) -> Result<(), NetError> {
    let cmd = format!("{prog} {}", args.join(" "));
    let out =
        Command::new(prog).args(args).stdin(std::process::Stdio::null()).output().await.map_err(|e| {
            NetError::Command { cmd: cmd.clone(), detail: format!("cannot run {prog} (iproute2): {e}") }
        })?;
    if !out.status.success() {
        let detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let hint = if detail.contains("Operation not permitted") {
            " (creating tap devices needs root or CAP_NET_ADMIN)"
        } else {
            ""
        };
        return Err(NetError::Command { cmd, detail: format!("{detail}{hint}") });
    }
    Ok(())
}

/// Whether this process can create tap devices: root (or CAP_NET_ADMIN, approximated by
/// uid 0), `/dev/net/tun` and `ip` present. A node without them runs instances without a
/// network.
pub fn taps_available() -> Result<(), String> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned));
    if uid.as_deref() != Some("0") {
        return Err("tap devices need root (CAP_NET_ADMIN)".into());
    }
    if crate::find_bin(std::path::Path::new("ip")).is_none() {
        return Err("`ip` (iproute2) is not installed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_in_the_subnet_and_stable() {
        let a = NetworkSpec::for_instance("inst_01jd8x6k3v9q4m2t7r5w0y1zcg", "fd12:3456:789a:7::/64").unwrap();
        let b = NetworkSpec::for_instance("inst_01jd8x6k3v9q4m2t7r5w0y1zcg", "fd12:3456:789a:7::/64").unwrap();
        let c = NetworkSpec::for_instance("inst_01jd8x6k3v9q4m2t7r5w0y1zch", "fd12:3456:789a:7::/64").unwrap();
        assert_eq!(a, b);
        assert_ne!(a.address, c.address);
        assert_ne!(a.tap, c.tap);
        assert_eq!(&a.address.segments()[..4], &[0xfd12, 0x3456, 0x789a, 7]);
        assert!(a.tap.len() <= 15 && a.tap.starts_with("vt"), "{}", a.tap);
        assert_eq!(a.mac().len(), 17);
        assert!(a.mac().starts_with("52:54:"));
        let g = a.guest_config();
        assert_eq!(g.addresses, vec![(IpAddr::V6(a.address), 128)]);
        assert_eq!(g.gateways, vec![IpAddr::V6(HOST_LINK_ADDR)]);
    }

    #[test]
    fn with_egress_the_guest_gets_ipv4_and_the_resolver() {
        let mut a = NetworkSpec::for_instance("inst_x", "fd12:3456:789a:7::/64").unwrap();
        let gw4 = Ipv4Addr::new(100, 64, 3, 1);
        a.ipv4 = Some(Ipv4Net { address: Ipv4Addr::new(100, 64, 3, 9), gateway: gw4, prefix_len: 24 });
        a.gateway6 = Some("fd12:3456:789a:7::1".parse().unwrap());
        a.dns = vec![IpAddr::V6("fd12:3456:789a:7::1".parse().unwrap()), IpAddr::V4(gw4)];
        a.mtu = 1420;
        let g = a.guest_config();
        assert_eq!(g.addresses[1], (IpAddr::V4(Ipv4Addr::new(100, 64, 3, 9)), 24));
        assert_eq!(g.gateways, vec![IpAddr::V6(HOST_LINK_ADDR), IpAddr::V4(gw4)]);
        assert_eq!((g.mtu, g.dns.len()), (1420, 2));
    }

    /// Needs root: creates a real tap. The guard removes it when dropped.
    #[tokio::test]
    async fn a_tap_goes_with_its_guard() {
        if let Err(why) = taps_available() {
            eprintln!("SKIPPED: tap guard test: {why}");
            return;
        }
        let n =
            NetworkSpec::for_instance(&format!("guard-test-{}", std::process::id()), "fd7a:115c:a1e0:8::/64").unwrap();
        n.create_tap().await.unwrap();
        let dev = std::path::Path::new("/sys/class/net").join(&n.tap);
        assert!(dev.exists());
        drop(TapGuard(n.tap.clone()));
        assert!(!dev.exists(), "{} removed", n.tap);
        drop(TapGuard(n.tap.clone())); // nothing left: a no-op
    }

    #[test]
    fn a_bad_subnet_is_named() {
        for bad in ["", "fd00::/48", "10.0.0.0/64", "fd00::"] {
            let e = NetworkSpec::for_instance("i", bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
