//! `pool::PoolHost` over libzfs, mount(2), swapon(2) and udevadm.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pool::{Candidate, CandidateState, DatasetInfo, DatasetKind, HostError, ImportedPool, PoolHost};

use crate::{sys, DatasetType, PoolState, Zfs};

/// The real host of `triton-pool boot`.
pub struct LibzfsHost<'a> {
    pub zfs: &'a Zfs,
    /// Root of the system (`/`); `/etc/hostid` and `/sys/class/block` are read under it.
    pub root: PathBuf,
    pub start: Instant,
    /// How long to wait for a zvol device node to appear (udev links it).
    pub device_wait: Duration,
}

impl std::fmt::Debug for LibzfsHost<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibzfsHost").field("root", &self.root).finish()
    }
}

fn herr(e: impl std::fmt::Display) -> HostError {
    HostError(e.to_string())
}

/// `/etc/hostid` as libzfs reads it: 4 bytes, host (little-endian) order.
pub fn read_hostid(root: &Path) -> u64 {
    std::fs::read(root.join("etc/hostid"))
        .ok()
        .and_then(|b| b.get(..4).map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))))
        .unwrap_or(0)
}

/// Whole disks and partitions that could hold a pool (not loop, ram, zvol, cdrom).
pub fn block_devices(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("sys/class/block"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !["loop", "ram", "zd", "sr", "fd"].iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl PoolHost for LibzfsHost<'_> {
    fn settle(&mut self) {
        let st = Command::new("/usr/bin/udevadm")
            .args(["settle", "--timeout=10"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if let Err(e) = st {
            eprintln!("triton-pool: udevadm settle: {e} (continuing)");
        }
    }

    fn block_devices(&mut self) -> Vec<String> {
        block_devices(&self.root)
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn hostid(&mut self) -> u64 {
        read_hostid(&self.root)
    }

    fn imported(&mut self, pool: &str) -> Result<Option<ImportedPool>, HostError> {
        Ok(self.zfs.pool(pool).map_err(herr)?.map(|p| ImportedPool { name: p.name, health: p.health }))
    }

    fn candidates(&mut self) -> Result<Vec<Candidate>, HostError> {
        let c = self.zfs.importable().map_err(herr)?;
        Ok(c.into_iter()
            .map(|c| Candidate {
                name: c.name,
                guid: c.guid,
                state: match c.state {
                    PoolState::Active => CandidateState::Active,
                    PoolState::Exported => CandidateState::Exported,
                    PoolState::Destroyed => CandidateState::Destroyed,
                    PoolState::Other => CandidateState::Other,
                },
                health: c.health,
                hostid: c.hostid,
                hostname: c.hostname,
            })
            .collect())
    }

    fn import(&mut self, pool: &str, guid: u64, force: bool) -> Result<(), HostError> {
        eprintln!("triton-pool: importing {pool} (guid {guid}{})", if force { ", forced" } else { "" });
        self.zfs.import(pool, guid, force).map_err(herr)
    }

    fn destroy(&mut self, pool: &str) -> Result<(), HostError> {
        eprintln!("triton-pool: destroying {pool}");
        self.zfs.destroy(pool).map_err(herr)
    }

    fn user_prop(&mut self, dataset: &str, prop: &str) -> Result<Option<String>, HostError> {
        self.zfs.user_prop(dataset, prop).map_err(herr)
    }

    fn datasets(&mut self, pool: &str) -> Result<Vec<DatasetInfo>, HostError> {
        Ok(self
            .zfs
            .datasets(pool)
            .map_err(herr)?
            .into_iter()
            .map(|d| DatasetInfo {
                name: d.name,
                kind: match d.kind {
                    DatasetType::Filesystem => DatasetKind::Filesystem,
                    DatasetType::Volume => DatasetKind::Volume,
                    DatasetType::Other => DatasetKind::Other,
                },
                mountpoint: d.mountpoint,
                canmount: d.canmount,
                mounted: d.mounted,
            })
            .collect())
    }

    fn create_dataset(&mut self, name: &str, props: &[(String, String)]) -> Result<(), HostError> {
        eprintln!("triton-pool: creating {name}");
        self.zfs.create_filesystem(name, props).map_err(herr)
    }

    fn mount(&mut self, dataset: &str, at: &Path) -> Result<(), HostError> {
        eprintln!("triton-pool: mounting {dataset} on {}", at.display());
        sys::mount_dataset(dataset, at).map_err(herr)
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), HostError> {
        eprintln!("triton-pool: moving {} to {}", from.display(), to.display());
        let Err(e) = sys::move_mount(from, to) else { return Ok(()) };
        // MS_MOVE is refused under a shared parent mount: unmount the staged
        // dataset and mount it at its final place instead.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let Some(dataset) = sys::mounted_source(&mounts, from, "zfs") else { return Err(herr(e)) };
        eprintln!("triton-pool: {e}; remounting {dataset} on {} instead", to.display());
        sys::unmount(from).map_err(herr)?;
        sys::mount_dataset(&dataset, to).map_err(herr)
    }

    fn swapon(&mut self, device: &Path) -> Result<(), HostError> {
        // The node is a udev symlink: settle, then poll briefly (bounded).
        self.settle();
        let deadline = Instant::now() + self.device_wait;
        while !device.exists() {
            if Instant::now() >= deadline {
                return Err(HostError(format!("{} did not appear within {:?}", device.display(), self.device_wait)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("triton-pool: swapon {}", device.display());
        match sys::swapon(device) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !sys::has_swap_signature(device) => {
                // joysetup creates the zvol but (SmartOS needs no signature)
                // never runs mkswap: format it once, it is swap by contract.
                eprintln!("triton-pool: {} has no swap signature; running mkswap", device.display());
                let st = Command::new("/usr/sbin/mkswap")
                    .arg("-L")
                    .arg("triton-swap")
                    .arg(device)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .map_err(|e| HostError(format!("running mkswap: {e}")))?;
                if !st.success() {
                    return Err(HostError(format!("mkswap {} failed ({st})", device.display())));
                }
                sys::swapon(device).map_err(|e| HostError(format!("swapon {} after mkswap: {e}", device.display())))
            }
            other => other.map_err(|e| HostError(format!("swapon {}: {e}", device.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostid_and_block_devices_from_a_root() {
        let t = std::env::temp_dir().join(format!("triton-pool-host-{}", std::process::id()));
        std::fs::create_dir_all(t.join("etc")).expect("mkdir");
        std::fs::create_dir_all(t.join("sys/class/block")).expect("mkdir");
        assert_eq!(read_hostid(&t), 0);
        std::fs::write(t.join("etc/hostid"), [0x78, 0x56, 0x34, 0x12]).expect("write");
        assert_eq!(read_hostid(&t), 0x1234_5678);
        for d in ["sdb", "loop0", "sda", "zd0", "nvme0n1", "sr0"] {
            std::fs::create_dir_all(t.join("sys/class/block").join(d)).expect("mkdir");
        }
        assert_eq!(block_devices(&t), vec!["nvme0n1", "sda", "sdb"]);
        std::fs::remove_dir_all(&t).expect("cleanup");
    }
}
