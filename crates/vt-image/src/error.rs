use crate::Digest;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error this crate returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Filesystem or process I/O; `fs-err` messages name the path involved.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex>")]
    InvalidDigest(String),
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("blob {digest}: content hashes to {actual}")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error("blob {digest}: truncated, got {actual} of {expected} bytes")]
    Truncated { digest: Digest, expected: u64, actual: u64 },
    #[error("blob {digest}: larger than its descriptor's {expected} bytes")]
    Oversized { digest: Digest, expected: u64 },
    #[error("blob {digest}: size {size} exceeds the limit of {limit} bytes")]
    TooLarge { digest: Digest, size: u64, limit: u64 },
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("image index {0} has no linux/amd64 manifest")]
    NoMatchingPlatform(Digest),
    #[error("blob {0} not found")]
    NotFound(Digest),
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A layer tried something the unpacker refuses (see docs/images.md, "Hostile layers").
    #[error("refused layer {layer}: entry {path:?}: {reason}")]
    HostileLayer { layer: Digest, path: String, reason: String },
    #[error("unpacked image exceeds the limit of {limit} bytes")]
    UnpackTooLarge { limit: u64 },
    /// The node's disk budget cannot hold what the write needs (nothing of it is left behind).
    #[error(transparent)]
    NoSpace(#[from] vt_disk::NoSpace),
    #[error(transparent)]
    DiskStat(#[from] vt_disk::StatError),
    #[error("{tool} failed ({status}): {stderr}")]
    Tool { tool: String, status: String, stderr: String },
    /// Errors from a [`crate::BlobSource`] implementation (e.g. an HTTP registry client).
    #[error("blob source: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json { what: what.into(), source }
    }
}
