//! Stage-2 node identity, with every path under a root passed in so tests
//! run against a tempdir: `/etc/hostid` from the SMBIOS UUID, the hostname,
//! and the root password from node.config.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use boot_params::identity;

/// Writes `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("triton-tmp");
    {
        let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data).with_context(|| format!("writing {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The server UUID (SmartOS form) from `<sys>/class/dmi/id/product_uuid`.
pub fn server_uuid(sys: &Path) -> Option<String> {
    fs::read_to_string(sys.join("class/dmi/id/product_uuid")).ok().and_then(|u| identity::smartos_uuid(&u))
}

/// Writes `<root>/etc/hostid` for `uuid`; returns the hostid as 8 hex digits.
pub fn write_hostid(root: &Path, uuid: &str) -> anyhow::Result<String> {
    let b = identity::hostid_bytes(uuid);
    write_atomic(&root.join("etc/hostid"), &b, 0o644)?;
    Ok(format!("{:08x}", u32::from_le_bytes(b)))
}

/// Sets the root password hash in `<root>/etc/shadow`. Rejects values that
/// are not a single crypt(3) field, leaving the file untouched.
pub fn set_root_shadow(root: &Path, hash: &str) -> anyhow::Result<()> {
    if hash.is_empty() || hash.contains([':', '\n', '\r']) || !(hash.starts_with('$') || hash == "*" || hash == "!") {
        anyhow::bail!("root_shadow in node.config is not a crypt(3) hash; root stays locked");
    }
    let p = root.join("etc/shadow");
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let mut found = false;
    let out: String = text
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(':').collect();
            if f.first() == Some(&"root") && f.len() >= 2 {
                found = true;
                f[1] = hash;
            }
            format!("{}\n", f.join(":"))
        })
        .collect();
    anyhow::ensure!(found, "no root entry in {}", p.display());
    write_atomic(&p, out.as_bytes(), 0o640)
}

/// Applies the hostname (kernel and `<root>/etc/hostname`).
pub fn set_hostname(root: &Path, name: &str, kernel: bool) -> anyhow::Result<()> {
    if kernel {
        nix::unistd::sethostname(name).with_context(|| format!("sethostname {name}"))?;
    }
    write_atomic(&root.join("etc/hostname"), format!("{name}\n").as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostid_file_is_le_crc() {
        let d = tempfile::tempdir().expect("tmp");
        fs::create_dir_all(d.path().join("etc")).expect("mkdir");
        let h = write_hostid(d.path(), "44454c4c-3600-1030-8036-b5c04f4e3032").expect("hostid");
        let b = fs::read(d.path().join("etc/hostid")).expect("read");
        assert_eq!(b.len(), 4);
        assert_eq!(format!("{:08x}", u32::from_le_bytes([b[0], b[1], b[2], b[3]])), h);
    }

    #[test]
    fn uuid_from_sysfs() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("class/dmi/id");
        fs::create_dir_all(&p).expect("mkdir");
        fs::write(p.join("product_uuid"), "4C4C4544-0036-3010-8036-B5C04F4E3032\n").expect("w");
        assert_eq!(server_uuid(d.path()).as_deref(), Some("44454c4c-3600-1030-8036-b5c04f4e3032"));
    }

    #[test]
    fn root_shadow_replaced_only_when_valid() {
        let d = tempfile::tempdir().expect("tmp");
        fs::create_dir_all(d.path().join("etc")).expect("mkdir");
        let orig = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        fs::write(d.path().join("etc/shadow"), orig).expect("w");
        assert!(set_root_shadow(d.path(), "plain:text").is_err());
        assert!(set_root_shadow(d.path(), "password").is_err());
        assert_eq!(fs::read_to_string(d.path().join("etc/shadow")).expect("r"), orig);
        set_root_shadow(d.path(), "$6$salt$hash").expect("set");
        assert_eq!(
            fs::read_to_string(d.path().join("etc/shadow")).expect("r"),
            "root:$6$salt$hash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
        );
    }
}

/// Where the headnode's setup scripts and tools look for this node's config.
pub const USR_TRITON_CONFIG: &str = "usr/triton/config";
/// The persistent config directory on a set-up node (`zones/opt`).
pub const OPT_TRITON_CONFIG: &str = "opt/triton/config";

/// Makes `/usr/triton/config` what the setup scripts expect: on a set-up
/// node (its `/opt/triton/config` exists on the pool) a symlink to it, as
/// joysetup leaves it; otherwise a directory holding a copy of booter's
/// `/etc/node.config`, which joysetup later moves onto the pool. Returns what
/// it did, for the boot log.
pub fn triton_config(root: &Path) -> anyhow::Result<String> {
    let usr = root.join(USR_TRITON_CONFIG);
    let opt = root.join(OPT_TRITON_CONFIG);
    if let Some(parent) = usr.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let link_target = Path::new("/").join(OPT_TRITON_CONFIG);
    if opt.is_dir() {
        if fs::read_link(&usr).is_ok_and(|t| t == link_target) {
            return Ok(format!("/{USR_TRITON_CONFIG} -> {}", link_target.display()));
        }
        match fs::symlink_metadata(&usr) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&usr),
            Ok(_) => fs::remove_file(&usr),
            Err(_) => Ok(()),
        }
        .with_context(|| format!("replacing {}", usr.display()))?;
        std::os::unix::fs::symlink(&link_target, &usr).with_context(|| format!("linking {}", usr.display()))?;
        return Ok(format!("/{USR_TRITON_CONFIG} -> {}", link_target.display()));
    }
    if fs::symlink_metadata(&usr).is_ok_and(|m| !m.is_dir()) {
        fs::remove_file(&usr).with_context(|| format!("replacing {}", usr.display()))?;
    }
    fs::create_dir_all(&usr).with_context(|| format!("creating {}", usr.display()))?;
    match fs::read(root.join("etc/node.config")) {
        Ok(data) => {
            write_atomic(&usr.join("node.config"), &data, 0o644)?;
            Ok(format!("/{USR_TRITON_CONFIG}/node.config from /etc/node.config"))
        }
        Err(_) => Ok(format!("/{USR_TRITON_CONFIG} without node.config (booter gave none)")),
    }
}

#[cfg(test)]
mod triton_config_tests {
    use super::*;

    #[test]
    fn unsetup_copies_node_config_then_setup_links_to_opt() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        fs::create_dir_all(root.join("etc")).expect("etc");
        fs::write(root.join("etc/node.config"), "datacenter_name='dc1'\n").expect("w");
        let what = triton_config(root).expect("unsetup");
        assert!(what.contains("from /etc/node.config"), "{what}");
        assert_eq!(
            fs::read_to_string(root.join("usr/triton/config/node.config")).expect("r"),
            "datacenter_name='dc1'\n"
        );
        // Idempotent.
        triton_config(root).expect("again");

        fs::create_dir_all(root.join("opt/triton/config")).expect("opt");
        let what = triton_config(root).expect("setup");
        assert_eq!(what, "/usr/triton/config -> /opt/triton/config");
        assert_eq!(fs::read_link(root.join("usr/triton/config")).expect("link"), Path::new("/opt/triton/config"));
        assert_eq!(triton_config(root).expect("again"), what);
    }

    #[test]
    fn no_node_config_still_makes_the_directory() {
        let d = tempfile::tempdir().expect("tempdir");
        let what = triton_config(d.path()).expect("ok");
        assert!(what.contains("without node.config"), "{what}");
        assert!(d.path().join("usr/triton/config").is_dir());
    }

    #[test]
    fn a_stale_symlink_without_opt_becomes_a_directory() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join("usr/triton")).expect("mk");
        std::os::unix::fs::symlink("/opt/triton/config", d.path().join("usr/triton/config")).expect("ln");
        triton_config(d.path()).expect("ok");
        assert!(fs::symlink_metadata(d.path().join("usr/triton/config")).expect("m").is_dir());
    }
}
