//! Checks of the built platform's files: tarball layout as sdcadm and booter
//! expect it, version files, hashes, and what the squashfs and initrd hold.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use ci::platform::Platform;
use sha2::{Digest, Sha256};

fn sha256(p: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(p).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn tarball_has_the_layout_sdcadm_and_booter_use() {
    let p = Platform::locate().expect("platform");
    let stamp = read(&p.dir.join("etc/version/platform")).trim().to_string();
    assert!(stamp.len() == 16 && stamp.starts_with('2') && stamp.ends_with('Z'), "{stamp}");
    // install-platform.sh takes the stamp from the file name.
    let tgz = p.dir.parent().expect("out").join(format!("platform-{stamp}.tgz"));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&tgz).expect("tgz")).read_to_end(&mut raw).expect("gunzip");
    let mut names = BTreeSet::new();
    for e in tar::Archive::new(&raw[..]).entries().expect("entries") {
        let e = e.expect("entry");
        names.insert(e.path().expect("path").to_string_lossy().trim_end_matches('/').to_string());
    }
    let top: BTreeSet<&str> = names.iter().map(|n| n.split('/').next().unwrap_or("")).collect();
    assert_eq!(top, BTreeSet::from([format!("platform-{stamp}").as_str()]));
    for f in [
        "x86_64/vmlinuz",
        "x86_64/initrd",
        "x86_64/filesystem.squashfs",
        "x86_64/initrd.hash",
        "x86_64/filesystem.squashfs.hash",
        "etc/version/platform",
        "etc/version/os-release",
        "etc/version/gitstatus",
        "etc/version/packages",
        "etc/version/buildinfo.json",
    ] {
        assert!(names.contains(&format!("platform-{stamp}/{f}")), "missing {f} in {names:?}");
    }
}

#[test]
fn version_files_agree() {
    let p = Platform::locate().expect("platform");
    let stamp = read(&p.dir.join("etc/version/platform")).trim().to_string();
    let osr = read(&p.dir.join("etc/version/os-release"));
    assert!(osr.contains(&format!("TRITON_RELEASE=\"{stamp}\"")), "{osr}");
    assert!(osr.contains("VERSION_CODENAME=trixie"), "{osr}");
    let gs: serde_json::Value =
        serde_json::from_str(&read(&p.dir.join("etc/version/gitstatus"))).expect("gitstatus json");
    assert_eq!(gs[0]["rev"].as_str().map(str::len), Some(40), "{gs}");
    let pkgs = read(&p.dir.join("etc/version/packages"));
    let names: BTreeSet<&str> = pkgs.lines().filter_map(|l| l.split('\t').next()).collect();
    for want in ["zfsutils-linux", "lxc", "udev", "kmod", "nftables"] {
        assert!(names.contains(want), "package manifest lacks {want}");
    }
    for bad in ["zfs-dkms", "dkms", "gcc", "build-essential", "linux-headers-amd64"] {
        assert!(!names.contains(bad), "package manifest has {bad}");
    }
    let info = p.buildinfo().expect("buildinfo");
    assert_eq!(info["stamp"], stamp.as_str());
    assert!(names.contains(format!("linux-image-{}", info["kernel"].as_str().unwrap_or("?")).as_str()));
}

#[test]
fn hash_files_match_artifacts() {
    let p = Platform::locate().expect("platform");
    for f in ["initrd", "filesystem.squashfs"] {
        let want = read(&p.x86(&format!("{f}.hash")));
        assert_eq!(want, format!("{}\n", sha256(&p.x86(f))), "{f}.hash");
    }
}

#[test]
fn squashfs_holds_the_runtime_and_no_build_tools() {
    let p = Platform::locate().expect("platform");
    let out = Command::new("unsquashfs")
        .args(["-l", "-d", ""])
        .arg(p.x86("filesystem.squashfs"))
        .output()
        .expect("unsquashfs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = String::from_utf8_lossy(&out.stdout);
    let paths: BTreeSet<&str> = list.lines().map(str::trim).collect();
    let kernel = p.buildinfo().expect("buildinfo")["kernel"].as_str().unwrap_or("?").to_string();
    for want in [
        "/usr/sbin/triton-init".to_string(),
        format!("/usr/lib/modules/{kernel}/updates/dkms/zfs.ko"),
        format!("/usr/lib/modules/{kernel}/updates/dkms/spl.ko"),
        "/usr/sbin/zpool".into(),
        "/usr/bin/lxc-start".into(),
        "/usr/sbin/agetty".into(),
    ] {
        assert!(paths.contains(want.as_str()), "squashfs lacks {want}");
    }
    for p in &paths {
        let bad = p.starts_with("/usr/src/linux-headers")
            || p.starts_with("/var/lib/dkms")
            || p.starts_with("/var/lib/apt/lists/")
            || p.starts_with("/usr/share/man/")
            || p.starts_with("/usr/share/doc/")
            || p.starts_with("/usr/share/locale/")
            || p.starts_with("/usr/include/")
            || *p == "/usr/bin/gcc"
            || *p == "/usr/bin/cc"
            || *p == "/usr/sbin/dkms"
            || *p == "/etc/hostid"
            || *p == "/etc/machine-id"
            || p.starts_with("/etc/ssh/ssh_host_")
            || p.ends_with("/vmlinuz");
        assert!(!bad, "squashfs must not ship {p}");
    }
}

#[test]
fn initrd_is_our_init_with_stage1_modules_and_the_squashfs_hash() {
    let p = Platform::locate().expect("platform");
    let cpio = zstd::stream::decode_all(std::fs::File::open(p.x86("initrd")).expect("initrd")).expect("zstd");
    let entries = initramfs::cpio::read_newc(&cpio).expect("newc");
    let get = |n: &str| entries.iter().find(|(p, _, _)| p == n).map(|(_, m, d)| (*m, d.clone()));
    let (mode, init) = get("init").expect("/init");
    assert_eq!(mode & 0o777, 0o755);
    assert!(init.starts_with(b"\x7fELF"));
    let hash = get(initramfs::SQUASHFS_HASH_PATH).expect("pinned hash").1;
    assert_eq!(String::from_utf8_lossy(&hash).trim(), sha256(&p.x86("filesystem.squashfs")));
    let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    for m in [
        "virtio_net.ko",
        "e1000.ko",
        "e1000e.ko",
        "igb.ko",
        "ixgbe.ko",
        "i40e.ko",
        "bnxt_en.ko",
        "mlx5_core.ko",
        "tg3.ko",
        "vmxnet3.ko",
        "squashfs.ko",
        "overlay.ko",
    ] {
        let builtin = names.iter().any(|n| n.ends_with("modules.builtin"))
            && String::from_utf8_lossy(&entries.iter().find(|(n, _, _)| n.ends_with("modules.builtin")).expect("b").2)
                .contains(&format!("/{m}\n"));
        assert!(builtin || names.iter().any(|n| n.ends_with(&format!("/{m}"))), "initrd lacks {m}");
    }
    // Stage 1 needs nothing from the rootfs: no zfs, no lxc in the initrd.
    assert!(!names.iter().any(|n| n.ends_with("/zfs.ko")));
    assert!(get("usr/bin/busybox").is_some(), "rescue shell");
}
