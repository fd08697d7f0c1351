//! Loading zfs with an ARC cap. A CN's RAM belongs to its instances: by
//! default the ARC may use a quarter of RAM (at least 256 MiB);
//! `triton.zfs_arc_max=<bytes>` on the kernel command line overrides it.

use anyhow::{bail, Context};

const MIB: u64 = 1 << 20;

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The ARC cap for a node with `mem` bytes of RAM.
pub fn arc_max(mem: u64, override_bytes: Option<u64>) -> u64 {
    override_bytes.unwrap_or_else(|| (mem / 4).max(256 * MIB))
}

/// `modprobe zfs zfs_arc_max=<n>`; returns the module version.
pub fn load(arc_max: u64) -> anyhow::Result<String> {
    let out = crate::command("/usr/sbin/modprobe")
        .args(["zfs", &format!("zfs_arc_max={arc_max}")])
        .output()
        .context("running /usr/sbin/modprobe zfs")?;
    if !out.status.success() {
        bail!("modprobe zfs failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let v = std::fs::read_to_string("/sys/module/zfs/version").context("reading /sys/module/zfs/version")?;
    Ok(v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        assert_eq!(mem_total("MemTotal:        2014764 kB\nMemFree: 1 kB\n"), Some(2014764 * 1024));
        assert_eq!(mem_total("nothing"), None);
        assert_eq!(arc_max(64 << 30, None), 16 << 30);
        assert_eq!(arc_max(512 * MIB, None), 256 * MIB);
        assert_eq!(arc_max(64 << 30, Some(1 << 30)), 1 << 30);
    }
}
