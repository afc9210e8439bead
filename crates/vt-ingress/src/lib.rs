//! vt L4 ingress data plane: SNI passthrough and TCP forwarding with optional
//! PROXY protocol v2, driven by route tables from the control plane.
//!
//! The control plane builds a [`RouteTable`] and calls [`Ingress::apply`];
//! the engine persists it and swaps it in atomically. Invariant: this crate
//! never terminates TLS (it only reads the ClientHello and forwards the very
//! bytes it read). See `docs/ingress.md`.

mod engine;
pub mod metrics;
pub mod proxy_v2;
mod relay;
pub mod route;
pub mod sni;
#[cfg(test)]
mod sni_golden;
pub mod testing;

pub use engine::{ApplyError, Ingress, IngressConfig, Listener, StartError};
pub use metrics::{FailureReason, RejectReason};
pub use route::{Backend, Protocol, Route, RouteTable, TableError};
