//! What is being built: the commit, its time (the stamp and
//! SOURCE_DATE_EPOCH), and digests of the inputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::host::output;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Source {
    pub root: PathBuf,
    pub commit: String,
    pub commit_epoch: i64,
    pub dirty: bool,
    /// `YYYYMMDDTHHMMSSZ` of the commit time (UTC).
    pub stamp: String,
    pub source_date_epoch: i64,
}

/// Formats a UNIX time as a platform stamp, e.g. `20210731T223008Z`.
pub fn stamp_of(epoch: i64) -> String {
    let days = epoch.div_euclid(86400);
    let secs = epoch.rem_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

impl Source {
    /// Reads the checkout at `root`. `SOURCE_DATE_EPOCH` in the environment
    /// overrides the commit time.
    pub fn discover(root: &Path) -> anyhow::Result<Source> {
        let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(root).args(args));
        let commit = git(&["rev-parse", "HEAD"])
            .context("this must be a git checkout with at least one commit (the stamp comes from the commit time)")?
            .trim()
            .to_string();
        let commit_epoch: i64 = git(&["show", "-s", "--format=%ct", "HEAD"])?.trim().parse().context("commit time")?;
        let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.trim().is_empty();
        let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number"))?,
            Err(_) => commit_epoch,
        };
        if source_date_epoch < 0 {
            bail!("SOURCE_DATE_EPOCH must not be negative");
        }
        Ok(Source {
            root: root.to_path_buf(),
            commit,
            commit_epoch,
            dirty,
            stamp: stamp_of(source_date_epoch),
            source_date_epoch,
        })
    }

    /// linux-live's `etc/version/gitstatus`: a JSON array of repos. No branch
    /// name: it is not part of the commit, and two builds of one commit must
    /// be identical whichever branch (or detached checkout) they come from.
    pub fn gitstatus(&self) -> serde_json::Value {
        serde_json::json!([{
            "repo": "triton-linux-platform",
            "rev": self.commit,
            "commit_date": self.commit_epoch,
            "dirty": self.dirty,
        }])
    }
}

/// sha256 over a set of files and directories (their contents and their
/// paths relative to each input's parent, so the key is the same in every
/// checkout), plus extra strings: the cache key of a layer.
pub fn digest_inputs(paths: &[PathBuf], extra: &[&str]) -> anyhow::Result<String> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for p in paths {
        let base = p.parent().unwrap_or(Path::new(""));
        let mut found = Vec::new();
        collect(p, &mut found).with_context(|| format!("reading layer input {}", p.display()))?;
        for f in found {
            let rel = f.strip_prefix(base).unwrap_or(&f).to_string_lossy().into_owned();
            files.push((rel, f));
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for (rel, f) in &files {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
        h.update([0]);
    }
    for e in extra {
        h.update(e.as_bytes());
        h.update([0]);
    }
    Ok(hex::encode(h.finalize())[..16].to_string())
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_dir() {
        for e in std::fs::read_dir(p)? {
            collect(&e?.path(), out)?;
        }
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("reading {}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(stamp_of(0), "19700101T000000Z");
        assert_eq!(stamp_of(1627770608), "20210731T223008Z");
        assert_eq!(stamp_of(951782400), "20000229T000000Z");
    }

    #[test]
    fn digest_changes_with_content_and_extra() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::write(d.path().join("a"), "1").expect("w");
        let k1 = digest_inputs(&[d.path().to_path_buf()], &["x"]).expect("k");
        assert_eq!(k1, digest_inputs(&[d.path().to_path_buf()], &["x"]).expect("k"));
        assert_ne!(k1, digest_inputs(&[d.path().to_path_buf()], &["y"]).expect("k"));
        // The same inputs in another checkout give the same key.
        let other = tempfile::tempdir().expect("tmp");
        let copy = other.path().join(d.path().file_name().expect("name"));
        std::fs::create_dir_all(&copy).expect("mkdir");
        std::fs::write(copy.join("a"), "1").expect("w");
        assert_eq!(k1, digest_inputs(&[copy], &["x"]).expect("k"));
        std::fs::write(d.path().join("a"), "2").expect("w");
        assert_ne!(k1, digest_inputs(&[d.path().to_path_buf()], &["x"]).expect("k"));
    }
}
