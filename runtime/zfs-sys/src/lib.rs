//! Raw bindings to libzfs 2.3 and libnvpair as shipped by Debian trixie
//! (`libzfs6linux`, `libnvpair3linux`).
//!
//! `src/bindings.rs` is bindgen output, generated once by `regen.sh` inside
//! the trixie buildroot against `libzfslinux-dev`'s headers with an allowlist
//! of exactly what the `zfs` crate calls, and committed. bindgen's layout tests
//! (`cargo test -p zfs-sys`, run inside the buildroot with
//! `triton-pi cargo-test -- -p zfs-sys`) check the struct layouts against the
//! C compiler's view. `build.rs` only links `libzfs` and `libnvpair`.
//!
//! Everything here is `unsafe` to call; the `zfs` crate is the safe wrapper.

#![allow(unsafe_code)]
#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks, clippy::unwrap_used)]

include!("bindings.rs");

/// bindgen emits its layout checks as compile-time assertions (in
/// bindings.rs), so they already hold if this crate compiles. These tests
/// check that the bindings link against the real libraries and that a few
/// values agree with them.
#[cfg(test)]
mod tests {
    use super::*;
    use core::ffi::CStr;

    #[test]
    fn links_and_agrees_with_libzfs() {
        // SAFETY: zpool_state_to_name is a pure switch returning a static string.
        let name =
            unsafe { CStr::from_ptr(zpool_state_to_name(vdev_state_VDEV_STATE_HEALTHY, vdev_aux_VDEV_AUX_NONE)) };
        assert_eq!(name.to_str(), Ok("ONLINE"));
        // SAFETY: reading a field of an initialised, never-written C static.
        let ops = unsafe { (*(&raw const libzfs_config_ops)).pco_pool_active };
        assert!(ops.is_some(), "libzfs_config_ops must be the library's real table");
        assert_eq!(core::mem::size_of::<vdev_stat_t>() % 8, 0, "vdev stats are read as a uint64 array");
    }

    #[test]
    fn nvlist_round_trip() {
        let mut nv: *mut nvlist_t = core::ptr::null_mut();
        // SAFETY: valid out-pointer; the list is freed below.
        assert_eq!(unsafe { nvlist_alloc(&mut nv, NV_UNIQUE_NAME, 0) }, 0);
        let mut v = 0u64;
        // SAFETY: nv is a live list; keys are NUL-terminated; v is a valid out-pointer.
        unsafe {
            assert_eq!(nvlist_add_uint64(nv, ZPOOL_CONFIG_POOL_GUID.as_ptr().cast(), 42), 0);
            assert_eq!(nvlist_lookup_uint64(nv, ZPOOL_CONFIG_POOL_GUID.as_ptr().cast(), &mut v), 0);
            nvlist_free(nv);
        }
        assert_eq!(v, 42);
    }
}
