//! Booter's view of Linux compute nodes, and a dev booter for tests.
//!
//! - [`config`]: the CN description file (ours; TOML or JSON) and its validation.
//! - [`render`]: pure rendering of booter's files for a Linux CN: kernel
//!   arguments, `boot.ipxe.01<MAC>`, `menu.lst.01<MAC>`, networking.json
//!   (+ hash), node.config (contracts 2.3, 4.1, 4.2).
//! - [`layout`]: a tftp root laid out as the dhcpd zone's `/tftpboot`:
//!   PIs installed as `sdcadm platform install` does (`os/<STAMP>/platform/`),
//!   per-CN files under it.
//! - [`devbooter`]: dnsmasq (DHCP+TFTP) + HTTP + QEMU CNs in a private
//!   network namespace; [`console`]: VM console capture and waits.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod console;
pub mod devbooter;
pub mod layout;
pub mod render;

pub use config::{Cn, Config, ConfigFile, Datacenter};
pub use console::Console;
pub use devbooter::{CnVm, DevBooter, DevBooterOpts, QemuOpts};
pub use layout::TftpRoot;
