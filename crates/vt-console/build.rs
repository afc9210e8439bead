//! Builds the web console (`console/` at the repository's root) with npm into `OUT_DIR` and
//! writes `assets.rs`, the list of built files that `src/lib.rs` embeds.
//!
//! The inputs are copied to `OUT_DIR/src` (the source tree is never written to), `npm ci`
//! runs when `package-lock.json` changed, `npm run build` (tsc, then vite) when any input
//! did: both are keyed by a SHA-256 of what they read, so an unchanged console costs nothing.
//! Without `npm` the build fails and says what to install.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The files and directories of `console/` the build reads (directories: recursively).
const INPUTS: &[&str] = &["package.json", "package-lock.json", "index.html", "vite.config.ts", "tsconfig.json", "src"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let console = manifest.join("../../console");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-env-changed=VT_NPM");
    let mut files = vec![];
    for input in INPUTS {
        let path = console.join(input);
        println!("cargo:rerun-if-changed={}", path.display());
        collect(&path, &mut files);
    }
    files.sort();

    let src = out.join("src");
    let dist = out.join("dist");
    let lock_key = key(&console, &files, |p| p.ends_with("package-lock.json") || p.ends_with("package.json"));
    let all_key = key(&console, &files, |_| true);

    if read(&dist.join(".vt-key")) != Some(all_key.clone()) {
        // A fresh copy of the inputs, next to the node_modules of the last `npm ci`.
        for input in INPUTS {
            let _ = std::fs::remove_dir_all(src.join(input));
        }
        for f in &files {
            let to = src.join(f.strip_prefix(&console).expect("an input of console/"));
            std::fs::create_dir_all(to.parent().expect("a parent")).expect("create a directory in OUT_DIR");
            std::fs::copy(f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
        }
        let npm = std::env::var("VT_NPM").unwrap_or_else(|_| "npm".to_owned());
        if read(&src.join("node_modules/.vt-key")) != Some(lock_key.clone()) {
            npm_run(&npm, &src, &["ci", "--no-audit", "--no-fund", "--loglevel=error"], &[]);
            std::fs::write(src.join("node_modules/.vt-key"), &lock_key).expect("write the npm ci key");
        }
        npm_run(&npm, &src, &["run", "--silent", "build"], &[("VT_CONSOLE_OUT", dist.as_os_str())]);
        std::fs::write(dist.join(".vt-key"), &all_key).expect("write the build key");
    }

    // The built files, in a stable order: (path under /app/, absolute path for include_bytes!).
    let mut built = vec![];
    collect(&dist, &mut built);
    built.retain(|p| !p.ends_with(".vt-key"));
    built.sort();
    let mut code = String::from(
        "/// The console's built files: (path under `/app/`, contents).\npub static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for f in &built {
        let rel = f.strip_prefix(&dist).expect("a built file").to_str().expect("a UTF-8 path").replace('\\', "/");
        writeln!(code, "    ({rel:?}, include_bytes!({:?})),", f.to_str().expect("a UTF-8 path"))
            .expect("write to a String");
    }
    code.push_str("];\n");
    std::fs::write(out.join("assets.rs"), code).expect("write assets.rs");
}

/// Every file under `path` (or `path` itself).
fn collect(path: &Path, into: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::metadata(path) else {
        panic!("the web console's source {} is missing (crates/vt-console/build.rs builds console/)", path.display())
    };
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for e in entries {
            collect(&e.expect("a directory entry").path(), into);
        }
    } else {
        into.push(path.to_owned());
    }
}

/// SHA-256 over the names and contents of the files `pick` keeps.
fn key(root: &Path, files: &[PathBuf], pick: impl Fn(&Path) -> bool) -> String {
    let mut h = Sha256::new();
    for f in files.iter().filter(|f| pick(f)) {
        h.update(f.strip_prefix(root).unwrap_or(f).to_string_lossy().as_bytes());
        h.update([0]);
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn npm_run(npm: &str, dir: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) {
    let mut cmd = Command::new(npm);
    // npm's output goes to stderr: a build script's stdout is for cargo.
    cmd.args(args).current_dir(dir).envs(env.iter().copied()).stdout(std::io::stderr());
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "\n\nthe web console (console/) is built with npm, and `{npm}` was not found.\n\
             Install Node.js 18 or newer and npm (Debian: `apt-get install nodejs npm`; scripts/up.sh and\n\
             scripts/test.sh do it), or set VT_NPM to an npm binary, then build again.\n\n"
        ),
        Err(e) => panic!("cannot run `{npm}`: {e}"),
    };
    if !status.success() {
        panic!(
            "\n\n`{npm} {}` in {} failed ({status}): the web console (console/) did not build; its output is above.\n\n",
            args.join(" "),
            dir.display()
        );
    }
}
