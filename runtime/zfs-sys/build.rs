//! Links libzfs (which carries libzutil's import search on 2.x) and
//! libnvpair. The bindings are pre-generated (src/bindings.rs, see regen.sh),
//! so building needs neither headers nor libclang, only the two libraries at
//! link time (present in the trixie buildroot, not on a plain Debian 12 host).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-lib=dylib=zfs");
    println!("cargo:rustc-link-lib=dylib=nvpair");
}
