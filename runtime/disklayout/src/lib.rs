//! disklayout and mkzpool: choose the zones pool layout from the disks present and create it.
//!
//! Linux versions of SmartOS's `disklayout` and `mkzpool`, which the headnode's joysetup.sh
//! runs on a compute node during `sdc-server setup` (contracts §5.3):
//!
//! - [`inventory`] reads the node's block devices from sysfs/procfs under a root directory;
//! - [`layout`] is the pure planner (SmartOS's rules) and the JSON both tools share;
//! - [`pool`] validates that JSON and builds and runs `zpool create`;
//! - [`cli`] holds both command lines; the binaries only print and map errors to exit codes.

pub mod cli;
pub mod disk;
pub mod inventory;
pub mod layout;
pub mod pool;

pub use disk::{Disk, DiskKind};
pub use layout::{plan, Layout, LayoutError, LayoutKind, Options, Plan};
pub use pool::{MkzpoolError, PoolSpec};
