//! The guest channel protocol: one framed, versioned byte-stream protocol between the vt node
//! agent (host) and guest init (PID 1 inside every microVM).
//!
//! The transport is any reliable byte stream: a virtio-console port under QEMU, vsock under
//! Firecracker. This crate does no I/O: it encodes [`Message`]s into frames and decodes frames
//! from byte buffers. See `docs/runtime.md` for the conversation.
//!
//! # Frame
//!
//! ```text
//! offset size  field
//! 0      2     magic  b"VT"
//! 2      1     frame version (FRAME_VERSION = 1)
//! 3      1     message type (see MessageType)
//! 4      4     payload length, u32 big-endian, at most MAX_PAYLOAD
//! 8      len   payload (type-specific, see below)
//! ```
//!
//! Payload primitives: integers are big-endian; `bytes` = u32 BE length + raw bytes;
//! `string` = `bytes` holding UTF-8; `list<T>` = u32 BE count + items; `bool` = one byte 0/1.
//! A payload must be consumed exactly: trailing bytes are invalid. Changing any payload is a
//! protocol version bump (negotiated by [`Message::Hello`]).
//!
//! The decoder never panics: it answers [`DecodeError::NeedMore`] for an incomplete frame
//! (read more bytes and retry) and [`DecodeError::Invalid`] for a stream that can never become
//! valid (close the channel).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod bundle;

/// `b"VT"`: the first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"VT";
/// Version of the frame header layout.
pub const FRAME_VERSION: u8 = 1;
/// Size of the frame header.
pub const HEADER_LEN: usize = 8;
/// Largest payload accepted (4 MiB: a launch carries up to 1 MiB of secrets). Log chunks are
/// much smaller (see [`MAX_LOG_CHUNK`]).
pub const MAX_PAYLOAD: u32 = 4 << 20;
/// Largest data chunk senders put in one [`Message::Log`] / [`Message::ExecOutput`].
pub const MAX_LOG_CHUNK: usize = 32 * 1024;
/// The protocol version this build speaks (negotiated in [`Message::Hello`]).
pub const PROTOCOL_VERSION: u16 = 5;
/// Name of the virtio-console port carrying the channel under QEMU.
pub const PORT_NAME: &str = "vt.channel";
/// Bytes of exec output (or input) a side may send before the other grants more with
/// [`Message::ExecWindow`]: the receiver never holds more than this per session.
pub const EXEC_WINDOW: u32 = 256 * 1024;
/// The host (CID 2) vsock port guest init connects to for the channel under Firecracker
/// (no virtio-console there): the host listens on `<uds_path>_1024`.
pub const VSOCK_PORT: u32 = 1024;

/// An output stream of the entrypoint (or of an exec session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn code(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// Exited with this code (0-255).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Which side sent a [`Message::Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Host,
    Guest,
}

/// What guest init runs, sent by the host after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Launch {
    /// argv\[0\] is looked up in `PATH` (from `env`) when it has no `/`. Must not be empty.
    pub argv: Vec<String>,
    /// Environment of the entrypoint, `VT_*` variables included (the host sets them).
    pub env: Vec<(String, String)>,
    /// Working directory ("" = `/`).
    pub cwd: String,
    /// `""`/`root`, a name from the image's `/etc/passwd`, or `uid[:gid]`.
    pub user: String,
    /// Guest hostname ("" = leave unset).
    pub hostname: String,
    /// The instance's network interface; `None`: loopback only.
    pub network: Option<Network>,
    /// Disks to mount at `/mnt/volumes/<name>`.
    pub volumes: Vec<Volume>,
    /// Files for `/run/secrets/` (a tmpfs: never on a disk), with the bundle of them all
    /// ([`bundle`], written by guest init).
    pub secrets: Vec<Secret>,
    /// The env's secrets version these secrets are (written into the bundle).
    pub secrets_version: u64,
    /// Names of `secrets` to also set as environment variables of the entrypoint.
    pub secret_env: Vec<String>,
}

/// How guest init configures the instance's one network interface (the first
/// that is not loopback, `eth0`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Network {
    /// Addresses with their prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Default routes: one per family at most (an IPv6 gateway is usually link-local).
    pub gateways: Vec<IpAddr>,
    /// 0 = the interface's default.
    pub mtu: u16,
    /// Name servers for `/etc/resolv.conf` (none: the file is left as the image has it).
    pub dns: Vec<IpAddr>,
}

/// A volume disk: found by its ext4 label, mounted at `/mnt/volumes/<name>`,
/// and bind-mounted at `path` too when that is not empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Volume {
    pub name: String,
    pub label: String,
    pub path: String,
}

/// A secret file: `/run/secrets/<name>`, mode 0400, owned by the entrypoint's user.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret {
    pub name: String,
    pub data: Vec<u8>,
}

/// Never shows the content.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret {{ name: {:?}, data: <{} bytes> }}", self.name, self.data.len())
    }
}

/// Every message of the protocol (a closed set).
// One `Launch` per VM, and messages are decoded one at a time: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Both ways, first message on the channel: the guest sends it as soon as the port is open,
    /// the host answers with its own. Each side then uses `min(max_version)` and refuses a peer
    /// whose range does not overlap its own.
    Hello {
        role: Role,
        min_version: u16,
        max_version: u16,
        /// Free-form software identification, e.g. `vt-init/0.1.0`.
        software: String,
    },
    /// Host → guest: what to run.
    Launch(Launch),
    /// Guest → host: the root is ready and the entrypoint was started (sent again after a
    /// `Resume`). Times are the guest's `CLOCK_BOOTTIME` in microseconds (≈ since the kernel
    /// started); `now_us` is when this message was sent, so the host can map the guest's clock
    /// onto its own (`Log::at_us`).
    Ready { pid: u32, init_started_us: u64, entrypoint_started_us: u64, now_us: u64 },
    /// Guest → host: output of the entrypoint, in chunks of at most [`MAX_LOG_CHUNK`] bytes.
    /// `seq` numbers the guest's *recorded* messages (`Log`, `LogLost`, `Exited`) from 1 in the
    /// order they were produced; the guest keeps each until the host [`Message::Ack`]s it and
    /// sends the unacknowledged ones again to a host that attaches with [`Message::Resume`].
    /// `at_us` is the guest's `CLOCK_BOOTTIME` when the output was read, so output kept while
    /// no host was attached keeps the time it was printed.
    Log { seq: u64, at_us: u64, stream: Stream, data: Vec<u8> },
    /// Guest → host: the entrypoint ended; the guest powers off after [`Message::Shutdown`]
    /// (or a short timeout). Recorded, like `Log`.
    Exited { seq: u64, status: ExitStatus },
    /// Guest → host: init could not set the guest up (the VM powers off).
    Failed { reason: String },
    /// Host → guest: deliver this signal to the entrypoint.
    Signal { signo: i32 },
    /// Host → guest: power off now (acknowledges `Exited`, or stops a guest).
    Shutdown,
    /// Host → guest: every recorded message up to `seq` is kept by the host (written to its
    /// log); the guest may forget them.
    Ack { seq: u64 },
    /// Host → guest: a host attaches to a guest that is already running (a node agent
    /// restarted). The guest answers `Hello`, `Ready` again, then every recorded message not
    /// yet acknowledged, in order; the host ignores what it reads before that `Hello`.
    Resume,
    /// Guest → host: `bytes` of the entrypoint's output were dropped while no host was
    /// attached (the guest's buffer was full). Recorded, like `Log`.
    LogLost { seq: u64, bytes: u64 },
    /// Host → guest, right after `Resume`: the VM was restored from a snapshot (its memory
    /// was saved and loaded into a new VMM, perhaps much later). `wall_clock_us` is the
    /// host's `CLOCK_REALTIME` in microseconds since the Unix epoch as it sends this; the
    /// guest sets its own `CLOCK_REALTIME` to it (its clock stood still while suspended).
    Restored { wall_clock_us: u64 },
    /// Host → guest: start exec session `id` (chosen by the host, unique among its open
    /// sessions): run `argv` in the instance's root, with the entrypoint's environment plus
    /// `env`, in `cwd` ("" = the entrypoint's) as `user` ("" = the entrypoint's), under a
    /// pseudo-terminal of `tty` (rows, cols) when given, else with pipes.
    ExecStart {
        id: u32,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: String,
        user: String,
        tty: Option<(u16, u16)>,
    },
    /// Host → guest: standard input of session `id`; empty `data` closes it (EOF).
    ExecStdin { id: u32, data: Vec<u8> },
    /// Guest → host: output of session `id` (under a tty everything is `Stdout`).
    ExecOutput { id: u32, stream: Stream, data: Vec<u8> },
    /// Guest → host: session `id` ended (its output is complete); the id may be reused.
    ExecExit { id: u32, status: ExitStatus },
    /// Host → guest: the terminal of session `id` is now `rows` × `cols`.
    ExecResize { id: u32, rows: u16, cols: u16 },
    /// Host → guest: deliver this signal to session `id`'s process group.
    ExecSignal { id: u32, signo: i32 },
    /// Host → guest: the client of session `id` went away: SIGHUP to its process group
    /// (SIGKILL if it is still there a few seconds later); the guest still sends `ExecExit`.
    ExecClose { id: u32 },
    /// Both ways: the sender has consumed `bytes` more of session `id`'s data (output for the
    /// host, stdin for the guest); the other side may send that much more. Each side starts
    /// with [`EXEC_WINDOW`] of credit.
    ExecWindow { id: u32, bytes: u32 },
}

/// Message type codes (the fourth header byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Hello = 0x01,
    Launch = 0x02,
    Ready = 0x03,
    Log = 0x04,
    Exited = 0x05,
    Failed = 0x06,
    Signal = 0x07,
    Shutdown = 0x08,
    Ack = 0x09,
    Resume = 0x0a,
    LogLost = 0x0b,
    Restored = 0x0c,
    ExecStart = 0x10,
    ExecStdin = 0x11,
    ExecOutput = 0x12,
    ExecExit = 0x13,
    ExecResize = 0x14,
    ExecSignal = 0x15,
    ExecClose = 0x16,
    ExecWindow = 0x17,
}

impl MessageType {
    pub const ALL: [MessageType; 20] = [
        MessageType::Hello,
        MessageType::Launch,
        MessageType::Ready,
        MessageType::Log,
        MessageType::Exited,
        MessageType::Failed,
        MessageType::Signal,
        MessageType::Shutdown,
        MessageType::Ack,
        MessageType::Resume,
        MessageType::LogLost,
        MessageType::Restored,
        MessageType::ExecStart,
        MessageType::ExecStdin,
        MessageType::ExecOutput,
        MessageType::ExecExit,
        MessageType::ExecResize,
        MessageType::ExecSignal,
        MessageType::ExecClose,
        MessageType::ExecWindow,
    ];
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u8 == c)
    }
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello { .. } => MessageType::Hello,
            Message::Launch(_) => MessageType::Launch,
            Message::Ready { .. } => MessageType::Ready,
            Message::Log { .. } => MessageType::Log,
            Message::Exited { .. } => MessageType::Exited,
            Message::Failed { .. } => MessageType::Failed,
            Message::Signal { .. } => MessageType::Signal,
            Message::Shutdown => MessageType::Shutdown,
            Message::Ack { .. } => MessageType::Ack,
            Message::Resume => MessageType::Resume,
            Message::LogLost { .. } => MessageType::LogLost,
            Message::Restored { .. } => MessageType::Restored,
            Message::ExecStart { .. } => MessageType::ExecStart,
            Message::ExecStdin { .. } => MessageType::ExecStdin,
            Message::ExecOutput { .. } => MessageType::ExecOutput,
            Message::ExecExit { .. } => MessageType::ExecExit,
            Message::ExecResize { .. } => MessageType::ExecResize,
            Message::ExecSignal { .. } => MessageType::ExecSignal,
            Message::ExecClose { .. } => MessageType::ExecClose,
            Message::ExecWindow { .. } => MessageType::ExecWindow,
        }
    }

    /// A guest Hello for this build.
    pub fn hello(role: Role, software: &str) -> Self {
        Message::Hello {
            role,
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            software: software.to_owned(),
        }
    }

    /// Append this message's frame to `out`.
    ///
    /// Errors only when the payload would exceed [`MAX_PAYLOAD`] (nothing is appended then).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.push(FRAME_VERSION);
        out.push(self.message_type() as u8);
        out.extend_from_slice(&[0; 4]);
        self.encode_payload(out);
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD as usize {
            out.truncate(start);
            return Err(EncodeError::TooLarge(len));
        }
        out[start + 4..start + 8].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// This message's frame.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::new();
        self.encode_into(&mut v)?;
        Ok(v)
    }

    fn encode_payload(&self, o: &mut Vec<u8>) {
        match self {
            Message::Hello { role, min_version, max_version, software } => {
                o.push(match role {
                    Role::Host => 1,
                    Role::Guest => 2,
                });
                o.extend_from_slice(&min_version.to_be_bytes());
                o.extend_from_slice(&max_version.to_be_bytes());
                put_bytes(o, software.as_bytes());
            }
            Message::Launch(l) => {
                put_strings(o, &l.argv);
                put_env(o, &l.env);
                put_bytes(o, l.cwd.as_bytes());
                put_bytes(o, l.user.as_bytes());
                put_bytes(o, l.hostname.as_bytes());
                match &l.network {
                    None => o.push(0),
                    Some(n) => {
                        o.push(1);
                        o.extend_from_slice(&(n.addresses.len() as u32).to_be_bytes());
                        for (ip, len) in &n.addresses {
                            put_ip(o, *ip);
                            o.push(*len);
                        }
                        put_ips(o, &n.gateways);
                        o.extend_from_slice(&n.mtu.to_be_bytes());
                        put_ips(o, &n.dns);
                    }
                }
                o.extend_from_slice(&(l.volumes.len() as u32).to_be_bytes());
                for v in &l.volumes {
                    put_bytes(o, v.name.as_bytes());
                    put_bytes(o, v.label.as_bytes());
                    put_bytes(o, v.path.as_bytes());
                }
                o.extend_from_slice(&(l.secrets.len() as u32).to_be_bytes());
                for sec in &l.secrets {
                    put_bytes(o, sec.name.as_bytes());
                    put_bytes(o, &sec.data);
                }
                o.extend_from_slice(&l.secrets_version.to_be_bytes());
                o.extend_from_slice(&(l.secret_env.len() as u32).to_be_bytes());
                for name in &l.secret_env {
                    put_bytes(o, name.as_bytes());
                }
            }
            Message::Ready { pid, init_started_us, entrypoint_started_us, now_us } => {
                o.extend_from_slice(&pid.to_be_bytes());
                o.extend_from_slice(&init_started_us.to_be_bytes());
                o.extend_from_slice(&entrypoint_started_us.to_be_bytes());
                o.extend_from_slice(&now_us.to_be_bytes());
            }
            Message::Log { seq, at_us, stream, data } => {
                o.extend_from_slice(&seq.to_be_bytes());
                o.extend_from_slice(&at_us.to_be_bytes());
                o.push(stream.code());
                put_bytes(o, data);
            }
            Message::Exited { seq, status } => {
                o.extend_from_slice(&seq.to_be_bytes());
                put_status(o, *status)
            }
            Message::Failed { reason } => put_bytes(o, reason.as_bytes()),
            Message::Signal { signo } => o.extend_from_slice(&signo.to_be_bytes()),
            Message::Shutdown => {}
            Message::Ack { seq } => o.extend_from_slice(&seq.to_be_bytes()),
            Message::Resume => {}
            Message::LogLost { seq, bytes } => {
                o.extend_from_slice(&seq.to_be_bytes());
                o.extend_from_slice(&bytes.to_be_bytes());
            }
            Message::Restored { wall_clock_us } => o.extend_from_slice(&wall_clock_us.to_be_bytes()),
            Message::ExecStart { id, argv, env, cwd, user, tty } => {
                o.extend_from_slice(&id.to_be_bytes());
                put_strings(o, argv);
                put_env(o, env);
                put_bytes(o, cwd.as_bytes());
                put_bytes(o, user.as_bytes());
                match tty {
                    None => o.push(0),
                    Some((rows, cols)) => {
                        o.push(1);
                        o.extend_from_slice(&rows.to_be_bytes());
                        o.extend_from_slice(&cols.to_be_bytes());
                    }
                }
            }
            Message::ExecStdin { id, data } => {
                o.extend_from_slice(&id.to_be_bytes());
                put_bytes(o, data);
            }
            Message::ExecOutput { id, stream, data } => {
                o.extend_from_slice(&id.to_be_bytes());
                o.push(stream.code());
                put_bytes(o, data);
            }
            Message::ExecExit { id, status } => {
                o.extend_from_slice(&id.to_be_bytes());
                put_status(o, *status);
            }
            Message::ExecResize { id, rows, cols } => {
                o.extend_from_slice(&id.to_be_bytes());
                o.extend_from_slice(&rows.to_be_bytes());
                o.extend_from_slice(&cols.to_be_bytes());
            }
            Message::ExecSignal { id, signo } => {
                o.extend_from_slice(&id.to_be_bytes());
                o.extend_from_slice(&signo.to_be_bytes());
            }
            Message::ExecClose { id } => o.extend_from_slice(&id.to_be_bytes()),
            Message::ExecWindow { id, bytes } => {
                o.extend_from_slice(&id.to_be_bytes());
                o.extend_from_slice(&bytes.to_be_bytes());
            }
        }
    }

    /// Decode one frame from the start of `buf`: the message and the number of bytes it used.
    pub fn decode(buf: &[u8]) -> Result<(Message, usize), DecodeError> {
        // Check what is there of the header byte by byte, so garbage is reported as soon as
        // it is seen rather than after waiting for a full header.
        for (i, m) in MAGIC.iter().enumerate() {
            match buf.get(i) {
                None => return Err(DecodeError::NeedMore),
                Some(b) if b != m => return Err(Invalid::BadMagic.into()),
                Some(_) => {}
            }
        }
        match buf.get(2) {
            None => return Err(DecodeError::NeedMore),
            Some(&v) if v != FRAME_VERSION => return Err(Invalid::FrameVersion(v).into()),
            Some(_) => {}
        }
        let ty = match buf.get(3) {
            None => return Err(DecodeError::NeedMore),
            Some(&t) => MessageType::from_code(t).ok_or(Invalid::UnknownType(t))?,
        };
        let Some(len) = buf.get(4..8) else {
            return Err(DecodeError::NeedMore);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len > MAX_PAYLOAD {
            return Err(Invalid::TooLarge(len).into());
        }
        let end = HEADER_LEN + len as usize;
        let Some(payload) = buf.get(HEADER_LEN..end) else {
            return Err(DecodeError::NeedMore);
        };
        let mut r = Reader { b: payload };
        let msg = decode_payload(ty, &mut r)?;
        if !r.b.is_empty() {
            return Err(Invalid::TrailingBytes.into());
        }
        Ok((msg, end))
    }
}

fn decode_payload(ty: MessageType, r: &mut Reader<'_>) -> Result<Message, Invalid> {
    Ok(match ty {
        MessageType::Hello => {
            let role = match r.u8()? {
                1 => Role::Host,
                2 => Role::Guest,
                x => return Err(Invalid::BadValue("role", x as u32)),
            };
            Message::Hello { role, min_version: r.u16()?, max_version: r.u16()?, software: r.string()? }
        }
        MessageType::Launch => Message::Launch(Launch {
            argv: r.strings()?,
            env: r.env()?,
            cwd: r.string()?,
            user: r.string()?,
            hostname: r.string()?,
            network: match r.u8()? {
                0 => None,
                1 => Some(Network {
                    addresses: {
                        let n = r.count(6)?;
                        (0..n)
                            .map(|_| {
                                let ip = r.ip()?;
                                let len = r.u8()?;
                                let max = if ip.is_ipv4() { 32 } else { 128 };
                                if len > max {
                                    return Err(Invalid::BadValue("prefix length", len as u32));
                                }
                                Ok((ip, len))
                            })
                            .collect::<Result<_, _>>()?
                    },
                    gateways: r.ips()?,
                    mtu: r.u16()?,
                    dns: r.ips()?,
                }),
                x => return Err(Invalid::BadValue("network present", x as u32)),
            },
            volumes: {
                let n = r.count(12)?;
                (0..n)
                    .map(|_| Ok(Volume { name: r.string()?, label: r.string()?, path: r.string()? }))
                    .collect::<Result<_, _>>()?
            },
            secrets: {
                let n = r.count(8)?;
                (0..n).map(|_| Ok(Secret { name: r.string()?, data: r.bytes()?.to_vec() })).collect::<Result<_, _>>()?
            },
            secrets_version: r.u64()?,
            secret_env: r.strings()?,
        }),
        MessageType::Ready => Message::Ready {
            pid: r.u32()?,
            init_started_us: r.u64()?,
            entrypoint_started_us: r.u64()?,
            now_us: r.u64()?,
        },
        MessageType::Log => {
            Message::Log { seq: r.u64()?, at_us: r.u64()?, stream: r.stream()?, data: r.bytes()?.to_vec() }
        }
        MessageType::Exited => Message::Exited { seq: r.u64()?, status: r.status()? },
        MessageType::Failed => Message::Failed { reason: r.string()? },
        MessageType::Signal => Message::Signal { signo: r.u32()? as i32 },
        MessageType::Shutdown => Message::Shutdown,
        MessageType::Ack => Message::Ack { seq: r.u64()? },
        MessageType::Resume => Message::Resume,
        MessageType::LogLost => Message::LogLost { seq: r.u64()?, bytes: r.u64()? },
        MessageType::Restored => Message::Restored { wall_clock_us: r.u64()? },
        MessageType::ExecStart => Message::ExecStart {
            id: r.u32()?,
            argv: r.strings()?,
            env: r.env()?,
            cwd: r.string()?,
            user: r.string()?,
            tty: match r.u8()? {
                0 => None,
                1 => Some((r.u16()?, r.u16()?)),
                x => return Err(Invalid::BadValue("tty present", x as u32)),
            },
        },
        MessageType::ExecStdin => Message::ExecStdin { id: r.u32()?, data: r.bytes()?.to_vec() },
        MessageType::ExecOutput => Message::ExecOutput { id: r.u32()?, stream: r.stream()?, data: r.bytes()?.to_vec() },
        MessageType::ExecExit => Message::ExecExit { id: r.u32()?, status: r.status()? },
        MessageType::ExecResize => Message::ExecResize { id: r.u32()?, rows: r.u16()?, cols: r.u16()? },
        MessageType::ExecSignal => Message::ExecSignal { id: r.u32()?, signo: r.u32()? as i32 },
        MessageType::ExecClose => Message::ExecClose { id: r.u32()? },
        MessageType::ExecWindow => Message::ExecWindow { id: r.u32()?, bytes: r.u32()? },
    })
}

fn put_bytes(o: &mut Vec<u8>, b: &[u8]) {
    // Lengths above u32::MAX cannot fit MAX_PAYLOAD anyway; encode_into rejects the frame.
    o.extend_from_slice(&(b.len().min(u32::MAX as usize) as u32).to_be_bytes());
    o.extend_from_slice(b);
}

fn put_strings(o: &mut Vec<u8>, v: &[String]) {
    o.extend_from_slice(&(v.len() as u32).to_be_bytes());
    for s in v {
        put_bytes(o, s.as_bytes());
    }
}

fn put_env(o: &mut Vec<u8>, v: &[(String, String)]) {
    o.extend_from_slice(&(v.len() as u32).to_be_bytes());
    for (k, val) in v {
        put_bytes(o, k.as_bytes());
        put_bytes(o, val.as_bytes());
    }
}

/// `family u8 (4 | 6)` + 4 or 16 address bytes.
fn put_ip(o: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            o.push(4);
            o.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            o.push(6);
            o.extend_from_slice(&a.octets());
        }
    }
}

fn put_ips(o: &mut Vec<u8>, v: &[IpAddr]) {
    o.extend_from_slice(&(v.len() as u32).to_be_bytes());
    for ip in v {
        put_ip(o, *ip);
    }
}

fn put_status(o: &mut Vec<u8>, s: ExitStatus) {
    let (tag, v) = match s {
        ExitStatus::Code(c) => (1u8, c),
        ExitStatus::Signal(s) => (2u8, s),
    };
    o.push(tag);
    o.extend_from_slice(&v.to_be_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        if n > self.b.len() {
            return Err(Invalid::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Invalid> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Invalid> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Invalid> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], Invalid> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, Invalid> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| Invalid::Utf8)
    }
    /// A list count, bounded by what the remaining bytes could hold (each item ≥ `min` bytes),
    /// so a hostile count cannot make us allocate.
    fn count(&mut self, min: usize) -> Result<usize, Invalid> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.b.len() {
            return Err(Invalid::Truncated);
        }
        Ok(n)
    }
    fn strings(&mut self) -> Result<Vec<String>, Invalid> {
        let n = self.count(4)?;
        (0..n).map(|_| self.string()).collect()
    }
    fn env(&mut self) -> Result<Vec<(String, String)>, Invalid> {
        let n = self.count(8)?;
        (0..n).map(|_| Ok((self.string()?, self.string()?))).collect()
    }
    fn ip(&mut self) -> Result<IpAddr, Invalid> {
        match self.u8()? {
            4 => {
                let b = self.take(4)?;
                Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            x => Err(Invalid::BadValue("address family", x as u32)),
        }
    }
    fn ips(&mut self) -> Result<Vec<IpAddr>, Invalid> {
        let n = self.count(5)?;
        (0..n).map(|_| self.ip()).collect()
    }
    fn stream(&mut self) -> Result<Stream, Invalid> {
        let c = self.u8()?;
        Stream::from_code(c).ok_or(Invalid::BadValue("stream", c as u32))
    }
    fn status(&mut self) -> Result<ExitStatus, Invalid> {
        let tag = self.u8()?;
        let v = self.u32()? as i32;
        match tag {
            1 => Ok(ExitStatus::Code(v)),
            2 => Ok(ExitStatus::Signal(v)),
            x => Err(Invalid::BadValue("exit status kind", x as u32)),
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload would be this many bytes, more than [`MAX_PAYLOAD`].
    TooLarge(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge(n) => {
                write!(f, "payload of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit")
            }
        }
    }
}
impl std::error::Error for EncodeError {}

/// Result of a failed [`Message::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer holds a valid prefix of a frame: read more and try again.
    NeedMore,
    /// The bytes can never form a valid frame: the stream is unusable.
    Invalid(Invalid),
}

impl From<Invalid> for DecodeError {
    fn from(i: Invalid) -> Self {
        DecodeError::Invalid(i)
    }
}

/// Why a byte stream is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    BadMagic,
    FrameVersion(u8),
    UnknownType(u8),
    TooLarge(u32),
    /// The payload ends inside a field.
    Truncated,
    /// The payload has bytes after its last field.
    TrailingBytes,
    Utf8,
    BadValue(&'static str, u32),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::BadMagic => write!(f, "bad frame magic"),
            Invalid::FrameVersion(v) => write!(f, "unsupported frame version {v}"),
            Invalid::UnknownType(t) => write!(f, "unknown message type 0x{t:02x}"),
            Invalid::TooLarge(n) => write!(f, "payload length {n} exceeds {MAX_PAYLOAD}"),
            Invalid::Truncated => write!(f, "payload ends inside a field"),
            Invalid::TrailingBytes => write!(f, "trailing bytes after the payload"),
            Invalid::Utf8 => write!(f, "string is not UTF-8"),
            Invalid::BadValue(what, v) => write!(f, "invalid {what} value {v}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::NeedMore => write!(f, "incomplete frame"),
            DecodeError::Invalid(i) => write!(f, "invalid frame: {i}"),
        }
    }
}
impl std::error::Error for DecodeError {}

/// Accumulates bytes from a stream and yields whole messages.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. After an error the
    /// stream must be abandoned.
    pub fn next_message(&mut self) -> Result<Option<Message>, Invalid> {
        match Message::decode(&self.buf) {
            Ok((m, n)) => {
                self.buf.drain(..n);
                Ok(Some(m))
            }
            Err(DecodeError::NeedMore) => Ok(None),
            Err(DecodeError::Invalid(i)) => Err(i),
        }
    }

    /// Bytes held that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// After an invalid frame: drop the first byte and everything up to the next `"VT"`, so
    /// a reader that attached in the middle of a stream finds the next frame. Returns how
    /// many bytes were dropped.
    pub fn resync(&mut self) -> usize {
        let skip = self.buf.windows(2).skip(1).position(|w| w == MAGIC).map_or(self.buf.len(), |i| i + 1);
        self.buf.drain(..skip);
        skip
    }
}

/// Split `data` (read at `at_us`) into [`Message::Log`] frames of at most [`MAX_LOG_CHUNK`]
/// bytes each, numbered from `first_seq`; returns the next sequence number.
pub fn log_frames(first_seq: u64, at_us: u64, stream: Stream, data: &[u8], out: &mut Vec<u8>) -> u64 {
    let mut seq = first_seq;
    for chunk in data.chunks(MAX_LOG_CHUNK) {
        Message::Log { seq, at_us, stream, data: chunk.to_vec() }
            .encode_into(out)
            .expect("a log chunk is below MAX_PAYLOAD");
        seq += 1;
    }
    seq
}
