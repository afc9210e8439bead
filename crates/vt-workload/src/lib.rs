//! The launch of one instance: what its guest init runs, with which
//! environment, where and as whom.
//!
//! Sources, from weakest to strongest:
//! 1. the image config (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`);
//! 2. the manifest: app-level `env`, then the process's `env`, its `command`
//!    (which replaces `Entrypoint` + `Cmd` entirely) and its `user`;
//! 3. the platform's `VT_*` variables, which nothing overrides (the manifest
//!    parser already refuses `VT_` names).
//!
//! Pure: no I/O; the node agent calls [`launch`] with what it pulled and what
//! the control plane allocated.

use std::collections::BTreeMap;

use vt_guest_proto::Launch;
use vt_image::oci::RuntimeConfig;
use vt_manifest::Manifest;

/// Who this instance is, as the platform tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub app: String,
    pub env: String,
    pub process: String,
    pub instance_id: String,
    pub release_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("the manifest has no process `{0}`")]
    UnknownProcess(String),
    #[error("process `{0}` has nothing to run: the manifest gives no `command` and the image has no Entrypoint or Cmd; set `processes.{0}.command`")]
    NothingToRun(String),
    #[error("the image config's Env entry {0:?} is not KEY=VALUE")]
    BadImageEnv(String),
}

/// The platform's variables, in a fixed order.
pub fn platform_env(id: &Identity) -> Vec<(String, String)> {
    vec![
        ("VT_APP".into(), id.app.clone()),
        ("VT_ENV".into(), id.env.clone()),
        ("VT_PROCESS".into(), id.process.clone()),
        ("VT_INSTANCE_ID".into(), id.instance_id.clone()),
        ("VT_RELEASE_ID".into(), id.release_id.clone()),
    ]
}

/// Build the launch of process `id.process`.
pub fn launch(image: &RuntimeConfig, manifest: &Manifest, id: &Identity) -> Result<Launch, WorkloadError> {
    let process =
        manifest.processes.get(&id.process).ok_or_else(|| WorkloadError::UnknownProcess(id.process.clone()))?;
    let argv = match &process.command {
        Some(command) => command.clone(),
        None => {
            let mut argv = image.entrypoint.clone().unwrap_or_default();
            argv.extend(image.cmd.clone().unwrap_or_default());
            argv
        }
    };
    if argv.is_empty() {
        return Err(WorkloadError::NothingToRun(id.process.clone()));
    }

    // Image env first (keeping its order), then overrides by key.
    let mut order: Vec<String> = vec![];
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        if values.insert(k.to_owned(), v.to_owned()).is_none() {
            order.push(k.to_owned());
        }
    };
    for entry in image.env.iter().flatten() {
        let (k, v) = entry.split_once('=').ok_or_else(|| WorkloadError::BadImageEnv(entry.clone()))?;
        if k.is_empty() {
            return Err(WorkloadError::BadImageEnv(entry.clone()));
        }
        set(k, v);
    }
    for (k, v) in manifest.env.iter().chain(process.env.iter()) {
        set(k, v);
    }
    let has_path = image.env.iter().flatten().any(|e| e.starts_with("PATH="))
        || manifest.env.contains_key("PATH")
        || process.env.contains_key("PATH");
    if !has_path {
        set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }
    for (k, v) in platform_env(id) {
        set(&k, &v);
    }
    let env = order.into_iter().map(|k| {
        let v = values[&k].clone();
        (k, v)
    });

    Ok(Launch {
        argv,
        env: env.collect(),
        cwd: image.working_dir.clone().unwrap_or_default(),
        user: process.user.clone().or_else(|| image.user.clone()).unwrap_or_default(),
        hostname: id.instance_id.clone(),
        // Guest init sets these from the secrets (which the agent adds), over the image's env.
        secret_env: process.secret_env.clone(),
        // The runtime fills the network and volumes in from the instance spec; the agent the secrets.
        ..Launch::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(process: &str) -> Identity {
        Identity {
            app: "web".into(),
            env: "prod".into(),
            process: process.into(),
            instance_id: "inst_1".into(),
            release_id: "rel_1".into(),
        }
    }

    fn image() -> RuntimeConfig {
        RuntimeConfig {
            user: Some("1000".into()),
            env: Some(vec!["PATH=/opt/bin:/bin".into(), "LANG=C.UTF-8".into(), "MODE=image".into()]),
            entrypoint: Some(vec!["/bin/server".into()]),
            cmd: Some(vec!["--port".into(), "8080".into()]),
            working_dir: Some("/srv".into()),
        }
    }

    fn manifest(src: &str) -> Manifest {
        vt_manifest::parse(src).unwrap()
    }

    #[test]
    fn image_config_feeds_the_launch_when_the_manifest_is_silent() {
        let m = manifest("schema_version = 1\n");
        let l = launch(&image(), &m, &id("web")).unwrap();
        assert_eq!(l.argv, ["/bin/server", "--port", "8080"]);
        assert_eq!((l.cwd.as_str(), l.user.as_str(), l.hostname.as_str()), ("/srv", "1000", "inst_1"));
        let env: Vec<(&str, &str)> = l.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            env,
            [
                ("PATH", "/opt/bin:/bin"),
                ("LANG", "C.UTF-8"),
                ("MODE", "image"),
                ("VT_APP", "web"),
                ("VT_ENV", "prod"),
                ("VT_PROCESS", "web"),
                ("VT_INSTANCE_ID", "inst_1"),
                ("VT_RELEASE_ID", "rel_1")
            ]
        );
    }

    #[test]
    fn the_manifest_overrides_command_env_and_user() {
        let m = manifest(
            "schema_version = 1\nenv = { MODE = \"app\", LEVEL = \"1\" }\n[processes.worker]\ncommand = [\"/bin/worker\", \"-v\"]\nuser = \"nobody\"\nenv = { LEVEL = \"2\" }\n",
        );
        let l = launch(&image(), &m, &id("worker")).unwrap();
        assert_eq!(l.argv, ["/bin/worker", "-v"], "command replaces Entrypoint and Cmd");
        assert_eq!(l.user, "nobody");
        let get = |k: &str| l.env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!((get("MODE"), get("LEVEL"), get("VT_PROCESS")), (Some("app"), Some("2"), Some("worker")));
        assert_eq!(l.env.iter().filter(|(k, _)| k == "MODE").count(), 1, "one entry per key");
    }

    #[test]
    fn nothing_to_run_and_unknown_process_are_errors() {
        let bare = RuntimeConfig::default();
        let m = manifest("schema_version = 1\n");
        let err = launch(&bare, &m, &id("web")).unwrap_err();
        assert!(err.to_string().contains("processes.web.command"), "{err}");
        assert_eq!(launch(&image(), &m, &id("nope")).unwrap_err(), WorkloadError::UnknownProcess("nope".into()));
        let l =
            launch(&bare, &manifest("schema_version = 1\n[processes.web]\ncommand = [\"/bin/true\"]\n"), &id("web"))
                .unwrap();
        assert!(l.env.iter().any(|(k, _)| k == "PATH"), "a default PATH when the image has none");
        assert_eq!((l.cwd.as_str(), l.user.as_str()), ("", ""));
    }

    #[test]
    fn bad_image_env_is_refused() {
        let mut img = image();
        img.env = Some(vec!["NOEQUALS".into()]);
        assert_eq!(
            launch(&img, &manifest("schema_version = 1\n"), &id("web")).unwrap_err(),
            WorkloadError::BadImageEnv("NOEQUALS".into())
        );
    }
}
