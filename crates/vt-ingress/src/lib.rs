//! vt L4 ingress data plane: SNI passthrough and TCP forwarding with optional
//! PROXY protocol v2, driven by route tables from the control plane.
//!
//! Invariant: this crate never terminates TLS. See `docs/ingress.md`.

pub mod sni;
#[cfg(test)]
mod sni_golden;
pub mod testing;
