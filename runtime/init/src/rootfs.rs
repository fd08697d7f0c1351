//! The root filesystem: loop-mounted squashfs under a tmpfs overlay, the files
//! booter injected carried across, and the switch into it.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::mounts::{apply, Mount, MountError};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loop device for {image}: {op}: {errno}")]
    Loop { image: PathBuf, op: &'static str, errno: Errno },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("switch root to {newroot}: {op}: {errno}")]
    Switch { newroot: PathBuf, op: &'static str, errno: Errno },
}

// <linux/loop.h>
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// Attaches `image` read-only to a free loop device; returns its path.
#[allow(unsafe_code)]
pub fn attach_loop(image: &Path) -> Result<PathBuf, RootfsError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Io { what, path, source }
    };
    let lerr = |op| move |errno| RootfsError::Loop { image: image.to_path_buf(), op, errno };
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(io("opening", Path::new("/dev/loop-control")))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and only returns an index;
    // the fd is a valid open /dev/loop-control for the duration of the call.
    let n = Errno::result(unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) })
        .map_err(lerr("LOOP_CTL_GET_FREE"))?;
    let dev = PathBuf::from(format!("/dev/loop{n}"));
    let backing = File::open(image).map_err(io("opening", image))?;
    // devtmpfs creates the node when the kernel adds the device; wait briefly.
    let mut loopdev = None;
    for _ in 0..50 {
        match OpenOptions::new().read(true).open(&dev) {
            Ok(f) => {
                loopdev = Some(f);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    let loopdev = match loopdev {
        Some(f) => f,
        None => OpenOptions::new().read(true).open(&dev).map_err(io("opening", &dev))?,
    };
    // SAFETY: LOOP_SET_FD takes the backing file descriptor by value; both fds
    // are valid and open for the duration of the call. The backing fd is
    // read-only, so the loop device is read-only.
    Errno::result(unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) })
        .map_err(lerr("LOOP_SET_FD"))?;
    Ok(dev)
}

/// Paths of the layered root under `run` (`/run` of stage 1).
#[derive(Debug, Clone)]
pub struct Layout {
    pub lower: PathBuf,
    pub rw: PathBuf,
    pub newroot: PathBuf,
}

impl Layout {
    pub fn new(run: &Path, newroot: &Path) -> Layout {
        Layout { lower: run.join("triton/lower"), rw: run.join("triton/rw"), newroot: newroot.to_path_buf() }
    }

    /// The mounts that build the root from the loop device `dev`.
    pub fn table(&self, dev: &Path) -> Vec<Mount> {
        let upper = self.rw.join("upper");
        let work = self.rw.join("work");
        vec![
            Mount::new(&dev.to_string_lossy(), &self.lower, "squashfs", MsFlags::MS_RDONLY, None),
            Mount::new("tmpfs", &self.rw, "tmpfs", MsFlags::empty(), Some("mode=0755")),
            Mount::new(
                "overlay",
                &self.newroot,
                "overlay",
                MsFlags::empty(),
                Some(&format!(
                    "lowerdir={},upperdir={},workdir={}",
                    self.lower.display(),
                    upper.display(),
                    work.display()
                )),
            ),
        ]
    }
}

/// Mounts squashfs + tmpfs + overlay.
pub fn mount_root(layout: &Layout, dev: &Path) -> Result<(), RootfsError> {
    let t = layout.table(dev);
    apply(&t[..2])?;
    for d in ["upper", "work"] {
        let p = layout.rw.join(d);
        fs::create_dir_all(&p).map_err(|source| RootfsError::Io { what: "creating", path: p.clone(), source })?;
    }
    apply(&t[2..])?;
    Ok(())
}

/// Files booter injects into the initrd that the real root needs:
/// (path in initrd, path in new root).
pub const CARRIED: &[(&str, &str)] = &[
    ("etc/node.config", "etc/node.config"),
    ("etc/triton-networking.json", "etc/triton-networking.json"),
    ("etc/triton-networking.json.hash", "etc/triton-networking.json.hash"),
    ("filesystem.squashfs.hash", "run/triton/boot/filesystem.squashfs.hash"),
    ("initrd.hash", "run/triton/boot/initrd.hash"),
];

/// Copies the [`CARRIED`] files that exist from `from` into `to`; returns the
/// ones copied.
pub fn carry_files(from: &Path, to: &Path) -> Result<Vec<String>, RootfsError> {
    let mut done = Vec::new();
    for (src, dst) in CARRIED {
        let s = from.join(src);
        if !s.is_file() {
            continue;
        }
        let d = to.join(dst);
        if let Some(parent) = d.parent() {
            fs::create_dir_all(parent).map_err(|source| RootfsError::Io {
                what: "creating",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        fs::copy(&s, &d).map_err(|source| RootfsError::Io { what: "copying to", path: d.clone(), source })?;
        done.push(dst.to_string());
    }
    Ok(done)
}

/// Removes the initramfs's own files (everything on the root device except
/// `keep`), freeing their RAM before the switch.
pub fn free_initramfs(root: &Path, keep: &Path) {
    let Ok(dev) = fs::symlink_metadata(root).map(|m| m.dev()) else {
        return;
    };
    fn walk(dir: &Path, dev: u64, keep: &Path) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if p == keep || md.dev() != dev {
                continue;
            }
            if md.is_dir() {
                walk(&p, dev, keep);
                let _ = fs::remove_dir(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }
    walk(root, dev, keep);
}

/// Moves the API mounts into `newroot`, frees the initramfs and makes
/// `newroot` the root. The caller then execs stage 2.
pub fn switch_root(newroot: &Path) -> Result<(), RootfsError> {
    let serr = |op| move |errno| RootfsError::Switch { newroot: newroot.to_path_buf(), op, errno };
    for m in ["dev", "proc", "sys", "run"] {
        let target = newroot.join(m);
        let _ = fs::create_dir_all(&target);
        mount(Some(Path::new("/").join(m).as_path()), &target, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
            .map_err(serr("moving API mounts"))?;
    }
    nix::unistd::chdir(newroot).map_err(serr("chdir"))?;
    free_initramfs(Path::new("/"), newroot);
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(serr("mount --move"))?;
    nix::unistd::chroot(".").map_err(serr("chroot"))?;
    nix::unistd::chdir("/").map_err(serr("chdir /"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_table() {
        let l = Layout::new(Path::new("/run"), Path::new("/root"));
        let t = l.table(Path::new("/dev/loop0"));
        assert_eq!(t[0].fstype, "squashfs");
        assert!(t[0].flags.contains(MsFlags::MS_RDONLY));
        assert_eq!(
            t[2].data.as_deref(),
            Some("lowerdir=/run/triton/lower,upperdir=/run/triton/rw/upper,workdir=/run/triton/rw/work")
        );
    }

    #[test]
    fn carries_what_booter_injected() {
        let a = tempfile::tempdir().expect("a");
        let b = tempfile::tempdir().expect("b");
        fs::create_dir_all(a.path().join("etc")).expect("mkdir");
        fs::write(a.path().join("etc/node.config"), "datacenter_name='dc1'\n").expect("w");
        fs::write(a.path().join("filesystem.squashfs.hash"), "ab\n").expect("w");
        let got = carry_files(a.path(), b.path()).expect("carry");
        assert_eq!(got, ["etc/node.config", "run/triton/boot/filesystem.squashfs.hash"]);
        assert_eq!(fs::read_to_string(b.path().join("etc/node.config")).expect("r"), "datacenter_name='dc1'\n");
    }
}
