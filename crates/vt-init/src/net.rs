//! The guest's network: loopback always; the instance's interface when the host sends a
//! [`Network`]. Configured with the classic ioctls (no netlink, no `ip` in the image needed):
//! interface flags and MTU through `SIOCSIF*`, addresses through `SIOCSIFADDR` (IPv6 takes an
//! `in6_ifreq`), default routes through `SIOCADDRT` (IPv6 takes an `in6_rtmsg`).
//!
//! Duplicate address detection, router solicitations and SLAAC are switched off on the
//! interface before it goes up: the host assigned the addresses, nothing else is on the link,
//! and DAD alone would hold a new address back for a second.

use std::ffi::c_char;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use vt_guest_proto::Network;

use crate::{errno, Result};

/// How long the interface may take to appear after its driver is loaded.
const LINK_WAIT: Duration = Duration::from_secs(5);

/// `struct ifreq` with the one union member each call uses (40 bytes on x86_64).
#[repr(C)]
struct IfReq<T: Copy> {
    name: [c_char; libc::IFNAMSIZ],
    value: IfrValue<T>,
}

/// The `ifr_ifru` union: 24 bytes whatever member is used.
#[repr(C)]
union IfrValue<T: Copy> {
    value: T,
    _size: [u64; 3],
}

impl<T: Copy> IfReq<T> {
    fn new(ifname: &str, value: T) -> Self {
        let mut name = [0 as c_char; libc::IFNAMSIZ];
        for (d, s) in name.iter_mut().zip(ifname.bytes().take(libc::IFNAMSIZ - 1)) {
            *d = s as c_char;
        }
        let mut v = IfrValue { _size: [0; 3] };
        v.value = value;
        IfReq { name, value: v }
    }
    fn get(&self) -> T {
        // Every constructor writes `value`; the kernel writes the same member back.
        unsafe { self.value.value }
    }
    fn set(&mut self, value: T) {
        self.value.value = value;
    }
}

/// The kernel's `struct in6_rtmsg` (libc's has private fields).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// The kernel's `struct rtentry` (include/uapi/linux/route.h).
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: libc::sockaddr_in,
    gateway: libc::sockaddr_in,
    genmask: libc::sockaddr_in,
    flags: libc::c_ushort,
    pad2: libc::c_short,
    pad3: libc::c_ulong,
    pad4: *mut libc::c_void,
    metric: libc::c_short,
    dev: *mut c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: libc::c_ushort,
}

fn socket(family: libc::c_int) -> Result<OwnedFd> {
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket(family {family}): {}", errno()));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T, what: &str) -> Result<()> {
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) } != 0 {
        return Err(format!("{what}: {}", errno()));
    }
    Ok(())
}

fn set_link(sock: &OwnedFd, ifname: &str, up: bool) -> Result<()> {
    let mut req = IfReq::new(ifname, 0 as libc::c_short);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req, &format!("get flags of {ifname}"))?;
    let flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    req.set(if up { req.get() | flags } else { req.get() & !flags });
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req, &format!("bring {ifname} {}", if up { "up" } else { "down" }))
}

/// Bring `ifname` up or down.
pub fn link(ifname: &str, up: bool) -> Result<()> {
    set_link(&socket(libc::AF_INET)?, ifname, up)
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) },
        sin_zero: [0; 8],
    }
}

fn in6(a: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr { s6_addr: a.octets() }
}

/// Loopback up (the kernel adds 127.0.0.1/8 and ::1 itself).
pub fn loopback() -> Result<()> {
    link("lo", true)
}

/// The first interface that is not loopback, waiting for its driver's probe.
fn find_interface() -> Result<String> {
    let start = Instant::now();
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map_err(|e| format!("read /sys/class/net: {e}"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        if let Some(n) = names.into_iter().next() {
            return Ok(n);
        }
        if start.elapsed() > LINK_WAIT {
            return Err(format!("no network interface appeared within {LINK_WAIT:?} (is virtio_net loaded?)"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn sysctl(path: &str, value: &str) {
    // Absent when the kernel has no IPv6: the address calls then fail with a clear error.
    let _ = std::fs::write(Path::new("/proc/sys/net").join(path), value);
}

/// Configure the instance's interface; returns its name.
pub fn configure(n: &Network) -> Result<String> {
    let ifname = find_interface()?;
    for key in ["accept_dad", "accept_ra", "autoconf", "dad_transmits", "router_solicitations"] {
        sysctl(&format!("ipv6/conf/{ifname}/{key}"), "0");
    }
    let s4 = socket(libc::AF_INET)?;
    if n.mtu != 0 {
        let mut req = IfReq::new(&ifname, libc::c_int::from(n.mtu));
        ioctl(&s4, libc::SIOCSIFMTU, &mut req, &format!("set MTU {} on {ifname}", n.mtu))?;
    }
    set_link(&s4, &ifname, true)?;
    let index = {
        let mut req = IfReq::new(&ifname, 0 as libc::c_int);
        ioctl(&s4, libc::SIOCGIFINDEX, &mut req, &format!("index of {ifname}"))?;
        req.get()
    };
    let s6 = || socket(libc::AF_INET6);
    for &(ip, len) in &n.addresses {
        match ip {
            IpAddr::V6(a) => {
                let mut req =
                    libc::in6_ifreq { ifr6_addr: in6(a), ifr6_prefixlen: u32::from(len), ifr6_ifindex: index };
                ioctl(&s6()?, libc::SIOCSIFADDR, &mut req, &format!("add {a}/{len} to {ifname}"))?;
            }
            IpAddr::V4(a) => {
                let mut req = IfReq::new(&ifname, sockaddr_in(a));
                ioctl(&s4, libc::SIOCSIFADDR, &mut req, &format!("add {a} to {ifname}"))?;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
                let mut req = IfReq::new(&ifname, sockaddr_in(Ipv4Addr::from(mask)));
                ioctl(&s4, libc::SIOCSIFNETMASK, &mut req, &format!("set /{len} on {ifname}"))?;
            }
        }
    }
    let mut dev = std::ffi::CString::new(ifname.clone()).unwrap_or_default().into_bytes_with_nul();
    for &gw in &n.gateways {
        match gw {
            IpAddr::V6(g) => {
                let mut rt = In6Rtmsg {
                    dst: in6(Ipv6Addr::UNSPECIFIED),
                    src: in6(Ipv6Addr::UNSPECIFIED),
                    gateway: in6(g),
                    kind: 0,
                    dst_len: 0,
                    src_len: 0,
                    metric: 1,
                    info: 0,
                    flags: u32::from(libc::RTF_UP | libc::RTF_GATEWAY),
                    ifindex: index,
                };
                ioctl(&s6()?, libc::SIOCADDRT, &mut rt, &format!("default route via {g} dev {ifname}"))?;
            }
            IpAddr::V4(g) => {
                let mut rt = RtEntry {
                    pad1: 0,
                    dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
                    gateway: sockaddr_in(g),
                    genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
                    flags: libc::RTF_UP | libc::RTF_GATEWAY,
                    pad2: 0,
                    pad3: 0,
                    pad4: std::ptr::null_mut(),
                    metric: 0,
                    dev: dev.as_mut_ptr().cast(),
                    mtu: 0,
                    window: 0,
                    irtt: 0,
                };
                ioctl(&s4, libc::SIOCADDRT, &mut rt, &format!("default route via {g} dev {ifname}"))?;
            }
        }
    }
    Ok(ifname)
}

/// `/etc/hosts` naming this instance, and `/etc/resolv.conf` when name servers were given.
/// Written into the overlay root (the image's files stay untouched below it).
pub fn write_etc(hostname: &str, n: Option<&Network>) -> Result<()> {
    let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !hostname.is_empty() {
        for (ip, _) in n.map(|n| n.addresses.as_slice()).unwrap_or_default() {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        if n.is_none_or(|n| n.addresses.is_empty()) {
            hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
        }
    }
    let _ = std::fs::create_dir_all("/etc");
    // An image may ship /etc/hosts as a symlink to somewhere read-only: replace it.
    let _ = std::fs::remove_file("/etc/hosts");
    std::fs::write("/etc/hosts", hosts).map_err(|e| format!("write /etc/hosts: {e}"))?;
    if let Some(n) = n.filter(|n| !n.dns.is_empty()) {
        let text: String = n.dns.iter().map(|ip| format!("nameserver {ip}\n")).collect();
        let _ = std::fs::remove_file("/etc/resolv.conf");
        std::fs::write("/etc/resolv.conf", text).map_err(|e| format!("write /etc/resolv.conf: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_struct_sizes() {
        // x86_64 sizes of the kernel's structs: a mismatch would corrupt the ioctl.
        assert_eq!(size_of::<IfReq<libc::c_short>>(), 40);
        assert_eq!(size_of::<IfReq<libc::sockaddr_in>>(), 40);
        assert_eq!(size_of::<libc::ifreq>(), 40);
        assert_eq!(size_of::<In6Rtmsg>(), 80);
        assert_eq!(size_of::<RtEntry>(), 120);
    }

    #[test]
    fn names_are_cut_to_ifnamsiz() {
        let r = IfReq::new("a-very-long-interface-name", 0u8);
        assert_eq!(r.name[libc::IFNAMSIZ - 1], 0);
        assert_eq!(r.name[0], b'a' as c_char);
    }
}
