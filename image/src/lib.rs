//! The PI builder: Debian layers with mkosi (cached by input digest), the
//! runtime built inside the trixie buildroot, a staging tree squashed with
//! mksquashfs, our initrd, and a reproducible tarball.

pub mod assemble;
pub mod baseline;
pub mod bench;
pub mod build;
pub mod cargo_test;
pub mod cli;
pub mod host;
pub mod layers;
pub mod pack;
pub mod progress;
pub mod repro;
pub mod runtime;
pub mod source;
pub mod versions;
