//! The workspace origin's routing table: each workspace by name, where its IDE listens
//! when it runs, and its registered ports. Built whole from the control plane's views and
//! swapped in one store ([`crate::Front::apply`]): a request sees the old table or the new,
//! never half of each.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use vt_ids::Name;

/// The most ports a workspace may register (Tidepool's limit).
pub const MAX_PORTS: usize = 5;

/// One workspace as the front routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRoute {
    pub name: Name,
    pub state: RouteState,
    /// The port its IDE listens on, in the guest.
    pub ide_port: u16,
    /// Its registered ports (`/workspace/{name}/port/{N}/`).
    pub ports: BTreeSet<u16>,
}

/// Whether a workspace can take requests, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    /// Running and reachable at this address.
    Serving { address: IpAddr },
    /// Not running: the 503 page says which and what to do.
    Down(Down),
}

/// Why a known workspace does not take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    Stopped,
    Starting,
    Stopping,
    /// Failed, with the reason the control plane recorded.
    Failed(String),
}

/// Every workspace the front knows, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontTable {
    workspaces: HashMap<Name, WorkspaceRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("workspace `{0}` is in the table twice")]
    Duplicate(Name),
    #[error("workspace `{name}` has {count} ports; at most {MAX_PORTS}")]
    TooManyPorts { name: Name, count: usize },
    #[error("workspace `{0}` has port 0")]
    PortZero(Name),
}

impl FrontTable {
    /// A table of `routes`, checked: one route per name, at most [`MAX_PORTS`] ports each.
    pub fn new(routes: impl IntoIterator<Item = WorkspaceRoute>) -> Result<FrontTable, TableError> {
        let mut workspaces = HashMap::new();
        for route in routes {
            if route.ports.len() > MAX_PORTS {
                return Err(TableError::TooManyPorts { name: route.name, count: route.ports.len() });
            }
            if route.ide_port == 0 || route.ports.contains(&0) {
                return Err(TableError::PortZero(route.name));
            }
            if let Some(old) = workspaces.insert(route.name.clone(), route) {
                return Err(TableError::Duplicate(old.name));
            }
        }
        Ok(FrontTable { workspaces })
    }

    pub fn get(&self, name: &Name) -> Option<&WorkspaceRoute> {
        self.workspaces.get(name)
    }

    pub fn len(&self) -> usize {
        self.workspaces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workspaces.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, ports: &[u16]) -> WorkspaceRoute {
        WorkspaceRoute {
            name: Name::parse(name).unwrap(),
            state: RouteState::Down(Down::Stopped),
            ide_port: 8080,
            ports: ports.iter().copied().collect(),
        }
    }

    #[test]
    fn checks_what_it_holds() {
        let t = FrontTable::new([route("a", &[1, 2]), route("b", &[])]).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            FrontTable::new([route("a", &[]), route("a", &[])]),
            Err(TableError::Duplicate(route("a", &[]).name))
        );
        assert!(matches!(FrontTable::new([route("a", &[1, 2, 3, 4, 5, 6])]), Err(TableError::TooManyPorts { .. })));
        assert!(matches!(FrontTable::new([route("a", &[0])]), Err(TableError::PortZero(_))));
    }
}
