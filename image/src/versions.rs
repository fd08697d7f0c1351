//! The three kernel versions that must agree: the one in `vmlinuz`, the
//! rootfs's `/usr/lib/modules/<version>`, and the one zfs.ko was built for.

use std::path::Path;

use anyhow::{bail, Context};

/// The release string in a bzImage's setup header (`kernel_version` field).
pub fn bzimage_version(img: &[u8]) -> anyhow::Result<String> {
    if img.len() < 0x210 || &img[0x202..0x206] != b"HdrS" {
        bail!("not a bzImage (no HdrS setup header)");
    }
    let off = u16::from_le_bytes([img[0x20E], img[0x20F]]) as usize + 0x200;
    let s = img.get(off..).context("kernel_version offset beyond the image")?;
    let end = s.iter().position(|b| *b == 0).unwrap_or(s.len()).min(256);
    let text = std::str::from_utf8(&s[..end]).context("kernel_version is not UTF-8")?;
    text.split_whitespace().next().map(str::to_string).context("empty kernel_version")
}

/// The kernel release a module was built for (first word of `vermagic=`).
pub fn module_vermagic(ko: &[u8]) -> Option<String> {
    initramfs::modules::modinfo_values(ko, "vermagic")
        .first()
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string)
}

/// The one directory under `<root>/usr/lib/modules`.
pub fn modules_dir_version(root: &Path) -> anyhow::Result<String> {
    let dir = root.join("usr/lib/modules");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("modules.order").exists() || e.path().join("kernel").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    match v.len() {
        1 => Ok(v.remove(0)),
        0 => bail!("no kernel modules in {}", dir.display()),
        _ => bail!("several kernels in {}: {}; the PI ships exactly one", dir.display(), v.join(", ")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelVersions {
    pub vmlinuz: String,
    pub modules_dir: String,
    pub zfs_ko: String,
}

impl KernelVersions {
    pub fn check(&self) -> anyhow::Result<&str> {
        if self.vmlinuz == self.modules_dir && self.modules_dir == self.zfs_ko {
            return Ok(&self.vmlinuz);
        }
        bail!(
            "kernel versions disagree: vmlinuz is {}, the rootfs has modules for {}, zfs.ko was built for {}. \
             The cached buildroot (dkms) layer and the rootfs layer came from different archive states; \
             rebuild both with `triton-pi build --refresh`.",
            self.vmlinuz,
            self.modules_dir,
            self.zfs_ko
        )
    }
}

/// Removes an appended module signature (`~Module signature appended~\n`).
/// dkms signs with a key generated on each build, which no kernel trusts and
/// which makes the module differ between otherwise identical builds.
pub fn strip_module_signature(ko: &[u8]) -> &[u8] {
    const MAGIC: &[u8] = b"~Module signature appended~\n";
    const INFO: usize = 12; // struct module_signature
    if !ko.ends_with(MAGIC) || ko.len() < MAGIC.len() + INFO {
        return ko;
    }
    let end = ko.len() - MAGIC.len();
    let info = &ko[end - INFO..end];
    let sig_len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
    match (end - INFO).checked_sub(sig_len) {
        Some(start) => &ko[..start],
        None => ko,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(v: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let off: u16 = 0x100;
        img[0x20E..0x210].copy_from_slice(&off.to_le_bytes());
        let s = format!("{v} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC\0");
        img[0x300..0x300 + s.len()].copy_from_slice(s.as_bytes());
        img
    }

    #[test]
    fn reads_bzimage_version() {
        assert_eq!(bzimage_version(&fake_bzimage("6.12.118+deb13-amd64")).expect("v"), "6.12.118+deb13-amd64");
        assert!(bzimage_version(b"nope").is_err());
    }

    #[test]
    fn vermagic_and_mismatch_message() {
        let ko = b"\x7fELF\0vermagic=6.12.1-amd64 SMP preempt mod_unload modversions \0name=zfs\0";
        assert_eq!(module_vermagic(ko).as_deref(), Some("6.12.1-amd64"));
        let ok = KernelVersions { vmlinuz: "a".into(), modules_dir: "a".into(), zfs_ko: "a".into() };
        assert_eq!(ok.check().expect("agree"), "a");
        let bad = KernelVersions { zfs_ko: "b".into(), ..ok };
        let e = bad.check().expect_err("disagree").to_string();
        assert!(e.contains("zfs.ko was built for b") && e.contains("--refresh"), "{e}");
    }

    #[test]
    fn strips_signature() {
        let mut ko = b"\x7fELFbody".to_vec();
        let sig = [9u8; 5];
        ko.extend_from_slice(&sig);
        ko.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        ko.extend_from_slice(b"~Module signature appended~\n");
        assert_eq!(strip_module_signature(&ko), b"\x7fELFbody");
        assert_eq!(strip_module_signature(b"\x7fELFplain"), b"\x7fELFplain");
    }
}
