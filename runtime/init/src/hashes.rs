//! Hash files: the sha256 pinned in the initrd and the `.hash` files booter
//! injects (`/filesystem.squashfs.hash`, `/initrd.hash`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashFileError {
    #[error("{file}: empty")]
    Empty { file: String },
    #[error("{file}: {value:?} is not a sha256 (64 hex digits)")]
    NotSha256 { file: String, value: String },
}

impl Sha256Hex {
    /// Reads the first word of a hash file (`<hex>` or `<hex>  <name>`).
    pub fn parse_file(file: &str, text: &str) -> Result<Sha256Hex, HashFileError> {
        let word = text.split_whitespace().next().ok_or_else(|| HashFileError::Empty { file: file.to_string() })?;
        if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256Hex(word.to_ascii_lowercase()))
        } else {
            Err(HashFileError::NotSha256 { file: file.to_string(), value: word.chars().take(80).collect() })
        }
    }

    pub fn from_digest(d: &[u8]) -> Sha256Hex {
        Sha256Hex(hex::encode(d))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// sha256 of a file.
pub fn sha256_file(p: &std::path::Path) -> std::io::Result<Sha256Hex> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Sha256Hex::from_digest(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let h = "A".repeat(64);
        assert_eq!(Sha256Hex::parse_file("f", &format!("{h}\n")).expect("ok").as_str(), "a".repeat(64));
        assert!(Sha256Hex::parse_file("f", &format!("{h}  filesystem.squashfs\n")).is_ok());
        assert_eq!(Sha256Hex::parse_file("f", " \n"), Err(HashFileError::Empty { file: "f".into() }));
        let sha1 = "a".repeat(40);
        let e = Sha256Hex::parse_file("/initrd.hash", &sha1).expect_err("sha1");
        assert!(e.to_string().contains("/initrd.hash"));
    }
}
