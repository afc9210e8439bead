//! Authorization: who may do what to which resource, in one table.
//!
//! Every app-layer operation authorizes first, before it reads anything it
//! does not need to find the resource: [`crate::Ctx::authorize`] with an
//! [`Action`] on a [`Resource`]. The whole policy is [`check`]; nothing else
//! compares roles.
//!
//! Two answers deny ([`Denied`]):
//! - `Hidden`: the caller may not even know the resource exists (another
//!   org's app, an org's anything for a node). The API answers 404 exactly as
//!   for a resource that does not exist, so names do not leak across orgs.
//! - `Forbidden`: the caller sees the resource but its role does not allow the
//!   action (a viewer deploying, a node heartbeating as another node). 403,
//!   with a message that names the role needed.

use vt_events::TokenRole;
use vt_ids::{NodeId, OrgId, TokenId};

/// The role of a token inside its org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OrgRole {
    Viewer,
    Deployer,
    Owner,
}

impl OrgRole {
    pub fn of(role: TokenRole) -> Option<OrgRole> {
        match role {
            TokenRole::Owner => Some(OrgRole::Owner),
            TokenRole::Deployer => Some(OrgRole::Deployer),
            TokenRole::Viewer => Some(OrgRole::Viewer),
            TokenRole::Admin | TokenRole::Node | TokenRole::Enroll => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Viewer => "viewer",
            OrgRole::Deployer => "deployer",
            OrgRole::Owner => "owner",
        }
    }
}

/// Who is calling, decided once per request from its token. Closed: a new
/// kind of caller is a new variant, and [`check`] must say what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The operator: everything, in every org.
    Admin { token: TokenId },
    /// A token acting inside one org with one role.
    Member { token: TokenId, org: OrgId, role: OrgRole },
    /// One node's agent.
    Node { token: TokenId, node: NodeId },
    /// A host enrolling as a new node, once (`vt node enroll-token create`).
    Enroll { token: TokenId },
}

impl Caller {
    pub fn token(&self) -> TokenId {
        match *self {
            Caller::Admin { token }
            | Caller::Member { token, .. }
            | Caller::Node { token, .. }
            | Caller::Enroll { token } => token,
        }
    }

    /// The org whose resources this caller is confined to (`None`: admin and nodes).
    pub fn org(&self) -> Option<OrgId> {
        match *self {
            Caller::Member { org, .. } => Some(org),
            Caller::Admin { .. } | Caller::Node { .. } | Caller::Enroll { .. } => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin { .. })
    }

    /// True when this caller may see resources of `org` at all (the filter of lists).
    pub fn sees_org(&self, org: OrgId) -> bool {
        check(self, Action::Read, Resource::Org(org)).is_ok()
    }
}

/// What a caller wants to do. Each API operation maps to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read: lists, gets, describe, logs, events.
    Read,
    /// Change what runs: releases, deploys, scale, rollback, routes (and
    /// later secrets, volumes, exec, workspaces).
    Deploy,
    /// Shape the org: apps, envs, the org's tokens.
    Manage,
    /// The operator's: orgs, admin and node tokens, nodes, system repairs.
    Operate,
    /// A node agent's own work: register, heartbeat, follow its instances, report their status.
    Agent,
    /// Run a command in an instance (`vt exec`): its org's deployers and owners, and admins.
    /// Never a node, and never a viewer: a shell in an instance reads what it holds.
    Exec,
    /// Read an instance's secret values, to give them to it at boot: the node
    /// it is placed on only. No person reads a secret back, admins included.
    Unseal,
    /// Exchange an enrollment token for a new node's own token: that enrollment token only.
    Enroll,
    /// Serve the control plane the logs and exec sessions of a node's instances (its channel
    /// and streams, docs/nodes.md): that node's own token only, admins neither.
    Serve,
}

/// What an action is done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Cluster-wide things: the set of orgs, nodes, every route, the system endpoints.
    Cluster,
    /// An org and everything in it (apps, envs, releases, deploys, routes, its tokens).
    Org(OrgId),
    /// A node.
    Node(NodeId),
    /// An instance: of an org, placed on a node.
    Instance { org: OrgId, node: NodeId },
}

/// Why [`check`] said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Answer as if the resource did not exist (404).
    Hidden,
    /// The caller sees the resource but may not do this (403); says what is needed.
    Forbidden(String),
}

const NEEDS_ADMIN: &str = "this needs an admin token";

/// The policy. Admins may do everything; org members act inside their org
/// by role (viewer < deployer < owner) and see nothing of other orgs; a node
/// acts as itself on itself and its instances, reads cluster-wide listings,
/// and sees no org.
pub fn check(caller: &Caller, action: Action, resource: Resource) -> Result<(), Denied> {
    if action == Action::Unseal {
        return unseal(caller, resource);
    }
    if action == Action::Serve {
        return match (*caller, resource) {
            (Caller::Node { node, .. }, Resource::Node(of)) if node == of => Ok(()),
            (Caller::Node { node, .. }, _) => {
                Err(Denied::Forbidden(format!("this token belongs to node {node}; it serves only that node's channel")))
            }
            _ => Err(Denied::Forbidden(
                "only a node's own token opens its channel (`vt server --role agent --join` does)".into(),
            )),
        };
    }
    if action == Action::Enroll {
        return match (*caller, resource) {
            (Caller::Enroll { .. }, Resource::Cluster) => Ok(()),
            _ => Err(Denied::Forbidden(
                "enrolling a node takes an enrollment token: create one with `vt node enroll-token create`".into(),
            )),
        };
    }
    match (*caller, resource) {
        (Caller::Enroll { .. }, _) => Err(Denied::Forbidden(
            "an enrollment token only enrolls one node (`vt server --role agent --join URL --enroll-token TOKEN`)"
                .into(),
        )),
        (Caller::Admin { .. }, _) => Ok(()),

        (Caller::Member { org, role, .. }, Resource::Org(of) | Resource::Instance { org: of, .. }) => {
            if of != org {
                return Err(Denied::Hidden);
            }
            let needed = match action {
                Action::Read => OrgRole::Viewer,
                Action::Deploy | Action::Exec => OrgRole::Deployer,
                Action::Manage => OrgRole::Owner,
                Action::Operate => return Err(Denied::Forbidden(NEEDS_ADMIN.into())),
                Action::Agent | Action::Unseal | Action::Enroll | Action::Serve => {
                    return Err(Denied::Forbidden("only node agents do this".into()))
                }
            };
            if role >= needed {
                Ok(())
            } else {
                let roles =
                    if needed == OrgRole::Deployer { "the `deployer` or `owner` role" } else { "the `owner` role" };
                Err(Denied::Forbidden(format!("this needs {roles} in the org; this token is a `{}`", role.as_str())))
            }
        }
        (Caller::Member { .. }, Resource::Cluster | Resource::Node(_)) => Err(Denied::Forbidden(NEEDS_ADMIN.into())),

        (Caller::Node { node, .. }, Resource::Node(of) | Resource::Instance { node: of, .. }) => match action {
            Action::Read | Action::Agent if of == node => Ok(()),
            Action::Read | Action::Agent => Err(Denied::Forbidden(format!(
                "this token belongs to node {node}; it acts only for that node and the instances placed on it"
            ))),
            Action::Deploy
            | Action::Manage
            | Action::Operate
            | Action::Exec
            | Action::Unseal
            | Action::Enroll
            | Action::Serve => {
                Err(Denied::Forbidden("a node token only registers, heartbeats, follows and reports".into()))
            }
        },
        (Caller::Node { .. }, Resource::Org(_)) => Err(Denied::Hidden),
        (Caller::Node { .. }, Resource::Cluster) => match action {
            Action::Read => Ok(()),
            _ => Err(Denied::Forbidden(NEEDS_ADMIN.into())),
        },
    }
}

/// Secret values go to the node an instance is placed on, and to nobody else:
/// what the caller may not see stays hidden, everyone else is refused.
fn unseal(caller: &Caller, resource: Resource) -> Result<(), Denied> {
    if let Err(Denied::Hidden) = check(caller, Action::Read, resource) {
        return Err(Denied::Hidden);
    }
    match (*caller, resource) {
        (Caller::Node { node, .. }, Resource::Instance { node: of, .. }) if node == of => Ok(()),
        (_, Resource::Instance { .. }) => Err(Denied::Forbidden(
            "secret values are given only to the node the instance is placed on; nobody reads them back".into(),
        )),
        _ => Err(Denied::Forbidden("only an instance's secrets are unsealed, for its node".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table, spelled out: every caller kind × action × resource kind.
    #[test]
    fn the_policy_table() {
        let (a, b) = (OrgId::new(), OrgId::new());
        let (n1, n2) = (NodeId::new(), NodeId::new());
        let t = TokenId::new();
        let member = |role| Caller::Member { token: t, org: a, role };
        let callers = [
            ("admin", Caller::Admin { token: t }),
            ("owner", member(OrgRole::Owner)),
            ("deployer", member(OrgRole::Deployer)),
            ("viewer", member(OrgRole::Viewer)),
            ("node1", Caller::Node { token: t, node: n1 }),
            ("enroll", Caller::Enroll { token: t }),
        ];
        let resources = [
            ("cluster", Resource::Cluster),
            ("org a", Resource::Org(a)),
            ("org b", Resource::Org(b)),
            ("node1", Resource::Node(n1)),
            ("node2", Resource::Node(n2)),
            ("inst a@node1", Resource::Instance { org: a, node: n1 }),
            ("inst b@node2", Resource::Instance { org: b, node: n2 }),
        ];
        let actions = [
            Action::Read,
            Action::Deploy,
            Action::Manage,
            Action::Operate,
            Action::Agent,
            Action::Exec,
            Action::Unseal,
            Action::Enroll,
            Action::Serve,
        ];
        // One line per caller: per resource, the nine actions R D M O A X U E S as
        // `+` allowed, `-` forbidden, `.` hidden.
        let expected = [
            ("admin", "++++++--- ++++++--- ++++++--- ++++++--- ++++++--- ++++++--- ++++++---"),
            ("owner", "--------- +++--+--- .......-- --------- --------- +++--+--- .......--"),
            ("deployer", "--------- ++---+--- .......-- --------- --------- ++---+--- .......--"),
            ("viewer", "--------- +-------- .......-- --------- --------- +-------- .......--"),
            ("node1", "+-------- .......-- .......-- +---+---+ --------- +---+-+-- ---------"),
            ("enroll", "-------+- --------- --------- --------- --------- --------- ---------"),
        ];
        for ((name, caller), (ename, line)) in callers.iter().zip(expected) {
            assert_eq!(*name, ename);
            let got: Vec<String> = resources
                .iter()
                .map(|(_, r)| {
                    actions
                        .iter()
                        .map(|&act| match check(caller, act, *r) {
                            Ok(()) => '+',
                            Err(Denied::Forbidden(_)) => '-',
                            Err(Denied::Hidden) => '.',
                        })
                        .collect()
                })
                .collect();
            assert_eq!(got.join(" "), line, "{name} on {:?}", resources.map(|r| r.0));
        }
    }

    #[test]
    fn forbidden_says_what_is_needed() {
        let org = OrgId::new();
        let viewer = Caller::Member { token: TokenId::new(), org, role: OrgRole::Viewer };
        let Err(Denied::Forbidden(m)) = check(&viewer, Action::Deploy, Resource::Org(org)) else { panic!() };
        assert_eq!(m, "this needs the `deployer` or `owner` role in the org; this token is a `viewer`");
        assert!(viewer.sees_org(org) && !viewer.sees_org(OrgId::new()));
    }
}
