//! The two binaries end to end, as joysetup.sh drives them: disklayout on a fake sysfs tree,
//! then mkzpool with a recording stand-in for zpool/zfs.

use std::fs;
use std::path::Path;
use std::process::Command;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("relative path has a parent")).expect("mkdir");
    fs::write(p, text).expect("write");
}

fn disk(root: &Path, name: &str, sectors: u64) {
    write(root, &format!("sys/block/{name}/size"), &format!("{sectors}\n"));
    write(root, &format!("sys/block/{name}/queue/rotational"), "1\n");
    write(root, &format!("sys/block/{name}/dev"), "254:0\n");
}

#[test]
fn disklayout_then_mkzpool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "proc/self/mountinfo", "22 1 0:20 / / rw - overlay overlay rw\n");
    for name in ["vda", "vdb", "vdc"] {
        disk(root, name, 41_943_040); // 20 GiB
    }
    disk(root, "sda", 15_728_640);
    write(root, "sys/block/sda/removable", "1\n");
    fs::create_dir_all(root.join("sys/block/zd0")).expect("mkdir");

    let out = Command::new(env!("CARGO_BIN_EXE_disklayout"))
        .args(["--root", root.to_str().expect("utf-8 path"), "-s 0"])
        .output()
        .expect("run disklayout");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not using sda: removable medium"));
    let json = String::from_utf8(out.stdout).expect("utf-8");
    let v: serde_json::Value = serde_json::from_str(&json).expect("disklayout prints JSON");
    assert_eq!(v["vdevs"][0]["type"], "raidz");
    assert_eq!(v["capacity"], 2 * 41_943_040u64 * 512);
    let pool_json = root.join("pool.json");
    fs::write(&pool_json, &json).expect("write pool.json");

    // A stand-in for zpool and zfs: log argv, answer "no" to "mounted".
    let log = root.join("zfs.log");
    let fake = root.join("fake-zfs");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> {}\n[ \"$1\" = get ] && echo no\nexit 0\n",
            log.display()
        ),
    )
    .expect("write fake");
    fs::copy(&fake, root.join("zpool")).expect("copy");
    fs::copy(&fake, root.join("zfs")).expect("copy");
    #[cfg(unix)]
    for tool in ["zpool", "zfs"] {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join(tool), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mkzpool = |flags: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mkzpool"))
            .args(["--root", root.to_str().expect("utf-8 path")])
            .args(flags)
            .args(["zones", pool_json.to_str().expect("utf-8 path")])
            .env("MKZPOOL_ZPOOL", root.join("zpool"))
            .env("MKZPOOL_ZFS", root.join("zfs"))
            .output()
            .expect("run mkzpool")
    };

    // joysetup.sh first asks for a bootable pool; that fails cleanly and runs nothing.
    let out = mkzpool(&["-B", "-f"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retry without -B"));
    assert!(!log.exists());

    fs::create_dir_all(root.join("zones")).expect("pool mountpoint");
    let out = mkzpool(&["-f"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(root.join("zones/.system_pool").is_file(), "the system pool marker");
    let ran = fs::read_to_string(&log).expect("log");
    assert_eq!(
        ran.lines().collect::<Vec<_>>(),
        [
            "zpool create -f -O xattr=sa -O acltype=posix zones raidz /dev/vda /dev/vdb /dev/vdc",
            "zfs get -H -o value mounted zones",
            "zfs mount zones",
            "zfs get -H -o value mountpoint zones",
        ]
    );
}

#[test]
fn disklayout_failure_goes_to_stderr_with_nothing_on_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "proc/self/mountinfo", "");
    disk(dir.path(), "vda", 41_943_040);
    let out = Command::new(env!("CARGO_BIN_EXE_disklayout"))
        .args(["--root", dir.path().to_str().expect("utf-8 path"), "-e", "vda"])
        .output()
        .expect("run disklayout");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("every usable disk is excluded (vda)"), "{err}");
}
