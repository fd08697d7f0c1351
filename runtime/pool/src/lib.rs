//! The `zones` pool at boot, as data.
//!
//! Pure library (std file work only, no libzfs): the decision what to do with
//! the system pool, the Triton dataset layout on Linux, the first-boot copy of
//! `/var`, and a runner ([`run_boot`]) that executes the plan through the
//! [`PoolHost`] trait. The `triton-pool` binary (package `zfs`) implements
//! `PoolHost` with libzfs and mount(2); the tests here use a recording fake.
//!
//! # Inputs
//!
//! * Kernel command line ([`BootFlags`]): `noimport=true` / `triton.noimport`,
//!   `destroy_zpools=true` / `triton.destroy_zpools`, `triton.force_import`.
//! * What the disks hold ([`PoolObservation`], from [`classify`]): nothing,
//!   an importable pool, a pool last imported by another host (foreign), a pool
//!   that cannot be imported (FAULTED/UNAVAIL), or a pool already imported.
//! * `smartdc:factoryreset` on `zones/var`, the dataset list, and the setup
//!   state file `/opt/triton/config/triton-setup-state.json`.
//!
//! # Layout on Linux
//!
//! Datasets are mounted explicitly by name at fixed places (mount(2), fstype
//! `zfs`, option `zfsutil`), whatever their `mountpoint` property says, so
//! pools created by SmartOS-style joysetup (`legacy`) and by linux-live
//! (`/var`, `/opt`) both work:
//!
//! | dataset              | mounted at            |
//! |----------------------|-----------------------|
//! | `zones`              | `/zones`              |
//! | `zones/config`       | `/zones/config`       |
//! | `zones/cores/global` | `/zones/global/cores` (created, with `zones/cores`, if missing) |
//! | `zones/opt`          | `/opt`                |
//! | `zones/var`          | `/var` (see below)    |
//! | `zones/swap` (zvol)  | `swapon /dev/zvol/zones/swap` |
//!
//! Every other filesystem of the pool with `canmount=on` and a path as
//! `mountpoint` is then mounted there, parents first (per-instance datasets).
//! `kernel.core_pattern` is set to `/zones/global/cores/core.%e.%p`.
//!
//! `zones/var` is first mounted on a staging directory
//! (`/run/triton-pool/var`). If it has no marker file `.triton-var-seeded`,
//! the image's `/var` is copied into it (modes, owners, symlinks kept; an
//! entry that already exists is never overwritten; device nodes, fifos and
//! sockets are skipped) and the marker is written. The staging mount is then
//! moved onto `/var`.
//!
//! # Outcome and mode
//!
//! A missing, faulted or foreign pool never stops the boot: the outcome says
//! what happened and the node comes up unsetup with a reason. The mode is
//! `setup` only when the pool is imported and the setup state file says
//! `"complete": true`.

mod files;
mod flags;
mod observe;
mod plan;
mod run;

pub use files::{read_setup_state, seed_var, write_core_pattern, SeedReport, SetupState, VAR_MARKER};
pub use flags::BootFlags;
pub use observe::{classify, Candidate, CandidateState, DatasetInfo, DatasetKind, ImportedPool, PoolObservation};
pub use plan::{
    decide_import, factory_reset_requested, plan_after_import, setup_mode, ImportDecision, Mode, Outcome, PoolOp,
    CORE_PATTERN, SETUP_STATE_FILE, SWAP_ZVOL, SYSTEM_MOUNTS, SYSTEM_POOL, VAR_STAGING,
};
pub use run::{run_boot, BootReport, HostError, MountReport, PoolHost, SwapReport, WaitPolicy};
