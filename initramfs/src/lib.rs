//! The stage-1 initrd of the Linux PI.
//!
//! * [`cpio`]: a reproducible `newc` archive writer (sorted entries, fixed
//!   owners and times, sequential inode numbers).
//! * [`modules`]: the kernel module set stage 1 needs and its dependency
//!   closure, read from a rootfs's `modules.dep`.
//! * [`build`]: lays init, the rescue shell, the modules and the pinned
//!   squashfs hash into one zstd-compressed cpio.

pub mod build;
pub mod cpio;
pub mod modules;

pub use build::{build_initrd, InitrdError, InitrdSpec, InitrdSummary, SQUASHFS_HASH_PATH};
pub use modules::{ModuleError, ModuleSet};
