//! `vt manifest validate|fmt|json|schema`: local, no server.

use std::path::Path;

use serde_json::json;
use vt_manifest::Manifest;

use crate::args::ManifestCommand;
use crate::printer::Printer;
use crate::{CliError, CliResult, ExitStatus};

fn load(path: &Path) -> CliResult<(String, Manifest)> {
    let src = fs_err::read_to_string(path)?;
    let m = vt_manifest::parse(&src).map_err(|errors| CliError::Manifest { path: path.to_owned(), errors })?;
    Ok((src, m))
}

pub fn run(p: &Printer, cmd: ManifestCommand) -> CliResult {
    match cmd {
        ManifestCommand::Validate { file } => {
            let src = fs_err::read_to_string(&file)?;
            match vt_manifest::parse(&src) {
                Ok(m) => {
                    let processes: Vec<&String> = m.processes.keys().collect();
                    let out = json!({ "valid": true, "hash": m.hash(), "processes": processes });
                    p.show(&out, || {
                        format!(
                            "ok: `{}` is valid ({} process{}; hash {})\n",
                            file.display(),
                            processes.len(),
                            if processes.len() == 1 { "" } else { "es" },
                            m.hash()
                        )
                    });
                    Ok(ExitStatus::Success)
                }
                Err(errors) => {
                    if p.json_mode() {
                        let list: Vec<_> = errors
                            .iter()
                            .map(|e| json!({ "path": e.path, "line": e.line, "column": e.column, "message": e.message, "hint": e.hint }))
                            .collect();
                        p.json(&json!({ "valid": false, "errors": list }));
                    }
                    Err(CliError::Manifest { path: file, errors })
                }
            }
        }
        ManifestCommand::Fmt { file, check, write } => {
            let (src, m) = load(&file)?;
            let canonical = m.to_canonical_toml();
            let same = src == canonical;
            if check {
                if p.json_mode() {
                    p.json(&json!({ "formatted": same }));
                }
                if same {
                    return Ok(ExitStatus::Success);
                }
                p.warning(&format!("`{}` is not in canonical form", file.display()));
                p.hint(&format!("run `vt manifest fmt --write {}`", file.display()));
                return Ok(ExitStatus::Failure);
            }
            if write {
                if !same {
                    fs_err::write(&file, &canonical)?;
                }
                let out = json!({ "path": file.display().to_string(), "changed": !same });
                let verb = if same { "already formatted" } else { "formatted" };
                p.show(&out, || format!("{verb} `{}`\n", file.display()));
                return Ok(ExitStatus::Success);
            }
            if p.json_mode() {
                p.json(&json!({ "toml": canonical }));
            } else {
                p.text(&canonical);
            }
            Ok(ExitStatus::Success)
        }
        ManifestCommand::Json { file } => {
            let (_, m) = load(&file)?;
            p.json(&m.to_normalized_json());
            Ok(ExitStatus::Success)
        }
        ManifestCommand::Schema => {
            p.json(&vt_manifest::json_schema());
            Ok(ExitStatus::Success)
        }
    }
}
