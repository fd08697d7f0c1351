//! Kernel module loading for stage 1: by name (with dependencies) and by the
//! modaliases of the devices present, from the initrd's small module set.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::modalias::{AliasTable, DepTable};

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("module {0:?} is not in this initrd's module set")]
    Unknown(String),
    #[error("loading module {name} ({path}): {errno}")]
    Load { name: String, path: PathBuf, errno: Errno },
}

/// Loads modules from `<root>/usr/lib/modules/<release>`.
#[derive(Debug)]
pub struct Loader {
    moddir: PathBuf,
    deps: DepTable,
    aliases: AliasTable,
    loaded: BTreeSet<String>,
}

impl Loader {
    pub fn new(root: &Path, release: &str) -> Result<Loader, KmodError> {
        let moddir = root.join("usr/lib/modules").join(release);
        let read = |name: &str| {
            let path = moddir.join(name);
            fs::read_to_string(&path).map_err(|source| KmodError::Read { path, source })
        };
        let deps = DepTable::parse(&read("modules.dep")?);
        let aliases = AliasTable::parse(&read("modules.alias")?);
        let mut loaded: BTreeSet<String> = fs::read_to_string(root.join("proc/modules"))
            .map(|t| t.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
            .unwrap_or_default();
        // Built into the kernel: nothing to load.
        if let Ok(t) = fs::read_to_string(moddir.join("modules.builtin")) {
            loaded.extend(t.lines().map(|l| {
                let base = l.rsplit('/').next().unwrap_or(l);
                base.split(".ko").next().unwrap_or(base).replace('-', "_")
            }));
        }
        Ok(Loader { moddir, deps, aliases, loaded })
    }

    /// Loads `name` and its dependencies. Already loaded (or built in) is fine.
    pub fn load(&mut self, name: &str) -> Result<Vec<String>, KmodError> {
        if self.loaded.contains(&name.replace('-', "_")) {
            return Ok(Vec::new());
        }
        let order = self.deps.load_order(name).ok_or_else(|| KmodError::Unknown(name.to_string()))?;
        let mut newly = Vec::new();
        for m in order {
            if self.loaded.contains(&m) {
                continue;
            }
            let rel = self.deps.path(&m).ok_or_else(|| KmodError::Unknown(m.clone()))?;
            let path = self.moddir.join(rel);
            let file = File::open(&path).map_err(|source| KmodError::Read { path: path.clone(), source })?;
            match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(errno) => return Err(KmodError::Load { name: m, path, errno }),
            }
            self.loaded.insert(m.clone());
            newly.push(m);
        }
        Ok(newly)
    }

    /// One pass over `<sys>/bus/*/devices/*/modalias`: loads every module of
    /// ours that matches a present device. Returns the modules loaded and the
    /// errors of those that failed (a failing driver must not stop the boot).
    pub fn load_for_devices(&mut self, sys: &Path) -> (Vec<String>, Vec<KmodError>) {
        let mut wanted = BTreeSet::new();
        for alias in device_modaliases(sys) {
            for m in self.aliases.lookup(&alias) {
                wanted.insert(m.to_string());
            }
        }
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for m in wanted {
            match self.load(&m) {
                Ok(n) => loaded.extend(n),
                Err(e) => errors.push(e),
            }
        }
        (loaded, errors)
    }

    /// Loads for present devices until a pass loads nothing new (bus drivers
    /// such as virtio_pci reveal more devices once loaded).
    pub fn coldplug(&mut self, sys: &Path, max_passes: usize) -> (Vec<String>, Vec<KmodError>) {
        let mut all = Vec::new();
        let mut errs = Vec::new();
        for _ in 0..max_passes {
            let (n, e) = self.load_for_devices(sys);
            errs.extend(e);
            if n.is_empty() {
                break;
            }
            all.extend(n);
        }
        (all, errs)
    }
}

fn device_modaliases(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(buses) = fs::read_dir(sys.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devs) = fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devs.flatten() {
            if let Ok(a) = fs::read_to_string(dev.path().join("modalias")) {
                let a = a.trim();
                if !a.is_empty() {
                    out.push(a.to_string());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_modaliases_in_sysfs_tree() {
        let d = tempfile::tempdir().expect("tmp");
        let dev = d.path().join("bus/pci/devices/0000:00:03.0");
        fs::create_dir_all(&dev).expect("mkdir");
        fs::write(dev.join("modalias"), "pci:v00001AF4d00001000sv*\n").expect("w");
        fs::create_dir_all(d.path().join("bus/virtio/devices/virtio0")).expect("mkdir");
        assert_eq!(device_modaliases(d.path()), ["pci:v00001AF4d00001000sv*"]);
    }

    #[test]
    fn unknown_module_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().expect("tmp");
        let md = d.path().join("usr/lib/modules/6.12");
        fs::create_dir_all(&md).expect("mkdir");
        fs::write(md.join("modules.dep"), "kernel/x.ko:\n").expect("w");
        fs::write(md.join("modules.alias"), "").expect("w");
        fs::write(md.join("modules.builtin"), "kernel/drivers/block/loop.ko\n").expect("w");
        let mut l = Loader::new(d.path(), "6.12").expect("loader");
        assert!(matches!(l.load("nope"), Err(KmodError::Unknown(_))));
        assert_eq!(l.load("loop").expect("builtin"), Vec::<String>::new());
        // A present but non-module file fails with a Load error naming it.
        fs::create_dir_all(md.join("kernel")).expect("mkdir");
        fs::write(md.join("kernel/x.ko"), b"not elf").expect("w");
        match l.load("x") {
            Err(KmodError::Load { name, .. }) => assert_eq!(name, "x"),
            Err(KmodError::Read { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
