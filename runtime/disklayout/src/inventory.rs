//! The disk inventory on Linux, read from a sysfs/procfs tree under a root directory (`/` on a
//! node, a tempdir in tests).
//!
//! Every entry of `<root>/sys/block` becomes a [`Disk`]. Not whole disks, by name (kernel
//! naming is stable for these): `loop*`, `ram*`, `zram*` (RAM disks), `zd*` (ZFS zvols: the
//! pool's own volumes must never become pool members), `sr*` (optical), `nbd*` (network block
//! devices), `md*` and `dm-*` (software RAID and device-mapper: built on other disks, which are
//! then in use), `fd*`, `mtdblock*`; and NVMe multipath paths sysfs marks `hidden`.
//!
//! For a whole disk the inventory reads `size` (512-byte sectors), `queue/rotational`,
//! `removable`, `ro`, `device/vendor`, `device/model`, `serial` or `device/serial`, and the
//! transport (`USB` when the sysfs device path runs through a USB bus). The disk is *in use*
//! when it or one of its partitions is mounted (`<root>/proc/self/mountinfo`, by device number
//! or `/dev/<name>` source), is active swap (`<root>/proc/swaps`), or has holders
//! (`holders/`: LVM, dm-crypt, md RAID built on it). SmartOS skips disks named in mnttab; this
//! is the Linux equivalent, checked per partition too.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::disk::{Disk, DiskKind};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read {path}: {source} (is {what} mounted?)")]
    Read { path: PathBuf, what: &'static str, source: io::Error },
    #[error("{path}: expected {expected}, found {found:?}")]
    Parse { path: PathBuf, expected: &'static str, found: String },
    #[error("{path} line {line}: {problem}; expected diskinfo -Hp columns TYPE NAME VID PID SIZE RMV SSD")]
    Diskinfo { path: PathBuf, line: usize, problem: String },
}

/// Name prefixes (followed by a digit, or `-` for `dm`) of block devices that are not disks.
const NOT_DISKS: [(&str, &str); 10] = [
    ("loop", "loop device"),
    ("ram", "RAM disk"),
    ("zram", "compressed RAM disk"),
    ("zd", "ZFS zvol"),
    ("sr", "optical drive"),
    ("nbd", "network block device"),
    ("md", "md software RAID"),
    ("dm-", "device-mapper device"),
    ("fd", "floppy drive"),
    ("mtdblock", "flash (MTD) device"),
];

/// Classifies a block device by its kernel name.
pub fn classify(name: &str) -> DiskKind {
    for (prefix, what) in NOT_DISKS {
        if let Some(rest) = name.strip_prefix(prefix) {
            if prefix.ends_with('-') || rest.starts_with(|c: char| c.is_ascii_digit()) {
                return DiskKind::Other(what);
            }
        }
    }
    DiskKind::Disk
}

/// Reads every block device under `<root>/sys/block`, sorted by name.
pub fn read_disks(root: &Path) -> Result<Vec<Disk>, InventoryError> {
    let sys_block = root.join("sys/block");
    let mountinfo = read(&root.join("proc/self/mountinfo"), "/proc")?;
    let mounts = Mounts::parse(&mountinfo);
    let swaps = read_opt(&root.join("proc/swaps"), "/proc")?.map(|s| parse_swaps(&s)).unwrap_or_default();

    let entries = fs::read_dir(&sys_block).map_err(|source| InventoryError::Read {
        path: sys_block.clone(),
        what: "/sys",
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| InventoryError::Read { path: sys_block.clone(), what: "/sys", source })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    names.iter().map(|name| read_disk(&sys_block, name, &mounts, &swaps)).collect()
}

fn read_disk(sys_block: &Path, name: &str, mounts: &Mounts, swaps: &HashSet<String>) -> Result<Disk, InventoryError> {
    let dir = sys_block.join(name);
    let mut kind = classify(name);
    if kind == DiskKind::Disk && read_flag(&dir.join("hidden"))? == Some(true) {
        kind = DiskKind::Other("hidden NVMe multipath path");
    }
    if kind != DiskKind::Disk {
        return Ok(Disk { name: name.to_owned(), kind, ..Disk::default() });
    }
    let size_path = dir.join("size");
    let sectors = read(&size_path, "/sys")?;
    let sectors: u64 = sectors.trim().parse().map_err(|_| InventoryError::Parse {
        path: size_path,
        expected: "a sector count",
        found: sectors.trim().to_owned(),
    })?;
    let serial = match read_text(&dir.join("serial"))? {
        Some(s) => Some(s),
        None => read_text(&dir.join("device/serial"))?,
    };
    Ok(Disk {
        name: name.to_owned(),
        size: sectors.saturating_mul(512),
        // No rotational flag: assume spinning, the conservative choice for roles.
        solid_state: read_flag(&dir.join("queue/rotational"))? == Some(false),
        removable: read_flag(&dir.join("removable"))?.unwrap_or(false),
        read_only: read_flag(&dir.join("ro"))?.unwrap_or(false),
        transport: transport(name, &dir),
        vendor: read_text(&dir.join("device/vendor"))?,
        model: read_text(&dir.join("device/model"))?,
        serial,
        kind,
        in_use: in_use(name, &dir, mounts, swaps)?,
    })
}

/// `USB` when `/sys/block/<name>` links through a USB bus, else by driver name.
fn transport(name: &str, dir: &Path) -> String {
    let via_usb = fs::read_link(dir).is_ok_and(|target| target.to_string_lossy().contains("/usb"));
    let t = if via_usb {
        "USB"
    } else if name.starts_with("nvme") {
        "NVME"
    } else if name.starts_with("vd") {
        "VIRTIO"
    } else if name.starts_with("xvd") {
        "XEN"
    } else if name.starts_with("mmcblk") {
        "MMC"
    } else {
        "SCSI"
    };
    t.to_owned()
}

/// Reasons the disk (or a partition of it) is busy.
fn in_use(name: &str, dir: &Path, mounts: &Mounts, swaps: &HashSet<String>) -> Result<Vec<String>, InventoryError> {
    let mut nodes = vec![(name.to_owned(), dir.to_path_buf())];
    if let Ok(entries) = fs::read_dir(dir) {
        let mut parts: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().join("partition").exists())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        parts.sort();
        nodes.extend(parts);
    }
    let mut why = Vec::new();
    for (node, path) in nodes {
        let dev = read_text(&path.join("dev"))?;
        let source = format!("/dev/{node}");
        if let Some(mountpoint) = mounts.find(dev.as_deref(), &source) {
            why.push(format!("{node} is mounted at {mountpoint}"));
        }
        if swaps.contains(&source) {
            why.push(format!("{node} is active swap"));
        }
        let mut holders: Vec<String> = match fs::read_dir(path.join("holders")) {
            Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        if !holders.is_empty() {
            holders.sort();
            why.push(format!("{node} is held by {} (LVM, dm-crypt or md RAID)", holders.join(", ")));
        }
    }
    Ok(why)
}

/// The block-backed mounts of `/proc/self/mountinfo`.
#[derive(Debug, Default)]
struct Mounts(Vec<Mount>);

#[derive(Debug)]
struct Mount {
    dev: String,
    source: String,
    mountpoint: String,
}

impl Mounts {
    /// Fields: id parent major:minor root mountpoint options [optional...] - fstype source super.
    fn parse(text: &str) -> Self {
        let mounts = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let sep = fields.iter().position(|f| *f == "-")?;
                Some(Mount {
                    dev: (*fields.get(2)?).to_owned(),
                    mountpoint: (*fields.get(4)?).to_owned(),
                    source: (*fields.get(sep + 2)?).to_owned(),
                })
            })
            .collect();
        Mounts(mounts)
    }

    fn find(&self, dev: Option<&str>, source: &str) -> Option<&str> {
        self.0.iter().find(|m| Some(m.dev.as_str()) == dev || m.source == source).map(|m| m.mountpoint.as_str())
    }
}

fn parse_swaps(text: &str) -> HashSet<String> {
    text.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

fn read(path: &Path, what: &'static str) -> Result<String, InventoryError> {
    fs::read_to_string(path).map_err(|source| InventoryError::Read { path: path.to_path_buf(), what, source })
}

fn read_opt(path: &Path, what: &'static str) -> Result<Option<String>, InventoryError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InventoryError::Read { path: path.to_path_buf(), what, source }),
    }
}

/// A trimmed attribute; `None` when absent or blank.
fn read_text(path: &Path) -> Result<Option<String>, InventoryError> {
    Ok(read_opt(path, "/sys")?.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
}

/// A `0`/`1` attribute.
fn read_flag(path: &Path) -> Result<Option<bool>, InventoryError> {
    match read_text(path)?.as_deref() {
        None => Ok(None),
        Some("0") => Ok(Some(false)),
        Some("1") => Ok(Some(true)),
        Some(other) => {
            Err(InventoryError::Parse { path: path.to_path_buf(), expected: "0 or 1", found: other.to_owned() })
        }
    }
}

/// Parses SmartOS `diskinfo -Hp` output (tab-separated TYPE NAME VID PID SIZE RMV SSD, as
/// `disklayout -f` reads it): a way to plan for another machine's disks.
pub fn parse_diskinfo(path: &Path, text: &str) -> Result<Vec<Disk>, InventoryError> {
    let bad = |line: usize, problem: String| InventoryError::Diskinfo { path: path.to_path_buf(), line, problem };
    let mut disks = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        let [transport, name, vid, pid, size, removable, ssd] = cols[..] else {
            return Err(bad(i + 1, format!("{} columns", cols.len())));
        };
        let size = size.parse().map_err(|_| bad(i + 1, format!("size {size:?} is not a byte count")))?;
        let text = |s: &str| (!s.is_empty() && s != "-").then(|| s.to_owned());
        disks.push(Disk {
            name: name.to_owned(),
            size,
            solid_state: ssd == "yes",
            removable: removable == "yes",
            transport: transport.to_owned(),
            vendor: text(vid),
            model: text(pid),
            kind: classify(name),
            ..Disk::default()
        });
    }
    Ok(disks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// A fake `/sys/block` + `/proc` tree.
    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new(mountinfo: &str) -> Self {
            let t = Tree(tempfile::tempdir().unwrap());
            t.write("proc/self/mountinfo", mountinfo);
            fs::create_dir_all(t.0.path().join("sys/block")).unwrap();
            t
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.0.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }

        fn disk(&self, name: &str, sectors: u64, rotational: bool, dev: &str) {
            let d = format!("sys/block/{name}");
            self.write(&format!("{d}/size"), &format!("{sectors}\n"));
            self.write(&format!("{d}/queue/rotational"), if rotational { "1\n" } else { "0\n" });
            self.write(&format!("{d}/removable"), "0\n");
            self.write(&format!("{d}/ro"), "0\n");
            self.write(&format!("{d}/dev"), dev);
            fs::create_dir_all(self.0.path().join(format!("{d}/holders"))).unwrap();
        }

        fn partition(&self, disk: &str, part: &str, dev: &str) {
            let d = format!("sys/block/{disk}/{part}");
            self.write(&format!("{d}/partition"), "1\n");
            self.write(&format!("{d}/dev"), dev);
            fs::create_dir_all(self.0.path().join(format!("{d}/holders"))).unwrap();
        }

        fn read(&self) -> Vec<Disk> {
            read_disks(self.0.path()).unwrap()
        }
    }

    const ROOT_ON_SDA1: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                                23 22 0:21 / /proc rw shared:2 - proc proc rw\n";

    #[test]
    fn reads_a_fake_sysfs_tree() {
        let t = Tree::new(ROOT_ON_SDA1);
        t.disk("sda", 1_953_525_168, true, "8:0\n");
        t.partition("sda", "sda1", "8:1\n");
        t.write("sys/block/sda/device/vendor", "ATA     \n");
        t.write("sys/block/sda/device/model", "ST1000NM0033    \n");
        t.disk("nvme0n1", 781_422_768, false, "259:0\n");
        t.write("sys/block/nvme0n1/device/serial", "S3EVNX0K123\n");
        t.disk("vdb", 20_971_520, true, "254:16\n");
        t.write("sys/block/vdb/serial", "disk-b\n");
        t.disk("sdb", 1_953_525_168, true, "8:16\n");
        t.partition("sdb", "sdb2", "8:18\n");
        t.write("sys/block/sdb/sdb2/holders/dm-0", "");
        t.disk("sdc", 1_953_525_168, true, "8:32\n");
        t.write("proc/swaps", "Filename Type Size Used Priority\n/dev/sdc partition 100 0 -2\n");
        t.disk("sdd", 1_953_525_168, true, "8:48\n");
        t.write("sys/block/sdd/removable", "1\n");
        t.write("sys/block/sdd/ro", "1\n");
        for other in ["loop0", "zd0", "sr0", "dm-0", "md127", "zram0", "nbd0", "ram0"] {
            fs::create_dir_all(t.0.path().join("sys/block").join(other)).unwrap();
        }
        t.disk("nvme0c0n1", 781_422_768, false, "259:1\n");
        t.write("sys/block/nvme0c0n1/hidden", "1\n");

        let disks = t.read();
        let get = |n: &str| disks.iter().find(|d| d.name == n).unwrap();
        let sda = get("sda");
        assert_eq!(sda.size, 1_953_525_168 * 512);
        assert!(!sda.solid_state);
        assert_eq!(sda.vendor.as_deref(), Some("ATA"));
        assert_eq!(sda.model.as_deref(), Some("ST1000NM0033"));
        assert_eq!(sda.in_use, ["sda1 is mounted at /"]);
        let nvme = get("nvme0n1");
        assert!(nvme.solid_state && nvme.in_use.is_empty());
        assert_eq!((nvme.transport.as_str(), nvme.serial.as_deref()), ("NVME", Some("S3EVNX0K123")));
        assert_eq!((get("vdb").transport.as_str(), get("vdb").serial.as_deref()), ("VIRTIO", Some("disk-b")));
        assert_eq!(get("sdb").in_use, ["sdb2 is held by dm-0 (LVM, dm-crypt or md RAID)"]);
        assert_eq!(get("sdc").in_use, ["sdc is active swap"]);
        assert!(get("sdd").removable && get("sdd").read_only);
        assert_eq!(get("zd0").kind, DiskKind::Other("ZFS zvol"));
        assert_eq!(get("nvme0c0n1").kind, DiskKind::Other("hidden NVMe multipath path"));
        let others = disks.iter().filter(|d| d.kind != DiskKind::Disk).count();
        assert_eq!(others, 9);
    }

    #[test]
    fn mount_found_by_source_when_device_number_differs() {
        // btrfs reports an anonymous device number; the source still names the partition.
        let t = Tree::new("30 1 0:33 / /data rw - btrfs /dev/vdc1 rw\n");
        t.disk("vdc", 41_943_040, true, "254:32\n");
        t.partition("vdc", "vdc1", "254:33\n");
        assert_eq!(t.read()[0].in_use, ["vdc1 is mounted at /data"]);
    }

    #[cfg(unix)]
    #[test]
    fn usb_disks_are_recognised_through_the_sysfs_link() {
        let t = Tree::new("");
        let real = "sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sde";
        t.write(&format!("{real}/size"), "60063744\n");
        t.write(&format!("{real}/removable"), "0\n");
        std::os::unix::fs::symlink(t.0.path().join(real), t.0.path().join("sys/block/sde")).unwrap();
        assert_eq!(t.read()[0].transport, "USB");
    }

    #[test]
    fn errors_name_the_file() {
        let t = Tree::new("");
        t.disk("sda", 0, true, "8:0\n");
        t.write("sys/block/sda/size", "lots\n");
        let err = read_disks(t.0.path()).unwrap_err().to_string();
        assert!(err.contains("sys/block/sda/size") && err.contains("\"lots\""), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = read_disks(empty.path()).unwrap_err().to_string();
        assert!(err.contains("proc/self/mountinfo") && err.contains("is /proc mounted?"), "{err}");
    }

    #[test]
    fn classify_by_name() {
        assert_eq!(classify("sda"), DiskKind::Disk);
        assert_eq!(classify("srv0"), DiskKind::Disk);
        assert_eq!(classify("mdx"), DiskKind::Disk);
        assert_eq!(classify("md0"), DiskKind::Other("md software RAID"));
        assert_eq!(classify("zd16"), DiskKind::Other("ZFS zvol"));
    }

    #[test]
    fn diskinfo_file() {
        let text = "SCSI\tc0t0d0\tATA\tST1000\t1000204886016\tno\tno\n\
                    USB\tc1t0d0\tKingston\tDT\t8004304896\tyes\tno\n\n";
        let disks = parse_diskinfo(Path::new("d.txt"), text).unwrap();
        assert_eq!(disks.len(), 2);
        assert_eq!(
            (disks[0].size, disks[0].vendor.as_deref(), disks[1].removable),
            (1_000_204_886_016, Some("ATA"), true)
        );
        let err = parse_diskinfo(Path::new("d.txt"), "SCSI\tc0\tATA\n").unwrap_err().to_string();
        assert!(err.contains("d.txt line 1: 3 columns"), "{err}");
    }
}
