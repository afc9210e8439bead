//! The command line's shape: clap types only, no behaviour.
//!
//! Global flags are read from the command line only; `VT_SERVER`, `VT_TOKEN`,
//! `VT_ORG`, `VT_APP`, `VT_ENV` and the context file are merged later (see
//! `config.rs`), so `vt context set --org x` can tell a flag from the
//! environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use vt_api::{Hostname, Name};

#[derive(Debug, Parser)]
#[command(name = "vt", version, about = "vt: run apps in microVMs", propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The server's URL [env: VT_SERVER] [default: http://127.0.0.1:7411]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// API token [env: VT_TOKEN]; on a local server, falls back to <data-dir>/admin-token
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Organization, by name or id [env: VT_ORG]
    #[arg(long, global = true, value_name = "ORG")]
    pub org: Option<String>,
    /// App, by name or id [env: VT_APP]
    #[arg(long, global = true, value_name = "APP")]
    pub app: Option<String>,
    /// Environment, by name or id [env: VT_ENV]
    #[arg(long, global = true, value_name = "ENV")]
    pub env: Option<String>,
    /// Output format: `table` for people, `json` for programs (only JSON on stdout)
    #[arg(short = 'o', long = "format", global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show or set the saved server, token and default org/app/env
    #[command(subcommand)]
    Context(ContextCommand),
    /// Organizations
    #[command(subcommand)]
    Org(OrgCommand),
    /// Apps of an org
    #[command(subcommand)]
    App(AppCommand),
    /// Environments of an app
    #[command(subcommand)]
    Env(EnvCommand),
    /// Releases: an image digest plus a manifest
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Images: push to the server's registry
    #[command(subcommand)]
    Image(ImageCommand),
    /// Deploy a release to an env (or `vt deploy list|get`)
    Deploy(DeployArgs),
    /// Return an env to its previous release (a deploy of kind `rollback`)
    Rollback(RollbackArgs),
    /// Set instance counts: `vt scale web=3 worker=1` (no arguments: show them)
    Scale(ScaleArgs),
    /// List an env's instances
    Instances,
    /// Read the event log
    Events(EventsArgs),
    /// Output of an instance, or of every instance of the env (prefixed by instance id)
    Logs(LogsArgs),
    /// An env's desired state next to what is running, with the differences
    Describe,
    /// Run a command in an instance: `vt exec INSTANCE -- CMD ARGS...` or `vt exec --process web -- CMD`
    Exec(ExecArgs),
    /// Nodes of the cluster
    #[command(subcommand)]
    Node(NodeCommand),
    /// Ingress routes of an env: TLS passthrough by host name, or raw TCP
    #[command(subcommand)]
    Route(RouteCommand),
    /// Secrets of an env: set, import, unset (now or staged), list, deploy what is staged
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Volumes of an env: local disks on one node each, mounted by the manifest's `[[volumes]]`
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Workspaces: browser IDEs (code-server), one microVM each with a home disk that persists
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// API tokens: create one for a person, a CI job or a node; list; revoke
    #[command(subcommand)]
    Token(TokenCommand),
    /// The server's background tasks, and what the platform measures about itself (boot timings)
    #[command(subcommand)]
    System(SystemCommand),
    /// Check, format and convert manifests (local; needs no server)
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Run the control plane (or `vt server rebuild-views`)
    Server(Box<ServerArgs>),
}

#[derive(Debug, Args)]
#[command(after_help = "The command's exit code becomes vt's (a signal n: 128+n). `-t` puts this terminal in raw \
mode (Ctrl-C goes to the command through its terminal); without `-t`, Ctrl-C is sent to the command as SIGINT. \
Output is the command's own: `--format json` is refused.")]
pub struct ExecArgs {
    /// The instance, by id (`vt instances` lists them)
    #[arg(value_name = "INSTANCE", required_unless_present = "process", conflicts_with = "process")]
    pub instance: Option<String>,
    /// Instead of INSTANCE: a running instance of this process in the env (a ready one first)
    #[arg(long, value_name = "PROCESS")]
    pub process: Option<String>,
    /// Forward this standard input to the command (without it, the command reads end of file)
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run the command under a pseudo-terminal, this terminal in raw mode, its size followed
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run as this user: `root`, a user of the image, or `uid[:gid]` (default: the entrypoint's)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Working directory, an absolute path (default: the entrypoint's)
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Set an environment variable for the command (repeat for more); only names are recorded
    #[arg(short = 'e', value_name = "KEY=VALUE")]
    pub env_vars: Vec<String>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Save the given global flags (`--server`, `--token`, `--org`, `--app`, `--env`)
    Set(ContextSetArgs),
    /// Show the effective settings and where each comes from
    Show,
}

#[derive(Debug, Args)]
pub struct ContextSetArgs {
    /// Forget these saved keys (server, token, org, app, env)
    #[arg(long, value_name = "KEY")]
    pub unset: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an org
    Create { name: Name },
    /// List orgs
    List,
    /// Show an org (default: the current org)
    Get {
        #[arg(value_name = "ORG")]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app in the org
    Create {
        name: Name,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the org's apps
    List,
    /// Show an app (default: the current app)
    Get {
        #[arg(value_name = "APP")]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an env in the app
    Create { name: Name },
    /// List the app's envs
    List,
    /// Show an env (default: the current env)
    Get {
        #[arg(value_name = "ENV")]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Push an OCI image layout directory, or an OCI-archive / docker-archive tarball, to the
    /// server's registry; prints the manifest digest
    Push(ImagePush),
    /// Turn a directory into a one-layer OCI image layout (no Docker needed), ready for
    /// `vt image push`; prints the manifest digest
    Build(ImageBuild),
}

#[derive(Debug, Clone, Args)]
pub struct ImageBuild {
    /// The directory that becomes the image's root filesystem (owners are stored as root)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Where to write the OCI image layout (a new directory, or a layout to replace)
    #[arg(long, short = 'O', value_name = "DIR")]
    pub output: PathBuf,
    /// The program to run; repeat for each argument (`--entrypoint /bin/sh --entrypoint -c`)
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// Arguments after the entrypoint, or the command when there is none; repeat for each
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub cmd: Vec<String>,
    /// An environment variable of the image, `NAME=VALUE`; repeatable
    #[arg(long, value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The working directory of the process
    #[arg(long, value_name = "PATH")]
    pub workdir: Option<String>,
    /// The user the process runs as (`name`, `uid` or `uid:gid`)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ImagePush {
    /// An OCI image layout directory, or a tarball (`oci-archive`, `docker save`)
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Repository in the registry [default: <org>/<app>]
    #[arg(long, value_name = "NAME")]
    pub repo: Option<String>,
    /// Tag to set
    #[arg(long, value_name = "TAG", default_value = "latest")]
    pub tag: String,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Create a release of the app from an image pinned by digest and a manifest file
    Create(ReleaseSource),
    /// List the app's releases
    List,
    /// Show a release
    Get { release: String },
}

#[derive(Debug, Clone, Args)]
pub struct ReleaseSource {
    /// `repository@sha256:<64 hex>`
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// The manifest TOML file
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub command: Option<DeployCommand>,
    /// Deploy this existing release
    #[arg(long, value_name = "RELEASE", conflicts_with_all = ["image", "manifest"])]
    pub release: Option<String>,
    /// Create a release from this image first (needs --manifest)
    #[arg(long, value_name = "REF", requires = "manifest")]
    pub image: Option<String>,
    /// The manifest for --image
    #[arg(long, value_name = "FILE", requires = "image")]
    pub manifest: Option<PathBuf>,
    /// Wait until the deploy succeeds, fails or is superseded
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 1)
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// List the env's deploys
    List,
    /// Show a deploy
    Get { deploy: String },
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Wait until the rollback succeeds, fails or is superseded
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 1)
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// PROCESS=N, one or more; none shows the current scale
    #[arg(value_name = "PROCESS=N")]
    pub processes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this instance (default: every instance of the env)
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Keep streaming new lines until the instances end
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start with the last N lines of each instance's backlog
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep streaming new events (NDJSON with --format json)
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start after this sequence number (without it: the newest events)
    #[arg(long, value_name = "SEQ")]
    pub after: Option<u64>,
    /// How many, 1-1000 (without --follow): the newest N, or N after --after
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes
    List,
    /// Show a node
    Get { node: String },
    /// Single-use tokens that enroll a new node (docs/nodes.md)
    #[command(subcommand)]
    EnrollToken(EnrollTokenCommand),
    /// Revoke a node: its tokens die, its instances are placed elsewhere, its name is free again
    Revoke { node: String },
}

#[derive(Debug, Subcommand)]
pub enum EnrollTokenCommand {
    /// Make one: the new host runs `vt server --role agent --join URL --enroll-token TOKEN` with it, once
    Create(EnrollTokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct EnrollTokenCreateArgs {
    /// How long it may be used, e.g. `15m` (1 minute to 7 days)
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = duration_secs)]
    pub ttl: u64,
    /// Labels the node gets, comma-separated `KEY=VALUE`
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',', value_parser = label_pair)]
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Boot-time percentiles per phase (count, p50, p95, p99, max) over instances that reported them
    BootTimings(BootTimingsArgs),
    /// The server's background tasks (projector, scheduler, edge, agent) and how each is doing
    Tasks,
    /// Delete registry blobs no image or release references (a day old or more) and abandoned uploads, now
    Gc,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Names, versions, who set them when, and what is staged; never values
    List,
    /// Set secrets: `KEY=VALUE...`, or one `KEY --from-file PATH` (`-`: stdin). Without
    /// `--stage`: a new secrets version, rolled out at once
    Set(SecretsSetArgs),
    /// Set every secret of a bundle file (the format of /run/secrets/vt.bundle; `-`: stdin)
    Import(SecretsImportArgs),
    /// Remove secrets
    Unset(SecretsUnsetArgs),
    /// Apply what is staged as one new secrets version, rolled out once
    Deploy,
}

#[derive(Debug, Args)]
pub struct SecretsSetArgs {
    /// `KEY=VALUE` pairs; with `--from-file`, one `KEY`
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub pairs: Vec<String>,
    /// Read the one KEY's value from this file, as raw bytes (`-`: stdin)
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// Stage the change for `vt secrets deploy` instead of rolling out now
    #[arg(long)]
    pub stage: bool,
}

#[derive(Debug, Args)]
pub struct SecretsImportArgs {
    /// A bundle file (`VTSECRETS 1`, see docs/secrets.md); `-`: stdin
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Stage the change for `vt secrets deploy` instead of rolling out now
    #[arg(long)]
    pub stage: bool,
}

#[derive(Debug, Args)]
pub struct SecretsUnsetArgs {
    /// Names of the secrets to remove
    #[arg(required = true, value_name = "KEY")]
    pub names: Vec<String>,
    /// Stage the change for `vt secrets deploy` instead of rolling out now
    #[arg(long)]
    pub stage: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and never again
    Create(TokenCreateArgs),
    /// List tokens: names, roles, bindings, expiry; never secrets
    List(TokenListArgs),
    /// Revoke a token: it is refused from the next request on
    Revoke {
        /// The token's id (`tok_...`; `vt token list` shows them)
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// Who or what holds it (`ci`, `alice`)
    pub name: Name,
    /// `owner` (everything in the org, its tokens too), `deployer` (releases, deploys, scale,
    /// rollback, routes), `viewer` (reads, logs, events); `admin` and `node` are the operator's
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The org an org role acts in [default: the current org]
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// For `--role node`: the node (a registered node, or the name a new node will register under)
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Expire after this long: `90d`, `12h`, `30m`, `3600s` [default: never]
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Args)]
pub struct TokenListArgs {
    /// Only this org's tokens (an owner sees its org's tokens only)
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// Include revoked and expired tokens
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Owner,
    Deployer,
    Viewer,
    Admin,
    Node,
}

impl From<RoleArg> for vt_api::TokenRole {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Owner => Self::Owner,
            RoleArg::Deployer => Self::Deployer,
            RoleArg::Viewer => Self::Viewer,
            RoleArg::Admin => Self::Admin,
            RoleArg::Node => Self::Node,
        }
    }
}

#[derive(Debug, Args)]
pub struct BootTimingsArgs {
    /// Only instances placed on this node (name or id)
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Route a host name (TLS passthrough) or an allocated TCP port to a process type
    Create(RouteCreateArgs),
    /// List the env's routes, with whether the ingress listens on each
    List,
    /// Show a route (by id, or by host name when it has one route) and each node's listener
    Get { route: String },
    /// Delete a route, by id (or by host name when it has one route)
    Delete { route: String },
}

#[derive(Debug, Args)]
pub struct RouteCreateArgs {
    /// The TLS server name clients ask for (TLS routes)
    #[arg(long, value_name = "HOST")]
    pub hostname: Option<Hostname>,
    /// The ingress listener port of a TLS route [default: 443]
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// The process type whose running instances serve the route
    #[arg(long, value_name = "PROCESS")]
    pub process: Name,
    /// The port the instances listen on
    #[arg(long, value_name = "PORT")]
    pub backend_port: u16,
    /// Raw TCP on a port the server allocates, instead of TLS by host name
    #[arg(long)]
    pub tcp: bool,
    /// Send a PROXY protocol v2 header with the client's address first
    #[arg(long)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume on a node; each instance of a process that mounts NAME takes one free volume of that name
    Create(VolumeCreateArgs),
    /// List the env's volumes (by name), with their node and the instance that has each
    List,
    /// Show a volume, by id (or by name when one volume has it)
    Get { volume: String },
    /// Grow a volume (it never shrinks); an attached volume grows at its instance's next start
    Extend {
        volume: String,
        /// The new size, GiB: larger than it is
        #[arg(long, value_name = "GIB")]
        size_gib: u32,
    },
    /// Take a crash-consistent snapshot of a volume on its node (the VM that has it pauses for the copy)
    Snapshot {
        volume: String,
        /// Return once it is asked for, without waiting for the node to take it
        #[arg(long)]
        no_wait: bool,
    },
    /// List the snapshots of a volume (by id), or of every volume of a name, deleted ones too
    Snapshots { volume: String },
    /// Back a volume up to the server's restic repository now (the VM pauses for the copy only)
    Backup {
        volume: String,
        /// Return once it is asked for, without waiting for the node to finish it
        #[arg(long)]
        no_wait: bool,
    },
    /// List the backups in the repository of the env's volumes of a name (or of a volume, by id)
    Backups { volume: String },
    /// Restore a snapshot (`snap_…`, on its node) or a backup (its restic id) as a new volume, never in place
    Restore {
        /// A snapshot id, or a backup id (a unique prefix of 8 or more hex digits)
        from: String,
        /// The new volume's name (no volume of the env may have it)
        #[arg(long = "as", value_name = "NAME")]
        name: Name,
        /// The node a backup is restored on (name or id) [default: the ready node holding the fewest volumes]
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
    },
    /// Delete a volume and its data (refused while an instance has it); asks on a terminal
    Delete {
        volume: String,
        /// Do not ask (required when stdin is not a terminal)
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// The name a manifest's `[[volumes]]` mounts (several volumes may share it)
    pub name: Name,
    /// Its size, GiB (1-65536)
    #[arg(long, value_name = "GIB")]
    pub size_gib: u32,
    /// The node that holds it (name or id) [default: the ready node holding the fewest volumes]
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace in the org; it starts at once (its home disk is made on the node it lands on)
    Create(WorkspaceCreateArgs),
    /// List workspaces by name (the org's when one is set, else every one the token sees)
    List,
    /// Show a workspace: status, resources, where it is served, its ports and its activity
    Get {
        /// The workspace, by name or id
        workspace: String,
    },
    /// Start a stopped or failed workspace, or resume a suspended one (refused when its node has no room: stop another first)
    Start {
        /// The workspace, by name or id
        workspace: String,
        #[command(flatten)]
        wait: WorkspaceWait,
    },
    /// Stop a workspace's VM; its home disk stays
    Stop {
        /// The workspace, by name or id
        workspace: String,
        /// Suspend instead: save the VM (running processes, /tmp) to a snapshot on its node; `vt workspace start` resumes it as it was
        #[arg(long)]
        suspend: bool,
        #[command(flatten)]
        wait: WorkspaceWait,
    },
    /// Delete a workspace and its home disk, irreversibly; asks on a terminal
    Delete {
        /// The workspace, by name or id
        workspace: String,
        /// Do not ask (required when stdin is not a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// Ports of the workspace served at `/workspace/NAME/port/PORT/`
    #[command(subcommand)]
    Port(WorkspacePortCommand),
    /// Print where to open the workspace in a browser, and how to sign in
    Open {
        /// The workspace, by name or id
        workspace: String,
    },
}

#[derive(Debug, Args)]
pub struct WorkspaceCreateArgs {
    /// Unique on the platform: the workspace is served at `/workspace/NAME/`
    pub name: Name,
    /// vCPUs, 1-64 [default: 2]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(vt_api::workspaces::MAX_CPUS)))]
    pub cpus: Option<u32>,
    /// Memory, MiB, 256-262144: a hard cap [default: 4096]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32)
        .range(i64::from(vt_api::workspaces::MIN_MEMORY_MIB)..=i64::from(vt_api::workspaces::MAX_MEMORY_MIB)))]
    pub memory_mib: Option<u32>,
    /// The home disk, GiB, 1-4096 (sparse) [default: 10]
    #[arg(long, value_name = "GIB", value_parser = clap::value_parser!(u32).range(1..=i64::from(vt_api::workspaces::MAX_DISK_GIB)))]
    pub disk_gib: Option<u32>,
    /// An image of the org in the built-in registry that serves an IDE on port 8080 [default: the
    /// server's workspace template]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    #[command(flatten)]
    pub wait: WorkspaceWait,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct WorkspaceWait {
    /// Wait until the workspace gets there (`running` for create and start, `stopped` for stop)
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 1)
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum WorkspacePortCommand {
    /// Register a port: reachable at `/workspace/NAME/port/PORT/` (502 until something listens on it)
    Add {
        /// The workspace, by name or id
        workspace: String,
        /// 1-65535
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
    /// Unregister a port
    Remove {
        /// The workspace, by name or id
        workspace: String,
        /// 1-65535
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
    /// List the workspace's registered ports
    List {
        /// The workspace, by name or id
        workspace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Check a manifest; errors carry line:column and the TOML path
    Validate { file: PathBuf },
    /// Print the manifest in canonical form (comments are not kept)
    Fmt {
        file: PathBuf,
        /// Print nothing; exit 1 if the file is not in canonical form
        #[arg(long, conflicts_with = "write")]
        check: bool,
        /// Rewrite the file in place
        #[arg(long)]
        write: bool,
    },
    /// Print the normalized JSON the control plane stores
    Json { file: PathBuf },
    /// Print the manifest's JSON Schema (for editors)
    Schema,
}

/// A part of `vt server` (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerRole {
    ControlPlane,
    Edge,
    Agent,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address of the API origin: `/v1`, the registry at `/v2`, the console
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7411")]
    pub listen: std::net::SocketAddr,
    /// Address of the workspace origin: `/workspace/NAME/` (a separate browser origin)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7412", conflicts_with = "no_workspace_origin")]
    pub workspace_listen: std::net::SocketAddr,
    /// Do not serve the workspace origin in this server
    #[arg(long)]
    pub no_workspace_origin: bool,
    /// The default workspace template: the OCI image layout scripts/workspace-template.sh prints [default: none; `vt workspace create --image` only]
    #[arg(long, value_name = "DIR")]
    pub workspace_template: Option<PathBuf>,
    /// How often the workspace origin records the last access of each workspace, e.g. `60s`
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration_secs)]
    pub workspace_access_every: u64,
    /// Serve the API origin over TLS with this certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The API origin's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the workspace origin over TLS with this certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "workspace_tls_key")]
    pub workspace_tls_cert: Option<PathBuf>,
    /// The workspace origin's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "workspace_tls_cert")]
    pub workspace_tls_key: Option<PathBuf>,
    /// Addresses the ingress binds route ports on, comma-separated (IPv6 first)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', default_value = "::,0.0.0.0")]
    pub ingress_listen: Vec<std::net::IpAddr>,
    /// The range TCP routes get their listener ports from
    #[arg(long, value_name = "FIRST-LAST", default_value = "20000-20999", value_parser = port_range)]
    pub ingress_tcp_ports: std::ops::RangeInclusive<u16>,
    /// Do not run the ingress in this server (routes are still kept)
    #[arg(long)]
    pub no_ingress: bool,
    /// Do not run the node agent in this server (instances placed here are not started)
    #[arg(long)]
    pub no_agent: bool,
    /// What this server runs, comma-separated: `control-plane` (the API, the registry, the reconcilers), `edge` (the ingress), `agent` (the node agent); without `control-plane` (`agent`, `agent,edge`, or `edge` alone: an edge-only node, which runs no instances) the server joins a remote control plane (`--join`)
    #[arg(long, value_enum, value_name = "ROLES", value_delimiter = ',', default_value = "control-plane,edge,agent")]
    pub role: Vec<ServerRole>,
    /// The control plane a node without the control plane (`--role agent`, `agent,edge` or `edge`) joins: its API URL; with several control planes on one database, their URLs comma-separated, tried in order when one cannot be reached (docs/nodes.md)
    #[arg(long, value_name = "URL", value_delimiter = ',', num_args = 1)]
    pub join: Vec<String>,
    /// The single-use enrollment token of a joining node's first start (`vt node enroll-token create`)
    #[arg(long, value_name = "TOKEN", env = "VT_ENROLL_TOKEN", hide_env_values = true, requires = "join")]
    pub enroll_token: Option<String>,
    /// The name this server's node registers under (its agent's, or an edge-only node's) [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<Hostname>,
    /// Mesh this single host's node with other nodes over WireGuard (a joined node always does, unless --no-mesh; docs/nodes.md)
    #[arg(long, conflicts_with = "no_mesh")]
    pub mesh: bool,
    /// A joined node without the WireGuard mesh (its instances reach other nodes' only where the network already routes them)
    #[arg(long)]
    pub no_mesh: bool,
    /// The UDP port of the node's WireGuard interface
    #[arg(long, value_name = "PORT", default_value_t = 51820, value_parser = clap::value_parser!(u16).range(1..))]
    pub wireguard_port: u16,
    /// The address other nodes reach this one at [default: the address this host uses toward the control plane]
    #[arg(long, value_name = "ADDRESS")]
    pub node_address: Option<std::net::IpAddr>,
    /// The name of the node's WireGuard interface
    #[arg(long, value_name = "NAME", default_value = "vtmesh")]
    pub mesh_interface: String,
    /// How long a client may take to send a request's headers; idle keep-alive connections close after it
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_secs)]
    pub header_read_timeout: u64,
    /// How long a request body may go without a byte before the request fails (408)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_secs)]
    pub body_read_timeout: u64,
    /// Open API connections allowed from one IP address; more are closed when accepted
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections_per_client: u32,
    /// Disk space large writes (registry uploads, unpacked images, disks) leave free on the data directory's filesystem: a share (`10%`) or a size (`5GiB`)
    #[arg(long, value_name = "SIZE", default_value = "5GiB")]
    pub disk_reserve: vt_disk::Reserve,
    /// Back volumes up to this restic repository (a directory, `sftp:…`, `s3:…`; `restic init` it first)
    #[arg(long, value_name = "REPO", requires = "backup_password_file")]
    pub backup_repo: Option<String>,
    /// The file holding the backup repository's password
    #[arg(long, value_name = "FILE", requires = "backup_repo")]
    pub backup_password_file: Option<PathBuf>,
    /// Back every volume up this often, e.g. `6h` [default: only `vt volume backup`]
    #[arg(long, value_name = "DURATION", requires = "backup_repo", value_parser = duration_secs)]
    pub backup_every: Option<u64>,
    /// How many backups of each volume to keep, e.g. `daily=7,weekly=4` (units: last, hourly, daily, weekly, monthly, yearly) [default: all]
    #[arg(long, value_name = "UNIT=N,...", requires = "backup_repo", value_parser = keep)]
    pub backup_keep: Option<Keep>,
    /// Where the built-in registry keeps its blobs, manifests and tags [default: <data-dir>/registry]; control planes on one database share it by pointing here at one shared filesystem (NFS, CephFS; docs/registry.md)
    #[arg(long, value_name = "DIR")]
    pub registry_dir: Option<PathBuf>,
    /// What the built-in registry may hold per org, in GiB [default: no quota]
    #[arg(long, value_name = "GIB", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub registry_quota_gib: Option<u64>,
    /// A node whose agent sent no heartbeat for this long is unreachable: its instances are
    /// placed elsewhere (agents beat every 5 s)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_secs)]
    pub heartbeat_timeout: u64,
    /// On SIGTERM or Ctrl-C: how long requests in flight may take to finish
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_secs)]
    pub drain_timeout: u64,
    /// On SIGTERM or Ctrl-C, after the drain: how long the node agent's VMs may take to stop
    /// (their entrypoints get SIGTERM); the ones left are killed
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_secs)]
    pub vm_stop_timeout: u64,
    /// Log lines as `text` (for people) or `json` (one object a line); `auto`: text when stderr
    /// is a terminal, JSON otherwise. The level comes from `RUST_LOG` (default `info`)
    #[arg(long, value_enum, value_name = "FORMAT", env = "VT_LOG_FORMAT", default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub network: NetworkArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// The guest network (docs/network.md).
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// The cluster's IPv4 block: each node gets a /24 of it for its instances' egress (NAT)
    #[arg(long, value_name = "CIDR", default_value = "100.64.0.0/10", value_parser = ipv4_prefix)]
    pub guest_ipv4_block: vt_firewall::Ipv4Net,
    /// The MTU of every guest's interface (1500 on one host; 1420 under a WireGuard mesh)
    #[arg(long, value_name = "BYTES", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(1280..=9000))]
    pub guest_mtu: u16,
    /// Instances reach no internet, only their org's private network (no forwarding needed)
    #[arg(long, env = "VT_NO_EGRESS")]
    pub no_egress: bool,
    /// Instances' IPv6 to the internet: `nat` (masqueraded to the node's address: the cluster's ULA is not routed outside) or `routed` (the upstream routes the cluster's prefix here)
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Ipv6EgressArg::Nat)]
    pub egress_ipv6: Ipv6EgressArg,
    /// Destinations instances may reach although private or on the host's LAN (CIDR; repeat or comma-separate)
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = prefix)]
    pub egress_allow: Vec<vt_firewall::IpNet>,
    /// Destinations instances never reach (CIDR; repeat or comma-separate)
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = prefix)]
    pub egress_deny: Vec<vt_firewall::IpNet>,
    /// The nftables table (family inet) this node's agent owns; one per agent on a host
    #[arg(long, value_name = "NAME", env = "VT_NFT_TABLE", default_value = vt_firewall::DEFAULT_TABLE, value_parser = table_name)]
    pub nft_table: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ipv6EgressArg {
    Nat,
    Routed,
}

fn prefix(s: &str) -> Result<vt_firewall::IpNet, String> {
    vt_firewall::prefix::parse_prefix(s)
}

fn ipv4_prefix(s: &str) -> Result<vt_firewall::Ipv4Net, String> {
    match vt_firewall::prefix::parse_prefix(s)? {
        vt_firewall::IpNet::V4(n) => Ok(n),
        vt_firewall::IpNet::V6(_) => Err(format!("`{s}` is IPv6: give an IPv4 block, like 100.64.0.0/10")),
    }
}

fn table_name(s: &str) -> Result<String, String> {
    vt_firewall::check_table_name(s).map(|()| s.to_owned())
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where the server keeps its SQLite store and admin token
    #[arg(long, value_name = "DIR", env = "VT_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// `postgres://...` to use PostgreSQL instead of SQLite
    #[arg(long, value_name = "URL", env = "VT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// SQLite durability: `full` fsyncs every commit; `normal` may lose the last commits on power loss
    #[arg(long, value_enum, default_value_t = SqliteSync::Full)]
    pub sqlite_sync: SqliteSync,
    /// The master key that wraps the secrets' keys [default: <data-dir>/master.key, made on first start]
    #[arg(long, value_name = "FILE", env = "VT_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    Full,
    Normal,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Rebuild the views from the event log, offline, and report rows that changed (exit 1 if any)
    RebuildViews(RebuildArgs),
    /// Replace the master key, offline: every env's key is re-wrapped, no secret value is touched
    RotateMasterKey(RebuildArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `90d`, `12h`, `30m`, `45s` (or a bare number of seconds) as seconds.
/// `KEY=VALUE`.
pub fn label_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub fn duration_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number and a unit: 90d, 12h, 30m or 45s"))?;
    let per = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" | "" => 1,
        _ => return Err(format!("{s:?}: the unit must be d, h, m or s")),
    };
    match n.checked_mul(per) {
        Some(0) | None => Err(format!("{s:?}: must be at least 1 s and at most ten years")),
        Some(secs) => Ok(secs),
    }
}

fn port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').ok_or("expected FIRST-LAST, like 20000-20999")?;
    let (a, b): (u16, u16) =
        (a.trim().parse().map_err(|e| format!("{a}: {e}"))?, b.trim().parse().map_err(|e| format!("{b}: {e}"))?);
    if a == 0 || a > b {
        return Err(format!("{s}: need 1 <= FIRST <= LAST"));
    }
    Ok(a..=b)
}

/// `--backup-keep daily=7,weekly=4`: per unit, how many backups to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep(pub Vec<(String, u32)>);

fn keep(s: &str) -> Result<Keep, String> {
    vt_backup::parse_keep(s).map(Keep)
}
