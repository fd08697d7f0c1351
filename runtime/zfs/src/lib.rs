//! Safe wrapper over libzfs (Debian trixie, OpenZFS 2.3).
//!
//! [`Zfs`] owns the one `libzfs_handle_t` of the process behind a mutex:
//! libzfs is not thread-safe, so every call is serialised. Errors are
//! [`ZfsError`], carrying the pool or dataset and libzfs' own description.
//!
//! Dataset mounts use mount(2) directly (fstype `zfs`, option `zfsutil`, see
//! [`sys::mount_dataset`]) at places the caller chooses, not libzfs'
//! mountpoint logic: the Triton layout mounts `legacy` datasets too.
//!
//! [`host::LibzfsHost`] implements `pool::PoolHost` for the `triton-pool`
//! binary, which lives in this package (`src/bin/triton-pool.rs`) rather
//! than in `pool`: `pool` stays a pure library whose tests run on any host,
//! and everything that links libzfs is in `zfs-sys` and `zfs`. The image
//! builder installs the binary as `/usr/bin/triton-pool`.
//!
//! Tests: the host (Debian 12, no libzfs) can only `cargo clippy` these two
//! crates; their tests run inside the trixie buildroot with
//! `triton-pi cargo-test -- -p zfs-sys -p zfs`. None needs the zfs kernel
//! module (without `/dev/zfs`, [`Zfs::open`] returns [`ZfsError::Init`]).

#![allow(unsafe_code)]

pub mod host;
mod nvlist;
pub mod sys;

use std::ffi::{c_void, CStr, CString};
use std::ptr;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use zfs_sys as z;

use crate::nvlist::{key, Nvl, OwnedNvl};

/// Errors of libzfs operations.
#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    #[error("libzfs_init failed (is the zfs module loaded and /dev/zfs present?): {0}")]
    Init(std::io::Error),
    #[error("{0:?} is not a valid ZFS name (NUL byte)")]
    BadName(String),
    #[error("searching for importable pools failed: {0}")]
    Search(String),
    #[error("no importable pool {pool} with guid {guid}")]
    NotImportable { pool: String, guid: u64 },
    #[error("pool {0} is not imported")]
    NoSuchPool(String),
    #[error("pool {pool}: {op} failed: {desc}")]
    Pool { pool: String, op: &'static str, desc: String },
    #[error("dataset {dataset}: {op} failed: {desc}")]
    Dataset { dataset: String, op: &'static str, desc: String },
}

/// `pool_state_t` of a pool config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolState {
    Active,
    Exported,
    Destroyed,
    Other,
}

impl PoolState {
    fn from_raw(v: u64) -> PoolState {
        match v {
            x if x == u64::from(z::pool_state_POOL_STATE_ACTIVE) => PoolState::Active,
            x if x == u64::from(z::pool_state_POOL_STATE_EXPORTED) => PoolState::Exported,
            x if x == u64::from(z::pool_state_POOL_STATE_DESTROYED) => PoolState::Destroyed,
            _ => PoolState::Other,
        }
    }
}

/// A pool the import scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportCandidate {
    pub name: String,
    pub guid: u64,
    pub state: PoolState,
    /// `ONLINE`, `DEGRADED`, `FAULTED`, `UNAVAIL`, ... of the root vdev.
    pub health: String,
    /// hostid/hostname recorded by the last import (absent if none).
    pub hostid: Option<u64>,
    pub hostname: Option<String>,
}

/// An imported pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolInfo {
    pub name: String,
    pub state: PoolState,
    pub health: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetType {
    Filesystem,
    Volume,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dataset {
    pub name: String,
    pub kind: DatasetType,
    pub mountpoint: String,
    pub canmount: String,
    pub mounted: bool,
}

struct Handle(*mut z::libzfs_handle_t);

// SAFETY: a libzfs handle is not tied to the thread that created it; it
// must only not be used by two threads at once, which the Mutex in `Zfs`
// guarantees (the pointer is never reachable outside the lock).
unsafe impl Send for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from libzfs_init, is non-null, and is
        // finalised exactly once (Handle is not Clone).
        unsafe { z::libzfs_fini(self.0) }
    }
}

/// The process' libzfs handle.
pub struct Zfs {
    h: Mutex<Handle>,
}

impl std::fmt::Debug for Zfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Zfs")
    }
}

fn cstring(s: &str) -> Result<CString, ZfsError> {
    CString::new(s).map_err(|_| ZfsError::BadName(s.to_string()))
}

fn describe(h: *mut z::libzfs_handle_t) -> String {
    // SAFETY: h is a live handle (callers hold the lock); the description is
    // a NUL-terminated string inside the handle, copied out at once.
    unsafe {
        let p = z::libzfs_error_description(h);
        if p.is_null() {
            String::from("unknown error")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

fn state_name(state: u64, aux: u64) -> String {
    // SAFETY: zpool_state_to_name only switches on its arguments and returns
    // a static string (gettext'd); any value is accepted.
    let p = unsafe { z::zpool_state_to_name(state as z::vdev_state_t, aux as z::vdev_aux_t) };
    if p.is_null() {
        return "UNKNOWN".into();
    }
    // SAFETY: non-null static NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Reads an import config (as returned by the import search).
fn candidate_from_config(name: &str, cfg: Nvl<'_>) -> ImportCandidate {
    let health = cfg
        .nvlist(key(z::ZPOOL_CONFIG_VDEV_TREE))
        .and_then(|t| t.u64_array(key(z::ZPOOL_CONFIG_VDEV_STATS)))
        .map(|vs| {
            let at = |off: usize| vs.get(off / 8).copied().unwrap_or(0);
            state_name(
                at(std::mem::offset_of!(z::vdev_stat_t, vs_state)),
                at(std::mem::offset_of!(z::vdev_stat_t, vs_aux)),
            )
        })
        .unwrap_or_else(|| "UNKNOWN".into());
    ImportCandidate {
        name: cfg.string(key(z::ZPOOL_CONFIG_POOL_NAME)).unwrap_or_else(|| name.to_string()),
        guid: cfg.u64(key(z::ZPOOL_CONFIG_POOL_GUID)).unwrap_or(0),
        state: cfg.u64(key(z::ZPOOL_CONFIG_POOL_STATE)).map(PoolState::from_raw).unwrap_or(PoolState::Other),
        health,
        hostid: cfg.u64(key(z::ZPOOL_CONFIG_HOSTID)).filter(|h| *h != 0),
        hostname: cfg.string(key(z::ZPOOL_CONFIG_HOSTNAME)).filter(|h| !h.is_empty()),
    }
}

/// Buffer size for property values (ZFS_MAXPROPLEN is ZAP_MAXVALUELEN, 8 KiB).
const PROPLEN: usize = 8192;

struct PoolHandle(*mut z::zpool_handle_t);

impl Drop for PoolHandle {
    fn drop(&mut self) {
        // SAFETY: non-null handle from zpool_open_canfail, closed once, while
        // the libzfs lock that opened it is still held (guards outlive these).
        unsafe { z::zpool_close(self.0) }
    }
}

struct DsHandle(*mut z::zfs_handle_t);

impl Drop for DsHandle {
    fn drop(&mut self) {
        // SAFETY: non-null handle from zfs_open or an iterator callback, closed once.
        unsafe { z::zfs_close(self.0) }
    }
}

fn prop_string(zh: *mut z::zfs_handle_t, prop: z::zfs_prop_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; PROPLEN];
    // SAFETY: zh is a live dataset handle; buf has PROPLEN bytes; source and
    // statbuf are optional (null, 0); literal=false gives the display value.
    let rc = unsafe {
        z::zfs_prop_get(
            zh,
            prop,
            buf.as_mut_ptr(),
            buf.len(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
            z::boolean_t_B_FALSE,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: zfs_prop_get wrote a NUL-terminated string into buf.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

fn dataset_info(zh: *mut z::zfs_handle_t) -> Dataset {
    // SAFETY: zh is a live handle; the name is NUL-terminated inside it.
    let name = unsafe { CStr::from_ptr(z::zfs_get_name(zh)) }.to_string_lossy().into_owned();
    // SAFETY: zh is a live handle.
    let t = unsafe { z::zfs_get_type(zh) };
    let kind = match t {
        z::zfs_type_t_ZFS_TYPE_FILESYSTEM => DatasetType::Filesystem,
        z::zfs_type_t_ZFS_TYPE_VOLUME => DatasetType::Volume,
        _ => DatasetType::Other,
    };
    let (mountpoint, canmount, mounted) = if kind == DatasetType::Filesystem {
        // SAFETY: zh is a live handle; a null `where` asks only whether it is mounted.
        let m = unsafe { z::zfs_is_mounted(zh, ptr::null_mut()) } != 0;
        (
            prop_string(zh, z::zfs_prop_t_ZFS_PROP_MOUNTPOINT).unwrap_or_default(),
            prop_string(zh, z::zfs_prop_t_ZFS_PROP_CANMOUNT).unwrap_or_default(),
            m,
        )
    } else {
        (String::new(), String::new(), false)
    };
    Dataset { name, kind, mountpoint, canmount, mounted }
}

unsafe extern "C" fn collect_datasets(zh: *mut z::zfs_handle_t, data: *mut c_void) -> libc::c_int {
    let handle = DsHandle(zh);
    // SAFETY: data is the &mut Vec<Dataset> passed by `datasets` below, alive
    // for the whole (synchronous) iteration and not otherwise borrowed.
    let out = unsafe { &mut *(data as *mut Vec<Dataset>) };
    out.push(dataset_info(handle.0));
    // SAFETY: handle.0 is live until `handle` drops after this call; same callback and data.
    unsafe { z::zfs_iter_filesystems_v2(handle.0, 0, Some(collect_datasets), data) };
    0
}

impl Zfs {
    /// `libzfs_init`. Fails if the zfs module is not loaded.
    pub fn open() -> Result<Zfs, ZfsError> {
        // SAFETY: plain constructor; returns null (errno set) on failure.
        let h = unsafe { z::libzfs_init() };
        if h.is_null() {
            return Err(ZfsError::Init(std::io::Error::last_os_error()));
        }
        // SAFETY: h is a live handle; errors are reported through our types, not stderr.
        unsafe { z::libzfs_print_on_error(h, z::boolean_t_B_FALSE) };
        Ok(Zfs { h: Mutex::new(Handle(h)) })
    }

    fn lock(&self) -> MutexGuard<'_, Handle> {
        // A panic while holding the lock leaves the handle usable: libzfs
        // calls are not interrupted by Rust panics.
        self.h.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn search(&self, h: *mut z::libzfs_handle_t, pool: Option<&CStr>) -> Result<Option<OwnedNvl>, ZfsError> {
        // SAFETY: libpc_handle_t and importargs_t are plain C structs for
        // which all-zero is the documented "unset" state.
        let mut lpch: z::libpc_handle_t = unsafe { std::mem::zeroed() };
        lpch.lpc_lib_handle = h.cast();
        lpch.lpc_ops = &raw const z::libzfs_config_ops;
        lpch.lpc_printerr = z::boolean_t_B_FALSE;
        // SAFETY: see above.
        let mut args: z::importargs_t = unsafe { std::mem::zeroed() };
        // Scan the default device directories rather than trusting a blkid cache.
        args.scan = z::boolean_t_B_TRUE;
        args.poolname = pool.map_or(ptr::null(), |p| p.as_ptr());
        // SAFETY: lpch points at the live handle and libzfs' own config ops;
        // args is initialised; poolname (if any) outlives the call. The
        // result is a list we own, or null.
        let list = unsafe { z::zpool_search_import(&mut lpch, &mut args) };
        if list.is_null() && lpch.lpc_error != 0 {
            // SAFETY: lpch is the handle the search used; returns a string inside it or a static one.
            let d = unsafe { CStr::from_ptr(z::libpc_error_description(&mut lpch)) }.to_string_lossy().into_owned();
            return Err(ZfsError::Search(d));
        }
        // SAFETY: zpool_search_import hands over ownership of the list.
        Ok(unsafe { OwnedNvl::from_ptr(list) })
    }

    /// Pools that could be imported (not those already imported here).
    pub fn importable(&self) -> Result<Vec<ImportCandidate>, ZfsError> {
        let g = self.lock();
        let Some(list) = self.search(g.0, None)? else { return Ok(Vec::new()) };
        Ok(list.view().nvlist_pairs().into_iter().map(|(n, cfg)| candidate_from_config(&n, cfg)).collect())
    }

    /// Imports `name` (the config with `guid`; 0: the only one), without
    /// mounting anything and without an altroot. `force` also takes a pool
    /// last imported by another host.
    pub fn import(&self, name: &str, guid: u64, force: bool) -> Result<(), ZfsError> {
        let cname = cstring(name)?;
        let g = self.lock();
        let list = self.search(g.0, Some(&cname))?;
        let cfg = list.as_ref().and_then(|l| {
            l.view()
                .nvlist_pairs()
                .into_iter()
                .map(|(_, c)| c)
                .find(|c| guid == 0 || c.u64(key(z::ZPOOL_CONFIG_POOL_GUID)) == Some(guid))
        });
        let Some(cfg) = cfg else { return Err(ZfsError::NotImportable { pool: name.into(), guid }) };
        let flags = if force { z::ZFS_IMPORT_ANY_HOST } else { z::ZFS_IMPORT_NORMAL };
        // SAFETY: live handle; cfg is a config from the search list (alive
        // until `list` drops, after this call); no new name, no props.
        let rc =
            unsafe { z::zpool_import_props(g.0, cfg.as_ptr(), ptr::null(), ptr::null_mut(), flags as libc::c_int) };
        if rc != 0 {
            return Err(ZfsError::Pool { pool: name.into(), op: "import", desc: describe(g.0) });
        }
        Ok(())
    }

    fn open_pool(&self, h: *mut z::libzfs_handle_t, name: &str) -> Result<Option<PoolHandle>, ZfsError> {
        let cname = cstring(name)?;
        // SAFETY: live handle, NUL-terminated name; null if no such pool.
        let p = unsafe { z::zpool_open_canfail(h, cname.as_ptr()) };
        // Not `then_some`: that would build (and drop, i.e. zpool_close) a
        // handle around the null pointer. (Found by the QEMU smoke test.)
        Ok(if p.is_null() { None } else { Some(PoolHandle(p)) })
    }

    /// State and health of an imported pool, or `None` if not imported.
    pub fn pool(&self, name: &str) -> Result<Option<PoolInfo>, ZfsError> {
        let g = self.lock();
        let Some(p) = self.open_pool(g.0, name)? else { return Ok(None) };
        // SAFETY: p.0 is a live pool handle.
        let state = unsafe { z::zpool_get_state(p.0) };
        // SAFETY: p.0 is a live pool handle; the result is a static string.
        let health = unsafe {
            let s = z::zpool_get_state_str(p.0);
            if s.is_null() {
                "UNKNOWN".into()
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        };
        Ok(Some(PoolInfo { name: name.into(), state: PoolState::from_raw(state as u64), health }))
    }

    /// Unmounts the pool's datasets and exports it.
    pub fn export(&self, name: &str, force: bool) -> Result<(), ZfsError> {
        let g = self.lock();
        let p = self.open_pool(g.0, name)?.ok_or_else(|| ZfsError::NoSuchPool(name.into()))?;
        let f = if force { z::boolean_t_B_TRUE } else { z::boolean_t_B_FALSE };
        // SAFETY: p.0 is a live pool handle.
        if unsafe { z::zpool_disable_datasets(p.0, f) } != 0 {
            return Err(ZfsError::Pool { pool: name.into(), op: "unmount datasets", desc: describe(g.0) });
        }
        // SAFETY: p.0 is a live pool handle; no history message.
        if unsafe { z::zpool_export(p.0, f, ptr::null()) } != 0 {
            return Err(ZfsError::Pool { pool: name.into(), op: "export", desc: describe(g.0) });
        }
        Ok(())
    }

    /// Unmounts the pool's datasets (forcibly) and destroys the pool.
    pub fn destroy(&self, name: &str) -> Result<(), ZfsError> {
        let g = self.lock();
        let p = self.open_pool(g.0, name)?.ok_or_else(|| ZfsError::NoSuchPool(name.into()))?;
        // SAFETY: p.0 is a live pool handle.
        if unsafe { z::zpool_disable_datasets(p.0, z::boolean_t_B_TRUE) } != 0 {
            return Err(ZfsError::Pool { pool: name.into(), op: "unmount datasets", desc: describe(g.0) });
        }
        let msg = c"destroyed at boot by triton-pool";
        // SAFETY: p.0 is a live pool handle; msg is a static NUL-terminated string.
        if unsafe { z::zpool_destroy(p.0, msg.as_ptr()) } != 0 {
            return Err(ZfsError::Pool { pool: name.into(), op: "destroy", desc: describe(g.0) });
        }
        Ok(())
    }

    fn open_dataset(&self, h: *mut z::libzfs_handle_t, name: &str) -> Result<Option<DsHandle>, ZfsError> {
        let cname = cstring(name)?;
        let types = (z::zfs_type_t_ZFS_TYPE_FILESYSTEM | z::zfs_type_t_ZFS_TYPE_VOLUME) as libc::c_int;
        // SAFETY: live handle, NUL-terminated name; null on failure.
        let d = unsafe { z::zfs_open(h, cname.as_ptr(), types) };
        if !d.is_null() {
            return Ok(Some(DsHandle(d)));
        }
        // SAFETY: live handle.
        if unsafe { z::libzfs_errno(h) } == z::zfs_error_EZFS_NOENT as libc::c_int {
            return Ok(None);
        }
        Err(ZfsError::Dataset { dataset: name.into(), op: "open", desc: describe(h) })
    }

    /// The pool's datasets (filesystems and volumes), parents first.
    pub fn datasets(&self, pool: &str) -> Result<Vec<Dataset>, ZfsError> {
        let g = self.lock();
        let Some(root) = self.open_dataset(g.0, pool)? else { return Err(ZfsError::NoSuchPool(pool.into())) };
        let mut out = vec![dataset_info(root.0)];
        // SAFETY: root.0 is live; the callback closes each child handle and
        // only touches `out`, which outlives this synchronous call.
        unsafe { z::zfs_iter_filesystems_v2(root.0, 0, Some(collect_datasets), (&raw mut out).cast()) };
        Ok(out)
    }

    /// A user property (`module:name`), `None` if unset or the dataset is absent.
    pub fn user_prop(&self, dataset: &str, prop: &str) -> Result<Option<String>, ZfsError> {
        let cprop = cstring(prop)?;
        let g = self.lock();
        let Some(d) = self.open_dataset(g.0, dataset)? else { return Ok(None) };
        // SAFETY: d.0 is live; the list belongs to the handle and lives as long as `d`.
        let props = unsafe { Nvl::from_ptr(z::zfs_get_user_props(d.0)) };
        Ok(props.and_then(|p| p.nvlist(&cprop)).and_then(|v| v.string(key(z::ZPROP_VALUE))))
    }

    /// Creates a filesystem with string properties (`zfs create -o k=v`).
    pub fn create_filesystem(&self, name: &str, props: &[(String, String)]) -> Result<(), ZfsError> {
        let cname = cstring(name)?;
        let mut nv = OwnedNvl::new().ok_or_else(|| ZfsError::Dataset {
            dataset: name.into(),
            op: "create",
            desc: "out of memory".into(),
        })?;
        for (k, v) in props {
            if !nv.add_string(k, v) {
                return Err(ZfsError::BadName(format!("{k}={v}")));
            }
        }
        let g = self.lock();
        // SAFETY: live handle, NUL-terminated name, a valid props list we
        // keep ownership of (libzfs copies what it needs).
        let rc = unsafe { z::zfs_create(g.0, cname.as_ptr(), z::zfs_type_t_ZFS_TYPE_FILESYSTEM, nv.view().as_ptr()) };
        if rc != 0 {
            return Err(ZfsError::Dataset { dataset: name.into(), op: "create", desc: describe(g.0) });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, guid: u64, state: u64, vs_state: u64, hostid: Option<u64>) -> OwnedNvl {
        let mut stats = vec![0u64; std::mem::size_of::<z::vdev_stat_t>() / 8];
        stats[std::mem::offset_of!(z::vdev_stat_t, vs_state) / 8] = vs_state;
        let mut tree = OwnedNvl::new().expect("alloc");
        assert!(tree.add_u64_array("vdev_stats", &stats));
        let mut c = OwnedNvl::new().expect("alloc");
        assert!(c.add_string("name", name));
        assert!(c.add_u64("pool_guid", guid));
        assert!(c.add_u64("state", state));
        assert!(c.add_nvlist("vdev_tree", &tree));
        if let Some(h) = hostid {
            assert!(c.add_u64("hostid", h));
            assert!(c.add_string("hostname", "cn7"));
        }
        c
    }

    #[test]
    fn reads_import_configs() {
        let healthy = u64::from(z::vdev_state_VDEV_STATE_HEALTHY);
        let cant_open = u64::from(z::vdev_state_VDEV_STATE_CANT_OPEN);
        let mut list = OwnedNvl::new().expect("alloc");
        assert!(list.add_nvlist("zones", &config("zones", 42, 0, healthy, Some(0x1234))));
        assert!(list.add_nvlist("data", &config("data", 7, 1, cant_open, None)));
        let got: Vec<ImportCandidate> =
            list.view().nvlist_pairs().into_iter().map(|(n, c)| candidate_from_config(&n, c)).collect();
        assert_eq!(
            got,
            vec![
                ImportCandidate {
                    name: "zones".into(),
                    guid: 42,
                    state: PoolState::Active,
                    health: "ONLINE".into(),
                    hostid: Some(0x1234),
                    hostname: Some("cn7".into()),
                },
                ImportCandidate {
                    name: "data".into(),
                    guid: 7,
                    state: PoolState::Exported,
                    health: "UNAVAIL".into(),
                    hostid: None,
                    hostname: None,
                },
            ]
        );
    }

    #[test]
    fn state_names() {
        assert_eq!(state_name(u64::from(z::vdev_state_VDEV_STATE_DEGRADED), 0), "DEGRADED");
        assert_eq!(state_name(u64::from(z::vdev_state_VDEV_STATE_FAULTED), 0), "FAULTED");
        assert_eq!(PoolState::from_raw(2), PoolState::Destroyed);
    }

    #[test]
    fn keys_are_nul_terminated() {
        assert_eq!(key(z::ZPOOL_CONFIG_POOL_GUID).to_str().ok(), Some("pool_guid"));
        assert_eq!(key(z::ZPROP_VALUE).to_str().ok(), Some("value"));
    }

    /// Without the zfs module (the buildroot sandbox has no /dev/zfs),
    /// libzfs_init fails and we get a typed error, not a crash.
    #[test]
    fn open_without_module_is_an_error() {
        if std::path::Path::new("/dev/zfs").exists() {
            return; // a real ZFS host: nothing to check here
        }
        // Do not let libzfs wait for /dev/zfs to appear after its modprobe attempt.
        std::env::set_var("ZFS_MODULE_TIMEOUT", "0");
        match Zfs::open() {
            Err(ZfsError::Init(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
