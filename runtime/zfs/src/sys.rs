//! The non-libzfs system calls of the pool boot: mount(2) of datasets,
//! move mounts, swapon(2)/swapoff(2).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mounts `dataset` on `at` (an existing directory) with mount(2), fstype
/// `zfs`, option `zfsutil` (what mount.zfs passes; the kernel accepts it for
/// any `mountpoint` value, so `legacy` and path mountpoints both work).
pub fn mount_dataset(dataset: &str, at: &Path) -> io::Result<()> {
    mount(Some(dataset), at, Some("zfs"), MsFlags::empty(), Some("zfsutil"))
        .map_err(|e| io::Error::other(format!("mount -t zfs {dataset} {}: {e}", at.display())))
}

/// Moves the mount at `from` to `to` (MS_MOVE).
pub fn move_mount(from: &Path, to: &Path) -> io::Result<()> {
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| io::Error::other(format!("mount --move {} {}: {e}", from.display(), to.display())))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other(format!("{} has a NUL byte", p.display())))
}

/// swapon(2) with default flags. Already active (EBUSY) counts as success.
/// The error is the bare OS error (callers add the device).
pub fn swapon(device: &Path) -> io::Result<()> {
    let c = cpath(device)?;
    // SAFETY: c is a NUL-terminated path that outlives the call; flags 0.
    if unsafe { libc::swapon(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EBUSY) {
        return Ok(());
    }
    // The raw errno, so callers can tell EINVAL (no swap signature) apart.
    Err(e)
}

/// `true` if `device` starts with a Linux swap header (`SWAPSPACE2` at the
/// end of the first 4 KiB page).
pub fn has_swap_signature(device: &Path) -> bool {
    use std::io::Read;
    let mut page = [0u8; 4096];
    std::fs::File::open(device).and_then(|mut f| f.read_exact(&mut page)).is_ok() && &page[4086..] == b"SWAPSPACE2"
}

/// swapoff(2). Not active (EINVAL) or absent (ENOENT) counts as success.
pub fn swapoff(device: &Path) -> io::Result<()> {
    let c = cpath(device)?;
    // SAFETY: c is a NUL-terminated path that outlives the call.
    if unsafe { libc::swapoff(c.as_ptr()) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
        return Ok(());
    }
    Err(io::Error::new(e.kind(), format!("swapoff {}: {e}", device.display())))
}

/// umount(2) of `at`.
pub fn unmount(at: &Path) -> io::Result<()> {
    umount2(at, MntFlags::empty()).map_err(|e| io::Error::other(format!("umount {}: {e}", at.display())))
}

/// The source of the last mount of type `fstype` at `at` in a
/// `/proc/self/mounts` text (octal escapes of the mount point decoded).
pub fn mounted_source(mounts: &str, at: &Path, fstype: &str) -> Option<String> {
    let unescape =
        |s: &str| s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\");
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 3 && f[2] == fstype && Path::new(&unescape(f[1])) == at).then(|| unescape(f[0]))
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_signature() {
        let p = std::env::temp_dir().join(format!("triton-pool-swap-{}", std::process::id()));
        let mut page = vec![0u8; 4096];
        std::fs::write(&p, &page).expect("write");
        assert!(!has_swap_signature(&p));
        page[4086..].copy_from_slice(b"SWAPSPACE2");
        std::fs::write(&p, &page).expect("write");
        assert!(has_swap_signature(&p));
        std::fs::remove_file(&p).expect("cleanup");
    }

    #[test]
    fn finds_the_mounted_dataset() {
        let m = "overlay / overlay rw 0 0\nzones/var /run/triton-pool/var zfs rw,xattr 0 0\nzones /zones zfs rw 0 0\n";
        assert_eq!(mounted_source(m, Path::new("/run/triton-pool/var"), "zfs").as_deref(), Some("zones/var"));
        assert_eq!(mounted_source(m, Path::new("/var"), "zfs"), None);
        let m = "zones/a\\040b /mnt/x\\040y zfs rw 0 0\n";
        assert_eq!(mounted_source(m, Path::new("/mnt/x y"), "zfs").as_deref(), Some("zones/a b"));
    }
}
