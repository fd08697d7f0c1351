//! The dhcpd zone's `/tftpboot`, rooted at any directory: platforms
//! installed the way `sdcadm platform install` does it
//! (`os/<STAMP>/platform/...`, contracts 1.2) and booter's per-CN files
//! (contracts 2.2). [`plan_cn`] is pure; [`TftpRoot`] applies.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::{is_stamp, Cn, Config, Datacenter};
use crate::render;

/// Files a PI must have (relative to `platform/`), checked after unpacking.
pub const REQUIRED: [&str; 3] = ["x86_64/vmlinuz", "x86_64/initrd", "x86_64/filesystem.squashfs"];

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "{path}: the platform version is taken from the file name, which must end in -<YYYYMMDDTHHMMSSZ>.tgz \
         (like platform-20260101T000000Z.tgz)"
    )]
    BadName { path: PathBuf },
    #[error("{path}: a PI tarball must hold exactly one top directory platform-*; found {found:?}")]
    TopDir { path: PathBuf, found: Vec<String> },
    #[error(
        "{path}: not a PI: {missing} is missing (want platform-<STAMP>/x86_64/{{vmlinuz,initrd,filesystem.squashfs}})"
    )]
    Missing { path: PathBuf, missing: String },
    #[error("{path}: platform {stamp} is already installed (remove {dest} to replace it)")]
    Exists { path: PathBuf, stamp: String, dest: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> InstallError + 'a {
    move |source| InstallError::Io { what, path: path.to_path_buf(), source }
}

/// The stamp in a PI tarball's name, as install-platform.sh takes it.
pub fn stamp_from_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let base = name.strip_suffix(".tgz")?.to_ascii_uppercase();
    let stamp = base.rsplit('-').next()?;
    is_stamp(stamp).then(|| stamp.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("cn {cn}: platform {stamp} is not installed under {root}/os (installed: {installed})")]
    UnknownPlatform { cn: String, stamp: String, root: PathBuf, installed: String },
    #[error("no platform installed under {0}/os: give a PI tarball or directory")]
    NoPlatform(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One file booter writes, relative to the tftp root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: String,
    pub contents: String,
}

/// Everything booter writes for one CN booting `platform`.
pub fn plan_cn(dc: &Datacenter, cn: &Cn, platform: &str, use_hash: bool) -> Vec<PlannedFile> {
    let (json, hash) = render::networking_files(dc, cn);
    let bootfs = render::bootfs_order(vec!["networking.json".into(), "networking.json.hash".into()]);
    let f = render::BootFiles { platform, use_hash, bootfs_files: &bootfs };
    let dir = format!("bootfs/{}", cn.mac_plain());
    vec![
        PlannedFile { path: format!("{dir}/networking.json"), contents: json },
        PlannedFile { path: format!("{dir}/networking.json.hash"), contents: hash },
        PlannedFile { path: format!("boot.ipxe.01{}", cn.mac_upper()), contents: render::boot_ipxe(dc, cn, &f) },
        PlannedFile { path: format!("menu.lst.01{}", cn.mac_upper()), contents: render::menu_lst(cn, &f) },
    ]
}

/// The headnode-wide file.
pub fn plan_dc(dc: &Datacenter) -> Vec<PlannedFile> {
    vec![PlannedFile { path: "extra/joysetup/node.config".into(), contents: render::node_config(dc) }]
}

/// A tftp root directory (booter's `/tftpboot`).
#[derive(Debug, Clone)]
pub struct TftpRoot {
    pub dir: PathBuf,
}

impl TftpRoot {
    pub fn new(dir: impl Into<PathBuf>) -> TftpRoot {
        TftpRoot { dir: dir.into() }
    }

    /// Installs a PI from a `platform-<STAMP>.tgz` (like
    /// install-platform.sh) or from an unpacked `platform-<STAMP>/`
    /// directory (hard links, else copies). Returns the stamp.
    pub fn install_platform(&self, pi: &Path) -> Result<String, InstallError> {
        let meta = fs::metadata(pi).map_err(io_err("reading", pi))?;
        if meta.is_dir() {
            self.install_dir(pi)
        } else {
            self.install_tarball(pi)
        }
    }

    fn dest(&self, pi: &Path, stamp: &str) -> Result<PathBuf, InstallError> {
        let dest = self.dir.join("os").join(stamp);
        if dest.exists() {
            return Err(InstallError::Exists { path: pi.into(), stamp: stamp.into(), dest });
        }
        Ok(dest)
    }

    fn install_tarball(&self, pi: &Path) -> Result<String, InstallError> {
        let stamp = stamp_from_name(pi).ok_or_else(|| InstallError::BadName { path: pi.into() })?;
        let dest = self.dest(pi, &stamp)?;
        // Check the top directory before writing anything.
        let open = || -> Result<tar::Archive<flate2::read::GzDecoder<fs::File>>, InstallError> {
            let f = fs::File::open(pi).map_err(io_err("opening", pi))?;
            Ok(tar::Archive::new(flate2::read::GzDecoder::new(f)))
        };
        let mut tops: Vec<String> = Vec::new();
        let mut a = open()?;
        for e in a.entries().map_err(io_err("reading", pi))? {
            let e = e.map_err(io_err("reading", pi))?;
            let p = e.path().map_err(io_err("reading", pi))?.into_owned();
            let first = p.components().find_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            });
            if let Some(first) = first {
                if !tops.contains(&first) {
                    tops.push(first);
                }
            }
        }
        if tops.len() != 1 || !tops[0].starts_with("platform-") {
            return Err(InstallError::TopDir { path: pi.into(), found: tops });
        }
        let tmp = self.dir.join("os").join(format!(".{stamp}.partial"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        let mut a = open()?;
        a.set_preserve_permissions(true);
        a.unpack(&tmp).map_err(io_err("unpacking", pi))?;
        let unpacked = tmp.join(&tops[0]);
        check_required(pi, &unpacked).inspect_err(|_| {
            let _ = fs::remove_dir_all(&tmp);
        })?;
        fs::rename(&unpacked, tmp.join("platform")).map_err(io_err("renaming", &unpacked))?;
        fs::rename(&tmp, &dest).map_err(io_err("renaming", &tmp))?;
        Ok(stamp)
    }

    fn install_dir(&self, pi: &Path) -> Result<String, InstallError> {
        let canon = pi.canonicalize().map_err(io_err("resolving", pi))?;
        let from_name = canon
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("platform-"))
            .filter(|s| is_stamp(s))
            .map(str::to_string);
        let stamp = match from_name {
            Some(s) => s,
            None => {
                let v = canon.join("etc/version/platform");
                let t = fs::read_to_string(&v).map_err(|_| InstallError::BadName { path: pi.into() })?;
                Some(t.trim().to_string())
                    .filter(|s| is_stamp(s))
                    .ok_or_else(|| InstallError::BadName { path: pi.into() })?
            }
        };
        check_required(pi, &canon)?;
        let dest = self.dest(pi, &stamp)?;
        let tmp = self.dir.join("os").join(format!(".{stamp}.partial"));
        let _ = fs::remove_dir_all(&tmp);
        link_tree(&canon, &tmp.join("platform"))?;
        fs::rename(&tmp, &dest).map_err(io_err("renaming", &tmp))?;
        Ok(stamp)
    }

    /// Installed stamps, oldest first.
    pub fn platforms(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dir.join("os"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| is_stamp(n) && self.dir.join("os").join(n).join("platform/x86_64/vmlinuz").is_file())
            .collect();
        v.sort();
        v
    }

    /// Whether booter would add the hash modules for `stamp`.
    pub fn use_hash(&self, stamp: &str) -> bool {
        self.dir.join("os").join(stamp).join("platform/x86_64/initrd.hash").is_file()
    }

    /// The platform `cn` boots: its own, else the newest installed.
    pub fn platform_for(&self, cn: &Cn) -> Result<String, LayoutError> {
        let installed = self.platforms();
        match &cn.platform {
            Some(p) if installed.contains(p) => Ok(p.clone()),
            Some(p) => Err(LayoutError::UnknownPlatform {
                cn: cn.hostname.clone(),
                stamp: p.clone(),
                root: self.dir.clone(),
                installed: installed.join(", "),
            }),
            None => installed.last().cloned().ok_or_else(|| LayoutError::NoPlatform(self.dir.clone())),
        }
    }

    /// Writes the files of `plan` (replacing them).
    pub fn apply(&self, plan: &[PlannedFile]) -> Result<(), LayoutError> {
        for f in plan {
            let path = self.dir.join(&f.path);
            let werr = |source| LayoutError::Write { path: path.clone(), source };
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(werr)?;
            }
            fs::write(&path, &f.contents).map_err(|source| LayoutError::Write { path: path.clone(), source })?;
        }
        Ok(())
    }

    /// node.config plus every CN's files; returns what was written.
    pub fn write_all(&self, cfg: &Config) -> Result<Vec<PlannedFile>, LayoutError> {
        let mut plan = plan_dc(&cfg.dc);
        for cn in &cfg.cns {
            let p = self.platform_for(cn)?;
            plan.extend(plan_cn(&cfg.dc, cn, &p, self.use_hash(&p)));
        }
        self.apply(&plan)?;
        Ok(plan)
    }

    /// One CN's files (node.config too, so a fresh root works).
    pub fn write_cn(&self, dc: &Datacenter, cn: &Cn) -> Result<Vec<PlannedFile>, LayoutError> {
        let p = self.platform_for(cn)?;
        let mut plan = plan_dc(dc);
        plan.extend(plan_cn(dc, cn, &p, self.use_hash(&p)));
        self.apply(&plan)?;
        Ok(plan)
    }
}

fn check_required(pi: &Path, platform_dir: &Path) -> Result<(), InstallError> {
    for r in REQUIRED {
        if !platform_dir.join(r).is_file() {
            return Err(InstallError::Missing { path: pi.into(), missing: r.into() });
        }
    }
    Ok(())
}

fn link_tree(from: &Path, to: &Path) -> Result<(), InstallError> {
    fs::create_dir_all(to).map_err(io_err("creating", to))?;
    for e in fs::read_dir(from).map_err(io_err("reading", from))? {
        let e = e.map_err(io_err("reading", from))?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let ty = e.file_type().map_err(io_err("reading", &src))?;
        if ty.is_dir() {
            link_tree(&src, &dst)?;
        } else if ty.is_symlink() {
            let target = fs::read_link(&src).map_err(io_err("reading", &src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(io_err("linking", &dst))?;
        } else if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst).map_err(io_err("copying", &src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_come_from_the_file_name() {
        assert_eq!(stamp_from_name(Path::new("/x/platform-20261125T135222Z.tgz")).as_deref(), Some("20261125T135222Z"));
        assert_eq!(stamp_from_name(Path::new("HVM-20261125t135222z.tgz")).as_deref(), Some("20261125T135222Z"));
        assert_eq!(stamp_from_name(Path::new("platform-latest.tgz")), None);
        assert_eq!(stamp_from_name(Path::new("platform-20261125T135222Z.tar")), None);
    }
}
