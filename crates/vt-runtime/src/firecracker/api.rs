//! Firecracker's API: the request bodies we send (field names from Firecracker's published
//! swagger, `src/firecracker/swagger/firecracker.yaml`), the boot sequence built from them,
//! and a minimal HTTP/1.1 client over the API's Unix socket.
//!
//! The client opens one connection per request, sends `Content-Length`-framed JSON and
//! reads a `Content-Length`-framed response (Firecracker's server frames every body that
//! way; a chunked response is refused). Any status other than 2xx is an error carrying the
//! body's `fault_message`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest response accepted (headers or body). Firecracker's are a few hundred bytes.
const MAX_RESPONSE: usize = 64 * 1024;

/// `PUT /logger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Logger {
    pub log_path: String,
    /// `Error`, `Warning`, `Info`, `Debug`, `Trace`, `Off`.
    pub level: String,
    pub show_level: bool,
    pub show_log_origin: bool,
}

/// `PUT /machine-config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineConfig {
    /// 1..=32.
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
    pub smt: bool,
}

/// `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    pub boot_args: String,
}

/// `PUT /drives/{drive_id}` (a virtio-block drive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: String,
    pub is_root_device: bool,
    pub is_read_only: bool,
}

/// `PUT /network-interfaces/{iface_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
}

/// `PUT /vsock`. Guest-initiated connections to port P arrive on `<uds_path>_P`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vsock {
    /// ≥ 3 (0-2 are reserved; 2 is the host).
    pub guest_cid: u32,
    pub uds_path: String,
}

/// `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "action_type")]
pub enum Action {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PATCH /vm`: pause or resume the vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state")]
pub enum VmState {
    Paused,
    Resumed,
}

/// `PUT /snapshot/create` (the VM paused): its state and its memory, in two files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotCreate {
    /// `Full` (a `Diff` needs dirty-page tracking from boot).
    pub snapshot_type: String,
    pub snapshot_path: String,
    pub mem_file_path: String,
}

/// `PUT /snapshot/load`, to a Firecracker that was configured with nothing else (the logger
/// aside): the machine, its devices (drives, tap, vsock) come from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotLoad {
    pub snapshot_path: String,
    pub mem_backend: MemBackend,
    /// Run the vCPUs at once.
    pub resume_vm: bool,
}

/// Where a loaded snapshot's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemBackend {
    /// `File`: mapped from `backend_path` (private: the file is never written).
    pub backend_type: String,
    pub backend_path: String,
}

/// Pause the VM and write its snapshot (`state`, `memory`, as Firecracker names the files).
pub fn suspend_requests(state: &Path, memory: &Path) -> Vec<ApiRequest> {
    vec![
        ApiRequest::patch("/vm", &VmState::Paused),
        ApiRequest::put(
            "/snapshot/create",
            &SnapshotCreate { snapshot_type: "Full".into(), snapshot_path: s(state), mem_file_path: s(memory) },
        ),
    ]
}

/// Configure a fresh Firecracker's logger, load a snapshot and resume it.
pub fn restore_requests(log_path: Option<&Path>, state: &Path, memory: &Path) -> Vec<ApiRequest> {
    let mut r = Vec::new();
    if let Some(log) = log_path {
        r.push(ApiRequest::put(
            "/logger",
            &Logger { log_path: s(log), level: "Warning".into(), show_level: true, show_log_origin: false },
        ));
    }
    r.push(ApiRequest::put(
        "/snapshot/load",
        &SnapshotLoad {
            snapshot_path: s(state),
            mem_backend: MemBackend { backend_type: "File".into(), backend_path: s(memory) },
            resume_vm: true,
        },
    ));
    r
}

/// A Firecracker error body.
#[derive(Debug, Deserialize)]
struct Fault {
    fault_message: String,
}

/// One API request: method, path and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: &'static str,
    pub path: String,
    pub body: String,
}

impl ApiRequest {
    /// A `GET` (no body): `/` (instance info: its state), `/vm/config` (the whole configuration).
    pub fn get(path: impl Into<String>) -> Self {
        Self { method: "GET", path: path.into(), body: String::new() }
    }

    pub fn patch<T: Serialize>(path: impl Into<String>, body: &T) -> Self {
        Self { method: "PATCH", ..Self::put(path, body) }
    }

    pub fn put<T: Serialize>(path: impl Into<String>, body: &T) -> Self {
        Self {
            method: "PUT",
            path: path.into(),
            // Serializing these plain structs cannot fail.
            body: serde_json::to_string(body).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// What one microVM is configured with, as Firecracker names the files (inside the jail
/// when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    /// `None`: leave Firecracker's logger unconfigured.
    pub log_path: Option<PathBuf>,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    pub boot_args: String,
    pub root_disk: PathBuf,
    pub scratch_disk: PathBuf,
    /// Further writable disks (volumes), by drive id.
    pub extra_disks: Vec<(String, PathBuf)>,
    /// Tap device name and guest MAC.
    pub tap: Option<(String, String)>,
    pub vsock_cid: u32,
    pub vsock_uds: PathBuf,
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl BootPlan {
    /// The requests that configure and start the microVM, in order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        let mut r = Vec::new();
        if let Some(log) = &self.log_path {
            r.push(ApiRequest::put(
                "/logger",
                &Logger { log_path: s(log), level: "Warning".into(), show_level: true, show_log_origin: false },
            ));
        }
        r.push(ApiRequest::put(
            "/machine-config",
            &MachineConfig { vcpu_count: self.vcpus.max(1), mem_size_mib: self.memory_mib, smt: false },
        ));
        r.push(ApiRequest::put(
            "/boot-source",
            &BootSource {
                kernel_image_path: s(&self.kernel),
                initrd_path: self.initramfs.as_deref().map(s),
                boot_args: self.boot_args.clone(),
            },
        ));
        // Root first (vda), scratch second (vdb); init finds them by label anyway.
        let drives = [("root", &self.root_disk, true), ("scratch", &self.scratch_disk, false)];
        for (id, path, read_only) in drives {
            r.push(drive(id, path, read_only));
        }
        for (id, path) in &self.extra_disks {
            r.push(drive(id, path, false));
        }
        if let Some((tap, mac)) = &self.tap {
            r.push(ApiRequest::put(
                "/network-interfaces/eth0",
                &NetworkInterface { iface_id: "eth0".into(), host_dev_name: tap.clone(), guest_mac: Some(mac.clone()) },
            ));
        }
        r.push(ApiRequest::put("/vsock", &Vsock { guest_cid: self.vsock_cid, uds_path: s(&self.vsock_uds) }));
        r.push(ApiRequest::put("/actions", &Action::InstanceStart));
        r
    }
}

fn drive(id: &str, path: &Path, read_only: bool) -> ApiRequest {
    ApiRequest::put(
        format!("/drives/{id}"),
        &Drive { drive_id: id.into(), path_on_host: s(path), is_root_device: false, is_read_only: read_only },
    )
}

/// A failed API call. Every variant names the request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{request}: cannot connect to the Firecracker API socket {}: {source}", socket.display())]
    Connect {
        request: String,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{request}: {source}")]
    Io {
        request: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{request}: no response from Firecracker within {timeout:?}")]
    Timeout { request: String, timeout: Duration },
    #[error("{request}: malformed response from Firecracker: {detail}")]
    Malformed { request: String, detail: String },
    #[error("Firecracker rejected {request} ({status}): {fault}")]
    Rejected {
        request: String,
        status: u16,
        /// The body's `fault_message` (or the raw body).
        fault: String,
    },
}

impl From<ApiError> for crate::RuntimeError {
    fn from(e: ApiError) -> Self {
        crate::RuntimeError::Config(e.to_string())
    }
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Client of one Firecracker API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into(), timeout: Duration::from_secs(10) }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send `req`; `Ok` only for a 2xx status.
    pub async fn send(&self, req: &ApiRequest) -> Result<Response, ApiError> {
        let request = req.to_string();
        let resp = match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(r) => r?,
            Err(_) => return Err(ApiError::Timeout { request, timeout: self.timeout }),
        };
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        let fault = match serde_json::from_slice::<Fault>(&resp.body) {
            Ok(f) => f.fault_message,
            Err(_) => String::from_utf8_lossy(&resp.body).trim().to_owned(),
        };
        Err(ApiError::Rejected { request, status: resp.status, fault })
    }

    /// Send every request in order, stopping at the first error.
    pub async fn send_all(&self, reqs: &[ApiRequest]) -> Result<(), ApiError> {
        for r in reqs {
            self.send(r).await?;
        }
        Ok(())
    }

    async fn exchange(&self, req: &ApiRequest) -> Result<Response, ApiError> {
        let request = req.to_string();
        let mut stream = UnixStream::connect(&self.socket).await.map_err(|source| ApiError::Connect {
            request: request.clone(),
            socket: self.socket.clone(),
            source,
        })?;
        let io = |source| ApiError::Io { request: request.clone(), source };
        stream.write_all(&encode_request(req)).await.map_err(io)?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            match parse_response(&buf) {
                Parsed::Done(r) => return Ok(r),
                Parsed::Invalid(detail) => return Err(ApiError::Malformed { request, detail }),
                Parsed::NeedMore => {}
            }
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Err(ApiError::Malformed {
                    request,
                    detail: format!("connection closed after {} bytes", buf.len()),
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The bytes of one HTTP/1.1 request.
pub fn encode_request(req: &ApiRequest) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n", req.method, req.path);
    if !req.body.is_empty() || req.method != "GET" {
        out.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", req.body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(req.body.as_bytes());
    bytes
}

/// Result of parsing a (possibly partial) response.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    NeedMore,
    Done(Response),
    Invalid(String),
}

/// Parse an HTTP/1.1 response from the bytes read so far.
pub fn parse_response(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_RESPONSE {
            return Parsed::Invalid("headers too long".into());
        }
        return Parsed::NeedMore;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Invalid("headers are not UTF-8".into());
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        return Parsed::Invalid(format!("bad status line {status_line:?}"));
    }
    let status: u16 = match code.parse() {
        Ok(c) if (100..600).contains(&c) && code.len() == 3 => c,
        _ => return Parsed::Invalid(format!("bad status line {status_line:?}")),
    };
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Invalid(format!("bad header line {line:?}"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if n <= MAX_RESPONSE => length = Some(n),
                _ => return Parsed::Invalid(format!("bad Content-Length {value:?}")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity") {
            return Parsed::Invalid(format!("unsupported Transfer-Encoding {value:?}"));
        }
    }
    // No Content-Length: no body (Firecracker's 204s; it sends a length with every body).
    let length = length.unwrap_or(0);
    let body = &buf[end + 4..];
    if body.len() < length {
        return Parsed::NeedMore;
    }
    Parsed::Done(Response { status, body: body[..length].to_vec() })
}
