//! Who asks and what names mean, pure: a snapshot the node agent builds from its view of
//! the cluster (its instances, and the private-network peers of their orgs) and swaps in
//! whole at every change.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// An instance that may ask: one of this node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its org (the org id): it sees its org's names only.
    pub org: String,
    /// An isolated instance (a workspace) sees no private name at all.
    pub isolated: bool,
}

/// A live private-network instance (`vt_api::Peer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub org: String,
    pub instance_id: String,
    pub app: String,
    pub env: String,
    pub process: String,
    pub address: Ipv6Addr,
    /// Names of processes resolve to ready instances only; an instance id resolves while it is live.
    pub ready: bool,
}

/// What a private name resolves to for one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name is not the caller's (or nothing ready answers to it): NXDOMAIN.
    NoSuchName,
    /// These addresses (AAAA only: the private network is IPv6).
    Addresses(Vec<Ipv6Addr>),
}

/// The snapshot the resolver answers from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    callers: HashMap<IpAddr, Caller>,
    entries: Vec<Entry>,
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack socket's peers).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Directory {
    /// `callers`: each local instance's addresses (IPv6 and IPv4) with its org; `entries`:
    /// the private network of those orgs.
    pub fn new(callers: impl IntoIterator<Item = (IpAddr, Caller)>, mut entries: Vec<Entry>) -> Self {
        entries.sort_by(|a, b| (&a.org, &a.instance_id).cmp(&(&b.org, &b.instance_id)));
        Directory { callers: callers.into_iter().map(|(ip, c)| (canonical(ip), c)).collect(), entries }
    }

    /// The caller at this source address; `None`: not one of this node's instances (refused).
    pub fn caller(&self, source: IpAddr) -> Option<&Caller> {
        self.callers.get(&canonical(source))
    }

    /// What `name` (lower case, without the `internal` label and the root:
    /// `["web", "prod", "shop"]` or `["inst_01..."]`) means to `caller`.
    pub fn resolve(&self, caller: &Caller, labels: &[&str]) -> Answer {
        if caller.isolated {
            return Answer::NoSuchName;
        }
        let mine = self.entries.iter().filter(|e| e.org == caller.org);
        let found: Vec<Ipv6Addr> = match labels {
            [process, env, app] => mine
                .filter(|e| e.ready && e.process == *process && e.env == *env && e.app == *app)
                .map(|e| e.address)
                .collect(),
            [id] => mine.filter(|e| e.instance_id == *id).map(|e| e.address).collect(),
            _ => vec![],
        };
        if found.is_empty() {
            Answer::NoSuchName
        } else {
            Answer::Addresses(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(org: &str, id: &str, process: &str, last: u16, ready: bool) -> Entry {
        Entry {
            org: org.into(),
            instance_id: id.into(),
            app: "shop".into(),
            env: "prod".into(),
            process: process.into(),
            address: Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, last),
            ready,
        }
    }

    #[test]
    fn names_resolve_within_the_callers_org_only() {
        let one = Caller { org: "org_1".into(), isolated: false };
        let two = Caller { org: "org_2".into(), isolated: false };
        let ws = Caller { org: "org_1".into(), isolated: true };
        let d = Directory::new(
            [("fd00::1:0:0:0:a".parse().unwrap(), one.clone()), ("::ffff:100.64.1.2".parse().unwrap(), one.clone())],
            vec![
                entry("org_1", "inst_b", "web", 0xb, true),
                entry("org_1", "inst_d", "web", 0xd, false),
                entry("org_1", "inst_e", "worker", 0xe, true),
                entry("org_2", "inst_c", "web", 0xc, true),
            ],
        );
        let b = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0xb);
        assert_eq!(d.resolve(&one, &["web", "prod", "shop"]), Answer::Addresses(vec![b]), "ready ones only");
        assert_eq!(
            d.resolve(&two, &["web", "prod", "shop"]),
            Answer::Addresses(vec![Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0xc)]),
            "the same name is another org's instance for org 2"
        );
        assert_eq!(d.resolve(&one, &["inst_d"]), Answer::Addresses(vec![Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 0xd)]));
        assert_eq!(d.resolve(&two, &["inst_b"]), Answer::NoSuchName, "another org's id");
        assert_eq!(d.resolve(&ws, &["web", "prod", "shop"]), Answer::NoSuchName, "isolated callers see nothing");
        assert_eq!(d.resolve(&one, &["web", "prod"]), Answer::NoSuchName);
        assert_eq!(d.caller("100.64.1.2".parse().unwrap()), Some(&one), "IPv4-mapped is the IPv4 address");
        assert_eq!(d.caller("fd00::1:0:0:0:c".parse().unwrap()), None);
    }
}
