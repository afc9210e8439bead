//! Last access per workspace, coalesced: each request that reaches a workspace notes the
//! time in memory; whoever records activity takes what changed now and then
//! ([`Accesses::take`]), so a busy workspace costs one write per period, not one per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use vt_ids::Name;

#[derive(Debug, Default)]
pub struct Accesses {
    pending: Mutex<HashMap<Name, SystemTime>>,
}

impl Accesses {
    /// A request reached `name` now.
    pub fn touch(&self, name: &Name) {
        let now = SystemTime::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(name) {
            Some(at) => *at = now,
            None => {
                pending.insert(name.clone(), now);
            }
        }
    }

    /// The workspaces reached since the last take, each with its latest access, by name.
    pub fn take(&self) -> Vec<(Name, SystemTime)> {
        let mut taken: Vec<_> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces() {
        let a = Accesses::default();
        let (x, y) = (Name::parse("x").unwrap(), Name::parse("y").unwrap());
        for _ in 0..1000 {
            a.touch(&y);
            a.touch(&x);
        }
        let taken = a.take();
        assert_eq!(taken.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), ["x", "y"]);
        assert!(a.take().is_empty());
    }
}
