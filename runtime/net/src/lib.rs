//! Triton networking for a Linux compute node: turn `/etc/triton-networking.json`
//! (contracts 4.2) into links, addresses, routes and resolv.conf.
//!
//! Data first: [`Desired::from_json`] resolves the file, [`Observed`] is the
//! kernel's state, [`plan()`] returns ordered [`Op`]s (pure), and a [`LinkApi`]
//! applies them ([`netlink::Netlink`] over rtnetlink; `fake::Fake` with the
//! `fake` feature). [`configure`] is the synchronous entry point for init.
//!
//! # Naming
//! - Physical NICs keep their kernel names (renaming needs the link down,
//!   which would drop the stage-1 admin address and route).
//! - A bond is named after its aggregation (`aggr0`).
//! - A VLAN link is `<lower>.<vid>` (`aggr0.3`), the lower name cut so the
//!   whole fits IFNAMSIZ-1 = 15 characters.
//! - A vnic is named `<nic_tag><N>` (N counts the file's vnics on that tag
//!   from 0: `admin0`, `external0`, `external1`), the tag cut to fit 15.
//!   The name becomes a kernel interface only when the vnic needs its own
//!   link: a vnic whose MAC is not the MAC of the NIC/bond providing its tag
//!   gets a macvlan (mode bridge) named so, carrying the vnic's MAC, on the
//!   provider (or on its VLAN link). Otherwise the address goes straight onto
//!   the provider (vlan_id 0) or its VLAN link. The [`Report`] maps every
//!   vnic name to the interface that carries it.
//!
//! # Bonds
//! `lacp_mode` "active"/"passive" → Linux `802.3ad` with `lacp_active`
//! on/off and fast LACP rate (illumos' default timer is short); "off" or
//! absent → `balance-xor` (static aggregation, like illumos' aggregations
//! without LACP). Both with `xmit_hash_policy layer3+4` and `miimon 100`. The
//! bond's MAC is its first listed member's. All set through rtnetlink
//! (`IFLA_INFO_DATA` of kind `bond`); no sysfs is used. An existing bond in
//! another mode is reported, not rebuilt.
//!
//! # MTU
//! A provider link gets the largest of its nic tags' MTUs and the MTUs of
//! the vnics on it; a vnic's own link gets the vnic's MTU. No MTU in the
//! file: the MTU is left alone.
//!
//! # What is owned
//! The plan creates bonds, VLAN and macvlan links, sets MTU/up on the links
//! the file names, adds the file's addresses and routes. It never deletes a
//! link, and deletes an address only to move one of the file's own addresses
//! (such as the stage-1 admin address) to where the file puts it, e.g. from
//! a NIC onto the bond it becomes a member of. Anything else (other
//! addresses, links, routes) is left alone. Routes are added with "replace"
//! semantics for the file's destinations only (the default route only when
//! the file has a gateway: the primary vnic's, else the first non-admin
//! vnic's, else the admin vnic's). Planning again after applying gives no
//! ops. NICs named in the file but absent are warnings in the [`Report`].

pub mod apply;
pub mod desired;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod model;
pub mod netlink;
pub mod plan;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use boot_params::networking::{check_hash, NetworkingError};
use boot_params::NetworkingJson;
use serde::Serialize;

pub use apply::{apply_ops, ApplyError, LinkApi};
pub use desired::{Desired, DesiredError};
pub use model::{Cidr, Link, LinkKind, Observed};
pub use plan::{plan, plan_full, Op, Placement, Plan};

/// What [`configure`] did, for a `TRITON-EVENT` line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Ops applied, in order.
    pub ops: Vec<Op>,
    /// What was skipped or is not as the file asks.
    pub warnings: Vec<String>,
    /// vnic name → address (`{"admin0": "10.99.99.78/24"}`).
    pub addresses: BTreeMap<String, Cidr>,
    /// Where each vnic went (interface, tag, MAC, VLAN).
    pub vnics: Vec<Placement>,
    pub default_gateway: Option<Ipv4Addr>,
    /// resolv.conf was (re)written.
    pub resolv_conf_written: bool,
}

/// Why [`configure`] did not finish. Nothing is applied when the file is
/// missing, unreadable, fails its hash, or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("{path}: not found; booter writes it only when the server has a NIC with the admin nic tag: check the server's NICs in NAPI, and that stage 1 copied it into the root")]
    Missing { path: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}; the file is damaged: reboot to fetch it again from booter (nothing was applied)")]
    Hash {
        path: PathBuf,
        #[source]
        source: NetworkingError,
    },
    #[error("{path}: {source}; nothing was applied")]
    Parse {
        path: PathBuf,
        #[source]
        source: NetworkingError,
    },
    #[error("{path} is invalid, nothing was applied; fix in NAPI: {}", problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
    #[error("{path}: {source} (nothing was applied)")]
    Desired {
        path: PathBuf,
        #[source]
        source: DesiredError,
    },
    #[error("reading the network state: {0}")]
    Observe(#[source] ApplyError),
    #[error("after {applied} of {planned} network changes: {source}")]
    Apply {
        applied: usize,
        planned: usize,
        #[source]
        source: ApplyError,
    },
    #[error("writing {path}: {source} (is the root file system writable?)")]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads, hash-checks (when `hash_path` exists), parses and validates the
/// file. Warnings (no hash file, unknown keys) go into the returned
/// [`Desired`].
pub fn load(json_path: &Path, hash_path: &Path) -> Result<Desired, ConfigureError> {
    let text = match std::fs::read(json_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigureError::Missing { path: json_path.into() })
        }
        Err(source) => return Err(ConfigureError::Read { path: json_path.into(), source }),
    };
    let mut warnings = Vec::new();
    match std::fs::read_to_string(hash_path) {
        Ok(h) => check_hash(&text, &h).map_err(|source| ConfigureError::Hash { path: json_path.into(), source })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!("{}: absent; {} not checked", hash_path.display(), json_path.display()))
        }
        Err(source) => return Err(ConfigureError::Read { path: hash_path.into(), source }),
    }
    let text = String::from_utf8_lossy(&text);
    let n = NetworkingJson::parse(&text).map_err(|source| ConfigureError::Parse { path: json_path.into(), source })?;
    let problems = n.validate();
    if !problems.is_empty() {
        return Err(ConfigureError::Invalid {
            path: json_path.into(),
            problems: problems.iter().map(ToString::to_string).collect(),
        });
    }
    let unknown = n.unknown_keys();
    if !unknown.is_empty() {
        tracing::info!(keys = ?unknown, "triton-networking.json: keys not used");
    }
    let mut d = Desired::from_json(&n).map_err(|source| ConfigureError::Desired { path: json_path.into(), source })?;
    warnings.append(&mut d.warnings);
    d.warnings = warnings;
    Ok(d)
}

/// Observe, plan, apply, check convergence, write resolv.conf.
pub fn configure_with(api: &mut dyn LinkApi, d: &Desired, resolv_conf: &Path) -> Result<Report, ConfigureError> {
    let before = api.observe().map_err(ConfigureError::Observe)?;
    let p = plan_full(d, &before);
    let planned = p.ops.len();
    let ops = apply_ops(api, &p.ops).map_err(|(applied, source)| ConfigureError::Apply { applied, planned, source })?;
    let mut warnings = p.warnings;
    let after = api.observe().map_err(ConfigureError::Observe)?;
    let left = plan(d, &after);
    if !left.is_empty() {
        let left: Vec<String> = left.iter().map(ToString::to_string).collect();
        warnings.push(format!("not converged; still to do: {}", left.join("; ")));
    }
    let resolv_conf_written = write_if_changed(resolv_conf, &d.resolv_conf)
        .map_err(|source| ConfigureError::ResolvConf { path: resolv_conf.into(), source })?;
    Ok(Report {
        ops,
        warnings,
        addresses: p.placements.iter().map(|pl| (pl.vnic.clone(), pl.address)).collect(),
        vnics: p.placements,
        default_gateway: d.default_gateway,
        resolv_conf_written,
    })
}

/// The entry point for init: load `json_path` (checked against `hash_path`
/// when that exists), apply it to this thread's network namespace through
/// rtnetlink, write `resolv_conf` atomically. Synchronous: it builds its
/// own current-thread tokio runtime, so call it from a plain thread, not
/// from inside another tokio runtime. Spawns no processes.
pub fn configure(json_path: &Path, hash_path: &Path, resolv_conf: &Path) -> Result<Report, ConfigureError> {
    let d = load(json_path, hash_path)?;
    let mut api = netlink::Netlink::new().map_err(ConfigureError::Observe)?;
    configure_with(&mut api, &d, resolv_conf)
}

/// Writes `text` to `path` via a temporary file and rename, unless `path`
/// already holds exactly `text`.
pub fn write_if_changed(path: &Path, text: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|()| true)
}
