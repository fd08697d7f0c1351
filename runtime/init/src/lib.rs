//! PID 1 of the Triton Linux compute node.
//!
//! The same static binary runs twice per boot:
//! * stage 1, as `/init` in the initrd: modules, admin NIC, fetch and verify
//!   the root image, overlay root, switch root;
//! * stage 2, as `/usr/sbin/triton-init` in the real root: API filesystems,
//!   zfs, then supervision.
//!
//! Every phase prints one `TRITON-EVENT {json}` line on the console. Nothing
//! here panics or exits on bad input: errors go to [`rescue`].

pub mod console;
pub mod dhcp;
pub mod fetch;
pub mod hashes;
pub mod kmod;
pub mod modalias;
pub mod mounts;
pub mod net;
pub mod node;
pub mod rescue;
pub mod rootfs;
pub mod stage1;
pub mod stage2;
pub mod tftp;
pub mod udev;
pub mod zfs_load;

/// A command for a child of PID 1. Stage 2 blocks the signals the
/// supervisor reads from a signalfd, and a blocked mask survives exec, so
/// every child gets the default mask back.
pub fn command(program: &str) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    supervisor::unblock_signals_in_child(&mut c);
    c
}

/// Which stage this process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Initrd,
    Root,
}

/// Stage 1 when the initrd marker is present (systemd's convention).
pub fn detect_stage(root: &std::path::Path) -> Stage {
    if root.join("etc/initrd-release").exists() {
        Stage::Initrd
    } else {
        Stage::Root
    }
}
