//! Test harness for the built platform image: a loopback HTTP server that
//! plays booter's role for `fetch=`, and QEMU (TCG) VMs whose serial console
//! the tests read and type into.

pub mod cn;
pub mod headnode;
pub mod http;
pub mod inject;
pub mod platform;
pub mod qemu;
pub mod rabbitmq;
pub mod scenario;
