//! Golden files: booter's tftp root for three CN descriptions, laid out
//! from a tiny fake PI tarball. `UPDATE_GOLDEN=1 cargo test -p booter-config
//! --test golden` rewrites `tests/golden/<case>/expected/`.

use std::fs;
use std::path::{Path, PathBuf};

use boot_params::networking::{check_hash, NetworkingJson};
use boot_params::{Cmdline, FetchSource, Mac, NodeConfig};
use booter_config::config;
use booter_config::layout::{InstallError, TftpRoot};

const STAMP: &str = "20260101T000000Z";

/// A PI tarball with tiny stand-ins for the real files.
fn fake_pi(dir: &Path, with_hash: bool) -> PathBuf {
    let top = format!("platform-{STAMP}");
    let mut files: Vec<(String, &[u8])> = vec![
        (format!("{top}/etc/version/platform"), b"20260101T000000Z\n"),
        (format!("{top}/etc/version/os-release"), b"TRITON_RELEASE=\"20260101T000000Z\"\n"),
        (format!("{top}/x86_64/vmlinuz"), b"kernel"),
        (format!("{top}/x86_64/initrd"), b"initrd"),
        (format!("{top}/x86_64/filesystem.squashfs"), b"squashfs"),
    ];
    if with_hash {
        files.push((format!("{top}/x86_64/initrd.hash"), b"0123\n"));
        files.push((format!("{top}/x86_64/filesystem.squashfs.hash"), b"4567\n"));
    }
    let path = dir.join(format!("platform-{STAMP}.tgz"));
    let gz = flate2::write::GzEncoder::new(fs::File::create(&path).expect("create"), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        t.append_data(&mut h, name, data).expect("append");
    }
    t.into_inner().expect("tar").finish().expect("gzip");
    path
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel)).expect("read_dir").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            walk(root, &r, out);
        } else {
            out.push(r);
        }
    }
}

/// Lays out the case; returns the root and its files.
fn layout(case: &str, with_hash: bool) -> (tempfile::TempDir, Vec<PathBuf>) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(case);
    let cfg = config::load(&golden.join("cn.toml")).expect("load").validate().expect("valid");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pi = fake_pi(tmp.path(), with_hash);
    let root = TftpRoot::new(tmp.path().join("tftpboot"));
    assert_eq!(root.install_platform(&pi).expect("install"), STAMP);
    root.write_all(&cfg).expect("layout");
    let mut files = Vec::new();
    walk(&root.dir, Path::new(""), &mut files);
    (tmp, files)
}

fn check_case(case: &str, with_hash: bool) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(case);
    let expected = golden.join("expected");
    let (tmp, files) = layout(case, with_hash);
    let root = tmp.path().join("tftpboot");
    // The whole tree (os/ included) is pinned as a listing; booter's own
    // files are pinned byte for byte.
    let tree: String = files.iter().map(|p| format!("{}\n", p.display())).collect();
    let mut got: Vec<(PathBuf, Vec<u8>)> = vec![(PathBuf::from("tree.txt"), tree.into_bytes())];
    for p in files.iter().filter(|p| !p.starts_with("os")) {
        got.push((p.clone(), fs::read(root.join(p)).expect("read")));
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let _ = fs::remove_dir_all(&expected);
        for (p, data) in &got {
            let dst = expected.join(p);
            fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
            fs::write(dst, data).expect("write");
        }
        eprintln!("UPDATED {}", expected.display());
        return;
    }
    let mut want_files = Vec::new();
    walk(&expected, Path::new(""), &mut want_files);
    let got_names: Vec<&PathBuf> = got.iter().map(|(p, _)| p).collect();
    assert_eq!(
        got_names,
        want_files.iter().collect::<Vec<_>>().iter().fold(Vec::new(), |mut v, p| {
            // tree.txt sorts first in `got`; keep the same order here.
            if p.as_os_str() == "tree.txt" {
                v.insert(0, *p);
            } else {
                v.push(*p);
            }
            v
        }),
        "{case}: file set differs (UPDATE_GOLDEN=1 to regenerate)"
    );
    for (p, data) in &got {
        let want = fs::read(expected.join(p)).expect("read expected");
        assert_eq!(
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&want),
            "{case}: {} differs (UPDATE_GOLDEN=1 to regenerate)",
            p.display()
        );
    }
    check_semantics(&root);
}

/// What we generate is what the CN side parses and accepts.
fn check_semantics(root: &Path) {
    let nc = NodeConfig::parse(&fs::read_to_string(root.join("extra/joysetup/node.config")).expect("node.config"));
    assert!(nc.warnings.is_empty(), "{:?}", nc.warnings);
    for e in fs::read_dir(root).expect("root").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(upper) = name.strip_prefix("boot.ipxe.01") else { continue };
        let text = fs::read_to_string(e.path()).expect("boot.ipxe");
        assert!(!text.ends_with('\n'), "booter writes no final newline");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#!ipxe");
        assert_eq!(*lines.last().expect("lines"), "boot");
        let kernel = lines[1].strip_prefix("kernel /os/").expect("relative kernel path");
        let (_, args) = kernel.split_once(' ').expect("args");
        let cmd = Cmdline::parse(args);
        let mac = cmd.bootif().expect("BOOTIF").expect("BOOTIF present");
        assert_eq!(hex::encode_upper(mac.0), upper);
        let ip = cmd.ip().expect("ip=").expect("static ip");
        assert!(matches!(cmd.fetch().expect("fetch="), Some(FetchSource::Http(_) | FetchSource::Tftp(_))));
        assert_eq!(cmd.get("boot"), Some("live"));
        let plain = upper.to_ascii_lowercase();
        let json = fs::read_to_string(root.join("bootfs").join(&plain).join("networking.json")).expect("json");
        let hash = fs::read_to_string(root.join("bootfs").join(&plain).join("networking.json.hash")).expect("hash");
        assert_eq!(hash.len(), 40, "hash is bare hex: {hash:?}");
        check_hash(json.as_bytes(), &hash).expect("hash matches");
        let n = NetworkingJson::parse(&json).expect("parses");
        assert_eq!(n.validate(), vec![], "validates");
        assert_eq!(n.admin_mac(), Some(mac));
        assert_eq!(n.vnics[0].mac, mac.to_string(), "admin vnic first");
        assert_eq!(n.vnics[0].ip.as_deref(), Some(ip.address.to_string().as_str()));
        assert_eq!(n.hostname.as_deref(), cmd.get("hostname"));
        for a in &n.aggregations {
            let want = a.macs.join(",");
            assert_eq!(cmd.get(&format!("{}_aggr", a.name)), Some(want.as_str()));
        }
        for t in &n.nictags {
            if let Some(v) = cmd.get(&format!("{}_nic", t.name)) {
                assert!(v == t.mac || Mac::parse(v) == Mac::parse(&t.mac), "{} {v} {}", t.name, t.mac);
            }
        }
    }
}

#[test]
fn admin_only_http() {
    check_case("admin-http", true);
}

#[test]
fn tftp_without_hash() {
    check_case("tftp", false);
}

#[test]
fn aggregation_external_serial_kargs() {
    check_case("aggr", true);
}

#[test]
fn platform_lands_where_sdcadm_puts_it() {
    let (_tmp, files) = layout("admin-http", true);
    for f in ["vmlinuz", "initrd", "filesystem.squashfs", "initrd.hash"] {
        let p = PathBuf::from(format!("os/{STAMP}/platform/x86_64/{f}"));
        assert!(files.contains(&p), "{} missing in {files:?}", p.display());
    }
    assert!(files.contains(&PathBuf::from(format!("os/{STAMP}/platform/etc/version/platform"))));
}

#[test]
fn bad_tarballs_say_what_is_wrong() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = TftpRoot::new(tmp.path().join("root"));
    let pi = fake_pi(tmp.path(), false);
    let renamed = tmp.path().join("platform-latest.tgz");
    fs::copy(&pi, &renamed).expect("copy");
    let e = root.install_platform(&renamed).expect_err("must fail");
    assert!(matches!(e, InstallError::BadName { .. }), "{e}");
    assert!(e.to_string().contains("YYYYMMDDTHHMMSSZ"), "{e}");
    // Two top directories.
    let two = tmp.path().join("two-20260101T000001Z.tgz");
    let gz = flate2::write::GzEncoder::new(fs::File::create(&two).expect("create"), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for name in ["platform-a/x86_64/vmlinuz", "other/x"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, &b"x"[..]).expect("append");
    }
    t.into_inner().expect("tar").finish().expect("gzip");
    let e = root.install_platform(&two).expect_err("must fail");
    assert!(matches!(e, InstallError::TopDir { .. }), "{e}");
    // Missing squashfs.
    let dir = tmp.path().join("platform-20260101T000002Z");
    fs::create_dir_all(dir.join("x86_64")).expect("mkdir");
    fs::write(dir.join("x86_64/vmlinuz"), "k").expect("write");
    fs::write(dir.join("x86_64/initrd"), "i").expect("write");
    let e = root.install_platform(&dir).expect_err("must fail");
    assert!(e.to_string().contains("x86_64/filesystem.squashfs is missing"), "{e}");
    // Installed twice.
    root.install_platform(&pi).expect("first");
    assert!(matches!(root.install_platform(&pi), Err(InstallError::Exists { .. })));
}
