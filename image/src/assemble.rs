//! The staging tree: the cached rootfs layer (hard-linked, never modified in
//! place), plus zfs modules, runtime binaries, rootfs-overlay/ and version
//! files; then depmod and an audit of what must not ship.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::host;
use crate::layers::remove_tree;
use crate::runtime::RuntimeBins;
use crate::versions::strip_module_signature;

/// Replaces `dst` with `data` (unlinking first: staging files may be hard
/// links into the cached layer).
pub fn replace_file(dst: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    match fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dst.display())),
    }
    fs::write(dst, data).with_context(|| format!("writing {}", dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", dst.display()))
}

/// Hard-link copy of `layer` at `staging`.
pub fn link_copy(layer: &Path, staging: &Path) -> anyhow::Result<()> {
    remove_tree(staging)?;
    host::run(Command::new("cp").arg("-a").arg("--link").arg(layer).arg(staging))
        .with_context(|| format!("copying the rootfs layer to {}", staging.display()))
}

/// zfs modules built by dkms in the buildroot, decompressed and unsigned:
/// (file name, contents).
pub fn zfs_modules(buildroot: &Path, kver: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let dir = buildroot.join("usr/lib/modules").join(kver).join("updates/dkms");
    let mut out = Vec::new();
    let rd = fs::read_dir(&dir).with_context(|| {
        format!(
            "reading {}: dkms did not build zfs for {kver} in the buildroot (see the buildroot layer log)",
            dir.display()
        )
    })?;
    for e in rd {
        let p = e.with_context(|| format!("listing {}", dir.display()))?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let raw = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let name = name.trim_end_matches(".xz").trim_end_matches(".zst").to_string();
        let ko = initramfs::modules::decompress(&p, raw)?;
        if name.ends_with(".ko") {
            out.push((name, strip_module_signature(&ko).to_vec()));
        }
    }
    out.sort();
    if !out.iter().any(|(n, _)| n == "zfs.ko") {
        bail!("no zfs.ko in {}", dir.display());
    }
    Ok(out)
}

/// Copies the plain files and symlinks of `overlay` over `staging`.
pub fn apply_overlay(overlay: &Path, staging: &Path) -> anyhow::Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mut done = Vec::new();
    fn walk(base: &Path, dir: &Path, staging: &Path, done: &mut Vec<String>) -> anyhow::Result<()> {
        let mut entries: Vec<_> =
            fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).context("overlay path")?;
            if rel == Path::new("README.md") {
                continue;
            }
            let md = fs::symlink_metadata(&p).with_context(|| format!("stat {}", p.display()))?;
            let dst = staging.join(rel);
            if md.is_dir() {
                fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
                walk(base, &p, staging, done)?;
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&p)?;
                let _ = fs::remove_file(&dst);
                std::os::unix::fs::symlink(&t, &dst).with_context(|| format!("symlink {}", dst.display()))?;
                done.push(rel.to_string_lossy().into_owned());
            } else {
                let data = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                replace_file(&dst, &data, md.permissions().mode() & 0o7777)?;
                done.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    walk(overlay, overlay, staging, &mut done)?;
    Ok(done)
}

/// `os-release` with `TRITON_RELEASE="<stamp>"` (replacing any earlier one).
pub fn os_release_with_stamp(text: &str, stamp: &str) -> String {
    let mut out: String =
        text.lines().filter(|l| !l.starts_with("TRITON_RELEASE=")).map(|l| format!("{l}\n")).collect();
    out.push_str(&format!("TRITON_RELEASE=\"{stamp}\"\n"));
    out
}

/// What must never ship in the squashfs (issue: no compiler, headers, dkms,
/// apt lists, docs, man pages or locales).
pub fn audit(staging: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let nonempty = |p: &Path| fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(false);
    for rel in [
        "usr/bin/gcc",
        "usr/bin/cc",
        "usr/bin/x86_64-linux-gnu-gcc-14",
        "usr/bin/clang",
        "usr/sbin/dkms",
        "usr/bin/dkms",
        "var/lib/dkms",
        "usr/include/stdio.h",
    ] {
        if staging.join(rel).symlink_metadata().is_ok() {
            bad.push(rel.to_string());
        }
    }
    for rel in ["var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info"] {
        if nonempty(&staging.join(rel)) {
            bad.push(format!("{rel}/ (not empty)"));
        }
    }
    if let Ok(rd) = fs::read_dir(staging.join("usr/src")) {
        bad.extend(rd.flatten().map(|e| format!("usr/src/{}", e.file_name().to_string_lossy())));
    }
    if let Ok(rd) = fs::read_dir(staging.join("usr/lib/locale")) {
        bad.extend(
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "C.utf8" && n != "C.UTF-8")
                .map(|n| format!("usr/lib/locale/{n}")),
        );
    }
    bad
}

/// Runs the staging tree's own depmod for `kver`.
pub fn depmod(staging: &Path, kver: &str) -> anyhow::Result<()> {
    let moddir = staging.join("usr/lib/modules").join(kver);
    // Generated files are replaced, never rewritten through a hard link.
    if let Ok(rd) = fs::read_dir(&moddir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("modules.") && !n.starts_with("modules.order") && !n.starts_with("modules.builtin") {
                fs::remove_file(e.path()).with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    host::run(Command::new("bwrap").arg("--bind").arg(staging).arg("/").args([
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--",
        "/usr/sbin/depmod",
        "-a",
        kver,
    ]))
    .context("running depmod in the staging tree")
}

/// Installs everything of ours into `staging`.
pub fn install(
    staging: &Path,
    kver: &str,
    zfs: &[(String, Vec<u8>)],
    bins: &RuntimeBins,
    overlay: &Path,
    stamp: &str,
) -> anyhow::Result<Vec<String>> {
    let moddir = staging.join("usr/lib/modules").join(kver);
    // The kernel image is shipped beside the squashfs, not inside it.
    let _ = fs::remove_file(moddir.join("vmlinuz"));
    for (name, ko) in zfs {
        replace_file(&moddir.join("updates/dkms").join(name), ko, 0o644)?;
    }
    let init = fs::read(&bins.init).with_context(|| format!("reading {}", bins.init.display()))?;
    replace_file(&staging.join("usr/sbin/triton-init"), &init, 0o755)?;
    for (rel, p) in &bins.others {
        let b = fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        replace_file(&staging.join(rel), &b, 0o755)?;
    }
    let overlaid = if overlay.is_dir() { apply_overlay(overlay, staging)? } else { Vec::new() };
    let osr = staging.join("usr/lib/os-release");
    let text = fs::read_to_string(&osr).with_context(|| format!("reading {}", osr.display()))?;
    replace_file(&osr, os_release_with_stamp(&text, stamp).as_bytes(), 0o644)?;
    Ok(overlaid)
}

/// Staging directory for one build (a `.tmp-` name: swept if interrupted).
pub fn staging_dir(work: &Path, tag: &str) -> PathBuf {
    work.join(format!(".tmp-staging-{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_never_writes_through_hard_links() {
        let d = tempfile::tempdir().expect("tmp");
        let a = d.path().join("layer");
        let b = d.path().join("staging");
        fs::write(&a, "orig").expect("w");
        fs::hard_link(&a, &b).expect("link");
        replace_file(&b, b"new", 0o644).expect("replace");
        assert_eq!(fs::read_to_string(&a).expect("r"), "orig");
        assert_eq!(fs::read_to_string(&b).expect("r"), "new");
    }

    #[test]
    fn os_release_stamp() {
        let t = os_release_with_stamp("NAME=Debian\nTRITON_RELEASE=\"old\"\n", "20250101T000000Z");
        assert_eq!(t, "NAME=Debian\nTRITON_RELEASE=\"20250101T000000Z\"\n");
    }

    #[test]
    fn audit_finds_build_leftovers() {
        let d = tempfile::tempdir().expect("tmp");
        let s = d.path();
        assert!(audit(s).is_empty());
        fs::create_dir_all(s.join("usr/bin")).expect("mkdir");
        fs::write(s.join("usr/bin/gcc"), "").expect("w");
        fs::create_dir_all(s.join("usr/share/man/man1")).expect("mkdir");
        fs::create_dir_all(s.join("usr/src/linux-headers-6.12")).expect("mkdir");
        fs::create_dir_all(s.join("usr/lib/locale/C.utf8")).expect("mkdir");
        fs::create_dir_all(s.join("usr/lib/locale/de_DE.utf8")).expect("mkdir");
        let bad = audit(s);
        assert_eq!(
            bad,
            ["usr/bin/gcc", "usr/share/man/ (not empty)", "usr/src/linux-headers-6.12", "usr/lib/locale/de_DE.utf8"]
        );
    }

    #[test]
    fn overlay_copies_files_and_links() {
        let d = tempfile::tempdir().expect("tmp");
        let o = d.path().join("o");
        let s = d.path().join("s");
        fs::create_dir_all(o.join("etc/modprobe.d")).expect("mkdir");
        fs::write(o.join("etc/modprobe.d/zfs.conf"), "options zfs x=1\n").expect("w");
        fs::write(o.join("README.md"), "docs").expect("w");
        std::os::unix::fs::symlink("zfs.conf", o.join("etc/modprobe.d/l.conf")).expect("ln");
        fs::create_dir_all(&s).expect("mkdir");
        let done = apply_overlay(&o, &s).expect("overlay");
        assert_eq!(done, ["etc/modprobe.d/l.conf", "etc/modprobe.d/zfs.conf"]);
        assert!(!s.join("README.md").exists());
        assert_eq!(fs::read_link(s.join("etc/modprobe.d/l.conf")).expect("link"), Path::new("zfs.conf"));
    }
}
