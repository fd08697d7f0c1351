//! Commands the headnode's setup scripts (`joysetup.sh`, `agentsetup.sh`)
//! call on a Linux CN, where SmartOS has them built in: `json`,
//! `bootparams`, `zonename`, a `systemctl` shim over `triton-ctl` and a
//! `zfs` pass-through that translates illumos-only values.
//! Each binary in `src/bin` is a thin wrapper over a module here.

pub mod bootparams;
pub mod json;
pub mod systemctl;
pub mod zfs;
