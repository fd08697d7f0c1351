//! `triton-pi build`: the whole pipeline, stage by stage.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::assemble;
use crate::cli::BuildArgs;
use crate::host;
use crate::layers::{self, installed_packages, remove_tree, Cache, Mkosi, Package};
use crate::pack;
use crate::progress::{stage, Timings};
use crate::runtime;
use crate::source::{digest_inputs, sha256_file, Source};
use crate::versions::{bzimage_version, module_vermagic, modules_dir_version, KernelVersions};

/// zstd level of the initrd. 19 saves 0.9 MiB of 9.4 but takes 10x longer (20 s vs 2 s).
pub const INITRD_ZSTD_LEVEL: i32 = 12;

#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub path: PathBuf,
    pub built: bool,
}

/// What a build produced (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub stamp: String,
    pub commit: String,
    pub dirty: bool,
    pub kernel: String,
    pub zfs: String,
    pub tarball: Artifact,
    pub artifacts: Vec<Artifact>,
    pub platform_dir: PathBuf,
    pub layers: Vec<LayerInfo>,
    pub initrd_modules: usize,
    pub packages: usize,
    pub timings: Timings,
    pub staging: Option<PathBuf>,
    pub standalone: Option<Artifact>,
}

/// The checkout this builder belongs to.
pub fn source_root() -> anyhow::Result<PathBuf> {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [std::env::current_dir().ok(), Some(compiled)];
    for c in candidates.into_iter().flatten() {
        if c.join("image/mkosi/rootfs/mkosi.conf").is_file() {
            return c.canonicalize().with_context(|| format!("resolving {}", c.display()));
        }
    }
    bail!("run this from the root of the platform checkout (no image/mkosi/rootfs/mkosi.conf here)")
}

fn artifact(p: &Path) -> anyhow::Result<Artifact> {
    let bytes = fs::metadata(p).with_context(|| format!("stat {}", p.display()))?.len();
    Ok(Artifact { path: p.to_path_buf(), bytes, sha256: sha256_file(p)? })
}

fn write(p: &Path, data: &[u8]) -> anyhow::Result<()> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    fs::write(p, data).with_context(|| format!("writing {} (disk full?)", p.display()))
}

/// Options that only `repro` and `bench` use.
#[derive(Debug, Clone, Default)]
pub struct Internal {
    /// Keep the staging tree (its path is in the summary).
    pub keep_staging: bool,
    /// Build the Debian layers and the runtime in this scratch directory
    /// instead of the shared cache (tools tree and downloaded packages are
    /// still shared).
    pub layer_cache: Option<PathBuf>,
    /// Build this checkout instead of the one the builder belongs to.
    pub src: Option<PathBuf>,
}

pub fn run(args: &BuildArgs) -> anyhow::Result<Summary> {
    run_with(args, &Internal::default())
}

pub fn run_with(args: &BuildArgs, internal: &Internal) -> anyhow::Result<Summary> {
    let mut t = Timings::default();
    let src = match &internal.src {
        Some(s) => s.clone(),
        None => source_root()?,
    };
    let cache = Cache::new(&args.cache);
    host::preflight(host::TOOLS, &cache.mkosi())?;
    cache.create()?;
    let _lock = cache.lock()?;
    cache.sweep();
    let source = Source::discover(&src)?;
    eprintln!(
        "building platform {} from {}{}",
        source.stamp,
        &source.commit[..12.min(source.commit.len())],
        if source.dirty { " (with uncommitted changes)" } else { "" }
    );

    let layers_dir = internal.layer_cache.clone().unwrap_or_else(|| cache.layers());
    fs::create_dir_all(&layers_dir).with_context(|| format!("creating {}", layers_dir.display()))?;
    let mk = Mkosi {
        mkosi_dir: cache.mkosi(),
        config_root: src.join("image/mkosi"),
        cache: cache.clone(),
        layers: layers_dir,
    };

    let (buildroot, br_built) =
        stage(&mut t, "buildroot layer (trixie + dkms zfs)", || mk.ensure("buildroot", &[], &[], args.refresh))?;
    let br_pkgs = installed_packages(&buildroot)?;
    let (kernel_pkg, zfs_pkg) = layers::buildroot_pins(&br_pkgs)?;
    let pins = [format!("{}={}", kernel_pkg.name, kernel_pkg.version), format!("zfsutils-linux={}", zfs_pkg.version)];
    let (rootfs, rf_built) = stage(&mut t, "rootfs layer (runtime packages)", || {
        mk.ensure("rootfs", &[&pins[0], &pins[1]], &pins, args.refresh)
    })?;
    if internal.layer_cache.is_none() {
        for p in cache.prune(&["buildroot", "rootfs"], &[buildroot.clone(), rootfs.clone()]) {
            eprintln!("removed stale cached layer {}", p.display());
        }
    }

    let bins = stage(&mut t, "runtime binaries (cargo in the trixie buildroot)", || {
        // One target dir per checkout: inside the sandbox every checkout is
        // /srv/src, and cargo's mtime check cannot tell two checkouts apart.
        let per_checkout = digest_inputs(&[], &[&src.to_string_lossy()])?;
        let target = internal
            .layer_cache
            .as_ref()
            .map(|l| l.join("cargo-target"))
            .unwrap_or_else(|| cache.cargo_target().join(per_checkout));
        runtime::build(&src, &buildroot, &target, &cache.logs())
    })?;

    let kver = modules_dir_version(&rootfs)?;
    // Unique per build, also for the two builds `repro` runs in one process.
    static BUILDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}-{}-{n}", source.stamp, std::process::id());
    let staging = assemble::staging_dir(&cache.work(), &tag);
    let result = (|| -> anyhow::Result<Summary> {
        let (zfs, packages) = stage(&mut t, "assemble rootfs", || {
            assemble::link_copy(&rootfs, &staging)?;
            let zfs = assemble::zfs_modules(&buildroot, &kver)?;
            assemble::install(&staging, &kver, &zfs, &bins, &src.join("rootfs-overlay"), &source.stamp)?;
            assemble::depmod(&staging, &kver)?;
            let bad = assemble::audit(&staging);
            if !bad.is_empty() {
                bail!("the root filesystem holds what must not ship:\n  {}", bad.join("\n  "));
            }
            Ok((zfs, installed_packages(&staging)?))
        })?;

        let vmlinuz_src = rootfs.join("usr/lib/modules").join(&kver).join("vmlinuz");
        let kernel = stage(&mut t, "check kernel versions", || {
            let img = fs::read(&vmlinuz_src).with_context(|| format!("reading {}", vmlinuz_src.display()))?;
            let zfs_ko = zfs.iter().find(|(n, _)| n == "zfs.ko").map(|(_, b)| b.as_slice()).unwrap_or_default();
            let v = KernelVersions {
                vmlinuz: bzimage_version(&img)
                    .with_context(|| format!("reading the version of {}", vmlinuz_src.display()))?,
                modules_dir: kver.clone(),
                zfs_ko: module_vermagic(zfs_ko).context("zfs.ko has no vermagic")?,
            };
            Ok(v.check()?.to_string())
        })?;

        fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let out = args.out.canonicalize().context("output directory")?;
        let name = format!("platform-{}", source.stamp);
        let tmp_dir = out.join(format!(".tmp-{name}"));
        remove_tree(&tmp_dir)?;
        let x86 = tmp_dir.join("x86_64");
        fs::create_dir_all(&x86).with_context(|| format!("creating {}", x86.display()))?;

        let squashfs = x86.join("filesystem.squashfs");
        stage(&mut t, "filesystem.squashfs (mksquashfs zstd)", || {
            pack::mksquashfs(&staging, &squashfs, source.source_date_epoch, &cache.logs().join("mksquashfs.log"))
        })?;
        let squash_sha = sha256_file(&squashfs)?;

        let initrd = x86.join("initrd");
        let os_release = fs::read_to_string(staging.join("usr/lib/os-release")).context("reading os-release")?;
        let busybox = buildroot.join("usr/bin/busybox");
        let summary_initrd = stage(&mut t, "initrd (our init + stage-1 modules)", || {
            let spec = initramfs::InitrdSpec {
                rootfs: &staging,
                kernel_version: &kver,
                init: &bins.init,
                busybox: &busybox,
                squashfs_sha256: &squash_sha,
                module_list: initramfs::build::DEFAULT_MODULE_LIST,
                os_release: &os_release,
                mtime: u32::try_from(source.source_date_epoch).context("SOURCE_DATE_EPOCH beyond 2106")?,
                zstd_level: INITRD_ZSTD_LEVEL,
            };
            Ok(initramfs::build_initrd(&spec, &initrd)?)
        })?;
        if !summary_initrd.absent_optional.is_empty() {
            eprintln!(
                "note: optional stage-1 modules not in this kernel: {}",
                summary_initrd.absent_optional.join(", ")
            );
        }

        let tarball = out.join(format!("{name}.tgz"));
        let toolchain = host::output(Command::new("rustc").arg("-V")).unwrap_or_default();
        let artifacts = stage(&mut t, "pack platform tarball", || {
            fs::copy(&vmlinuz_src, x86.join("vmlinuz")).context("copying vmlinuz")?;
            write(&x86.join("filesystem.squashfs.hash"), pack::hash_file_text(&squash_sha).as_bytes())?;
            write(&x86.join("initrd.hash"), pack::hash_file_text(&sha256_file(&initrd)?).as_bytes())?;
            let ver = tmp_dir.join("etc/version");
            write(&ver.join("platform"), format!("{}\n", source.stamp).as_bytes())?;
            write(&ver.join("os-release"), os_release.as_bytes())?;
            write(&ver.join("gitstatus"), serde_json::to_string_pretty(&source.gitstatus())?.as_bytes())?;
            write(&ver.join("packages"), package_manifest(&packages).as_bytes())?;
            let info = build_info(&source, &src, &mk, &kernel, &zfs_pkg, &staging, &toolchain, &pins)?;
            write(&ver.join("buildinfo.json"), serde_json::to_string_pretty(&info)?.as_bytes())?;
            let final_dir = out.join(&name);
            remove_tree(&final_dir)?;
            fs::rename(&tmp_dir, &final_dir).context("moving the platform directory into place")?;
            pack::write_tarball(&final_dir, &tarball, source.source_date_epoch)?;
            let latest = out.join("latest");
            let _ = fs::remove_file(&latest);
            std::os::unix::fs::symlink(&name, &latest).context("out/latest")?;
            let mut a = Vec::new();
            for f in ["vmlinuz", "initrd", "filesystem.squashfs"] {
                a.push(artifact(&final_dir.join("x86_64").join(f))?);
            }
            Ok(a)
        })?;
        let standalone = if args.standalone {
            let p = out.join(format!("{name}-standalone.initrd"));
            let dir = out.join(&name).join("x86_64");
            stage(&mut t, "standalone initrd (squashfs inside)", || {
                let base = fs::read(dir.join("initrd")).context("reading the initrd")?;
                let sq = fs::read(dir.join("filesystem.squashfs")).context("reading the squashfs")?;
                let bytes = initramfs::cpio::append_files(base, &[("filesystem.squashfs", 0o644, sq)])
                    .context("appending the squashfs")?;
                write(&p, &bytes)?;
                artifact(&p)
            })
            .map(Some)?
        } else {
            None
        };
        let summary = Summary {
            standalone,
            stamp: source.stamp.clone(),
            commit: source.commit.clone(),
            dirty: source.dirty,
            kernel,
            zfs: zfs_pkg.version.clone(),
            tarball: artifact(&tarball)?,
            artifacts,
            platform_dir: out.join(&name),
            layers: vec![
                LayerInfo { name: "buildroot".into(), path: buildroot.clone(), built: br_built },
                LayerInfo { name: "rootfs".into(), path: rootfs.clone(), built: rf_built },
            ],
            initrd_modules: summary_initrd.modules,
            packages: packages.len(),
            timings: t.clone(),
            staging: internal.keep_staging.then(|| staging.clone()),
        };
        fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)?).context("writing summary.json")?;
        Ok(summary)
    })();
    if !internal.keep_staging || result.is_err() {
        let _ = remove_tree(&staging);
    }
    let s = result?;
    eprintln!(
        "platform {} ready: {} ({:.1} MiB) in {:.0}s",
        s.stamp,
        s.tarball.path.display(),
        s.tarball.bytes as f64 / 1048576.0,
        s.timings.total()
    );
    Ok(s)
}

/// One `name version arch` line per installed package.
pub fn package_manifest(pkgs: &[Package]) -> String {
    pkgs.iter().map(|p| format!("{}\t{}\t{}\n", p.name, p.version, p.arch)).collect()
}

#[allow(clippy::too_many_arguments)]
fn build_info(
    source: &Source,
    src: &Path,
    mk: &Mkosi,
    kernel: &str,
    zfs: &Package,
    staging: &Path,
    toolchain: &str,
    pins: &[String],
) -> anyhow::Result<serde_json::Value> {
    let debian = fs::read_to_string(staging.join("etc/debian_version")).unwrap_or_default();
    Ok(serde_json::json!({
        "stamp": source.stamp,
        "source_date_epoch": source.source_date_epoch,
        "commit": source.commit,
        "dirty": source.dirty,
        "toolchain": toolchain.trim(),
        "mkosi": mk.version(),
        "debian": debian.trim(),
        "kernel": kernel,
        "zfs": zfs.version,
        "pins": pins,
        "inputs": {
            "buildroot_layer": mk.key("buildroot", &[])?,
            "rootfs_layer": mk.key("rootfs", &[&pins[0], &pins[1]])?,
            "cargo_lock": sha256_file(&src.join("Cargo.lock"))?,
            "runtime_sources": digest_inputs(&[src.join("runtime"), src.join("Cargo.toml")], &[])?,
            "rootfs_overlay": digest_inputs(&[src.join("rootfs-overlay")], &[])?,
            "initrd_module_list": digest_inputs(&[src.join("initramfs/modules.list")], &[])?,
        },
    }))
}
