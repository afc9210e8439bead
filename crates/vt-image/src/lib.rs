//! Node-side OCI image handling for vt.
//!
//! * [`oci`]: serde types for descriptors, manifests, indexes and image configs.
//! * [`Digest`]: strict `sha256:<64 lowercase hex>` digests.
//! * [`ImageRef`]: `[registry/]repository[:tag][@digest]`, parsed once (and the repository and tag grammar).
//! * [`layout`]: write a deterministic OCI image layout from a directory tree.
//! * [`store`]: content-addressed blob cache, the [`store::BlobSource`] trait and verified pulls.
//! * [`registry`]: [`RegistrySource`], a `BlobSource` pulling from an OCI (v2) registry over HTTP.
//! * [`unpack`]: apply layers (whiteouts included) into a directory, refusing hostile layers.
//! * [`rootdisk`]: one read-only ext4 root disk per image digest, single-flight, with `gc`.
//!
//! All heavy operations are synchronous (blocking I/O, child processes); async callers run them
//! in `tokio::task::spawn_blocking`. See `docs/images.md` for the on-node layout and guarantees.

pub mod digest;
mod error;
pub mod layout;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod rootdisk;
pub mod store;
pub mod testing;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use reference::{ImageRef, RefError};
pub use registry::RegistrySource;
pub use rootdisk::{ImageStore, RootDisk, StoreOptions};
pub use store::{BlobSource, OciLayoutSource, PulledImage};
