//! Borrowed and owned views of libnvpair lists.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use zfs_sys as sys;

/// An nvlist owned by someone else (a libzfs handle, a parent list) for `'a`.
#[derive(Clone, Copy)]
pub(crate) struct Nvl<'a> {
    ptr: NonNull<sys::nvlist_t>,
    _owner: PhantomData<&'a ()>,
}

impl<'a> Nvl<'a> {
    /// # Safety
    /// `ptr` must be a valid nvlist that outlives `'a` and is not freed or
    /// modified while the view is used.
    pub(crate) unsafe fn from_ptr(ptr: *mut sys::nvlist_t) -> Option<Nvl<'a>> {
        NonNull::new(ptr).map(|ptr| Nvl { ptr, _owner: PhantomData })
    }

    pub(crate) fn string(&self, key: &CStr) -> Option<String> {
        let mut out: *const libc::c_char = ptr::null();
        // SAFETY: self.ptr is a valid nvlist (from_ptr's contract), key is a
        // NUL-terminated string and out a valid out-pointer.
        let rc = unsafe { sys::nvlist_lookup_string(self.ptr.as_ptr(), key.as_ptr(), &mut out) };
        if rc != 0 || out.is_null() {
            return None;
        }
        // SAFETY: on success out points at a NUL-terminated string inside the
        // nvlist, valid while the nvlist is.
        Some(unsafe { CStr::from_ptr(out) }.to_string_lossy().into_owned())
    }

    pub(crate) fn u64(&self, key: &CStr) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: valid nvlist, NUL-terminated key, valid out-pointer.
        let rc = unsafe { sys::nvlist_lookup_uint64(self.ptr.as_ptr(), key.as_ptr(), &mut out) };
        (rc == 0).then_some(out)
    }

    pub(crate) fn nvlist(&self, key: &CStr) -> Option<Nvl<'a>> {
        let mut out: *mut sys::nvlist_t = ptr::null_mut();
        // SAFETY: valid nvlist, NUL-terminated key, valid out-pointer.
        let rc = unsafe { sys::nvlist_lookup_nvlist(self.ptr.as_ptr(), key.as_ptr(), &mut out) };
        if rc != 0 {
            return None;
        }
        // SAFETY: the embedded nvlist is owned by self's nvlist, so it lives as long ('a).
        unsafe { Nvl::from_ptr(out) }
    }

    pub(crate) fn u64_array(&self, key: &CStr) -> Option<Vec<u64>> {
        let mut out: *mut u64 = ptr::null_mut();
        let mut n: sys::uint_t = 0;
        // SAFETY: valid nvlist, NUL-terminated key, valid out-pointers.
        let rc = unsafe { sys::nvlist_lookup_uint64_array(self.ptr.as_ptr(), key.as_ptr(), &mut out, &mut n) };
        if rc != 0 || out.is_null() {
            return None;
        }
        // SAFETY: on success out points at n u64 values owned by the nvlist; copied out at once.
        Some(unsafe { std::slice::from_raw_parts(out, n as usize) }.to_vec())
    }

    /// The (name, nvlist) pairs whose value is an nvlist, in order.
    pub(crate) fn nvlist_pairs(&self) -> Vec<(String, Nvl<'a>)> {
        let mut out = Vec::new();
        let mut pair: *mut sys::nvpair_t = ptr::null_mut();
        loop {
            // SAFETY: valid nvlist; pair is null or the previous pair of this list.
            pair = unsafe { sys::nvlist_next_nvpair(self.ptr.as_ptr(), pair) };
            if pair.is_null() {
                return out;
            }
            // SAFETY: pair is a valid pair of this list; its name is a NUL-terminated string in it.
            let name = unsafe { CStr::from_ptr(sys::nvpair_name(pair)) }.to_string_lossy().into_owned();
            let mut v: *mut sys::nvlist_t = ptr::null_mut();
            // SAFETY: valid pair and out-pointer; fails (non-zero) if the value is not an nvlist.
            if unsafe { sys::nvpair_value_nvlist(pair, &mut v) } == 0 {
                // SAFETY: the value nvlist is owned by the parent list ('a).
                if let Some(n) = unsafe { Nvl::from_ptr(v) } {
                    out.push((name, n));
                }
            }
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::nvlist_t {
        self.ptr.as_ptr()
    }
}

/// An nvlist we own (freed on drop).
pub(crate) struct OwnedNvl(NonNull<sys::nvlist_t>);

impl OwnedNvl {
    /// # Safety
    /// `ptr` must be an nvlist the caller owns and hands over.
    pub(crate) unsafe fn from_ptr(ptr: *mut sys::nvlist_t) -> Option<OwnedNvl> {
        NonNull::new(ptr).map(OwnedNvl)
    }

    pub(crate) fn new() -> Option<OwnedNvl> {
        let mut p: *mut sys::nvlist_t = ptr::null_mut();
        // SAFETY: valid out-pointer; NV_UNIQUE_NAME is a valid flag; kmflag 0 as libzfs uses.
        let rc = unsafe { sys::nvlist_alloc(&mut p, sys::NV_UNIQUE_NAME, 0) };
        if rc != 0 {
            return None;
        }
        // SAFETY: nvlist_alloc succeeded and handed us the list.
        unsafe { OwnedNvl::from_ptr(p) }
    }

    pub(crate) fn view(&self) -> Nvl<'_> {
        Nvl { ptr: self.0, _owner: PhantomData }
    }

    pub(crate) fn add_string(&mut self, key: &str, value: &str) -> bool {
        let (Ok(k), Ok(v)) = (CString::new(key), CString::new(value)) else { return false };
        // SAFETY: we own the list; key and value are NUL-terminated (copied by libnvpair).
        unsafe { sys::nvlist_add_string(self.0.as_ptr(), k.as_ptr(), v.as_ptr()) == 0 }
    }

    #[cfg(test)]
    pub(crate) fn add_u64(&mut self, key: &str, value: u64) -> bool {
        let Ok(k) = CString::new(key) else { return false };
        // SAFETY: we own the list; key is NUL-terminated.
        unsafe { sys::nvlist_add_uint64(self.0.as_ptr(), k.as_ptr(), value) == 0 }
    }

    #[cfg(test)]
    pub(crate) fn add_u64_array(&mut self, key: &str, value: &[u64]) -> bool {
        let Ok(k) = CString::new(key) else { return false };
        // SAFETY: we own the list; key is NUL-terminated; value.len() elements are readable (copied).
        unsafe {
            sys::nvlist_add_uint64_array(self.0.as_ptr(), k.as_ptr(), value.as_ptr(), value.len() as sys::uint_t) == 0
        }
    }

    #[cfg(test)]
    pub(crate) fn add_nvlist(&mut self, key: &str, value: &OwnedNvl) -> bool {
        let Ok(k) = CString::new(key) else { return false };
        // SAFETY: both lists are valid; libnvpair copies the value list.
        unsafe { sys::nvlist_add_nvlist(self.0.as_ptr(), k.as_ptr(), value.0.as_ptr()) == 0 }
    }
}

impl Drop for OwnedNvl {
    fn drop(&mut self) {
        // SAFETY: we own the list and nothing borrows it any more (views borrow self).
        unsafe { sys::nvlist_free(self.0.as_ptr()) }
    }
}

/// A key constant from the bindings (`b"name\0"`) as a `CStr`.
pub(crate) fn key(bytes: &'static [u8]) -> &'static CStr {
    CStr::from_bytes_with_nul(bytes).unwrap_or(c"")
}
