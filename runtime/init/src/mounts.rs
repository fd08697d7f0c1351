//! Mount tables as data: each stage lists what it needs, one function applies.

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

/// One mount to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} {device} on {target}: {errno}")]
pub struct MountError {
    pub device: String,
    pub target: PathBuf,
    pub fstype: String,
    pub errno: Errno,
}

impl Mount {
    pub fn new(source: &str, target: impl Into<PathBuf>, fstype: &str, flags: MsFlags, data: Option<&str>) -> Mount {
        Mount {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            flags,
            data: data.map(str::to_string),
        }
    }
}

/// API filesystems of stage 1, relative to `root`.
pub fn stage1_table(root: &Path) -> Vec<Mount> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    vec![
        Mount::new("proc", root.join("proc"), "proc", nosuid, None),
        Mount::new("sysfs", root.join("sys"), "sysfs", nosuid, None),
        Mount::new("devtmpfs", root.join("dev"), "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755")),
        Mount::new("tmpfs", root.join("run"), "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755")),
    ]
}

/// What stage 2 adds in the real root.
pub fn stage2_table(root: &Path) -> Vec<Mount> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    vec![
        Mount::new("cgroup2", root.join("sys/fs/cgroup"), "cgroup2", nosuid, Some("nsdelegate")),
        Mount::new(
            "devpts",
            root.join("dev/pts"),
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=000"),
        ),
        Mount::new("tmpfs", root.join("dev/shm"), "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777")),
        Mount::new("tmpfs", root.join("tmp"), "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777")),
    ]
}

/// The `/dev` symlinks programs expect and devtmpfs does not make (systemd
/// creates them as PID 1): bash's process substitution `>(...)` opens
/// `/dev/fd/N`, scripts read `/dev/stdin`.
pub const DEV_LINKS: [(&str, &str); 5] = [
    ("dev/fd", "/proc/self/fd"),
    ("dev/stdin", "/proc/self/fd/0"),
    ("dev/stdout", "/proc/self/fd/1"),
    ("dev/stderr", "/proc/self/fd/2"),
    ("dev/core", "/proc/kcore"),
];

/// Creates [`DEV_LINKS`] under `root` where nothing is there yet; returns
/// the ones that could not be made.
pub fn dev_links(root: &Path) -> Vec<String> {
    let mut failed = Vec::new();
    for (link, target) in DEV_LINKS {
        let p = root.join(link);
        if fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        if let Err(e) = std::os::unix::fs::symlink(target, &p) {
            failed.push(format!("/{link}: {e}"));
        }
    }
    failed
}

/// Whether `target` is already a mount point (per `/proc/self/mountinfo`).
pub fn is_mounted(mountinfo: &str, target: &Path) -> bool {
    let t = target.to_string_lossy();
    mountinfo.lines().any(|l| l.split_whitespace().nth(4) == Some(&*t))
}

/// Makes each mount that is not already there (creating the target).
pub fn apply(table: &[Mount]) -> Result<(), MountError> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in table {
        if is_mounted(&info, &m.target) {
            continue;
        }
        let _ = fs::create_dir_all(&m.target);
        mount(Some(m.source.as_str()), &m.target, Some(m.fstype.as_str()), m.flags, m.data.as_deref()).map_err(
            |errno| MountError { device: m.source.clone(), target: m.target.clone(), fstype: m.fstype.clone(), errno },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_rooted() {
        let t = stage1_table(Path::new("/x"));
        assert_eq!(
            t.iter().map(|m| m.target.to_str().unwrap_or("")).collect::<Vec<_>>(),
            ["/x/proc", "/x/sys", "/x/dev", "/x/run"]
        );
        assert!(stage2_table(Path::new("/")).iter().any(|m| m.fstype == "cgroup2"));
    }

    #[test]
    fn dev_links_made_once_and_existing_ones_kept() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join("dev")).expect("dev");
        fs::write(d.path().join("dev/core"), "x").expect("w");
        assert!(dev_links(d.path()).is_empty());
        assert_eq!(fs::read_link(d.path().join("dev/fd")).expect("fd"), Path::new("/proc/self/fd"));
        assert_eq!(fs::read_link(d.path().join("dev/stderr")).expect("stderr"), Path::new("/proc/self/fd/2"));
        assert!(fs::read_link(d.path().join("dev/core")).is_err(), "an existing file is left alone");
        assert!(dev_links(d.path()).is_empty(), "idempotent");
    }

    #[test]
    fn mountinfo_lookup() {
        let info = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n23 1 0:5 / /dev rw - devtmpfs udev rw\n";
        assert!(is_mounted(info, Path::new("/proc")));
        assert!(!is_mounted(info, Path::new("/sys")));
    }
}
