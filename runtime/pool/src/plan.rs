//! The boot decision: what to do with the system pool, as data.

use std::path::PathBuf;

use serde::Serialize;

use crate::files::SetupState;
use crate::observe::{DatasetInfo, DatasetKind, PoolObservation};
use crate::BootFlags;

/// The system pool. Triton hard-codes it (joysetup `create_zpool zones`).
pub const SYSTEM_POOL: &str = "zones";
/// `kernel.core_pattern` for the global zone's cores (linux-live `postinstall`).
pub const CORE_PATTERN: &str = "/zones/global/cores/core.%e.%p";
/// Setup state written by joysetup/agentsetup on Linux.
pub const SETUP_STATE_FILE: &str = "/opt/triton/config/triton-setup-state.json";
/// The swap zvol's device node (udev link).
pub const SWAP_ZVOL: &str = "/dev/zvol/zones/swap";
/// Where `zones/var` is mounted first, to seed it before it covers `/var`.
pub const VAR_STAGING: &str = "/run/triton-pool/var";

/// System datasets (relative to the pool) and where they are mounted, in
/// mount order. `var` is special-cased (staging, seed, move).
pub const SYSTEM_MOUNTS: &[(&str, &str)] = &[
    ("", "/zones"),
    ("config", "/zones/config"),
    ("cores/global", "/zones/global/cores"),
    ("opt", "/opt"),
    ("var", "/var"),
];

/// What happened to the pool (the `outcome` of the JSON report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Imported by us now or before: datasets mounted.
    Imported,
    /// No pool of that name on any disk.
    Absent,
    /// `noimport` on the command line: disks not touched.
    NoImport,
    /// Destroyed on request (`destroy_zpools` or `smartdc:factoryreset=yes`).
    Destroyed,
    /// Found but cannot be imported (FAULTED/UNAVAIL).
    Faulted,
    /// Last imported by another host; needs `triton.force_import`.
    Foreign,
    /// Anything else failed (import or destroy error, ambiguous pools).
    Error,
}

/// Whether the node runs as set up (agents) or unsetup (ur only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Setup,
    Unsetup,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PoolOp {
    Import {
        pool: String,
        guid: u64,
        force: bool,
    },
    Destroy {
        pool: String,
        reason: String,
    },
    CreateDataset {
        name: String,
        props: Vec<(String, String)>,
    },
    /// mkdir -p `at`, then mount the dataset there.
    MountDataset {
        dataset: String,
        at: PathBuf,
    },
    /// First-boot copy of the image's `/var` into the staging mount.
    SeedVar {
        from: PathBuf,
        to: PathBuf,
    },
    MoveMount {
        from: PathBuf,
        to: PathBuf,
    },
    EnsureDir {
        path: PathBuf,
    },
    WriteCorePattern {
        path: PathBuf,
        pattern: String,
    },
    Swapon {
        device: PathBuf,
    },
}

/// First step: import or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportDecision {
    Import(PoolOp),
    AlreadyImported,
    Stop { outcome: Outcome, reason: String },
}

/// Decides the first step from the command line and the observation.
pub fn decide_import(pool: &str, flags: &BootFlags, obs: &PoolObservation) -> ImportDecision {
    let stop = |outcome, reason: String| ImportDecision::Stop { outcome, reason };
    if flags.noimport {
        return stop(
            Outcome::NoImport,
            format!("noimport is on the kernel command line: pool {pool} was not imported"),
        );
    }
    let destroy_note =
        if flags.destroy_zpools { " (destroy_zpools was requested but needs the pool imported)" } else { "" };
    match obs {
        PoolObservation::Absent => {
            stop(Outcome::Absent, format!("no pool named {pool} on any disk: this node is not set up"))
        }
        PoolObservation::Imported { .. } => ImportDecision::AlreadyImported,
        PoolObservation::Importable { guid, .. } => {
            ImportDecision::Import(PoolOp::Import { pool: pool.into(), guid: *guid, force: flags.force_import })
        }
        PoolObservation::Foreign { guid, .. } if flags.force_import => {
            ImportDecision::Import(PoolOp::Import { pool: pool.into(), guid: *guid, force: true })
        }
        PoolObservation::Foreign { hostid, hostname, .. } => stop(
            Outcome::Foreign,
            format!(
                "pool {pool} was last imported by host {hostid:08x}/{} and not exported; \
                 boot with triton.force_import=true to take it over{destroy_note}",
                hostname.as_deref().unwrap_or("(unknown hostname)")
            ),
        ),
        PoolObservation::Faulted { guid, health } => stop(
            Outcome::Faulted,
            format!(
                "pool {pool} (guid {guid}) is {health} and cannot be imported (missing or failed disks?){destroy_note}"
            ),
        ),
        PoolObservation::Ambiguous { guids } => stop(
            Outcome::Error,
            format!(
                "{} importable pools are named {pool} (guids {}); not guessing which is the system pool",
                guids.len(),
                guids.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ")
            ),
        ),
    }
}

/// Why the system pool must be destroyed, if it must.
pub fn factory_reset_requested(flags: &BootFlags, factoryreset: Option<&str>) -> Option<String> {
    if flags.destroy_zpools {
        return Some("destroy_zpools is on the kernel command line".into());
    }
    match factoryreset.map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if matches!(v.as_str(), "yes" | "true" | "on") => {
            Some(format!("smartdc:factoryreset={v} is set on {SYSTEM_POOL}/var"))
        }
        _ => None,
    }
}

fn depth(p: &str) -> usize {
    p.split('/').filter(|s| !s.is_empty()).count()
}

/// Second step, with the pool imported: destroy it, or mount the layout.
pub fn plan_after_import(
    pool: &str,
    flags: &BootFlags,
    factoryreset: Option<&str>,
    datasets: &[DatasetInfo],
) -> Vec<PoolOp> {
    if let Some(reason) = factory_reset_requested(flags, factoryreset) {
        return vec![PoolOp::Destroy { pool: pool.into(), reason }];
    }
    let find = |name: &str| datasets.iter().find(|d| d.name == name);
    let full = |rel: &str| if rel.is_empty() { pool.to_string() } else { format!("{pool}/{rel}") };
    let mut ops = Vec::new();
    for (rel, at) in SYSTEM_MOUNTS {
        let name = full(rel);
        if *rel == "cores/global" {
            if find(&full("cores")).is_none() {
                ops.push(PoolOp::CreateDataset {
                    name: full("cores"),
                    props: vec![("compression".into(), "lz4".into()), ("mountpoint".into(), "none".into())],
                });
            }
            if find(&name).is_none() {
                ops.push(PoolOp::CreateDataset { name: name.clone(), props: vec![("quota".into(), "10g".into())] });
            }
            if !find(&name).is_some_and(|d| d.mounted) {
                ops.push(PoolOp::MountDataset { dataset: name, at: PathBuf::from(at) });
            }
            ops.push(PoolOp::EnsureDir { path: PathBuf::from(at) });
            ops.push(PoolOp::WriteCorePattern {
                path: PathBuf::from("/proc/sys/kernel/core_pattern"),
                pattern: CORE_PATTERN.into(),
            });
            continue;
        }
        let Some(d) = find(&name) else { continue };
        if d.mounted || d.kind != DatasetKind::Filesystem {
            continue;
        }
        if *rel == "var" {
            ops.push(PoolOp::MountDataset { dataset: name, at: PathBuf::from(VAR_STAGING) });
            ops.push(PoolOp::SeedVar { from: PathBuf::from(at), to: PathBuf::from(VAR_STAGING) });
            ops.push(PoolOp::MoveMount { from: PathBuf::from(VAR_STAGING), to: PathBuf::from(at) });
        } else {
            ops.push(PoolOp::MountDataset { dataset: name, at: PathBuf::from(at) });
        }
    }
    let system: Vec<String> = SYSTEM_MOUNTS.iter().map(|(rel, _)| full(rel)).collect();
    let mut rest: Vec<&DatasetInfo> = datasets
        .iter()
        .filter(|d| {
            d.kind == DatasetKind::Filesystem
                && !d.mounted
                && d.canmount == "on"
                && d.mountpoint.starts_with('/')
                && !system.contains(&d.name)
                && (d.name == pool || d.name.starts_with(&format!("{pool}/")))
        })
        .collect();
    rest.sort_by(|a, b| depth(&a.mountpoint).cmp(&depth(&b.mountpoint)).then(a.mountpoint.cmp(&b.mountpoint)));
    for d in rest {
        ops.push(PoolOp::MountDataset { dataset: d.name.clone(), at: PathBuf::from(&d.mountpoint) });
    }
    if find(&full("swap")).is_some_and(|d| d.kind == DatasetKind::Volume) {
        ops.push(PoolOp::Swapon { device: PathBuf::from(format!("/dev/zvol/{pool}/swap")) });
    }
    ops
}

/// The mode, and why not setup.
pub fn setup_mode(imported: bool, state: &Result<Option<SetupState>, String>) -> (Mode, Option<String>) {
    if !imported {
        return (Mode::Unsetup, None);
    }
    match state {
        Ok(Some(s)) if s.complete => (Mode::Setup, None),
        Ok(Some(s)) => (
            Mode::Unsetup,
            Some(format!(
                "setup has not completed (current_state={})",
                s.current_state.as_deref().unwrap_or("unknown")
            )),
        ),
        Ok(None) => (Mode::Unsetup, Some(format!("{SETUP_STATE_FILE} does not exist: this node is not set up"))),
        Err(e) => (Mode::Unsetup, Some(format!("{SETUP_STATE_FILE} is unreadable: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::DatasetKind::{Filesystem, Volume};

    fn ds(name: &str, kind: DatasetKind, mountpoint: &str, mounted: bool) -> DatasetInfo {
        DatasetInfo { name: name.into(), kind, mountpoint: mountpoint.into(), canmount: "on".into(), mounted }
    }

    fn flags(noimport: bool, destroy: bool, force: bool) -> BootFlags {
        BootFlags { noimport, destroy_zpools: destroy, force_import: force }
    }

    fn foreign() -> PoolObservation {
        PoolObservation::Foreign { guid: 9, hostid: 0xdeadbeef, hostname: Some("cn7".into()), health: "ONLINE".into() }
    }

    #[test]
    fn noimport_wins_over_everything() {
        for obs in [PoolObservation::Absent, foreign(), PoolObservation::Imported { health: "ONLINE".into() }] {
            match decide_import("zones", &flags(true, true, true), &obs) {
                ImportDecision::Stop { outcome: Outcome::NoImport, reason } => assert!(reason.contains("noimport")),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn absent_faulted_ambiguous_stop() {
        let d = decide_import("zones", &flags(false, false, false), &PoolObservation::Absent);
        assert!(matches!(d, ImportDecision::Stop { outcome: Outcome::Absent, .. }));
        let f = PoolObservation::Faulted { guid: 3, health: "UNAVAIL".into() };
        match decide_import("zones", &flags(false, true, true), &f) {
            ImportDecision::Stop { outcome: Outcome::Faulted, reason } => {
                assert!(reason.contains("UNAVAIL") && reason.contains("destroy_zpools"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let a = PoolObservation::Ambiguous { guids: vec![1, 2] };
        assert!(matches!(
            decide_import("zones", &flags(false, false, false), &a),
            ImportDecision::Stop { outcome: Outcome::Error, .. }
        ));
    }

    #[test]
    fn foreign_needs_force() {
        match decide_import("zones", &flags(false, false, false), &foreign()) {
            ImportDecision::Stop { outcome: Outcome::Foreign, reason } => {
                assert_eq!(
                    reason,
                    "pool zones was last imported by host deadbeef/cn7 and not exported; \
                     boot with triton.force_import=true to take it over"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide_import("zones", &flags(false, false, true), &foreign()),
            ImportDecision::Import(PoolOp::Import { pool: "zones".into(), guid: 9, force: true })
        );
    }

    #[test]
    fn importable_and_imported() {
        let o = PoolObservation::Importable { guid: 4, health: "DEGRADED".into() };
        assert_eq!(
            decide_import("zones", &flags(false, false, false), &o),
            ImportDecision::Import(PoolOp::Import { pool: "zones".into(), guid: 4, force: false })
        );
        let i = PoolObservation::Imported { health: "ONLINE".into() };
        assert_eq!(decide_import("zones", &flags(false, false, false), &i), ImportDecision::AlreadyImported);
    }

    #[test]
    fn factory_reset_sources() {
        assert!(factory_reset_requested(&flags(false, true, false), None).is_some());
        assert!(factory_reset_requested(&flags(false, false, false), Some("yes")).is_some());
        assert!(factory_reset_requested(&flags(false, false, false), Some("YES ")).is_some());
        assert!(factory_reset_requested(&flags(false, false, false), Some("no")).is_none());
        assert!(factory_reset_requested(&flags(false, false, false), None).is_none());
        let ops = plan_after_import("zones", &flags(false, false, false), Some("yes"), &[]);
        assert!(matches!(ops.as_slice(), [PoolOp::Destroy { pool, .. }] if pool == "zones"));
    }

    fn full_pool() -> Vec<DatasetInfo> {
        vec![
            ds("zones", Filesystem, "/zones", false),
            ds("zones/config", Filesystem, "/zones/config", false),
            ds("zones/cores", Filesystem, "none", false),
            ds("zones/cores/global", Filesystem, "/zones/global/cores", false),
            ds("zones/opt", Filesystem, "legacy", false),
            ds("zones/var", Filesystem, "/var", false),
            ds("zones/swap", Volume, "", false),
            ds("zones/dump", Volume, "", false),
            ds("zones/lxd", Filesystem, "/var/lib/lxd", false),
            ds("zones/0a1b", Filesystem, "/zones/0a1b", false),
            ds("zones/0a1b/data", Filesystem, "/zones/0a1b/data", false),
            ds("zones/archive", Filesystem, "legacy", false),
        ]
    }

    #[test]
    fn layout_order() {
        let ops = plan_after_import("zones", &BootFlags::default(), None, &full_pool());
        let m = |d: &str, at: &str| PoolOp::MountDataset { dataset: d.into(), at: at.into() };
        assert_eq!(
            ops,
            vec![
                m("zones", "/zones"),
                m("zones/config", "/zones/config"),
                m("zones/cores/global", "/zones/global/cores"),
                PoolOp::EnsureDir { path: "/zones/global/cores".into() },
                PoolOp::WriteCorePattern {
                    path: "/proc/sys/kernel/core_pattern".into(),
                    pattern: "/zones/global/cores/core.%e.%p".into()
                },
                m("zones/opt", "/opt"),
                m("zones/var", VAR_STAGING),
                PoolOp::SeedVar { from: "/var".into(), to: VAR_STAGING.into() },
                PoolOp::MoveMount { from: VAR_STAGING.into(), to: "/var".into() },
                m("zones/0a1b", "/zones/0a1b"),
                m("zones/lxd", "/var/lib/lxd"),
                m("zones/0a1b/data", "/zones/0a1b/data"),
                PoolOp::Swapon { device: "/dev/zvol/zones/swap".into() },
            ]
        );
    }

    #[test]
    fn missing_cores_created_mounted_skipped() {
        let mut pool = vec![ds("zones", Filesystem, "/zones", true), ds("zones/var", Filesystem, "/var", true)];
        let ops = plan_after_import("zones", &BootFlags::default(), None, &pool);
        assert!(matches!(&ops[0], PoolOp::CreateDataset { name, .. } if name == "zones/cores"));
        assert!(
            matches!(&ops[1], PoolOp::CreateDataset { name, props } if name == "zones/cores/global" && props[0].0 == "quota")
        );
        assert!(matches!(&ops[2], PoolOp::MountDataset { dataset, .. } if dataset == "zones/cores/global"));
        assert!(!ops.iter().any(
            |o| matches!(o, PoolOp::MountDataset { dataset, .. } if dataset == "zones" || dataset == "zones/var")
        ));
        assert!(!ops.iter().any(|o| matches!(o, PoolOp::Swapon { .. })));
        pool.push(ds("zones/noauto", Filesystem, "/zones/noauto", false));
        pool[2].canmount = "noauto".into();
        let ops = plan_after_import("zones", &BootFlags::default(), None, &pool);
        assert!(!ops.iter().any(|o| matches!(o, PoolOp::MountDataset { dataset, .. } if dataset == "zones/noauto")));
    }

    #[test]
    fn modes() {
        use crate::files::SetupState;
        assert_eq!(setup_mode(false, &Ok(None)), (Mode::Unsetup, None));
        let done = Ok(Some(SetupState { complete: true, current_state: None }));
        assert_eq!(setup_mode(true, &done), (Mode::Setup, None));
        assert_eq!(setup_mode(false, &done).0, Mode::Unsetup);
        let half = Ok(Some(SetupState { complete: false, current_state: Some("zpool_created".into()) }));
        let (m, why) = setup_mode(true, &half);
        assert_eq!(m, Mode::Unsetup);
        assert!(why.unwrap_or_default().contains("zpool_created"));
        let (m, why) = setup_mode(true, &Ok(None));
        assert_eq!(m, Mode::Unsetup);
        assert!(why.unwrap_or_default().contains("does not exist"));
        assert_eq!(setup_mode(true, &Err("bad".into())).0, Mode::Unsetup);
    }
}
