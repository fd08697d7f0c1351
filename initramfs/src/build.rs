//! Lays out and writes the stage-1 initrd.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cpio::{Archive, Entry};
use crate::modules::{ModuleError, ModuleSet};

/// Where stage 1 finds the sha256 of the squashfs it belongs to.
pub const SQUASHFS_HASH_PATH: &str = "etc/triton/filesystem.squashfs.sha256";
/// Marker that tells our init it runs as stage 1 (systemd's convention).
pub const INITRD_RELEASE_PATH: &str = "etc/initrd-release";
/// The module list compiled into the builder.
pub const DEFAULT_MODULE_LIST: &str = include_str!("../modules.list");

#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Modules(#[from] ModuleError),
    #[error("squashfs sha256 {0:?} is not 64 hex digits")]
    BadHash(String),
    #[error("writing the initrd: {0}")]
    Write(#[source] std::io::Error),
}

/// What goes into the initrd.
#[derive(Debug, Clone)]
pub struct InitrdSpec<'a> {
    /// Root tree holding `usr/lib/modules/<kernel_version>` and firmware.
    pub rootfs: &'a Path,
    pub kernel_version: &'a str,
    /// Our init (static binary), installed as `/init`.
    pub init: &'a Path,
    /// A static busybox for the rescue shell, installed as `/bin/busybox` + `/bin/sh`.
    pub busybox: &'a Path,
    pub squashfs_sha256: &'a str,
    pub module_list: &'a str,
    pub os_release: &'a str,
    /// Every mtime in the archive (SOURCE_DATE_EPOCH).
    pub mtime: u32,
    pub zstd_level: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitrdSummary {
    pub modules: usize,
    pub firmware_files: usize,
    pub uncompressed_bytes: u64,
    pub absent_optional: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, InitrdError> {
    fs::read(path).map_err(|source| InitrdError::Read { path: path.to_path_buf(), source })
}

/// Builds the archive in memory (exposed for tests and listings).
pub fn layout(spec: &InitrdSpec<'_>) -> Result<(Archive, InitrdSummary), InitrdError> {
    let hash = spec.squashfs_sha256.trim();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InitrdError::BadHash(hash.to_string()));
    }
    let mods = ModuleSet::resolve(spec.rootfs, spec.kernel_version, spec.module_list)?;
    let mut a = Archive::new();
    for d in ["dev", "proc", "sys", "run", "tmp", "root", "usr/bin", "usr/sbin"] {
        a.dir(d);
    }
    a.add("dev/console", Entry::CharDev { mode: 0o600, major: 5, minor: 1 });
    a.add("dev/null", Entry::CharDev { mode: 0o666, major: 1, minor: 3 });
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        a.symlink(link, target);
    }
    a.file("init", 0o755, read(spec.init)?);
    a.file("usr/bin/busybox", 0o755, read(spec.busybox)?);
    a.symlink("usr/bin/sh", "busybox");
    a.file(SQUASHFS_HASH_PATH, 0o644, format!("{}\n", hash.to_ascii_lowercase()).into_bytes());
    a.file(INITRD_RELEASE_PATH, 0o644, spec.os_release.as_bytes().to_vec());
    let moddir = format!("usr/lib/modules/{}", spec.kernel_version);
    for (path, data) in &mods.files {
        a.file(path, 0o644, data.clone());
    }
    for (path, data) in &mods.firmware {
        a.file(path, 0o644, data.clone());
    }
    a.file(&format!("{moddir}/modules.dep"), 0o644, mods.modules_dep.clone().into_bytes());
    a.file(&format!("{moddir}/modules.alias"), 0o644, mods.modules_alias.clone().into_bytes());
    let summary = InitrdSummary {
        modules: mods.files.len(),
        firmware_files: mods.firmware.len(),
        uncompressed_bytes: a.payload_bytes(),
        absent_optional: mods.absent_optional,
    };
    Ok((a, summary))
}

/// Writes the zstd-compressed newc initrd to `out`.
pub fn build_initrd(spec: &InitrdSpec<'_>, out: &Path) -> Result<InitrdSummary, InitrdError> {
    let (archive, summary) = layout(spec)?;
    let cpio = archive.write(Vec::new(), spec.mtime).map_err(InitrdError::Write)?;
    let mut enc = zstd::stream::Encoder::new(Vec::new(), spec.zstd_level).map_err(InitrdError::Write)?;
    // Single-threaded, no content size dependence on timing: deterministic output.
    enc.include_checksum(true).map_err(InitrdError::Write)?;
    std::io::Write::write_all(&mut enc, &cpio).map_err(InitrdError::Write)?;
    let compressed = enc.finish().map_err(InitrdError::Write)?;
    fs::write(out, compressed).map_err(InitrdError::Write)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::read_newc;

    #[test]
    fn initrd_layout_is_complete_and_reproducible() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        let md = root.join("usr/lib/modules/6.12.1");
        fs::create_dir_all(md.join("kernel")).expect("mkdir");
        fs::write(md.join("kernel/loop.ko"), b"\x7fELFloop").expect("w");
        fs::write(md.join("modules.dep"), "kernel/loop.ko:\n").expect("w");
        fs::write(md.join("modules.alias"), "alias devname:loop-control loop\n").expect("w");
        fs::write(root.join("init"), b"INIT").expect("w");
        fs::write(root.join("busybox"), b"BB").expect("w");
        let hash = "ab".repeat(32);
        let spec = InitrdSpec {
            rootfs: root,
            kernel_version: "6.12.1",
            init: &root.join("init"),
            busybox: &root.join("busybox"),
            squashfs_sha256: &hash,
            module_list: "loop\n",
            os_release: "NAME=x\n",
            mtime: 1_700_000_000,
            zstd_level: 3,
        };
        let a = root.join("a.zst");
        let b = root.join("b.zst");
        let s = build_initrd(&spec, &a).expect("build");
        build_initrd(&spec, &b).expect("build");
        assert_eq!(fs::read(&a).expect("a"), fs::read(&b).expect("b"));
        assert_eq!(s.modules, 1);
        let cpio = zstd::stream::decode_all(&fs::read(&a).expect("a")[..]).expect("zstd");
        let entries = read_newc(&cpio).expect("newc");
        let get = |n: &str| entries.iter().find(|(p, _, _)| p == n).map(|(_, m, d)| (*m, d.clone()));
        assert_eq!(get("init"), Some((0o100755, b"INIT".to_vec())));
        assert_eq!(get(SQUASHFS_HASH_PATH).map(|x| x.1), Some(format!("{hash}\n").into_bytes()));
        assert_eq!(get("usr/bin/sh").map(|x| x.1), Some(b"busybox".to_vec()));
        assert!(get("usr/lib/modules/6.12.1/kernel/loop.ko").is_some());
        assert!(get(INITRD_RELEASE_PATH).is_some());

        let bad = InitrdSpec { squashfs_sha256: "xyz", ..spec.clone() };
        assert!(matches!(build_initrd(&bad, &a), Err(InitrdError::BadHash(_))));
    }
}
