//! Per-service log files with size rotation: `<dir>/<name>.log`, rotated to
//! `<name>.log.1` .. `<name>.log.<keep>` (oldest dropped) once it reaches
//! `max_bytes`. Rotation happens between writes, so a chunk read from the
//! service's pipe is never split across two files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Rotation limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    /// Rotated files kept (`.1` .. `.keep`); 0 truncates instead.
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation { max_bytes: 10 * 1024 * 1024, keep: 3 }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("log file {}: {op}: {source}", path.display())]
pub struct LogError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: io::Error,
}

#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    rotation: Rotation,
    file: Option<File>,
    size: u64,
}

impl RotatingLog {
    /// `<dir>/<name>.log`; the directory is created and the file opened on
    /// the first write.
    pub fn new(dir: &Path, name: &str, rotation: Rotation) -> Self {
        RotatingLog { path: dir.join(format!("{name}.log")), rotation, file: None, size: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn err(&self, op: &'static str) -> impl FnOnce(io::Error) -> LogError + '_ {
        move |source| LogError { path: self.path.clone(), op, source }
    }

    fn open(&mut self) -> Result<&mut File, LogError> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir).map_err(self.err("creating the log directory"))?;
            }
            let f = OpenOptions::new().create(true).append(true).open(&self.path).map_err(self.err("opening"))?;
            self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(f);
        }
        self.file.as_mut().ok_or_else(|| LogError {
            path: self.path.clone(),
            op: "opening",
            source: io::Error::other("no file"),
        })
    }

    /// Closes the file; the next write reopens it.
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Appends `data`, then rotates if the file reached the size limit.
    pub fn write(&mut self, data: &[u8]) -> Result<(), LogError> {
        if self.file.is_none() && self.path.exists() {
            // Reopened (e.g. after a restart of init): rotate first if already full.
            self.open()?;
            if self.size >= self.rotation.max_bytes {
                self.rotate()?;
            }
        }
        let f = self.open()?;
        let res = f.write_all(data);
        self.size += data.len() as u64;
        res.map_err(self.err("writing"))?;
        if self.size >= self.rotation.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Shifts `.log` → `.log.1` → ... → `.log.<keep>` and starts an empty file.
    pub fn rotate(&mut self) -> Result<(), LogError> {
        self.file = None;
        self.size = 0;
        if self.rotation.keep == 0 {
            return File::create(&self.path).map(drop).map_err(self.err("truncating"));
        }
        let keep = self.rotation.keep;
        match fs::remove_file(self.rotated(keep)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(self.err("removing the oldest file")(e)),
            _ => {}
        }
        for n in (1..keep).rev() {
            match fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(self.err("rotating")(e)),
                _ => {}
            }
        }
        match fs::rename(&self.path, self.rotated(1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err("rotating")(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: PathBuf) -> String {
        fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn rotates_and_keeps_count() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("log");
        let mut log = RotatingLog::new(&dir, "svc", Rotation { max_bytes: 10, keep: 2 });
        for chunk in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n", "eeeeee\n", "ffffff\n", "g\n"] {
            log.write(chunk.as_bytes()).expect("write");
        }
        // Every second chunk crosses 10 bytes: aa+bb | cc+dd | ee+ff | g
        assert_eq!(read(dir.join("svc.log")), "g\n");
        assert_eq!(read(dir.join("svc.log.1")), "eeeeee\nffffff\n");
        assert_eq!(read(dir.join("svc.log.2")), "cccccc\ndddddd\n");
        assert!(!dir.join("svc.log.3").exists());
    }

    #[test]
    fn keep_zero_truncates() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut log = RotatingLog::new(d.path(), "x", Rotation { max_bytes: 4, keep: 0 });
        log.write(b"12345").expect("write");
        log.write(b"ab").expect("write");
        assert_eq!(read(d.path().join("x.log")), "ab");
        assert!(!d.path().join("x.log.1").exists());
    }

    #[test]
    fn appends_to_existing_and_counts_its_size() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join("x.log"), "old-old\n").expect("write");
        let mut log = RotatingLog::new(d.path(), "x", Rotation { max_bytes: 10, keep: 1 });
        log.write(b"new\n").expect("write");
        assert_eq!(read(d.path().join("x.log.1")), "old-old\nnew\n");
        assert_eq!(read(d.path().join("x.log")), "");
    }

    #[test]
    fn full_existing_file_rotated_before_first_write() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join("x.log"), "0123456789ab").expect("write");
        let mut log = RotatingLog::new(d.path(), "x", Rotation { max_bytes: 10, keep: 3 });
        log.write(b"n\n").expect("write");
        assert_eq!(read(d.path().join("x.log")), "n\n");
        assert_eq!(read(d.path().join("x.log.1")), "0123456789ab");
    }

    #[test]
    fn unwritable_dir_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().expect("tempdir");
        let file = d.path().join("file");
        fs::write(&file, "").expect("write");
        let mut log = RotatingLog::new(&file.join("sub"), "x", Rotation::default());
        let e = log.write(b"x").expect_err("not a directory");
        assert!(e.to_string().contains("sub"), "{e}");
    }
}
