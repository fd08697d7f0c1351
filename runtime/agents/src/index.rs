//! The bundle index (`index.json`) that sits beside the agent tarballs:
//!
//! ```json
//! { "agents": [
//!   { "name": "cn-agent", "version": "2.9.3", "file": "cn-agent-2.9.3.tar.gz",
//!     "sha256": "<64 hex>", "size": 123456 } ] }
//! ```
//!
//! [`parse`] + [`RawIndex::validate`] check it (duplicates, bad hex, paths
//! that leave the bundle dir); [`verify_file`] checks a tarball's size and
//! sha256 while streaming it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{check_version, is_agent_name, is_contained_relative};

/// The index as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIndex {
    pub agents: Vec<Entry>,
}

/// One agent tarball.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub name: String,
    pub version: String,
    /// Relative to the bundle directory; a plain file name or `dir/file`.
    pub file: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// A validated index (entries in file order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub agents: Vec<Entry>,
}

impl Index {
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.agents.iter().find(|e| e.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{}: not a valid agents index (JSON): {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: invalid agents index: {}", path.display(), problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

/// Parses index text (`path` is only used in errors).
pub fn parse(text: &str, path: &Path) -> Result<RawIndex, IndexError> {
    serde_json::from_str(text).map_err(|e| IndexError::Parse { path: path.to_path_buf(), message: e.to_string() })
}

impl RawIndex {
    /// Checks every entry; all problems are reported at once.
    pub fn validate(self, path: &Path) -> Result<Index, IndexError> {
        let mut p = Vec::new();
        let mut names = BTreeSet::new();
        let mut files = BTreeSet::new();
        for (i, e) in self.agents.iter().enumerate() {
            let at = format!("agents[{i}]");
            if !is_agent_name(&e.name) {
                p.push(format!("{at}.name {:?} must be lowercase letters, digits and '-'", e.name));
            } else if !names.insert(e.name.as_str()) {
                p.push(format!("{at}.name {:?} appears twice; keep one entry per agent", e.name));
            }
            if let Err(msg) = check_version(&e.version) {
                p.push(format!("{at}.{msg}"));
            }
            let normal: PathBuf =
                Path::new(&e.file).components().filter(|c| matches!(c, Component::Normal(_))).collect();
            let hidden = normal.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
            if !is_contained_relative(&e.file) || normal.as_os_str().is_empty() || hidden {
                p.push(format!(
                    "{at}.file {:?} must be a relative path inside the bundle, e.g. \"cn-agent-2.9.3.tgz\" (no leading '/', no '..', no hidden names)",
                    e.file
                ));
            } else if !files.insert(normal) {
                p.push(format!("{at}.file {:?} is used by another entry", e.file));
            }
            if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                p.push(format!("{at}.sha256 must be 64 lowercase hex digits (got {:?})", e.sha256));
            }
        }
        if p.is_empty() {
            Ok(Index { agents: self.agents })
        } else {
            Err(IndexError::Invalid { path: path.to_path_buf(), problems: p })
        }
    }
}

/// A tarball that does not match its index entry.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: size is {actual} bytes, the index says {expected}", path.display())]
    Size { path: PathBuf, expected: u64, actual: u64 },
    #[error("{}: sha256 is {actual}, the index says {expected}", path.display())]
    Sha256 { path: PathBuf, expected: String, actual: String },
}

/// Streams `reader` through sha256; returns (lowercase hex, bytes read).
pub fn sha256_reader<R: Read>(mut reader: R) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Checks `bundle_dir/entry.file` against the entry's size and sha256.
pub fn verify_file(bundle_dir: &Path, entry: &Entry) -> Result<PathBuf, VerifyError> {
    let path = bundle_dir.join(&entry.file);
    let read_err = |source| VerifyError::Read { path: path.clone(), source };
    let file = File::open(&path).map_err(read_err)?;
    let (actual, size) = sha256_reader(file).map_err(read_err)?;
    if size != entry.size {
        return Err(VerifyError::Size { path, expected: entry.size, actual: size });
    }
    if actual != entry.sha256 {
        return Err(VerifyError::Sha256 { path, expected: entry.sha256.clone(), actual });
    }
    Ok(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const SHA_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn entry(name: &str, file: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "version": "1.2.3", "file": file, "sha256": SHA_ABC, "size": 3})
    }

    fn load(v: serde_json::Value) -> Result<Index, IndexError> {
        let path = Path::new("bundle/index.json");
        parse(&v.to_string(), path)?.validate(path)
    }

    fn problems(v: serde_json::Value) -> Vec<String> {
        match load(v) {
            Err(IndexError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn good_index() {
        let idx = load(serde_json::json!({"agents": [entry("cn-agent", "cn-agent.tgz"), entry("vm-agent", "agents/vm-agent.tgz")]}))
            .unwrap();
        assert_eq!(idx.agents.len(), 2);
        assert_eq!(idx.get("vm-agent").map(|e| e.file.as_str()), Some("agents/vm-agent.tgz"));
        assert!(idx.get("nope").is_none());
    }

    #[test]
    fn parse_errors_name_the_file() {
        let path = Path::new("bundle/index.json");
        let e = parse("{\"agents\": [], \"extra\": 1}", path).unwrap_err().to_string();
        assert!(e.contains("bundle/index.json") && e.contains("extra"), "{e}");
        let e = parse("[", path).unwrap_err();
        assert!(matches!(e, IndexError::Parse { .. }));
        let mut bad = entry("a", "a.tgz");
        bad["size"] = serde_json::json!(-1);
        assert!(matches!(load(serde_json::json!({"agents": [bad]})), Err(IndexError::Parse { .. })));
    }

    #[test]
    fn duplicates_are_errors() {
        let ps =
            problems(serde_json::json!({"agents": [entry("a", "x.tgz"), entry("a", "y.tgz"), entry("b", "./x.tgz")]}));
        assert!(ps.iter().any(|p| p.contains("agents[1].name") && p.contains("twice")), "{ps:?}");
        assert!(ps.iter().any(|p| p.contains("agents[2].file") && p.contains("another entry")), "{ps:?}");
    }

    #[test]
    fn path_traversal_is_an_error() {
        for bad in ["../x.tgz", "/etc/passwd", "a/../../x", "", "..", ".hidden", "a\\b", "a/..", ".", "./", "a/.b"] {
            let ps = problems(serde_json::json!({"agents": [entry("a", bad)]}));
            assert!(ps.iter().any(|p| p.starts_with("agents[0].file")), "{bad}: {ps:?}");
        }
    }

    #[test]
    fn bad_sha_name_and_version_are_errors() {
        let mut e = entry("A", "a.tgz");
        e["sha256"] = serde_json::json!(SHA_ABC.to_uppercase());
        e["version"] = serde_json::json!("latest");
        let ps = problems(serde_json::json!({"agents": [e]}));
        assert!(ps.iter().any(|p| p.starts_with("agents[0].name")), "{ps:?}");
        assert!(ps.iter().any(|p| p.starts_with("agents[0].version")), "{ps:?}");
        assert!(ps.iter().any(|p| p.starts_with("agents[0].sha256")), "{ps:?}");
        let mut short = entry("a", "a.tgz");
        short["sha256"] = serde_json::json!("abc");
        assert!(problems(serde_json::json!({"agents": [short]}))[0].contains("64"));
    }

    #[test]
    fn sha256_streams() {
        let (hex, n) = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!((hex.as_str(), n), (SHA_ABC, 3));
        let big = vec![7u8; 200 * 1024 + 5];
        let (_, n) = sha256_reader(&big[..]).unwrap();
        assert_eq!(n, big.len() as u64);
    }

    #[test]
    fn verify_file_checks_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let idx = load(serde_json::json!({"agents": [entry("a", "a.tgz")]})).unwrap();
        let e = &idx.agents[0];
        assert!(matches!(verify_file(dir.path(), e), Err(VerifyError::Read { .. })));
        std::fs::write(dir.path().join("a.tgz"), b"abc").unwrap();
        assert_eq!(verify_file(dir.path(), e).unwrap(), dir.path().join("a.tgz"));
        std::fs::write(dir.path().join("a.tgz"), b"abd").unwrap();
        let err = verify_file(dir.path(), e).unwrap_err();
        assert!(matches!(err, VerifyError::Sha256 { .. }) && err.to_string().contains("a.tgz"), "{err}");
        std::fs::write(dir.path().join("a.tgz"), b"abcd").unwrap();
        assert!(matches!(verify_file(dir.path(), e), Err(VerifyError::Size { expected: 3, actual: 4, .. })));
    }
}
