//! `vt image push PATH [--repo NAME] [--tag T]`: push an OCI image layout directory, or an
//! OCI-archive / docker-archive tarball, to the server's registry.
//! `vt image build DIR --output LAYOUT [--entrypoint ARG]... [--cmd ARG]...`: a directory as a
//! deterministic one-layer image layout (`vt_image::layout::write_image`), no server needed.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use vt_client::registry::{BlobPush, RegistryClient, RegistryError};
use vt_image::oci::{self, media, Descriptor, ImageIndex, ImageManifest, ManifestKind};
use vt_image::{Digest, OciLayoutSource};

use crate::args::{ImageBuild, ImageCommand, ImagePush};
use crate::commands::scope_flags;
use crate::printer::Receipt;
use crate::{config, CliError, CliResult, Ctx, ExitStatus};

/// What `vt image push` reports (`-o json`).
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub repository: String,
    pub tag: String,
    /// The manifest (or index) digest.
    pub digest: String,
    /// `repository@digest`: what `vt release create --image` takes.
    pub image: String,
    pub media_type: String,
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
}

pub async fn run(ctx: &Ctx, cmd: ImageCommand) -> CliResult {
    match cmd {
        ImageCommand::Push(args) => push(ctx, args).await,
        ImageCommand::Build(args) => build(ctx, args),
    }
}

/// What `vt image build` reports (`-o json`).
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    /// The OCI image layout written.
    pub layout: String,
    /// The manifest digest (what a release pins once the image is pushed).
    pub digest: String,
    /// The single layer's compressed size, in bytes.
    pub layer_bytes: u64,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

fn build(ctx: &Ctx, args: ImageBuild) -> CliResult {
    if !args.dir.is_dir() {
        return Err(CliError::usage(
            format!("DIR {}: not a directory", args.dir.display()),
            Some("pass the directory that should become the image's root filesystem".to_owned()),
        ));
    }
    if args.entrypoint.is_empty() && args.cmd.is_empty() {
        return Err(CliError::usage(
            "no program: pass --entrypoint ARG (repeat for each argument) or --cmd ARG",
            Some("for example `--entrypoint /bin/app --cmd --port --cmd 8080`".to_owned()),
        ));
    }
    if let Some(bad) = args.env.iter().find(|kv| kv.split_once('=').is_none_or(|(k, _)| k.is_empty())) {
        return Err(CliError::usage(format!("--env {bad:?}: wants NAME=VALUE"), None));
    }
    if args.output.starts_with(&args.dir) {
        return Err(CliError::usage(
            format!("--output {}: inside DIR, it would be part of the image", args.output.display()),
            Some("write the layout outside the directory you build".to_owned()),
        ));
    }
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let config = oci::RuntimeConfig {
        user: args.user.clone(),
        env: some(&args.env),
        entrypoint: some(&args.entrypoint),
        cmd: some(&args.cmd),
        working_dir: args.workdir.clone(),
    };
    let img = vt_image::layout::write_image(&args.dir, &args.output, config, Default::default())
        .map_err(|e| CliError::failed(format!("build {}: {e}", args.dir.display()), None))?;
    let built = Built {
        layout: args.output.display().to_string(),
        digest: img.manifest.digest.to_string(),
        layer_bytes: img.layer.size,
        entrypoint: args.entrypoint,
        cmd: args.cmd,
    };
    ctx.printer.receipt(
        &built,
        Receipt {
            what: format!(
                "Built an image of {} into {} (one layer, {} bytes)",
                args.dir.display(),
                built.layout,
                built.layer_bytes
            ),
            ids: vec![("digest", built.digest.clone())],
            details: None,
            next: vec![format!("vt image push {} --tag v1{}", built.layout, scope_flags(ctx, true, false))],
        },
    );
    Ok(ExitStatus::Success)
}

fn registry_err(e: RegistryError) -> CliError {
    match e {
        RegistryError::Connect { url, message } => CliError::Client(vt_client::Error::Connect { url, message }),
        RegistryError::Io(e) => CliError::Io(e),
        RegistryError::Api { status: 401, .. } => {
            CliError::failed(e.to_string(), Some("check the token: `vt context show`, or --token".to_owned()))
        }
        other => CliError::failed(other.to_string(), None),
    }
}

async fn push(ctx: &Ctx, args: ImagePush) -> CliResult {
    let repo = match &args.repo {
        Some(r) => r.clone(),
        None => match (ctx.settings.org.value.as_deref(), ctx.settings.app.value.as_deref()) {
            (Some(o), Some(a)) => format!("{o}/{a}"),
            _ => {
                return Err(CliError::usage(
                    "no repository: pass --repo NAME (default: <org>/<app> of the context)",
                    None,
                ))
            }
        },
    };
    if !vt_image::reference::valid_repository(&repo) {
        return Err(CliError::usage(format!("invalid repository name {repo:?}: lowercase components of a-z, 0-9 and separators `.`, `_`, `-`, joined by `/`"), None));
    }
    if !vt_image::reference::valid_tag(&args.tag) {
        return Err(CliError::usage(
            format!("invalid tag {:?}: 1-128 of A-Z, a-z, 0-9, `_`, `.`, `-`, not starting with `.` or `-`", args.tag),
            None,
        ));
    }
    let meta = fs_err::metadata(&args.path)?;
    // A tarball is unpacked into a temp dir (kept until the push is done).
    let (_tmp, layout) = if meta.is_dir() {
        (None, args.path.clone())
    } else {
        let tmp = tempfile::tempdir()?;
        let layout = unpack_archive(&args.path, tmp.path())?;
        (Some(tmp), layout)
    };
    let src = OciLayoutSource::open(&layout).map_err(|e| {
        CliError::usage(
            format!("{} is not an OCI image layout, OCI archive or docker archive: {e}", args.path.display()),
            None,
        )
    })?;
    let index = src.index().map_err(|e| CliError::failed(e.to_string(), None))?;
    let top = pick(&index, &args.tag).map_err(|m| CliError::usage(m, None))?;

    let base = ctx.settings.server.value.as_deref().unwrap_or(config::DEFAULT_SERVER);
    let client = RegistryClient::new(base, ctx.settings.token.value.clone());
    client.ping().await.map_err(registry_err)?;
    let mut stats = (0usize, 0usize);
    let digest = push_manifest(&client, &repo, &layout, &top, &args.tag, &mut stats).await?;
    let pushed = Pushed {
        image: format!("{repo}@{digest}"),
        repository: repo.clone(),
        tag: args.tag.clone(),
        digest: digest.clone(),
        media_type: top.media_type.clone(),
        blobs_uploaded: stats.0,
        blobs_skipped: stats.1,
    };
    ctx.printer.receipt(
        &pushed,
        Receipt {
            what: format!(
                "Pushed `{repo}:{}` ({} blob{} uploaded, {} already present)",
                args.tag,
                stats.0,
                if stats.0 == 1 { "" } else { "s" },
                stats.1
            ),
            ids: vec![("digest", digest.clone()), ("image", pushed.image.clone())],
            details: None,
            next: vec![format!(
                "vt release create --image {} --manifest vt.toml{}",
                pushed.image,
                scope_flags(ctx, true, false)
            )],
        },
    );
    Ok(ExitStatus::Success)
}

/// The manifest to push: the only one in `index.json`, or the one annotated with `tag`.
fn pick(index: &ImageIndex, tag: &str) -> Result<Descriptor, String> {
    const REF: &str = "org.opencontainers.image.ref.name";
    match index.manifests.as_slice() {
        [] => Err("index.json lists no manifest".into()),
        [one] => Ok(one.clone()),
        many => {
            many.iter().find(|d| d.annotations.get(REF).map(String::as_str) == Some(tag)).cloned().ok_or_else(|| {
                let names: Vec<&str> = many.iter().filter_map(|d| d.annotations.get(REF).map(String::as_str)).collect();
                format!("index.json lists {} manifests; pick one with --tag (names: {})", many.len(), names.join(", "))
            })
        }
    }
}

fn blob_path(layout: &Path, d: &Digest) -> PathBuf {
    layout.join("blobs/sha256").join(d.hex())
}

/// Push the blobs a manifest needs (an index: its manifests first), then the manifest.
fn push_manifest<'a>(
    client: &'a RegistryClient,
    repo: &'a str,
    layout: &'a Path,
    desc: &'a Descriptor,
    reference: &'a str,
    stats: &'a mut (usize, usize),
) -> std::pin::Pin<Box<dyn std::future::Future<Output = CliResult<String>> + 'a>> {
    Box::pin(async move {
        let bytes = fs_err::read(blob_path(layout, &desc.digest))?;
        if Digest::of(&bytes) != desc.digest {
            return Err(CliError::failed(format!("the layout's blob {} does not match its digest", desc.digest), None));
        }
        let bad = |e: serde_json::Error| CliError::failed(format!("manifest {}: {e}", desc.digest), None);
        match oci::manifest_kind(&desc.media_type) {
            Some(ManifestKind::Manifest) => {
                let m: ImageManifest = serde_json::from_slice(&bytes).map_err(bad)?;
                for b in std::iter::once(&m.config).chain(&m.layers) {
                    let path = blob_path(layout, &b.digest);
                    match client.push_blob(repo, &b.digest.to_string(), &path).await.map_err(registry_err)? {
                        BlobPush::Uploaded => stats.0 += 1,
                        BlobPush::Skipped => stats.1 += 1,
                    }
                }
            }
            Some(ManifestKind::Index) => {
                let ix: ImageIndex = serde_json::from_slice(&bytes).map_err(bad)?;
                for child in &ix.manifests {
                    push_manifest(client, repo, layout, child, &child.digest.to_string(), stats).await?;
                }
            }
            None => {
                return Err(CliError::failed(format!("unsupported manifest media type {:?}", desc.media_type), None))
            }
        }
        client.put_manifest(repo, reference, &desc.media_type, bytes).await.map_err(registry_err)
    })
}

/// Unpack an OCI archive (a tarred layout) or a docker archive (`docker save`) into `dir`;
/// returns the OCI layout to push (a docker archive is converted: same config and layers).
fn unpack_archive(path: &Path, dir: &Path) -> CliResult<PathBuf> {
    let f = fs_err::File::open(path)?;
    tar::Archive::new(f)
        .unpack(dir)
        .map_err(|e| CliError::usage(format!("{} is not a directory or a tar archive: {e}", path.display()), None))?;
    if dir.join("oci-layout").is_file() {
        return Ok(dir.to_owned());
    }
    if !dir.join("manifest.json").is_file() {
        return Err(CliError::usage(
            format!("{}: the archive has neither `oci-layout` nor `manifest.json`", path.display()),
            None,
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct DockerEntry {
        config: String,
        layers: Vec<String>,
    }
    let entries: Vec<DockerEntry> = serde_json::from_slice(&fs_err::read(dir.join("manifest.json"))?)
        .map_err(|e| CliError::failed(format!("manifest.json: {e}"), None))?;
    let entry = entries.first().ok_or_else(|| CliError::failed("manifest.json lists no image", None))?;
    let out = dir.join("vt-oci-layout");
    fs_err::create_dir_all(out.join("blobs/sha256"))?;
    let inside = |p: &str| -> CliResult<PathBuf> {
        if p.split('/').any(|c| c == "..") || p.starts_with('/') {
            return Err(CliError::failed(format!("manifest.json names a path outside the archive: {p:?}"), None));
        }
        Ok(dir.join(p))
    };
    let add = |p: &str, media_type: Option<&str>| -> CliResult<Descriptor> {
        let src = inside(p)?;
        let (digest, size, gzip) = hash_file(&src)?;
        let dst = blob_path(&out, &digest);
        if !dst.exists() {
            fs_err::rename(&src, &dst).or_else(|_| fs_err::copy(&src, &dst).map(|_| ()))?;
        }
        let mt = media_type.unwrap_or(if gzip { media::OCI_LAYER_TAR_GZIP } else { media::OCI_LAYER_TAR });
        Ok(Descriptor::new(mt, digest, size))
    };
    let config = add(&entry.config, Some(media::OCI_CONFIG))?;
    let layers = entry.layers.iter().map(|l| add(l, None)).collect::<CliResult<Vec<_>>>()?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config,
        layers,
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| CliError::failed(e.to_string(), None))?;
    let digest = Digest::of(&bytes);
    fs_err::write(blob_path(&out, &digest), &bytes)?;
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        manifests: vec![Descriptor::new(media::OCI_MANIFEST, digest, bytes.len() as u64)],
        annotations: Default::default(),
    };
    fs_err::write(
        out.join("index.json"),
        serde_json::to_vec(&index).map_err(|e| CliError::failed(e.to_string(), None))?,
    )?;
    fs_err::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(out)
}

/// sha256, size, and whether the file starts with the gzip magic.
fn hash_file(path: &Path) -> CliResult<(Digest, u64, bool)> {
    let mut f = fs_err::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut size, mut head) = (0u64, Vec::new());
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if head.len() < 2 {
            head.extend_from_slice(&buf[..n.min(2)]);
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_sha256(h.finalize().into()), size, head.starts_with(&[0x1f, 0x8b])))
}
