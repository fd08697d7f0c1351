//! Plain file work of the boot: the first-boot copy of `/var`, the core
//! pattern, the setup state. Paths are parameters so tests use a tempdir.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Marker written into `zones/var` once it has been seeded from the image.
pub const VAR_MARKER: &str = ".triton-var-seeded";

/// What [`seed_var`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeedReport {
    /// The marker was already there: nothing copied.
    pub already_seeded: bool,
    pub copied: usize,
    /// Entries that existed in the destination and were left alone.
    pub kept: usize,
    /// Device nodes, fifos, sockets and other mounts, not copied.
    pub skipped: Vec<PathBuf>,
}

fn err(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Copies `from` (the image's `/var`) into `to` (the mounted `zones/var`)
/// unless `to` holds [`VAR_MARKER`]. Never overwrites or changes an existing
/// entry; keeps modes, owners, mtimes of files, and symlinks as symlinks;
/// stays on `from`'s filesystem. Writes the marker last, so an interrupted
/// copy is resumed on the next boot.
pub fn seed_var(from: &Path, to: &Path) -> io::Result<SeedReport> {
    let mut r = SeedReport::default();
    if to.join(VAR_MARKER).symlink_metadata().is_ok() {
        r.already_seeded = true;
        return Ok(r);
    }
    let dev = from.metadata().map_err(|e| err(from, "stat", e))?.dev();
    copy_tree(from, to, dev, &mut r)?;
    let marker = to.join(VAR_MARKER);
    fs::write(&marker, b"seeded from the platform image's /var by triton-pool\n")
        .map_err(|e| err(&marker, "writing", e))?;
    Ok(r)
}

fn copy_tree(from: &Path, to: &Path, dev: u64, r: &mut SeedReport) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(from)
        .map_err(|e| err(from, "reading", e))?
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| err(from, "reading", e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let src = e.path();
        let dst = to.join(e.file_name());
        let md = src.symlink_metadata().map_err(|e| err(&src, "stat", e))?;
        let ft = md.file_type();
        let exists = dst.symlink_metadata().is_ok();
        if ft.is_dir() {
            if md.dev() != dev {
                r.skipped.push(src);
                continue;
            }
            if exists {
                r.kept += 1;
                if dst.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    copy_tree(&src, &dst, dev, r)?;
                }
                continue;
            }
            fs::create_dir(&dst).map_err(|e| err(&dst, "creating", e))?;
            copy_tree(&src, &dst, dev, r)?;
            lchown(&dst, Some(md.uid()), Some(md.gid())).map_err(|e| err(&dst, "chown", e))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| err(&dst, "chmod", e))?;
            r.copied += 1;
        } else if exists {
            r.kept += 1;
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(|e| err(&src, "readlink", e))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| err(&dst, "symlink", e))?;
            lchown(&dst, Some(md.uid()), Some(md.gid())).map_err(|e| err(&dst, "chown", e))?;
            r.copied += 1;
        } else if ft.is_file() {
            fs::copy(&src, &dst).map_err(|e| err(&dst, "copying to", e))?;
            lchown(&dst, Some(md.uid()), Some(md.gid())).map_err(|e| err(&dst, "chown", e))?;
            // chown clears setuid/setgid; set the mode after it.
            fs::set_permissions(&dst, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| err(&dst, "chmod", e))?;
            if let Ok(mtime) = md.modified() {
                let f = fs::File::options().write(true).open(&dst).map_err(|e| err(&dst, "opening", e))?;
                f.set_modified(mtime).map_err(|e| err(&dst, "setting mtime of", e))?;
            }
            r.copied += 1;
        } else {
            r.skipped.push(src);
        }
    }
    Ok(())
}

/// Writes `pattern` to the `core_pattern` sysctl file at `path`.
pub fn write_core_pattern(path: &Path, pattern: &str) -> io::Result<()> {
    fs::write(path, format!("{pattern}\n")).map_err(|e| err(path, "writing", e))
}

/// The parts of `triton-setup-state.json` the boot reads (other keys ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct SetupState {
    #[serde(default)]
    pub complete: bool,
    #[serde(default)]
    pub current_state: Option<String>,
}

/// Reads the setup state file: `Ok(None)` if it does not exist.
pub fn read_setup_state(path: &Path) -> Result<Option<SetupState>, String> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_once_and_never_overwrites() {
        let t = tempfile::tempdir().expect("tempdir");
        let var = t.path().join("var");
        let zv = t.path().join("zvar");
        fs::create_dir_all(var.join("lib/dpkg")).expect("mkdir");
        fs::create_dir_all(var.join("spool/cron")).expect("mkdir");
        fs::write(var.join("lib/dpkg/status"), "image").expect("write");
        fs::write(var.join("keep.txt"), "image").expect("write");
        fs::set_permissions(var.join("spool/cron"), fs::Permissions::from_mode(0o1730)).expect("chmod");
        fs::set_permissions(var.join("keep.txt"), fs::Permissions::from_mode(0o640)).expect("chmod");
        std::os::unix::fs::symlink("/run", var.join("run")).expect("symlink");
        // zones/var already has something of its own.
        fs::create_dir_all(zv.join("lib")).expect("mkdir");
        fs::write(zv.join("keep.txt"), "persisted").expect("write");
        fs::set_permissions(zv.join("keep.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");

        let r = seed_var(&var, &zv).expect("seed");
        assert!(!r.already_seeded);
        assert_eq!(fs::read_to_string(zv.join("keep.txt")).expect("read"), "persisted");
        assert_eq!(fs::read_to_string(zv.join("lib/dpkg/status")).expect("read"), "image");
        assert_eq!(fs::read_link(zv.join("run")).expect("readlink"), PathBuf::from("/run"));
        let mode = fs::metadata(zv.join("spool/cron")).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o1730);
        assert_eq!(fs::metadata(zv.join("keep.txt")).expect("stat").mode() & 0o777, 0o600, "existing entry untouched");
        assert_eq!(
            fs::metadata(zv.join("lib/dpkg/status")).expect("stat").modified().ok(),
            fs::metadata(var.join("lib/dpkg/status")).expect("stat").modified().ok()
        );
        assert!(zv.join(VAR_MARKER).is_file());
        assert_eq!(r.kept, 2); // keep.txt, lib/
        assert!(r.copied >= 5);

        // Second boot: marker present, nothing copied even if /var changed.
        fs::write(var.join("new.txt"), "x").expect("write");
        let r2 = seed_var(&var, &zv).expect("seed");
        assert!(r2.already_seeded);
        assert!(!zv.join("new.txt").exists());
    }

    #[test]
    fn skips_special_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let var = t.path().join("var");
        let zv = t.path().join("zvar");
        fs::create_dir_all(&var).expect("mkdir");
        fs::create_dir_all(&zv).expect("mkdir");
        let sock = var.join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let r = seed_var(&var, &zv).expect("seed");
        assert_eq!(r.skipped, vec![sock]);
        assert!(!zv.join("s.sock").exists());
    }

    #[test]
    fn core_pattern_and_setup_state() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("core_pattern");
        write_core_pattern(&p, crate::CORE_PATTERN).expect("write");
        assert_eq!(fs::read_to_string(&p).expect("read"), "/zones/global/cores/core.%e.%p\n");

        let s = t.path().join("state.json");
        assert_eq!(read_setup_state(&s), Ok(None));
        fs::write(&s, r#"{"node_type":"computenode","complete":true,"seen_states":["zpool_created"]}"#).expect("w");
        assert_eq!(read_setup_state(&s), Ok(Some(SetupState { complete: true, current_state: None })));
        fs::write(&s, "{not json").expect("w");
        assert!(read_setup_state(&s).is_err());
    }
}
