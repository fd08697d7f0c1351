//! `triton-pi cargo-test -- <cargo test args>`: runs `cargo test --release`
//! inside the cached trixie buildroot (building it if absent), with the same
//! sandbox and target directory as the image's runtime build. For crates that
//! link trixie's libraries and cannot link on the host (zfs-sys, zfs):
//!
//! ```text
//! triton-pi cargo-test -- -p zfs-sys -p zfs
//! ```

use anyhow::Context;

use crate::build::source_root;
use crate::cli::CargoTestArgs;
use crate::host;
use crate::layers::{Cache, Mkosi};
use crate::runtime;
use crate::source::digest_inputs;

pub fn run(args: &CargoTestArgs) -> anyhow::Result<()> {
    let src = source_root()?;
    let cache = Cache::new(&args.cache);
    host::preflight(host::TOOLS, &cache.mkosi())?;
    cache.create()?;
    let buildroot = {
        // The lock covers finding (or building) the layer, as in `build`.
        let _lock = cache.lock()?;
        let mk = Mkosi {
            mkosi_dir: cache.mkosi(),
            config_root: src.join("image/mkosi"),
            cache: cache.clone(),
            layers: cache.layers(),
        };
        let (buildroot, built) = mk.ensure("buildroot", &[], &[], args.refresh).context("the buildroot layer")?;
        eprintln!("{} buildroot {}", if built { "built" } else { "using cached" }, buildroot.display());
        buildroot
    };
    // Same per-checkout target directory as `build` (see build.rs).
    let per_checkout = digest_inputs(&[], &[&src.to_string_lossy()])?;
    runtime::test(&buildroot, &src, &cache.cargo_target().join(per_checkout), &args.cargo_args)
}
