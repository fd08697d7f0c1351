//! The shipped artifacts: squashfs (mksquashfs, zstd), hash files and the
//! reproducible `platform-<STAMP>.tgz`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::host;

/// zstd level of the squashfs (mksquashfs's default for zstd is 15).
pub const SQUASHFS_ZSTD_LEVEL: u32 = 15;

/// Squashes `staging` into `out` with every timestamp set to `epoch`.
pub fn mksquashfs(staging: &Path, out: &Path, epoch: i64, log: &Path) -> anyhow::Result<()> {
    let _ = fs::remove_file(out);
    let e = epoch.to_string();
    host::run_logged(
        Command::new("mksquashfs")
            .arg(staging)
            .arg(out)
            .args(["-noappend", "-no-progress", "-comp", "zstd", "-Xcompression-level"])
            .arg(SQUASHFS_ZSTD_LEVEL.to_string())
            .args(["-b", "1M", "-reproducible", "-mkfs-time", &e, "-all-time", &e]),
        log,
    )
    .context("mksquashfs (a full disk shows here as a write error)")
}

/// Content of a hash file next to an artifact: the sha256 in hex.
pub fn hash_file_text(sha256: &str) -> String {
    format!("{sha256}\n")
}

/// Writes a gzip tarball of `dir` (whose name becomes the single top
/// directory): entries sorted, owned by root, every mtime `epoch`, gzip header
/// without name or time. Same input, same bytes.
pub fn write_tarball(dir: &Path, out: &Path, epoch: i64) -> anyhow::Result<()> {
    let top = dir.file_name().context("tarball directory has no name")?.to_string_lossy().into_owned();
    let mut files = Vec::new();
    collect(dir, &mut files).with_context(|| format!("listing {}", dir.display()))?;
    files.sort();
    let tmp = out.with_extension("tgz.tmp");
    let f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let gz = flate2::GzBuilder::new().mtime(0).write(f, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut dirs_done = std::collections::BTreeSet::new();
    for rel in &files {
        // Parent directories first, each once.
        let mut parents: Vec<PathBuf> = rel.ancestors().skip(1).map(Path::to_path_buf).collect();
        parents.reverse();
        for p in parents {
            if dirs_done.insert(p.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                set_common(&mut h, 0o755, 0, epoch);
                tar.append_data(&mut h, Path::new(&top).join(&p), std::io::empty())?;
            }
        }
        let src = dir.join(rel);
        let md = fs::metadata(&src).with_context(|| format!("stat {}", src.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        use std::os::unix::fs::PermissionsExt;
        set_common(&mut h, md.permissions().mode() & 0o755, md.len(), epoch);
        let file = fs::File::open(&src).with_context(|| format!("opening {}", src.display()))?;
        tar.append_data(&mut h, Path::new(&top).join(rel), file)
            .with_context(|| format!("adding {} to the tarball", rel.display()))?;
    }
    let gz = tar.into_inner().context("finishing the tar stream")?;
    gz.finish().context("finishing gzip")?.sync_all().context("syncing the tarball")?;
    fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

fn set_common(h: &mut tar::Header, mode: u32, size: u64, epoch: i64) {
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(epoch.max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in fs::read_dir(d)? {
            let p = e?.path();
            if p.is_dir() {
                walk(base, &p, out)?;
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_path_buf());
            }
        }
        Ok(())
    }
    walk(dir, dir, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn tarball_is_deterministic_with_one_top_dir() {
        let d = tempfile::tempdir().expect("tmp");
        let top = d.path().join("platform-20250101T000000Z");
        fs::create_dir_all(top.join("x86_64")).expect("mkdir");
        fs::create_dir_all(top.join("etc/version")).expect("mkdir");
        fs::write(top.join("x86_64/vmlinuz"), "k").expect("w");
        fs::write(top.join("etc/version/platform"), "20250101T000000Z\n").expect("w");
        let a = d.path().join("a.tgz");
        let b = d.path().join("b.tgz");
        write_tarball(&top, &a, 1_700_000_000).expect("a");
        // Different host mtimes must not matter.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs::write(top.join("x86_64/vmlinuz"), "k").expect("w");
        write_tarball(&top, &b, 1_700_000_000).expect("b");
        assert_eq!(fs::read(&a).expect("a"), fs::read(&b).expect("b"));

        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(&a).expect("open")).read_to_end(&mut raw).expect("gunzip");
        let mut ar = tar::Archive::new(&raw[..]);
        let mut names = Vec::new();
        for e in ar.entries().expect("entries") {
            let e = e.expect("entry");
            assert_eq!(e.header().mtime().expect("mtime"), 1_700_000_000);
            assert_eq!(e.header().uid().expect("uid"), 0);
            names.push(e.path().expect("path").to_string_lossy().into_owned());
        }
        assert!(names.iter().all(|n| n.starts_with("platform-20250101T000000Z")), "{names:?}");
        assert!(names.contains(&"platform-20250101T000000Z/x86_64/vmlinuz".to_string()));
        assert!(names.contains(&"platform-20250101T000000Z/etc/version/platform".to_string()));
    }
}
