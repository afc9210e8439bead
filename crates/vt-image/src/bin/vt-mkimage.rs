//! `vt-mkimage DIR OUT_LAYOUT [--entrypoint ARG]... [--cmd ARG]... [--env K=V]... [--workdir DIR]
//! [--user USER] [--uncompressed | --gzip-level N]`
//!
//! Writes a deterministic one-layer OCI image layout of DIR and prints the manifest digest.
//! `--entrypoint`/`--cmd` are repeatable: each occurrence appends one argv element.

use std::path::PathBuf;
use std::process::ExitCode;

use vt_image::layout::{write_image, LayerFormat};
use vt_image::oci::RuntimeConfig;

const USAGE: &str = "usage: vt-mkimage DIR OUT_LAYOUT [--entrypoint ARG]... [--cmd ARG]... [--env K=V]... \
[--workdir DIR] [--user USER] [--uncompressed | --gzip-level N]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vt-mkimage: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut pos: Vec<String> = Vec::new();
    let mut rc = RuntimeConfig::default();
    let mut format = LayerFormat::default();
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--entrypoint" => rc.entrypoint.get_or_insert_with(Vec::new).push(val("--entrypoint")?),
            "--cmd" => rc.cmd.get_or_insert_with(Vec::new).push(val("--cmd")?),
            "--env" => {
                let kv = val("--env")?;
                if !kv.contains('=') {
                    return Err(format!("--env wants K=V, got {kv:?}").into());
                }
                rc.env.get_or_insert_with(Vec::new).push(kv)
            }
            "--workdir" => rc.working_dir = Some(val("--workdir")?),
            "--user" => rc.user = Some(val("--user")?),
            "--uncompressed" => format = LayerFormat::Uncompressed,
            "--gzip-level" => format = LayerFormat::Gzip(val("--gzip-level")?.parse()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}").into()),
            _ => pos.push(a),
        }
    }
    let [dir, out] = <[String; 2]>::try_from(pos).map_err(|_| USAGE.to_owned())?;
    let img = write_image(&PathBuf::from(dir), &PathBuf::from(out), rc, format)?;
    println!("{}", img.manifest.digest);
    Ok(())
}
