//! Debian layers built by mkosi and cached by input digest outside the clone.
//!
//! * `tools`: mkosi's default tools tree (trixie), reused by every build.
//! * `buildroot`: trixie + compiler + headers + zfs-dkms; dkms compiles zfs.ko
//!   for the kernel installed there. The runtime is compiled inside it too.
//! * `rootfs`: the shipped package set, with the kernel and zfsutils pinned to
//!   the versions of the buildroot.
//!
//! A layer is built into a temporary directory and renamed into place only
//! when complete, so an interrupted or failed build never leaves a layer that
//! looks valid.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::host;
use crate::source::digest_inputs;

/// mtime clamp and SOURCE_DATE_EPOCH of every layer: a constant, so a layer
/// is a function of its inputs only (the commit's epoch applies later, to the
/// squashfs and the tarball).
pub const LAYER_EPOCH: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z
const LAYER_FORMAT: &str = "layers-v1";

/// The cache directory and its parts.
#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn new(root: &Path) -> Cache {
        Cache { root: root.to_path_buf() }
    }
    pub fn mkosi(&self) -> PathBuf {
        self.root.join("tools/mkosi")
    }
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }
    pub fn pkgcache(&self) -> PathBuf {
        self.root.join("pkgcache")
    }
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn cargo_target(&self) -> PathBuf {
        self.root.join("cargo-target")
    }

    pub fn create(&self) -> anyhow::Result<()> {
        for d in [self.layers(), self.pkgcache(), self.work(), self.logs(), self.cargo_target()] {
            fs::create_dir_all(&d).with_context(|| format!("creating cache directory {}", d.display()))?;
        }
        Ok(())
    }

    /// Takes the cache lock for the life of the returned file.
    pub fn lock(&self) -> anyhow::Result<fs::File> {
        let p = self.root.join("lock");
        let f = fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
        if f.try_lock().is_err() {
            eprintln!("waiting for another build holding {}", p.display());
            f.lock().with_context(|| format!("locking {}", p.display()))?;
        }
        Ok(f)
    }

    /// Removes cached layers of older inputs: every `<name>-<key>` directory
    /// whose name is one of `names` but which is not in `keep`.
    pub fn prune(&self, names: &[&str], keep: &[PathBuf]) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(rd) = fs::read_dir(self.layers()) else { return removed };
        for e in rd.flatten() {
            let p = e.path();
            let file = e.file_name().to_string_lossy().into_owned();
            let ours = names.iter().any(|n| file.strip_prefix(n).is_some_and(|r| r.starts_with('-')));
            if ours && !keep.contains(&p) && remove_tree(&p).is_ok() {
                removed.push(p);
            }
        }
        removed
    }

    /// Removes leftovers of interrupted builds (only ever `.tmp-*`).
    pub fn sweep(&self) {
        for dir in [self.layers(), self.work()] {
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(".tmp-") {
                        let _ = remove_tree(&e.path());
                    }
                }
            }
        }
    }
}

/// `rm -rf` that also works on read-only directories trees left by mkosi.
pub fn remove_tree(p: &Path) -> anyhow::Result<()> {
    if !p.exists() && p.symlink_metadata().is_err() {
        return Ok(());
    }
    host::run(Command::new("rm").arg("-rf").arg("--one-file-system").arg(p))
}

/// How to run mkosi for one layer.
#[derive(Debug, Clone)]
pub struct Mkosi {
    pub mkosi_dir: PathBuf,
    /// `image/mkosi` of the checkout.
    pub config_root: PathBuf,
    /// Tools tree, package downloads, work space and logs.
    pub cache: Cache,
    /// Where the buildroot and rootfs layers are kept (normally
    /// `cache.layers()`; `repro` uses a scratch directory).
    pub layers: PathBuf,
}

impl Mkosi {
    fn sandbox(&self) -> PathBuf {
        self.config_root.join("sandbox")
    }

    fn tools_key(&self) -> anyhow::Result<String> {
        digest_inputs(
            &[self.sandbox(), self.config_root.join("common.conf")],
            &[LAYER_FORMAT, "tools", &self.version()],
        )
    }

    pub fn version(&self) -> String {
        let dist = self.mkosi_dir.join("usr/lib/python3/dist-packages");
        host::output(Command::new("python3").env("PYTHONPATH", &dist).args(["-m", "mkosi", "--version"]))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    }

    /// The cached tools tree, if built.
    pub fn tools_tree(&self) -> anyhow::Result<(PathBuf, bool)> {
        let p = self.cache.layers().join(format!("tools-{}", self.tools_key()?));
        let ok = p.join("usr/bin").is_dir();
        Ok((p, ok))
    }

    /// Key of a layer: its config directory, the shared config, the sandbox
    /// (apt sources) and `extra` (e.g. pinned versions).
    pub fn key(&self, layer: &str, extra: &[&str]) -> anyhow::Result<String> {
        let mut e = vec![LAYER_FORMAT, layer];
        e.extend_from_slice(extra);
        digest_inputs(&[self.config_root.join(layer), self.config_root.join("common.conf"), self.sandbox()], &e)
    }

    /// Returns the layer directory, building it if it is not cached (or
    /// `refresh`). `packages` are extra `--package=` arguments.
    pub fn ensure(
        &self,
        layer: &str,
        extra_key: &[&str],
        packages: &[String],
        refresh: bool,
    ) -> anyhow::Result<(PathBuf, bool)> {
        let key = self.key(layer, extra_key)?;
        let dest = self.layers.join(format!("{layer}-{key}"));
        if dest.join("usr").is_dir() && !refresh {
            return Ok((dest, false));
        }
        let tmp = self.layers.join(format!(".tmp-{layer}-{key}"));
        remove_tree(&tmp)?;
        if refresh {
            remove_tree(&dest)?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let (tools, tools_ok) = self.tools_tree()?;
        let dist = self.mkosi_dir.join("usr/lib/python3/dist-packages");
        let mut cmd = Command::new("python3");
        cmd.env("PYTHONPATH", &dist)
            .env("SOURCE_DATE_EPOCH", LAYER_EPOCH.to_string())
            .args(["-m", "mkosi", "-C"])
            .arg(self.config_root.join(layer))
            .arg(format!("--sandbox-tree={}", self.sandbox().display()))
            .arg(format!("--tools-tree-sandbox-tree={}", self.sandbox().display()))
            .arg(format!("--package-cache-dir={}", self.cache.pkgcache().display()))
            .arg(format!("--output-directory={}", tmp.display()))
            .arg(format!("--output={layer}"))
            .arg(format!("--workspace-directory={}", self.cache.work().display()))
            .arg(format!("--source-date-epoch={LAYER_EPOCH}"));
        if tools_ok {
            cmd.arg(format!("--tools-tree={}", tools.display()));
        }
        for p in packages {
            cmd.arg(format!("--package={p}"));
        }
        cmd.args(["-f", "build"]);
        let log = self.cache.logs().join(format!("{layer}.log"));
        let res = host::run_logged(&mut cmd, &log).with_context(|| {
            format!(
                "building the {layer} layer with mkosi (full log: {}). A download failure means the Debian \
                 archive could not be reached; 'No space left' means the cache disk ({}) is full. \
                 The cache was left as it was: rerun the build when fixed.",
                log.display(),
                self.cache.root.display()
            )
        });
        if let Err(e) = res {
            let _ = remove_tree(&tmp);
            return Err(e);
        }
        if !tools_ok && tmp.join("tools/usr/bin").is_dir() {
            remove_tree(&tools)?;
            fs::rename(tmp.join("tools"), &tools).context("caching the tools tree")?;
        }
        remove_tree(&dest)?;
        fs::rename(tmp.join(layer), &dest).with_context(|| format!("moving the {layer} layer into the cache"))?;
        remove_tree(&tmp)?;
        Ok((dest, true))
    }
}

/// An installed package from a dpkg status file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// Installed packages of `<root>/var/lib/dpkg/status`, sorted by name.
pub fn installed_packages(root: &Path) -> anyhow::Result<Vec<Package>> {
    let p = root.join("var/lib/dpkg/status");
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok(parse_dpkg_status(&text))
}

pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(": ")))
                .map(str::trim)
                .unwrap_or("")
                .to_string()
        };
        if field("Status") != "install ok installed" {
            continue;
        }
        out.push(Package { name: field("Package"), version: field("Version"), arch: field("Architecture") });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The versions the rootfs must match: `linux-image-<kver>` and `zfs-dkms`.
pub fn buildroot_pins(pkgs: &[Package]) -> anyhow::Result<(Package, Package)> {
    let kernels: Vec<&Package> = pkgs
        .iter()
        .filter(|p| p.name.starts_with("linux-image-") && p.name.chars().nth(12).is_some_and(|c| c.is_ascii_digit()))
        .collect();
    let [kernel] = kernels.as_slice() else {
        bail!("the buildroot must have exactly one linux-image-<version> package, found {}", kernels.len());
    };
    let zfs = pkgs.iter().find(|p| p.name == "zfs-dkms").context("zfs-dkms is not installed in the buildroot")?;
    Ok(((*kernel).clone(), zfs.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: zfs-dkms\nStatus: install ok installed\nArchitecture: all\nVersion: 2.3.2-2\n\n\
Package: linux-image-6.12.118+deb13-amd64\nStatus: install ok installed\nArchitecture: amd64\nVersion: 6.12.118-1\n\n\
Package: linux-image-amd64\nStatus: install ok installed\nArchitecture: amd64\nVersion: 6.12.118-1\n\n\
Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n";

    #[test]
    fn dpkg_status_and_pins() {
        let p = parse_dpkg_status(STATUS);
        assert_eq!(
            p.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["linux-image-6.12.118+deb13-amd64", "linux-image-amd64", "zfs-dkms"]
        );
        let (k, z) = buildroot_pins(&p).expect("pins");
        assert_eq!(k.name, "linux-image-6.12.118+deb13-amd64");
        assert_eq!(z.version, "2.3.2-2");
        assert!(buildroot_pins(&p[1..]).is_err());
    }

    /// A stand-in for mkosi: a Python package that fails like apt does when
    /// the archive cannot be reached, after writing part of the output.
    fn fake_mkosi(dir: &Path, body: &str) -> PathBuf {
        let pkg = dir.join("mkosi/usr/lib/python3/dist-packages/mkosi");
        fs::create_dir_all(&pkg).expect("mkdir");
        fs::write(pkg.join("__init__.py"), "").expect("w");
        fs::write(pkg.join("__main__.py"), body).expect("w");
        dir.join("mkosi")
    }

    fn config(dir: &Path) -> PathBuf {
        let root = dir.join("config");
        fs::create_dir_all(root.join("rootfs")).expect("mkdir");
        fs::create_dir_all(root.join("sandbox")).expect("mkdir");
        fs::write(root.join("common.conf"), "[Distribution]\n").expect("w");
        fs::write(root.join("rootfs/mkosi.conf"), "[Content]\n").expect("w");
        root
    }

    #[test]
    fn failed_download_leaves_the_cache_usable() {
        let d = tempfile::tempdir().expect("tmp");
        let body = r#"
import sys, os
out = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--output-directory=")][0]
if "--version" in sys.argv:
    print("mkosi 0-test"); sys.exit(0)
os.makedirs(os.path.join(out, "rootfs", "usr"), exist_ok=True)
print("E: Failed to fetch http://deb.debian.org/debian/pool/main/l/lxc/lxc.deb  Could not connect")
sys.exit(100)
"#;
        let cache = Cache::new(&d.path().join("cache"));
        cache.create().expect("create");
        let mk = Mkosi {
            mkosi_dir: fake_mkosi(d.path(), body),
            config_root: config(d.path()),
            cache: cache.clone(),
            layers: cache.layers(),
        };
        let err = format!("{:#}", mk.ensure("rootfs", &[], &[], false).expect_err("fails"));
        assert!(err.contains("Failed to fetch") && err.contains("archive could not be reached"), "{err}");
        let left: Vec<_> = fs::read_dir(cache.layers()).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "nothing may look like a layer after a failure: {left:?}");

        // The same cache then builds fine once the archive is back.
        let ok = r#"
import sys, os
if "--version" in sys.argv:
    print("mkosi 0-test"); sys.exit(0)
out = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--output-directory=")][0]
os.makedirs(os.path.join(out, "rootfs", "usr", "bin"), exist_ok=True)
"#;
        let mk = Mkosi { mkosi_dir: fake_mkosi(&d.path().join("v2"), ok), ..mk };
        let (layer, built) = mk.ensure("rootfs", &[], &[], false).expect("builds");
        assert!(built && layer.join("usr/bin").is_dir());
        let (again, built) = mk.ensure("rootfs", &[], &[], false).expect("cached");
        assert_eq!((again, built), (layer, false));
    }

    #[test]
    fn prune_keeps_current_layers() {
        let d = tempfile::tempdir().expect("tmp");
        let c = Cache::new(d.path());
        c.create().expect("create");
        for n in ["rootfs-old", "rootfs-new", "buildroot-new", "tools-x", "rootfsx-y"] {
            fs::create_dir_all(c.layers().join(n)).expect("mkdir");
        }
        let keep = [c.layers().join("rootfs-new"), c.layers().join("buildroot-new")];
        let removed = c.prune(&["rootfs", "buildroot"], &keep);
        assert_eq!(removed, [c.layers().join("rootfs-old")]);
        assert!(c.layers().join("tools-x").exists() && c.layers().join("rootfsx-y").exists());
    }

    #[test]
    fn sweep_removes_only_tmp() {
        let d = tempfile::tempdir().expect("tmp");
        let c = Cache::new(d.path());
        c.create().expect("create");
        fs::create_dir_all(c.layers().join(".tmp-rootfs-x/usr")).expect("mkdir");
        fs::create_dir_all(c.layers().join("rootfs-x/usr")).expect("mkdir");
        c.sweep();
        assert!(!c.layers().join(".tmp-rootfs-x").exists());
        assert!(c.layers().join("rootfs-x/usr").exists());
    }
}
