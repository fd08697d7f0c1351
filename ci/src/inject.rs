//! Files appended to the initrd the way iPXE's `module <url> <path>` lines
//! do for booter (a second, uncompressed newc archive after ours).

use std::path::Path;

use anyhow::Context;

/// Writes `base` followed by a cpio of `files` (path in the initramfs, contents) to `out`.
pub fn initrd_with_files(base: &Path, files: &[(&str, &[u8])], out: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(base).with_context(|| format!("reading {}", base.display()))?;
    let files: Vec<(&str, u32, Vec<u8>)> = files.iter().map(|(p, d)| (*p, 0o644, d.to_vec())).collect();
    let bytes = initramfs::cpio::append_files(bytes, &files).context("writing the appended cpio")?;
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}
