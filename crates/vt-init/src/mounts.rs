//! Volumes and secrets, after the root switch.
//!
//! A volume is a disk the host attached with an ext4 label it chose; init finds it by that
//! label (device order does not matter), mounts it at `/mnt/volumes/<name>` and bind-mounts it
//! at the manifest's path too. Secrets arrive in the launch message and are written to a tmpfs
//! at `/run/secrets` (mode 0500, files 0400, owned by the entrypoint's user): they never touch
//! a disk inside the guest.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use vt_guest_proto::{bundle, Secret, Volume};

use crate::{errno, ext4_label, mount, Result, DEVICE_WAIT};

/// A single path component: what a volume or secret may be named.
fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!("{kind} name {name:?} is not a single path component"));
    }
    Ok(())
}

fn find_label(label: &str) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vd"))
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("/dev/{n}")).find(|dev| ext4_label(Path::new(dev)).as_deref() == Some(label))
}

pub fn volumes(volumes: &[Volume]) -> Result<()> {
    for v in volumes {
        check_name("volume", &v.name)?;
        let start = Instant::now();
        let dev = loop {
            if let Some(d) = find_label(&v.label) {
                break d;
            }
            if start.elapsed() > DEVICE_WAIT {
                return Err(format!(
                    "volume {}: no disk labelled {:?} appeared within {DEVICE_WAIT:?}",
                    v.name, v.label
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let at = format!("/mnt/volumes/{}", v.name);
        mount(&dev, &at, "ext4", libc::MS_NOATIME | libc::MS_NOSUID | libc::MS_NODEV, "")
            .map_err(|e| format!("volume {}: {e}", v.name))?;
        if !v.path.is_empty() {
            if !v.path.starts_with('/') {
                return Err(format!("volume {}: path {:?} is not absolute", v.name, v.path));
            }
            mount(&at, &v.path, "", libc::MS_BIND, "").map_err(|e| format!("volume {}: {e}", v.name))?;
        }
    }
    Ok(())
}

/// The instance's secrets on a tmpfs at `/run/secrets`: one file per secret
/// and the bundle of them all (`vt.bundle`, `vt_guest_proto::bundle`), each
/// mode 0400 and owned by the entrypoint's user. Nothing when the env has
/// never had secrets (`version` 0 and none given).
pub fn secrets(secrets: &[Secret], version: u64, uid: u32, gid: u32) -> Result<()> {
    if secrets.is_empty() && version == 0 {
        return Ok(());
    }
    let dir = "/run/secrets";
    // Up to 1 MiB of secrets, written twice (files and bundle).
    mount("secrets", dir, "tmpfs", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, "mode=0500,size=8m")?;
    for s in secrets {
        check_name("secret", &s.name)?;
        if s.name == bundle::FILE_NAME {
            return Err(format!("a secret may not be named {:?}: that is the bundle's file", s.name));
        }
        write_private(&format!("{dir}/{}", s.name), &s.data, uid, gid)?;
    }
    let all = bundle::encode(version, secrets.iter().map(|s| (s.name.as_str(), s.data.as_slice())));
    write_private(&format!("{dir}/{}", bundle::FILE_NAME), &all, uid, gid)?;
    chown(dir, uid, gid)
}

/// A new file holding `data`, mode 0400, owned by `uid:gid`.
fn write_private(path: &str, data: &[u8], uid: u32, gid: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| format!("create {path}: {e}"))?;
    std::io::Write::write_all(&mut f, data).map_err(|e| format!("write {path}: {e}"))?;
    chown(path, uid, gid)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).map_err(|e| format!("chmod {path}: {e}"))
}

fn chown(path: &str, uid: u32, gid: u32) -> Result<()> {
    let c = crate::cstr(path);
    if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
        return Err(format!("chown {path}: {}", errno()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components() {
        for ok in ["db", "api-key", "a.b"] {
            assert!(check_name("secret", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "/x", "a\0"] {
            assert!(check_name("secret", bad).is_err(), "{bad:?}");
        }
    }
}
