//! The stage-1 module set: selected by name, closed over `modules.dep`,
//! decompressed (the whole initrd is zstd-compressed anyway), with the
//! filtered `modules.dep`/`modules.alias` stage 1 uses to load by modalias.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed modules.dep line")]
    BadDep { path: PathBuf, line: usize },
    #[error("module {name:?} (required by the stage-1 module list) is not in {moddir}")]
    Missing { name: String, moddir: PathBuf },
    #[error("decompressing {path}: {source}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModuleError + '_ {
    move |source| ModuleError::Io { path: path.to_path_buf(), source }
}

/// Canonical module name: file stem without `.ko*`, dashes as underscores.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// `modules.dep` of one kernel: module path → its dependency paths.
#[derive(Debug, Clone, Default)]
pub struct DepTable {
    deps: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
}

impl DepTable {
    pub fn parse(text: &str, path: &Path) -> Result<DepTable, ModuleError> {
        let mut t = DepTable::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (m, rest) =
                line.split_once(':').ok_or_else(|| ModuleError::BadDep { path: path.to_path_buf(), line: i + 1 })?;
            let deps = rest.split_whitespace().map(str::to_string).collect();
            t.by_name.insert(module_name(m), m.to_string());
            t.deps.insert(m.to_string(), deps);
        }
        Ok(t)
    }

    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.by_name.get(&name.replace('-', "_")).map(String::as_str)
    }

    /// `paths` plus everything they depend on, transitively.
    pub fn closure<'a>(&'a self, paths: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&str> = paths.into_iter().collect();
        while let Some(p) = todo.pop() {
            if out.insert(p.to_string()) {
                if let Some(d) = self.deps.get(p) {
                    todo.extend(d.iter().map(String::as_str));
                }
            }
        }
        out
    }

    pub fn deps_of(&self, path: &str) -> &[String] {
        self.deps.get(path).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Parses the module list format: one name per line, `#` comments, a trailing
/// `?` marks a module that may be absent from this kernel build.
pub fn parse_list(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.strip_suffix('?') {
            Some(n) => (n.to_string(), true),
            None => (l.to_string(), false),
        })
        .collect()
}

/// The stage-1 modules, ready to be laid into the initrd.
#[derive(Debug, Clone)]
pub struct ModuleSet {
    pub kernel_version: String,
    /// initrd path (relative, `usr/lib/modules/<kver>/...ko`) → contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Firmware files the modules declare and the rootfs has (relative path → contents).
    pub firmware: BTreeMap<String, Vec<u8>>,
    /// Filtered `modules.dep` with the decompressed paths.
    pub modules_dep: String,
    /// Filtered `modules.alias`.
    pub modules_alias: String,
    /// The kernel's `modules.builtin` (what needs no loading).
    pub modules_builtin: String,
    /// Names that were optional and not found in this kernel.
    pub absent_optional: Vec<String>,
}

/// Decompresses a module file by its extension (`.xz`, `.zst`, or plain).
pub fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, ModuleError> {
    let name = path.to_string_lossy();
    let err = |source| ModuleError::Decompress { path: path.to_path_buf(), source };
    if name.ends_with(".xz") {
        let mut out = Vec::new();
        xz2::read::XzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(err)?;
        Ok(out)
    } else if name.ends_with(".zst") {
        zstd::stream::decode_all(&raw[..]).map_err(err)
    } else {
        Ok(raw)
    }
}

fn strip_comp(p: &str) -> String {
    p.trim_end_matches(".xz").trim_end_matches(".zst").trim_end_matches(".gz").to_string()
}

/// Values of `key=` in a module's `.modinfo` (NUL-separated `key=value` strings).
pub fn modinfo_values(ko: &[u8], key: &str) -> Vec<String> {
    let needle = format!("{key}=");
    ko.split(|b| *b == 0)
        .filter_map(|s| s.strip_prefix(needle.as_bytes()))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .map(str::to_string)
        .collect()
}

impl ModuleSet {
    /// Resolves `list` (see [`parse_list`]) against the kernel `kver` in `rootfs`.
    pub fn resolve(rootfs: &Path, kver: &str, list: &str) -> Result<ModuleSet, ModuleError> {
        let moddir = rootfs.join("usr/lib/modules").join(kver);
        let dep_path = moddir.join("modules.dep");
        let deps = DepTable::parse(&fs::read_to_string(&dep_path).map_err(io_err(&dep_path))?, &dep_path)?;
        let mut wanted = Vec::new();
        let mut absent_optional = Vec::new();
        for (name, optional) in parse_list(list) {
            match deps.path_of(&name) {
                Some(p) => wanted.push(p),
                // Built into the kernel: modules.builtin lists it, nothing to load.
                None if is_builtin(&moddir, &name) => {}
                None if optional => absent_optional.push(name),
                None => return Err(ModuleError::Missing { name, moddir }),
            }
        }
        let closure = deps.closure(wanted);
        let prefix = format!("usr/lib/modules/{kver}");
        let mut files = BTreeMap::new();
        let mut firmware = BTreeMap::new();
        let mut dep_out = String::new();
        let mut names = BTreeSet::new();
        for m in &closure {
            let src = moddir.join(m);
            let raw = fs::read(&src).map_err(io_err(&src))?;
            let ko = decompress(&src, raw)?;
            for fw in modinfo_values(&ko, "firmware") {
                for cand in [rootfs.join("usr/lib/firmware").join(&fw), rootfs.join("lib/firmware").join(&fw)] {
                    if let Ok(data) = fs::read(&cand) {
                        firmware.insert(format!("usr/lib/firmware/{fw}"), data);
                        break;
                    }
                }
            }
            files.insert(format!("{prefix}/{}", strip_comp(m)), ko);
            names.insert(module_name(m));
            let d: Vec<String> = deps.deps_of(m).iter().map(|d| strip_comp(d)).collect();
            dep_out.push_str(&format!("{}: {}\n", strip_comp(m), d.join(" ")));
        }
        let alias_path = moddir.join("modules.alias");
        let alias_text = fs::read_to_string(&alias_path).map_err(io_err(&alias_path))?;
        let modules_alias = alias_text
            .lines()
            .filter(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some("alias") && w.nth(1).is_some_and(|m| names.contains(&m.replace('-', "_")))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let modules_builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
        Ok(ModuleSet {
            modules_builtin,
            kernel_version: kver.to_string(),
            files,
            firmware,
            modules_dep: dep_out,
            modules_alias,
            absent_optional,
        })
    }
}

fn is_builtin(moddir: &Path, name: &str) -> bool {
    fs::read_to_string(moddir.join("modules.builtin"))
        .map(|t| t.lines().any(|l| module_name(l) == name.replace('-', "_")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_kernel(root: &Path) -> PathBuf {
        let md = root.join("usr/lib/modules/6.12.0-test");
        fs::create_dir_all(md.join("kernel/net")).expect("mkdir");
        let ko = |fw: &str| {
            let mut v = b"\x7fELF....\0license=GPL\0".to_vec();
            if !fw.is_empty() {
                v.extend_from_slice(format!("firmware={fw}\0").as_bytes());
            }
            v
        };
        let mut xz = Vec::new();
        let plain = ko("acme/nic.bin");
        let mut enc = xz2::read::XzEncoder::new(&plain[..], 6);
        enc.read_to_end(&mut xz).expect("xz");
        fs::write(md.join("kernel/net/acme-nic.ko.xz"), xz).expect("w");
        fs::write(md.join("kernel/net/mii.ko"), ko("")).expect("w");
        fs::write(md.join("kernel/net/other.ko"), ko("")).expect("w");
        fs::write(
            md.join("modules.dep"),
            "kernel/net/acme-nic.ko.xz: kernel/net/mii.ko\nkernel/net/mii.ko:\nkernel/net/other.ko:\n",
        )
        .expect("w");
        fs::write(
            md.join("modules.alias"),
            "# Aliases\nalias pci:v00008086d0000100Esv*sd*bc*sc*i* acme_nic\nalias pci:v1* other\n",
        )
        .expect("w");
        fs::write(md.join("modules.builtin"), "kernel/fs/squashfs/squashfs.ko\n").expect("w");
        fs::create_dir_all(root.join("usr/lib/firmware/acme")).expect("mkdir");
        fs::write(root.join("usr/lib/firmware/acme/nic.bin"), b"FW").expect("w");
        md
    }

    #[test]
    fn closure_decompresses_and_filters() {
        let dir = tempfile::tempdir().expect("tmp");
        fake_kernel(dir.path());
        let set = ModuleSet::resolve(dir.path(), "6.12.0-test", "acme_nic\nsquashfs\nnotthere?\n").expect("resolve");
        let keys: Vec<_> = set.files.keys().cloned().collect();
        assert_eq!(
            keys,
            ["usr/lib/modules/6.12.0-test/kernel/net/acme-nic.ko", "usr/lib/modules/6.12.0-test/kernel/net/mii.ko"]
        );
        assert!(set.files.values().all(|v| v.starts_with(b"\x7fELF")));
        assert_eq!(set.modules_dep, "kernel/net/acme-nic.ko: kernel/net/mii.ko\nkernel/net/mii.ko: \n");
        assert_eq!(set.modules_alias, "alias pci:v00008086d0000100Esv*sd*bc*sc*i* acme_nic\n");
        assert_eq!(set.absent_optional, ["notthere"]);
        assert_eq!(set.firmware.get("usr/lib/firmware/acme/nic.bin").map(Vec::as_slice), Some(&b"FW"[..]));
    }

    #[test]
    fn missing_required_module_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        fake_kernel(dir.path());
        let err = ModuleSet::resolve(dir.path(), "6.12.0-test", "e1000\n").expect_err("missing");
        assert!(err.to_string().contains("\"e1000\""), "{err}");
    }

    #[test]
    fn list_format() {
        assert_eq!(parse_list("# c\n a \nb? # opt\n\n"), [("a".to_string(), false), ("b".to_string(), true)]);
        assert_eq!(module_name("kernel/x/mlx5-core.ko.zst"), "mlx5_core");
    }
}
