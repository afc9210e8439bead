//! For unit tests of code above the mesh: [`Recorder`], an in-memory interface behind the same
//! [`Wireguard`] trait, planning with the real [`plan`] and recording each call.

use std::sync::Mutex;

use crate::plan::{plan, Changes, Current, CurrentPeer, PeerChange};
use crate::{Ensured, Interface, MeshError, Peer, Wireguard, KEEPALIVE_SECS};

/// One call, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Ensure(Ensured),
    SetPeers(Changes),
    Remove,
}

/// An interface held in memory. [`Recorder::kill`] makes it vanish, as a dead device's does.
#[derive(Debug, Default)]
pub struct Recorder {
    state: Mutex<(Option<Current>, Vec<Call>)>,
}

impl Recorder {
    pub fn calls(&self) -> Vec<Call> {
        self.lock().1.clone()
    }

    /// The peers' keys it holds (`None`: no interface).
    pub fn peers(&self) -> Option<Vec<String>> {
        self.lock().0.as_ref().map(|c| c.peers.iter().map(|p| p.public_key.clone()).collect())
    }

    /// The device dies: the interface and its peers are gone.
    pub fn kill(&self) {
        self.lock().0 = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<Current>, Vec<Call>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Wireguard for Recorder {
    fn ensure(&self, iface: &Interface) -> Result<Ensured, MeshError> {
        let mut s = self.lock();
        let ensured = match &mut s.0 {
            Some(c) if c.listen_port == iface.listen_port => Ensured::Unchanged,
            Some(c) => {
                c.listen_port = iface.listen_port;
                Ensured::Reconfigured
            }
            None => {
                s.0 = Some(Current { listen_port: iface.listen_port, ..Current::default() });
                Ensured::Created
            }
        };
        s.1.push(Call::Ensure(ensured));
        Ok(ensured)
    }

    fn set_peers(&self, iface: &Interface, peers: &[Peer]) -> Result<Changes, MeshError> {
        let mut s = self.lock();
        let current = s.0.as_mut().ok_or_else(|| MeshError::NotReady { interface: iface.name.clone(), secs: 0 })?;
        let changes = plan(current, peers);
        for c in &changes.peers {
            match c {
                PeerChange::Remove(key) => current.peers.retain(|p| &p.public_key != key),
                PeerChange::Add(p) | PeerChange::Update(p) => {
                    current.peers.retain(|h| h.public_key != p.public_key);
                    current.peers.push(CurrentPeer {
                        public_key: p.public_key.clone(),
                        endpoint: Some(p.endpoint),
                        allowed_ips: p.allowed_ips.clone(),
                        keepalive_secs: Some(KEEPALIVE_SECS),
                        latest_handshake: 0,
                        rx_bytes: 0,
                        tx_bytes: 0,
                    });
                }
            }
        }
        current.routes.retain(|r| !changes.routes_removed.contains(r));
        current.routes.extend(changes.routes_added.iter().copied());
        s.1.push(Call::SetPeers(changes.clone()));
        Ok(changes)
    }

    fn remove(&self, _iface: &Interface) -> Result<(), MeshError> {
        let mut s = self.lock();
        s.0 = None;
        s.1.push(Call::Remove);
        Ok(())
    }
}
