//! `triton-pi baseline`: the conventional image the boot benchmark compares
//! our PI with. The same Debian packages, booted the way linux-live boots:
//! Debian live-boot + initramfs-tools initramfs, systemd as PID 1, zfs from
//! zfsutils-linux's units, networking from the kernel `ip=` line, and a
//! oneshot unit that prints the benchmark's ready marker.
//! See `image/mkosi/baseline/README.md`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Serialize;

use crate::assemble;
use crate::build::{source_root, Artifact};
use crate::cli::BaselineArgs;
use crate::host;
use crate::layers::{self, installed_packages, remove_tree, Cache, Mkosi};
use crate::pack;
use crate::progress::{stage, Timings};
use crate::source::{sha256_file, Source};
use crate::versions::modules_dir_version;

/// The mkosi layer (`image/mkosi/baseline/`) and our files laid over it.
pub const LAYER: &str = "baseline";
pub const OVERLAY: &str = "image/mkosi/baseline-overlay";

/// What `baseline` produced.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub stamp: String,
    pub kernel: String,
    pub dir: PathBuf,
    pub artifacts: Vec<Artifact>,
    pub layer: PathBuf,
    pub layer_built: bool,
    pub packages: usize,
    pub timings: Timings,
}

fn artifact(p: &Path) -> anyhow::Result<Artifact> {
    let bytes = fs::metadata(p).with_context(|| format!("stat {}", p.display()))?.len();
    Ok(Artifact { path: p.to_path_buf(), bytes, sha256: sha256_file(p)? })
}

/// Runs the tree's own `mkinitramfs` (initramfs-tools with live-boot's hooks)
/// for `kver`, writing the initrd to `out`. The tree holds hard links into
/// the cached layer: everything mkinitramfs writes goes to fresh tmpfs
/// directories or to `out`, never into the tree.
pub fn mkinitramfs(tree: &Path, kver: &str, out: &Path, epoch: i64, log: &Path) -> anyhow::Result<()> {
    let dir = out.parent().context("initrd path has no parent")?;
    let name = out.file_name().context("initrd path has no name")?;
    let _ = fs::remove_file(out);
    let mut cmd = Command::new("bwrap");
    cmd.arg("--bind")
        .arg(tree)
        .arg("/")
        .args(["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run"])
        .arg("--bind")
        .arg(dir)
        .arg("/mnt")
        .args(["--setenv", "SOURCE_DATE_EPOCH"])
        .arg(epoch.to_string())
        .args(["--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin", "--", "/usr/sbin/mkinitramfs", "-o"])
        .arg(Path::new("/mnt").join(name))
        .arg(kver);
    host::run_logged(&mut cmd, log).context("mkinitramfs in the baseline tree")
}

pub fn run(args: &BaselineArgs) -> anyhow::Result<Summary> {
    let mut t = Timings::default();
    let src = source_root()?;
    let cache = Cache::new(&args.cache);
    host::preflight(host::TOOLS, &cache.mkosi())?;
    cache.create()?;
    let _lock = cache.lock()?;
    cache.sweep();
    let source = Source::discover(&src)?;
    eprintln!("building baseline {} (the conventional live-boot image for the boot benchmark)", source.stamp);
    let mk = Mkosi {
        mkosi_dir: cache.mkosi(),
        config_root: src.join("image/mkosi"),
        cache: cache.clone(),
        layers: cache.layers(),
    };

    let (buildroot, _) =
        stage(&mut t, "buildroot layer (trixie + dkms zfs)", || mk.ensure("buildroot", &[], &[], false))?;
    let (kernel_pkg, zfs_pkg) = layers::buildroot_pins(&installed_packages(&buildroot)?)?;
    let pins = [format!("{}={}", kernel_pkg.name, kernel_pkg.version), format!("zfsutils-linux={}", zfs_pkg.version)];
    let (layer, layer_built) = stage(&mut t, "baseline layer (runtime packages + live-boot, systemd)", || {
        mk.ensure(LAYER, &[&pins[0], &pins[1]], &pins, args.refresh)
    })?;
    for p in cache.prune(&[LAYER], std::slice::from_ref(&layer)) {
        eprintln!("removed stale cached layer {}", p.display());
    }

    let kver = modules_dir_version(&layer)?;
    let staging = assemble::staging_dir(&cache.work(), &format!("baseline-{}-{}", source.stamp, std::process::id()));
    let result = (|| -> anyhow::Result<Summary> {
        let packages = stage(&mut t, "assemble baseline tree (zfs modules, depmod, units)", || {
            assemble::link_copy(&layer, &staging)?;
            let moddir = staging.join("usr/lib/modules").join(&kver);
            for (name, ko) in assemble::zfs_modules(&buildroot, &kver)? {
                assemble::replace_file(&moddir.join("updates/dkms").join(name), &ko, 0o644)?;
            }
            assemble::depmod(&staging, &kver)?;
            assemble::apply_overlay(&src.join(OVERLAY), &staging)?;
            let osr = staging.join("usr/lib/os-release");
            let text = fs::read_to_string(&osr).with_context(|| format!("reading {}", osr.display()))?;
            assemble::replace_file(&osr, assemble::os_release_with_stamp(&text, &source.stamp).as_bytes(), 0o644)?;
            let bad = assemble::audit(&staging);
            if !bad.is_empty() {
                eprintln!("note: the baseline tree holds:\n  {}", bad.join("\n  "));
            }
            installed_packages(&staging)
        })?;

        fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let out = args.out.canonicalize().context("output directory")?;
        let name = format!("baseline-{}", source.stamp);
        let tmp_dir = out.join(format!(".tmp-{name}"));
        remove_tree(&tmp_dir)?;
        let x86 = tmp_dir.join("x86_64");
        fs::create_dir_all(&x86).with_context(|| format!("creating {}", x86.display()))?;

        let initrd = x86.join("initrd");
        stage(&mut t, "initrd (mkinitramfs: initramfs-tools + live-boot)", || {
            mkinitramfs(&staging, &kver, &initrd, source.source_date_epoch, &cache.logs().join("baseline-initrd.log"))
        })?;
        let squashfs = x86.join("filesystem.squashfs");
        stage(&mut t, "filesystem.squashfs (mksquashfs zstd)", || {
            pack::mksquashfs(
                &staging,
                &squashfs,
                source.source_date_epoch,
                &cache.logs().join("baseline-mksquashfs.log"),
            )
        })?;
        let vmlinuz = staging.join("usr/lib/modules").join(&kver).join("vmlinuz");
        fs::copy(&vmlinuz, x86.join("vmlinuz")).with_context(|| format!("copying {}", vmlinuz.display()))?;
        for f in ["filesystem.squashfs", "initrd"] {
            let h = pack::hash_file_text(&sha256_file(&x86.join(f))?);
            fs::write(x86.join(format!("{f}.hash")), h).with_context(|| format!("writing {f}.hash"))?;
        }
        let manifest: String = packages.iter().map(|p| format!("{}\t{}\t{}\n", p.name, p.version, p.arch)).collect();
        fs::write(tmp_dir.join("packages"), manifest).context("writing the package list")?;
        let dir = out.join(&name);
        remove_tree(&dir)?;
        fs::rename(&tmp_dir, &dir).context("moving the baseline directory into place")?;
        let mut artifacts = Vec::new();
        for f in ["vmlinuz", "initrd", "filesystem.squashfs"] {
            artifacts.push(artifact(&dir.join("x86_64").join(f))?);
        }
        let s = Summary {
            stamp: source.stamp.clone(),
            kernel: kver.clone(),
            dir: dir.clone(),
            artifacts,
            layer: layer.clone(),
            layer_built,
            packages: packages.len(),
            timings: t.clone(),
        };
        fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&s)?).context("writing summary.json")?;
        Ok(s)
    })();
    let _ = remove_tree(&staging);
    let s = result?;
    for a in &s.artifacts {
        eprintln!("  {} ({:.1} MiB)", a.path.display(), a.bytes as f64 / 1048576.0);
    }
    eprintln!("baseline {} ready: {} in {:.0}s", s.stamp, s.dir.display(), s.timings.total());
    Ok(s)
}

/// The names listed under `Packages=` in a mkosi config.
pub fn mkosi_packages(conf: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in conf.lines() {
        if let Some(rest) = line.strip_prefix("Packages=") {
            inside = true;
            out.extend(rest.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
        } else if inside && line.starts_with(char::is_whitespace) {
            out.extend(line.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
        } else {
            inside = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(layer: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("mkosi").join(layer).join("mkosi.conf");
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn baseline_has_the_rootfs_packages_first() {
        let rootfs = mkosi_packages(&conf("rootfs"));
        let baseline = mkosi_packages(&conf(LAYER));
        assert!(rootfs.len() > 10, "{rootfs:?}");
        assert_eq!(baseline[..rootfs.len()], rootfs[..], "keep baseline/mkosi.conf in step with rootfs/mkosi.conf");
        for p in ["systemd-sysv", "initramfs-tools", "live-boot", "live-boot-initramfs-tools", "busybox"] {
            assert!(baseline.iter().any(|b| b == p), "{p} missing from the baseline");
        }
    }

    #[test]
    fn overlay_has_the_ready_marker() {
        let o = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(OVERLAY);
        let unit = fs::read_to_string(o.join("etc/systemd/system/triton-ready.service")).expect("unit");
        for after in ["zfs-import.target", "zfs-mount.service", "network-online.target", "ur-agent.service"] {
            assert!(unit.lines().any(|l| l.starts_with("After=") && l.contains(after)), "{after}");
        }
        let script = fs::read_to_string(o.join("usr/local/sbin/triton-ready")).expect("script");
        assert!(script.contains(r#"TRITON-EVENT {\"phase\":\"ready\",\"ok\":true,\"uptime_ms\":"#));
    }
}
