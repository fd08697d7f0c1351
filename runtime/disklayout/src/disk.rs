//! One block device as the inventory sees it: the planner's input.

/// What kind of block device this is. Only [`DiskKind::Disk`] can hold the pool; the others are
/// recognised by name (or sysfs attribute) and always skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskKind {
    /// A whole physical or virtual disk (`sda`, `vda`, `nvme0n1`, `xvda`, `mmcblk0`).
    #[default]
    Disk,
    /// Anything else, with a short description for messages ("ZFS zvol", "loop device", ...).
    Other(&'static str),
}

/// A block device with the facts the layout rules need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name, without `/dev/` (`sda`, `nvme0n1`).
    pub name: String,
    /// Capacity in bytes.
    pub size: u64,
    /// Not rotational (SSD, NVMe).
    pub solid_state: bool,
    /// The kernel marks the medium removable.
    pub removable: bool,
    /// The device is read-only.
    pub read_only: bool,
    /// Attachment, as SmartOS's `diskinfo` TYPE column: `SCSI`, `NVME`, `VIRTIO`, `XEN`, `MMC`,
    /// `USB`. Disks of one transport, size class and media type are grouped together.
    pub transport: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub kind: DiskKind,
    /// Why the disk is in use right now (mounted partition, swap, device-mapper/md holder).
    /// Empty when the disk is free.
    pub in_use: Vec<String>,
}

impl Disk {
    /// A free, fixed, writable whole disk: a handy starting point for callers and tests.
    pub fn whole(name: &str, size: u64, solid_state: bool) -> Self {
        Disk { name: name.to_owned(), size, solid_state, transport: "SCSI".to_owned(), ..Disk::default() }
    }

    /// The disk is attached over USB: the boot key or an external drive, never pool material.
    pub fn is_usb(&self) -> bool {
        self.transport == "USB"
    }
}
