//! Files appended to the initrd the way iPXE's `module <url> <path>` lines
//! do for booter (a second, uncompressed newc archive after ours).

use std::path::Path;

use anyhow::Context;
use initramfs::cpio::Archive;

/// Writes `base` followed by a cpio of `files` (path in the initramfs, contents) to `out`.
pub fn initrd_with_files(base: &Path, files: &[(&str, &[u8])], out: &Path) -> anyhow::Result<()> {
    let mut bytes = std::fs::read(base).with_context(|| format!("reading {}", base.display()))?;
    while bytes.len() % 4 != 0 {
        bytes.push(0);
    }
    let mut extra = Archive::new();
    for (path, data) in files {
        extra.file(path, 0o644, data.to_vec());
    }
    let bytes = extra.write(bytes, 0).context("writing the appended cpio")?;
    std::fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}
