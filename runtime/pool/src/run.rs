//! Executes the plan through [`PoolHost`] and reports what happened.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::files::{read_setup_state, seed_var, write_core_pattern};
use crate::observe::{classify, Candidate, DatasetInfo, ImportedPool, PoolObservation};
use crate::plan::{
    decide_import, plan_after_import, setup_mode, ImportDecision, Mode, Outcome, PoolOp, SETUP_STATE_FILE,
};
use crate::BootFlags;

/// An error of the host, as text (libzfs' description, errno).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

/// What the boot needs from the OS. The real implementation (libzfs,
/// mount(2), swapon(2), udevadm) is in the `triton-pool` binary.
pub trait PoolHost {
    /// Waits for udev to process queued events (`udevadm settle`).
    fn settle(&mut self);
    /// Names of the block devices present now (for "are disks still appearing").
    fn block_devices(&mut self) -> Vec<String>;
    fn sleep(&mut self, d: Duration);
    /// Time since the start of the boot step.
    fn elapsed(&self) -> Duration;
    /// This host's hostid (`/etc/hostid`).
    fn hostid(&mut self) -> u64;
    fn imported(&mut self, pool: &str) -> Result<Option<ImportedPool>, HostError>;
    fn candidates(&mut self) -> Result<Vec<Candidate>, HostError>;
    fn import(&mut self, pool: &str, guid: u64, force: bool) -> Result<(), HostError>;
    fn destroy(&mut self, pool: &str) -> Result<(), HostError>;
    fn user_prop(&mut self, dataset: &str, prop: &str) -> Result<Option<String>, HostError>;
    fn datasets(&mut self, pool: &str) -> Result<Vec<DatasetInfo>, HostError>;
    fn create_dataset(&mut self, name: &str, props: &[(String, String)]) -> Result<(), HostError>;
    /// Mounts `dataset` on the existing directory `at`.
    fn mount(&mut self, dataset: &str, at: &Path) -> Result<(), HostError>;
    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), HostError>;
    /// Waits (bounded) for the device node, then swapon(2).
    fn swapon(&mut self, device: &Path) -> Result<(), HostError>;
}

/// How long to keep rescanning while disks are still appearing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    pub step: Duration,
    pub max: Duration,
    /// Stop early once the set of block devices has not changed for this long.
    pub stable: Duration,
}

impl Default for WaitPolicy {
    fn default() -> Self {
        WaitPolicy { step: Duration::from_millis(250), max: Duration::from_secs(10), stable: Duration::from_secs(1) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountReport {
    pub dataset: String,
    pub at: PathBuf,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapReport {
    pub device: PathBuf,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The one JSON object `triton-pool boot` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootReport {
    pub pool: String,
    pub outcome: Outcome,
    pub mode: Mode,
    /// Why the outcome is not a plain import, or why the mode is unsetup.
    pub reason: Option<String>,
    pub mounts: Vec<MountReport>,
    pub swap: Option<SwapReport>,
    /// Files copied into `zones/var` on its first boot (`null`: not seeded this boot).
    pub var_seeded: Option<usize>,
    /// Non-fatal problems (core pattern, dataset creation, ...).
    pub warnings: Vec<String>,
    pub ms: u64,
}

fn resolve(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Scans for the pool; rescans while it is absent or faulted and block
/// devices are still appearing (bounded by `wait`).
fn observe(host: &mut dyn PoolHost, pool: &str, wait: &WaitPolicy) -> Result<PoolObservation, HostError> {
    host.settle();
    let mut devs = host.block_devices();
    let mut unchanged_since = host.elapsed();
    loop {
        let hostid = host.hostid();
        let imported = host.imported(pool)?;
        let cands = host.candidates()?;
        let obs = classify(pool, imported.as_ref(), &cands, hostid);
        if !obs.incomplete() || host.elapsed() + wait.step > wait.max {
            return Ok(obs);
        }
        // Rescan only after something changed; give up once the device set
        // has been stable for `wait.stable` (the pool really is not there),
        // except while no disk has appeared at all.
        loop {
            host.sleep(wait.step);
            host.settle();
            let now = host.block_devices();
            if now != devs {
                devs = now;
                unchanged_since = host.elapsed();
                break;
            }
            let stable = host.elapsed().saturating_sub(unchanged_since) >= wait.stable;
            if (stable && !devs.is_empty()) || host.elapsed() + wait.step > wait.max {
                return Ok(obs);
            }
        }
    }
}

/// The whole boot step for `pool`: observe, decide, import, destroy or
/// mount, and read the setup state. Never fails: every problem ends up in
/// the report's outcome, reason or warnings.
pub fn run_boot(host: &mut dyn PoolHost, pool: &str, flags: &BootFlags, root: &Path, wait: &WaitPolicy) -> BootReport {
    let mut rep = BootReport {
        pool: pool.into(),
        outcome: Outcome::Error,
        mode: Mode::Unsetup,
        reason: None,
        mounts: Vec::new(),
        swap: None,
        var_seeded: None,
        warnings: Vec::new(),
        ms: 0,
    };
    let finish = |host: &mut dyn PoolHost, mut rep: BootReport| {
        rep.ms = host.elapsed().as_millis() as u64;
        rep
    };
    let obs = if flags.noimport {
        PoolObservation::Absent // not scanned: noimport means hands off the disks
    } else {
        match observe(host, pool, wait) {
            Ok(o) => o,
            Err(e) => {
                rep.reason = Some(format!("scanning for pool {pool} failed: {e}"));
                return finish(host, rep);
            }
        }
    };
    match decide_import(pool, flags, &obs) {
        ImportDecision::Stop { outcome, reason } => {
            rep.outcome = outcome;
            rep.reason = Some(reason);
            return finish(host, rep);
        }
        ImportDecision::Import(PoolOp::Import { pool: p, guid, force }) => {
            if let Err(e) = host.import(&p, guid, force) {
                rep.reason = Some(format!("importing pool {p} (guid {guid}) failed: {e}"));
                return finish(host, rep);
            }
        }
        ImportDecision::Import(_) | ImportDecision::AlreadyImported => {}
    }
    rep.outcome = Outcome::Imported;

    let var = format!("{pool}/var");
    let factoryreset = match host.user_prop(&var, "smartdc:factoryreset") {
        Ok(v) => v,
        Err(e) => {
            rep.warnings.push(format!("reading smartdc:factoryreset on {var}: {e}"));
            None
        }
    };
    let datasets = match host.datasets(pool) {
        Ok(d) => d,
        Err(e) => {
            rep.warnings.push(format!("listing datasets of {pool}: {e}"));
            Vec::new()
        }
    };
    let ops = plan_after_import(pool, flags, factoryreset.as_deref(), &datasets);
    let mut failed_mounts: Vec<PathBuf> = Vec::new();
    for op in ops {
        match op {
            PoolOp::Destroy { pool: p, reason } => {
                match host.destroy(&p) {
                    Ok(()) => {
                        rep.outcome = Outcome::Destroyed;
                        rep.reason = Some(format!("pool {p} destroyed: {reason}"));
                    }
                    Err(e) => {
                        rep.outcome = Outcome::Error;
                        rep.reason = Some(format!("destroying pool {p} FAILED ({reason}): {e}; datasets not mounted"));
                    }
                }
                return finish(host, rep);
            }
            PoolOp::CreateDataset { name, props } => {
                if let Err(e) = host.create_dataset(&name, &props) {
                    rep.warnings.push(format!("creating {name}: {e}"));
                }
            }
            PoolOp::MountDataset { dataset, at } => {
                let dir = resolve(root, &at);
                let res = std::fs::create_dir_all(&dir)
                    .map_err(|e| HostError(format!("creating {}: {e}", dir.display())))
                    .and_then(|()| host.mount(&dataset, &dir));
                if res.is_err() {
                    failed_mounts.push(at.clone());
                }
                rep.mounts.push(MountReport { dataset, at, ok: res.is_ok(), error: res.err().map(|e| e.0) });
            }
            PoolOp::SeedVar { from, to } => {
                if failed_mounts.contains(&to) {
                    continue;
                }
                match seed_var(&resolve(root, &from), &resolve(root, &to)) {
                    Ok(r) if r.already_seeded => {}
                    Ok(r) => {
                        rep.var_seeded = Some(r.copied);
                        if !r.skipped.is_empty() {
                            rep.warnings.push(format!(
                                "seeding {}: skipped {} special entries",
                                to.display(),
                                r.skipped.len()
                            ));
                        }
                    }
                    Err(e) => rep.warnings.push(format!("seeding {} from {}: {e}", to.display(), from.display())),
                }
            }
            PoolOp::MoveMount { from, to } => {
                if failed_mounts.contains(&from) {
                    continue;
                }
                let res = host.move_mount(&resolve(root, &from), &resolve(root, &to));
                // The report names the final place of the staged mount.
                if let Some(m) = rep.mounts.iter_mut().rev().find(|m| m.at == from) {
                    m.at = to;
                    if let Err(e) = res {
                        m.ok = false;
                        m.error = Some(e.0);
                    }
                }
            }
            PoolOp::EnsureDir { path } => {
                let dir = resolve(root, &path);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    rep.warnings.push(format!("creating {}: {e}", dir.display()));
                }
            }
            PoolOp::WriteCorePattern { path, pattern } => {
                if let Err(e) = write_core_pattern(&resolve(root, &path), &pattern) {
                    rep.warnings.push(format!("setting core_pattern: {e}"));
                }
            }
            PoolOp::Swapon { device } => {
                let res = host.swapon(&device);
                rep.swap = Some(SwapReport { device, ok: res.is_ok(), error: res.err().map(|e| e.0) });
            }
            PoolOp::Import { .. } => {}
        }
    }
    let state = read_setup_state(&resolve(root, Path::new(SETUP_STATE_FILE)));
    let (mode, why) = setup_mode(true, &state);
    rep.mode = mode;
    rep.reason = why;
    finish(host, rep)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::fs;

    use super::*;
    use crate::observe::{CandidateState, DatasetKind};

    /// Records every call; scripted observations.
    #[derive(Default)]
    struct Fake {
        log: Vec<String>,
        now: Duration,
        /// Successive answers of `block_devices` (the last one repeats).
        devices: VecDeque<Vec<String>>,
        /// Candidates appear once this many scans have happened.
        candidates_after: usize,
        scans: usize,
        candidates: Vec<Candidate>,
        imported: Option<ImportedPool>,
        factoryreset: Option<String>,
        datasets: Vec<DatasetInfo>,
        fail_destroy: bool,
        fail_mount: Option<String>,
    }

    impl PoolHost for Fake {
        fn settle(&mut self) {
            self.log.push("settle".into());
        }
        fn block_devices(&mut self) -> Vec<String> {
            if self.devices.len() > 1 {
                self.devices.pop_front().unwrap_or_default()
            } else {
                self.devices.front().cloned().unwrap_or_default()
            }
        }
        fn sleep(&mut self, d: Duration) {
            self.now += d;
        }
        fn elapsed(&self) -> Duration {
            self.now
        }
        fn hostid(&mut self) -> u64 {
            0xabc
        }
        fn imported(&mut self, _: &str) -> Result<Option<ImportedPool>, HostError> {
            Ok(self.imported.clone())
        }
        fn candidates(&mut self) -> Result<Vec<Candidate>, HostError> {
            self.scans += 1;
            self.log.push("scan".into());
            Ok(if self.scans > self.candidates_after { self.candidates.clone() } else { Vec::new() })
        }
        fn import(&mut self, pool: &str, guid: u64, force: bool) -> Result<(), HostError> {
            self.log.push(format!("import {pool} {guid} force={force}"));
            self.imported = Some(ImportedPool { name: pool.into(), health: "ONLINE".into() });
            Ok(())
        }
        fn destroy(&mut self, pool: &str) -> Result<(), HostError> {
            self.log.push(format!("destroy {pool}"));
            if self.fail_destroy {
                Err(HostError("pool is busy".into()))
            } else {
                Ok(())
            }
        }
        fn user_prop(&mut self, _: &str, _: &str) -> Result<Option<String>, HostError> {
            Ok(self.factoryreset.clone())
        }
        fn datasets(&mut self, _: &str) -> Result<Vec<DatasetInfo>, HostError> {
            Ok(self.datasets.clone())
        }
        fn create_dataset(&mut self, name: &str, _: &[(String, String)]) -> Result<(), HostError> {
            self.log.push(format!("create {name}"));
            Ok(())
        }
        fn mount(&mut self, dataset: &str, at: &Path) -> Result<(), HostError> {
            self.log.push(format!("mount {dataset} {}", at.display()));
            if self.fail_mount.as_deref() == Some(dataset) {
                return Err(HostError("EIO".into()));
            }
            Ok(())
        }
        fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), HostError> {
            self.log.push(format!("move {} {}", from.display(), to.display()));
            Ok(())
        }
        fn swapon(&mut self, device: &Path) -> Result<(), HostError> {
            self.log.push(format!("swapon {}", device.display()));
            Ok(())
        }
    }

    fn cand(state: CandidateState, hostid: u64) -> Candidate {
        Candidate {
            name: "zones".into(),
            guid: 42,
            state,
            health: "ONLINE".into(),
            hostid: Some(hostid),
            hostname: Some("other".into()),
        }
    }

    fn ds(name: &str, kind: DatasetKind, mountpoint: &str) -> DatasetInfo {
        DatasetInfo { name: name.into(), kind, mountpoint: mountpoint.into(), canmount: "on".into(), mounted: false }
    }

    fn standard() -> Vec<DatasetInfo> {
        vec![
            ds("zones", DatasetKind::Filesystem, "/zones"),
            ds("zones/config", DatasetKind::Filesystem, "/zones/config"),
            ds("zones/cores", DatasetKind::Filesystem, "none"),
            ds("zones/cores/global", DatasetKind::Filesystem, "/zones/global/cores"),
            ds("zones/opt", DatasetKind::Filesystem, "legacy"),
            ds("zones/var", DatasetKind::Filesystem, "legacy"),
            ds("zones/swap", DatasetKind::Volume, ""),
        ]
    }

    fn root() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(t.path().join("proc/sys/kernel")).expect("mkdir");
        fs::create_dir_all(t.path().join("var/lib")).expect("mkdir");
        fs::write(t.path().join("var/lib/image-file"), "from the image").expect("write");
        t
    }

    fn fake() -> Fake {
        Fake { devices: VecDeque::from([vec!["sda".into()]]), ..Fake::default() }
    }

    #[test]
    fn imports_mounts_seeds_and_reports_setup() {
        let t = root();
        let mut h = fake();
        h.candidates = vec![cand(CandidateState::Exported, 0x999)];
        h.datasets = standard();
        let state = t.path().join("opt/triton/config");
        fs::create_dir_all(&state).expect("mkdir");
        fs::write(state.join("triton-setup-state.json"), r#"{"complete":true}"#).expect("write");

        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        let p = |s: &str| t.path().join(s).display().to_string();
        assert_eq!(
            h.log,
            vec![
                "settle".to_string(),
                "scan".into(),
                "import zones 42 force=false".into(),
                format!("mount zones {}", p("zones")),
                format!("mount zones/config {}", p("zones/config")),
                format!("mount zones/cores/global {}", p("zones/global/cores")),
                format!("mount zones/opt {}", p("opt")),
                format!("mount zones/var {}", p("run/triton-pool/var")),
                format!("move {} {}", p("run/triton-pool/var"), p("var")),
                "swapon /dev/zvol/zones/swap".into(),
            ]
        );
        assert_eq!((r.outcome, r.mode, r.reason.clone()), (Outcome::Imported, Mode::Setup, None));
        assert_eq!(r.mounts.len(), 5);
        assert!(r.mounts.iter().all(|m| m.ok));
        assert_eq!(r.mounts[4].at, PathBuf::from("/var"));
        assert!(r.swap.as_ref().is_some_and(|s| s.ok));
        assert_eq!(
            fs::read_to_string(t.path().join("proc/sys/kernel/core_pattern")).expect("read"),
            "/zones/global/cores/core.%e.%p\n"
        );
        // The fake mount is a no-op: the staging dir is a plain dir, so the seed is visible there.
        assert_eq!(
            fs::read_to_string(t.path().join("run/triton-pool/var/lib/image-file")).expect("read"),
            "from the image"
        );
        assert!(t.path().join("run/triton-pool/var").join(crate::VAR_MARKER).is_file());
        assert!(r.var_seeded.is_some_and(|n| n >= 2));
        let json = serde_json::to_value(&r).expect("json");
        for k in ["pool", "outcome", "mode", "reason", "mounts", "swap", "ms", "var_seeded", "warnings"] {
            assert!(json.get(k).is_some(), "missing {k}");
        }
        assert_eq!(json["outcome"], "imported");
        assert_eq!(json["mode"], "setup");
    }

    #[test]
    fn unsetup_without_state_file() {
        let t = root();
        let mut h = fake();
        h.candidates = vec![cand(CandidateState::Active, 0xabc)];
        h.datasets = standard();
        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        assert_eq!((r.outcome, r.mode), (Outcome::Imported, Mode::Unsetup));
        assert!(r.reason.unwrap_or_default().contains("does not exist"));
    }

    #[test]
    fn foreign_pool_does_not_stop_the_boot() {
        let t = root();
        let mut h = fake();
        h.candidates = vec![cand(CandidateState::Active, 0x1234)];
        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        assert_eq!((r.outcome, r.mode), (Outcome::Foreign, Mode::Unsetup));
        assert!(r.reason.unwrap_or_default().contains("triton.force_import=true"));
        assert!(!h.log.iter().any(|l| l.starts_with("import")));

        let mut h = fake();
        h.candidates = vec![cand(CandidateState::Active, 0x1234)];
        h.datasets = standard();
        let f = BootFlags { force_import: true, ..BootFlags::default() };
        let r = run_boot(&mut h, "zones", &f, t.path(), &WaitPolicy::default());
        assert_eq!(r.outcome, Outcome::Imported);
        assert!(h.log.contains(&"import zones 42 force=true".to_string()));
    }

    #[test]
    fn destroy_success_and_failure_messages() {
        let t = root();
        let mut h = fake();
        h.candidates = vec![cand(CandidateState::Exported, 0)];
        h.factoryreset = Some("yes".into());
        h.datasets = standard();
        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        assert_eq!((r.outcome, r.mode), (Outcome::Destroyed, Mode::Unsetup));
        let why = r.reason.unwrap_or_default();
        assert!(why.starts_with("pool zones destroyed: smartdc:factoryreset=yes"), "{why}");
        assert!(r.mounts.is_empty());
        assert_eq!(h.log.last().map(String::as_str), Some("destroy zones"));

        let mut h = fake();
        h.candidates = vec![cand(CandidateState::Exported, 0)];
        h.fail_destroy = true;
        let f = BootFlags { destroy_zpools: true, ..BootFlags::default() };
        let r = run_boot(&mut h, "zones", &f, t.path(), &WaitPolicy::default());
        assert_eq!((r.outcome, r.mode), (Outcome::Error, Mode::Unsetup));
        let why = r.reason.unwrap_or_default();
        assert!(why.contains("FAILED") && why.contains("destroy_zpools") && why.contains("busy"), "{why}");
        assert!(r.mounts.is_empty());
    }

    #[test]
    fn noimport_never_touches_the_disks() {
        let t = root();
        let mut h = fake();
        h.candidates = vec![cand(CandidateState::Exported, 0)];
        let f = BootFlags { noimport: true, ..BootFlags::default() };
        let r = run_boot(&mut h, "zones", &f, t.path(), &WaitPolicy::default());
        assert_eq!((r.outcome, r.mode), (Outcome::NoImport, Mode::Unsetup));
        assert!(h.log.is_empty(), "{:?}", h.log);
    }

    #[test]
    fn absent_gives_up_once_devices_are_stable() {
        let t = root();
        let mut h = fake();
        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        assert_eq!((r.outcome, r.mode), (Outcome::Absent, Mode::Unsetup));
        // One scan, then 1 s of stable devices: no further scans, no 10 s wait.
        assert_eq!(h.log.iter().filter(|l| *l == "scan").count(), 1);
        assert_eq!(h.now, Duration::from_secs(1));
        assert_eq!(r.ms, 1000);
    }

    #[test]
    fn rescans_while_disks_appear() {
        let t = root();
        let mut h = fake();
        h.devices = VecDeque::from([vec![], vec!["sda".into()], vec!["sda".into()], vec!["sda".into(), "sdb".into()]]);
        h.candidates_after = 2;
        h.candidates = vec![cand(CandidateState::Exported, 0)];
        h.datasets = standard();
        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        assert_eq!(r.outcome, Outcome::Imported);
        assert_eq!(h.log.iter().filter(|l| *l == "scan").count(), 3);
        assert_eq!(h.now, Duration::from_millis(750));
    }

    #[test]
    fn no_disks_at_all_waits_the_full_bound() {
        let t = root();
        let mut h = Fake::default();
        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        assert_eq!(r.outcome, Outcome::Absent);
        assert!(h.now <= Duration::from_secs(10) && h.now >= Duration::from_millis(9750), "{:?}", h.now);
    }

    #[test]
    fn failed_var_mount_skips_seed_and_move() {
        let t = root();
        let mut h = fake();
        h.candidates = vec![cand(CandidateState::Exported, 0)];
        h.datasets = standard();
        h.fail_mount = Some("zones/var".into());
        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        assert_eq!(r.outcome, Outcome::Imported);
        let var = r.mounts.iter().find(|m| m.dataset == "zones/var").expect("var mount");
        assert!(!var.ok && var.error.as_deref() == Some("EIO"));
        assert!(!h.log.iter().any(|l| l.starts_with("move")));
        assert!(!t.path().join("run/triton-pool/var").join(crate::VAR_MARKER).exists());
        assert_eq!(r.var_seeded, None);
    }

    #[test]
    fn already_imported_is_not_reimported() {
        let t = root();
        let mut h = fake();
        h.imported = Some(ImportedPool { name: "zones".into(), health: "ONLINE".into() });
        h.datasets = standard()
            .into_iter()
            .map(|mut d| {
                d.mounted = true;
                d
            })
            .collect();
        let r = run_boot(&mut h, "zones", &BootFlags::default(), t.path(), &WaitPolicy::default());
        assert_eq!(r.outcome, Outcome::Imported);
        assert!(!h.log.iter().any(|l| l.starts_with("import") || l.starts_with("mount")), "{:?}", h.log);
    }
}
