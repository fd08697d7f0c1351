//! What the disks hold, reduced to the cases the boot decision cares about.

use serde::Serialize;

/// The `state` of a pool config found by the import scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateState {
    /// In use (not exported) when last seen: by us before a reboot, or by another host.
    Active,
    Exported,
    Destroyed,
    Other,
}

/// One pool config the import scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub name: String,
    pub guid: u64,
    pub state: CandidateState,
    /// Root vdev health as libzfs names it: `ONLINE`, `DEGRADED`, `FAULTED`, `UNAVAIL`, ...
    pub health: String,
    /// hostid of the host that last imported it (0 or absent: none recorded).
    pub hostid: Option<u64>,
    pub hostname: Option<String>,
}

/// A pool that is already imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedPool {
    pub name: String,
    pub health: String,
}

/// Kind of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Filesystem,
    Volume,
    Other,
}

/// One dataset of the imported pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub kind: DatasetKind,
    /// The `mountpoint` property (`/path`, `legacy`, `none`; empty for volumes).
    pub mountpoint: String,
    /// The `canmount` property (`on`, `off`, `noauto`).
    pub canmount: String,
    pub mounted: bool,
}

/// The system pool as the boot decision sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum PoolObservation {
    /// No pool of that name on any disk.
    Absent,
    /// Already imported (e.g. the tool ran before in this boot).
    Imported { health: String },
    /// Can be imported without force.
    Importable { guid: u64, health: String },
    /// Not exported, last imported by a host with another hostid.
    Foreign { guid: u64, hostid: u64, hostname: Option<String>, health: String },
    /// Found but cannot be imported (missing or failed devices).
    Faulted { guid: u64, health: String },
    /// More than one importable pool with that name.
    Ambiguous { guids: Vec<u64> },
}

impl PoolObservation {
    /// Worth rescanning for: devices may still be appearing.
    pub fn incomplete(&self) -> bool {
        matches!(self, PoolObservation::Absent | PoolObservation::Faulted { .. })
    }
}

fn importable_health(h: &str) -> bool {
    matches!(h, "ONLINE" | "DEGRADED")
}

/// Reduces the scan result for `pool` to one observation. `my_hostid` is
/// this host's id (`/etc/hostid`).
pub fn classify(
    pool: &str,
    imported: Option<&ImportedPool>,
    candidates: &[Candidate],
    my_hostid: u64,
) -> PoolObservation {
    if let Some(p) = imported.filter(|p| p.name == pool) {
        return PoolObservation::Imported { health: p.health.clone() };
    }
    let mine: Vec<&Candidate> =
        candidates.iter().filter(|c| c.name == pool && c.state != CandidateState::Destroyed).collect();
    let Some(first) = mine.first() else { return PoolObservation::Absent };
    if mine.len() > 1 {
        // Prefer the only healthy one if exactly one is; otherwise refuse to guess.
        let healthy: Vec<&&Candidate> = mine.iter().filter(|c| importable_health(&c.health)).collect();
        if healthy.len() != 1 {
            return PoolObservation::Ambiguous { guids: mine.iter().map(|c| c.guid).collect() };
        }
        return classify_one(healthy[0], my_hostid);
    }
    classify_one(first, my_hostid)
}

fn classify_one(c: &Candidate, my_hostid: u64) -> PoolObservation {
    if !importable_health(&c.health) {
        return PoolObservation::Faulted { guid: c.guid, health: c.health.clone() };
    }
    match c.hostid {
        Some(h) if h != 0 && h != my_hostid && c.state == CandidateState::Active => {
            PoolObservation::Foreign { guid: c.guid, hostid: h, hostname: c.hostname.clone(), health: c.health.clone() }
        }
        _ => PoolObservation::Importable { guid: c.guid, health: c.health.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(guid: u64, state: CandidateState, health: &str, hostid: Option<u64>) -> Candidate {
        Candidate {
            name: "zones".into(),
            guid,
            state,
            health: health.into(),
            hostid,
            hostname: hostid.map(|_| "cn7".into()),
        }
    }

    #[test]
    fn absent_when_nothing_or_other_names_or_destroyed() {
        assert_eq!(classify("zones", None, &[], 1), PoolObservation::Absent);
        let mut other = cand(1, CandidateState::Exported, "ONLINE", None);
        other.name = "data".into();
        assert_eq!(classify("zones", None, &[other], 1), PoolObservation::Absent);
        let gone = cand(2, CandidateState::Destroyed, "ONLINE", None);
        assert_eq!(classify("zones", None, &[gone], 1), PoolObservation::Absent);
    }

    #[test]
    fn imported_wins() {
        let p = ImportedPool { name: "zones".into(), health: "ONLINE".into() };
        let c = cand(1, CandidateState::Exported, "ONLINE", None);
        assert_eq!(classify("zones", Some(&p), &[c], 1), PoolObservation::Imported { health: "ONLINE".into() });
    }

    #[test]
    fn importable_exported_or_ours_or_degraded() {
        let ours = cand(5, CandidateState::Active, "ONLINE", Some(0xabc));
        assert_eq!(
            classify("zones", None, &[ours], 0xabc),
            PoolObservation::Importable { guid: 5, health: "ONLINE".into() }
        );
        // Exported by another host: importable without force (as zpool import does).
        let exported = cand(6, CandidateState::Exported, "DEGRADED", Some(0x999));
        assert_eq!(
            classify("zones", None, &[exported], 0xabc),
            PoolObservation::Importable { guid: 6, health: "DEGRADED".into() }
        );
        let no_hostid = cand(7, CandidateState::Active, "ONLINE", None);
        assert!(matches!(classify("zones", None, &[no_hostid], 1), PoolObservation::Importable { .. }));
    }

    #[test]
    fn foreign_when_active_elsewhere() {
        let c = cand(8, CandidateState::Active, "ONLINE", Some(0x1234));
        assert_eq!(
            classify("zones", None, &[c], 0xabc),
            PoolObservation::Foreign { guid: 8, hostid: 0x1234, hostname: Some("cn7".into()), health: "ONLINE".into() }
        );
    }

    #[test]
    fn faulted_and_unavail() {
        for h in ["FAULTED", "UNAVAIL", "REMOVED"] {
            let c = cand(9, CandidateState::Exported, h, None);
            assert_eq!(classify("zones", None, &[c], 1), PoolObservation::Faulted { guid: 9, health: h.into() });
        }
    }

    #[test]
    fn several_pools_named_zones() {
        let a = cand(1, CandidateState::Exported, "ONLINE", None);
        let b = cand(2, CandidateState::Exported, "ONLINE", None);
        assert_eq!(classify("zones", None, &[a.clone(), b], 1), PoolObservation::Ambiguous { guids: vec![1, 2] });
        let f = cand(3, CandidateState::Exported, "UNAVAIL", None);
        assert_eq!(
            classify("zones", None, &[a, f], 1),
            PoolObservation::Importable { guid: 1, health: "ONLINE".into() }
        );
    }
}
