//! Reproducible `newc` (SVR4, no CRC) cpio writer, the format the kernel
//! unpacks into its initramfs.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An in-memory tree of entries keyed by path (no leading `/`). Writing it is
/// deterministic: paths are sorted, parents are created implicitly, owners are
/// root and every mtime is the given epoch.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    fn norm(path: &str) -> String {
        path.trim_start_matches('/').trim_end_matches('/').to_string()
    }

    /// Adds (or replaces) an entry, creating missing parent directories (0755).
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = Archive::norm(path);
        let mut parent = String::new();
        for comp in path.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.entries.entry(parent.clone()).or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(path, entry);
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.add(path, Entry::File { mode, data });
    }

    pub fn dir(&mut self, path: &str) {
        self.add(path, Entry::Dir { mode: 0o755 });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, Entry::Symlink { target: target.to_string() });
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&Archive::norm(path))
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Sum of file payload sizes.
    pub fn payload_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Writes the archive in `newc` format, every mtime set to `mtime`.
    pub fn write<W: Write>(&self, mut w: W, mtime: u32) -> io::Result<W> {
        for (ino, (path, entry)) in (1u32..).zip(self.entries.iter()) {
            let (mode, data, rmaj, rmin, nlink): (u32, &[u8], u32, u32, u32) = match entry {
                Entry::Dir { mode } => (S_IFDIR | (mode & 0o7777), &[], 0, 0, 2),
                Entry::File { mode, data } => (S_IFREG | (mode & 0o7777), data, 0, 0, 1),
                Entry::Symlink { target } => (S_IFLNK | 0o777, target.as_bytes(), 0, 0, 1),
                Entry::CharDev { mode, major, minor } => (S_IFCHR | (mode & 0o7777), &[], *major, *minor, 1),
            };
            write_header(&mut w, ino, mode, nlink, mtime, data.len(), rmaj, rmin, path)?;
            w.write_all(data)?;
            pad4(&mut w, data.len())?;
        }
        write_header(&mut w, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!")?;
        Ok(w)
    }
}

#[allow(clippy::too_many_arguments)]
fn write_header<W: Write>(
    w: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    rdevmajor: u32,
    rdevminor: u32,
    name: &str,
) -> io::Result<()> {
    let size = u32::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: file over 4 GiB")))?;
    let namesize = name.len() + 1;
    write!(
        w,
        "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}\
         {dmaj:08X}{dmin:08X}{rdevmajor:08X}{rdevminor:08X}{namesize:08X}{check:08X}",
        uid = 0,
        gid = 0,
        dmaj = 0,
        dmin = 0,
        check = 0,
    )?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad4(w, 110 + namesize)
}

fn pad4<W: Write>(w: &mut W, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..pad])
}

/// Appends a second, uncompressed archive of `files` (path, mode, contents)
/// to an initrd, as iPXE's `module` lines and standalone images do: the
/// kernel unpacks concatenated archives in order.
pub fn append_files(mut initrd: Vec<u8>, files: &[(&str, u32, Vec<u8>)]) -> io::Result<Vec<u8>> {
    while !initrd.len().is_multiple_of(4) {
        initrd.push(0);
    }
    let mut extra = Archive::new();
    for (path, mode, data) in files {
        extra.file(path, *mode, data.clone());
    }
    extra.write(initrd, 0)
}

/// Reads a `newc` archive back (used by tests and by `image` to list an initrd).
pub fn read_newc(mut buf: &[u8]) -> io::Result<Vec<(String, u32, Vec<u8>)>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut out = Vec::new();
    let mut consumed = 0usize;
    loop {
        if buf.len() < 110 || &buf[..6] != b"070701" {
            return Err(bad("not a newc header"));
        }
        let field = |i: usize| -> io::Result<usize> {
            let s = std::str::from_utf8(&buf[6 + i * 8..14 + i * 8]).map_err(|_| bad("hex"))?;
            usize::from_str_radix(s, 16).map_err(|_| bad("hex"))
        };
        let mode = field(1)? as u32;
        let size = field(6)?;
        let namesize = field(11)?;
        let name_end = 110 + namesize;
        if buf.len() < name_end {
            return Err(bad("truncated name"));
        }
        let name = String::from_utf8_lossy(&buf[110..name_end - 1]).into_owned();
        let data_start = name_end + (4 - (consumed + name_end) % 4) % 4;
        let data_end = data_start + size;
        if buf.len() < data_end {
            return Err(bad("truncated data"));
        }
        if name == "TRAILER!!!" {
            return Ok(out);
        }
        out.push((name, mode, buf[data_start..data_end].to_vec()));
        let next = data_end + (4 - (consumed + data_end) % 4) % 4;
        let next = next.min(buf.len());
        consumed += next;
        buf = &buf[next..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_parents() {
        let mut a = Archive::new();
        a.file("/usr/lib/modules/x/a.ko", 0o644, b"abc".to_vec());
        a.symlink("bin/sh", "busybox");
        a.add("dev/console", Entry::CharDev { mode: 0o600, major: 5, minor: 1 });
        let bytes = a.write(Vec::new(), 42).expect("write");
        assert_eq!(bytes.len() % 4, 0);
        let read = read_newc(&bytes).expect("read");
        let names: Vec<_> = read.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "usr",
                "usr/lib",
                "usr/lib/modules",
                "usr/lib/modules/x",
                "usr/lib/modules/x/a.ko"
            ]
        );
        let ko = read.iter().find(|(n, _, _)| n.ends_with("a.ko")).expect("ko");
        assert_eq!(ko.1, 0o100644);
        assert_eq!(ko.2, b"abc");
        let sh = read.iter().find(|(n, _, _)| n == "bin/sh").expect("sh");
        assert_eq!(sh.2, b"busybox");
    }

    #[test]
    fn appended_archive_follows_aligned() {
        let out = append_files(b"abcde".to_vec(), &[("etc/node.config", 0o644, b"x='1'".to_vec())]).expect("append");
        assert_eq!(&out[..8], b"abcde\0\0\0");
        let entries = read_newc(&out[8..]).expect("newc");
        assert_eq!(entries.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["etc", "etc/node.config"]);
    }

    #[test]
    fn deterministic_regardless_of_insert_order() {
        let mut a = Archive::new();
        a.file("b", 0o644, vec![1]);
        a.file("a/c", 0o755, vec![2, 3]);
        let mut b = Archive::new();
        b.file("a/c", 0o755, vec![2, 3]);
        b.file("b", 0o644, vec![1]);
        assert_eq!(a.write(Vec::new(), 7).expect("a"), b.write(Vec::new(), 7).expect("b"));
    }

    #[test]
    fn header_matches_gnu_cpio_layout() {
        let mut a = Archive::new();
        a.file("x", 0o644, b"hi".to_vec());
        let bytes = a.write(Vec::new(), 0x10).expect("write");
        let hdr = std::str::from_utf8(&bytes[..110]).expect("ascii");
        assert!(hdr.starts_with("07070100000001000081A4"), "{hdr}");
        // name "x\0" at 110..112, padded to 112 (already aligned), then data "hi", pad to 116
        assert_eq!(&bytes[110..112], b"x\0");
        assert_eq!(&bytes[112..114], b"hi");
        assert_eq!(&bytes[114..116], &[0, 0]);
    }
}
