//! A compute node as the tests boot it: booter's injected files (node.config
//! with a known root password, triton-networking.json with its hash) added
//! to the initrd, on QEMU's user network (guest 10.0.2.15/24, gateway
//! 10.0.2.2, DNS 10.0.2.3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::http::HttpServer;
use crate::inject::initrd_with_files;
use crate::platform::Platform;
use crate::qemu::{Vm, VmSpec};

/// The console root password of test CNs, and its node.config `root_shadow`.
pub const PASSWORD: &str = "triton-test";
pub const SHADOW: &str =
    "$6$tritonci$xuDjYU/6KX3NUapGihw3W.UYZCBTPjR3CKe6OCmWl35MlIHznEx6gPusz.jad.lj/v1NiC2OFO3H2LjufbEkJ0";

/// How long a TCG boot may take to reach a given event.
pub const BOOT: Duration = Duration::from_secs(300);

/// booter's networking.json for a CN whose admin NIC is `mac` on QEMU's
/// user network.
pub fn slirp_networking(mac: &str) -> Value {
    json!({
        "nictags": [{"name": "admin", "mac": mac, "mtu": 1500, "uuid": "f5a1a6f0-0a3f-4b8c-9c2e-6d5a4c1b2a10"}],
        "admin_tag": "admin",
        "resolvers": ["10.0.2.3"],
        "routes": {},
        "vnics": [{
            "belongs_to_type": "server", "mac": mac, "ip": "10.0.2.15", "netmask": "255.255.255.0",
            "gateway": "10.0.2.2", "vlan_id": 0, "nic_tag": "admin", "resolvers": ["10.0.2.3"],
            "nic_tags_provided": ["admin"], "primary": true
        }],
        "aggregations": [],
        "dns_domain": "ci.example", "datacenter_name": "ci-1"
    })
}

/// SHA-1 hex, as booter writes `networking.json.hash`.
pub fn sha1_hex(b: &[u8]) -> String {
    Sha1::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// One CN's boot inputs.
#[derive(Debug)]
pub struct Cn {
    pub name: String,
    pub spec: VmSpec,
    /// Files iPXE would add to the initrd (path, contents).
    pub files: Vec<(String, Vec<u8>)>,
    dir: tempfile::TempDir,
}

impl Cn {
    /// A CN netbooted from `http` with node.config (root password
    /// [`PASSWORD`]) and, when `networking` is given, networking.json + hash.
    pub fn new(p: &Platform, http: &HttpServer, name: &str, mac: &str, networking: Option<&Value>) -> Cn {
        let spec = VmSpec::netboot(p, mac, "virtio-net-pci", &http.guest_url("x86_64/filesystem.squashfs"));
        let mut files = vec![(
            "etc/node.config".to_string(),
            format!("datacenter_name='ci-1'\ndns_domain='ci.example'\nroot_shadow='{SHADOW}'\n").into_bytes(),
        )];
        if let Some(n) = networking {
            let text = n.to_string().into_bytes();
            files.push(("etc/triton-networking.json.hash".into(), sha1_hex(&text).into_bytes()));
            files.push(("etc/triton-networking.json".into(), text));
        }
        let dir = tempfile::Builder::new().prefix(&format!("cn-{name}-")).tempdir().expect("tempdir");
        Cn { name: name.into(), spec, files, dir }
    }

    /// Replaces (or adds) an injected file.
    pub fn set_file(&mut self, path: &str, data: impl Into<Vec<u8>>) {
        self.files.retain(|(p, _)| p != path);
        self.files.push((path.into(), data.into()));
    }

    /// A scratch directory that lives as long as the CN.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a sparse raw disk of `gib` GiB (kept across boots of this CN).
    pub fn add_disk(&mut self, gib: u64) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(format!("disk{}.img", self.spec.disks.len()));
        let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.set_len(gib << 30).context("sizing the disk")?;
        self.spec.disks.push(path.clone());
        Ok(path)
    }

    /// Boots it (a fresh QEMU process on the same disks).
    pub fn boot(&mut self, boot_no: u32) -> anyhow::Result<Vm> {
        let initrd = self.dir.path().join("initrd");
        let files: Vec<(&str, &[u8])> = self.files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
        let base = self.base_initrd();
        initrd_with_files(&base, &files, &initrd)?;
        let mut spec = self.spec.clone();
        spec.initrd = initrd;
        Vm::start(&format!("{}#{boot_no}", self.name), &spec)
    }

    fn base_initrd(&self) -> PathBuf {
        // The platform's initrd, as set by VmSpec::netboot.
        self.spec.initrd.clone()
    }
}

/// Shell commands (one per console line) that create the zones pool on the
/// first virtio disk the way server setup lays it out: legacy mounts for
/// var/opt/config, cores, a swap zvol, the `.system_pool` marker, and the
/// setup-state file marking setup complete. `on_opt` runs while zones/opt
/// is mounted at `/run/o` (e.g. to install a service manifest).
pub fn create_pool_commands(on_opt: &[&str]) -> Vec<String> {
    let mut cmds: Vec<String> = [
        "zpool create -f -O atime=off -O mountpoint=/zones zones /dev/disk/by-id/virtio-triton-d0",
        "touch /zones/.system_pool",
        "for d in var opt config; do zfs create -o mountpoint=legacy zones/$d; done",
        "zfs create -o compression=lz4 -o mountpoint=none zones/cores",
        "zfs create -o quota=1g -o mountpoint=/zones/global/cores zones/cores/global",
        "zfs create -V 128m zones/swap",
        "mkdir -p /run/o && mount -t zfs zones/opt /run/o",
        "mkdir -p /run/o/triton/config",
        "echo '{\"complete\":true,\"current_state\":\"setup_complete\"}' > /run/o/triton/config/triton-setup-state.json",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    cmds.extend(on_opt.iter().map(|c| c.to_string()));
    cmds.push("umount /run/o".into());
    cmds
}
