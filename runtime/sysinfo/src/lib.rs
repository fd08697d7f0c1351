//! `sysinfo` for a Linux CN: the JSON object ur-agent publishes, CNAPI
//! stores (`updateFromSysinfo`) and the headnode setup scripts read
//! (`sysinfo | json 'MiB of Memory'`, contracts 5.3 and 6).
//!
//! Pure over its inputs: [`collect`] reads files below the roots in
//! [`HostPaths`] (so tests run against a tempdir) and takes the output of
//! `/usr/bin/triton-pool status` as an already-read string. Nothing here
//! fails: a missing or unreadable input leaves its keys out (or at the
//! default named below) and adds a line to [`Sysinfo::warnings`], which is
//! not part of the JSON.
//!
//! # Keys, in SmartOS's order, and where SmartOS and linux-live differ
//!
//! SmartOS's `sysinfo` and linux-live's Node `sysinfo` disagree on names and
//! types (contracts 10.6). CNAPI tolerates either type; it reads only the
//! SmartOS names. We follow SmartOS in names *and* types everywhere, because
//! CNAPI, the workflows and the headnode scripts were written against it and
//! our agents are our own (no linuxcn Node agent reads this output).
//!
//! | key | source | SmartOS / linux-live | ours |
//! |---|---|---|---|
//! | `Live Image` | `TRITON_RELEASE` in `/usr/lib/os-release` (what the image builder writes), else `/etc/os-release` | same | same; omitted if absent |
//! | `System Type` | fixed | `SunOS` / `Linux` | `"Linux"` (workflows skip SmartOS-only steps on it) |
//! | `Boot Time` | `btime` in `/proc/stat` | string / number | string of seconds (SmartOS) |
//! | `Datacenter Name` | node.config `datacenter_name`, else networking.json `datacenter_name` | SmartOS: config; linux-live: node.config | node.config first |
//! | `SDC Version` | fixed | `"7.0"` both | `"7.0"` |
//! | `Manufacturer`, `Product` | DMI `sys_vendor`, `product_name` | same names | same |
//! | `Serial Number`, `SKU Number`, `HW Version`, `HW Family` | DMI `product_serial`, `product_sku`, `product_version`, `product_family` | linux-live: `Serial_Number`, `SKU_Number`, `HW_Version`, `HW_Family` | SmartOS names (spaces); each omitted when empty or unreadable |
//! | `Setup` | `complete` in the setup-state file (contracts 5.2) | string `"true"`/`"false"` / boolean | string (SmartOS; CNAPI calls `.toString()` and compares to `'true'`); `"false"` when the file is missing or unreadable |
//! | `VM Capable`, `Bhyve Capable`, `HVM API` | fixed | booleans | `false` (no KVM/bhyve brands on Linux CNs) |
//! | `CPU Type` | first `model name` in `/proc/cpuinfo` | same | same |
//! | `CPU Virtualization` | `vmx`/`svm` in the cpuinfo `flags`, else `none` | same | same |
//! | `CPU Physical Cores` | distinct `physical id`s in cpuinfo (sockets, as `psrinfo -p`), at least 1 | number both | number |
//! | `Admin NIC Tag` | networking.json `admin_tag`, default `admin` | same | same |
//! | `Admin IP` | networking.json: the IP of the vnic with the admin tag; else the address of `ip=` on the command line | SmartOS: admin vnic; linux-live: `$ADMIN_IP`/`ip=` | networking.json first; omitted if neither |
//! | `UUID` | DMI `product_uuid` through [`boot_params::identity::smartos_uuid`] | SmartOS smbios order / linux-live byte-swapped dmidecode | the shared identity rule (same value SmartOS prints; `/etc/hostid` uses it too); omitted (with a warning) for a missing/all-zero UUID |
//! | `Hostname` | `/proc/sys/kernel/hostname` (init set it); if empty, `(none)` or `localhost`: the identity rule (cmdline `hostname=`, node.config `hostname`, admin MAC with dashes) | same | same |
//! | `CPU Total Cores` | number of `processor` entries in cpuinfo (threads) | number both | number |
//! | `MiB of Memory` | `MemTotal` in `/proc/meminfo` / 1024 | string / number | string (SmartOS; CNAPI `parseInt`s it, joysetup reads it with `json`) |
//! | `Zpool` | `pool` of `triton-pool status` when `imported` is not null | same | same; omitted when no pool is imported or the tool failed |
//! | `Disks` | `/sys/block/<dev>/size` (512-byte sectors) → `{"Size in GB": n}` (decimal GB, rounded); what disklayout does not count as a disk (loop, ram, zram, zd zvols, sr, fd, nbd, md, dm-, mtdblock) skipped | SmartOS: all disks; linux-live: lsblk minus loop/zvol | as linux-live, from sysfs |
//! | `Boot Parameters` | every `key=value` word of `/proc/cmdline` (last one wins, quotes removed), values strings | linux-live calls it `Boot Params` and rewrites `ip`/`BOOTIF` into `admin_ip`/`admin_netmask`/`admin_mac` | SmartOS name, raw values (CNAPI reads `headnode`, ur reads `rabbitmq` here); bare words without `=` are left out |
//! | `Network Interfaces` | physical links (`/sys/class/net/<if>/device` exists): `address` (or `bonding_slave/perm_hwaddr` for a bond member, whose `address` is the bond's), `operstate` | same shape both | `{"MAC Address", "ip4addr", "Link Status", "NIC Names"}`; see below |
//! | `Virtual Network Interfaces` | networking.json vnics whose MAC is on a non-physical link (the macvlans init creates) | SmartOS: VNICs; linux-live: always `{}` | `{"MAC Address", "ip4addr", "Link Status", "Host Interface", "VLAN"}` (VLAN as a string) |
//! | `Link Aggregations` | networking.json `aggregations` whose bond exists in sysfs (`bonding/slaves`) | same shape | `{"LACP mode", "Interfaces"}` |
//!
//! `Network Interfaces` details: `Link Status` is `up`, `down` (`down`,
//! `lowerlayerdown`, `notpresent`) or `unknown`. `ip4addr` is the
//! *configured* address (a networking.json vnic with this MAC and no VLAN,
//! or `ip=` for the admin NIC), not a netlink observation; `""` when none,
//! as SmartOS prints. `NIC Names` lists the networking.json `nictags` whose
//! `mac` is this NIC's MAC; when no NIC carries the admin tag (no
//! networking.json, or the tag is on an aggregation), the admin tag goes on
//! the NIC with the admin MAC (`admin_nic=`, else `BOOTIF=`) so ur's
//! `adminNicFromSysinfo` finds it. Tags provided by an aggregation are not
//! copied onto its members.
//!
//! Not produced (no source on this platform, or nothing reads them):
//! `Headnode ID`, `Bhyve Max Vcpus`, `CPU Socket Count`/`Core Count`/
//! `Online Count`/`Count`, `Psrinfo`, `SDC Agents` (agents are not installed
//! as Node modules here), `CN Agent IP`/`Port`, `Zpool Recovery`.
//!
//! Pool details (only while a pool is imported; from `zpool list -Hpv -P` and
//! `zfs get creation,encryption`, see [`pool_keys`]): `Zpool Size in GiB`
//! (number), `Zpool Creation` (epoch seconds, number; CNAPI's `created`),
//! `Zpool Disks` (comma-separated string as SmartOS, linux-live printed an
//! array), `Zpool Profile` (SmartOS's name; linux-live printed `Profile`),
//! `Zpool Encrypted` (boolean).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use boot_params::{identity, Cmdline, Mac, NetworkingJson, NodeConfig};
use serde::{Deserialize, Serialize};

/// Where [`collect`] reads from. Absolute paths live in [`HostPaths::real`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// sysfs root (`/sys`): `class/dmi/id/*`, `class/net/*`, `block/*`.
    pub sys: PathBuf,
    /// procfs root (`/proc`): `meminfo`, `cpuinfo`, `cmdline`, `stat`, `sys/kernel/hostname`.
    pub proc: PathBuf,
    /// os-release files holding `TRITON_RELEASE`, first with the key wins.
    pub os_release: Vec<PathBuf>,
    /// booter's `/etc/triton-networking.json`.
    pub networking_json: PathBuf,
    /// node.config copies, first readable wins.
    pub node_config: Vec<PathBuf>,
    /// The setup-state file (`{"complete": bool, ...}`).
    pub setup_state: PathBuf,
    /// The stdout of `/usr/bin/triton-pool status`, if it ran and succeeded.
    pub pool_status: Option<String>,
    /// Details of the imported pool (from `zpool list` / `zfs get`), if read.
    pub pool_details: Option<PoolDetails>,
}

/// The outputs [`pool_details`] parses: `zpool list -Hpv -P -o name,size <pool>`
/// and `zfs get -Hp -o property,value creation,encryption <pool>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolDetails {
    pub zpool_list: String,
    pub zfs_get: String,
}

/// The pool keys SmartOS prints, derived from [`PoolDetails`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolKeys {
    pub size_gib: Option<u64>,
    pub disks: Vec<String>,
    pub profile: Option<String>,
    pub creation: Option<u64>,
    pub encrypted: Option<bool>,
}

/// Disk name of a vdev path: `/dev/sda1` → `sda`, `/dev/nvme0n1p1` → `nvme0n1`,
/// `/dev/disk/by-id/x-part1` → `x`.
fn disk_of(dev: &str) -> String {
    let name = dev.rsplit('/').next().unwrap_or(dev);
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    if let Some(i) = name.rfind("-part") {
        if digits(&name[i + 5..]) {
            return name[..i].to_string();
        }
    }
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        return match name.rfind('p') {
            Some(i) if digits(&name[i + 1..]) && name[..i].ends_with(|c: char| c.is_ascii_digit()) => {
                name[..i].to_string()
            }
            _ => name.to_string(),
        };
    }
    match name.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "" => name.to_string(),
        t => t.to_string(),
    }
}

/// Parses the pool commands' output: size in GiB (rounded down), the data
/// disks (comma list in SmartOS; no cache/log/spare devices), the profile
/// (`mirror`, `raidz`, `raidz2`, `raidz3` or `striped`), the creation time
/// (epoch seconds) and whether the root dataset is encrypted.
pub fn pool_keys(d: &PoolDetails) -> PoolKeys {
    let mut k = PoolKeys::default();
    let mut section = "data";
    for (i, line) in d.zpool_list.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if i == 0 {
            k.size_gib = cols.get(1).and_then(|v| v.trim().parse::<u64>().ok()).map(|b| b >> 30);
            continue;
        }
        let Some(name) = cols.iter().map(|c| c.trim()).find(|c| !c.is_empty()) else { continue };
        match name {
            "cache" | "logs" | "log" | "spare" | "spares" | "special" | "dedup" => {
                section = "other";
                continue;
            }
            _ => {}
        }
        if section != "data" {
            continue;
        }
        if let Some(kind) = ["raidz3", "raidz2", "raidz1", "mirror"].iter().find(|p| name.starts_with(*p)) {
            let p = if *kind == "raidz1" { "raidz" } else { kind };
            if k.profile.is_none() {
                k.profile = Some(p.to_string());
            }
        } else if name.starts_with('/') {
            k.disks.push(disk_of(name));
        }
    }
    if k.profile.is_none() && !k.disks.is_empty() {
        k.profile = Some("striped".into());
    }
    for line in d.zfs_get.lines() {
        let mut it = line.split('\t');
        match (it.next(), it.next()) {
            (Some("creation"), Some(v)) => k.creation = v.trim().parse().ok(),
            (Some("encryption"), Some(v)) => k.encrypted = Some(v.trim() != "off" && !v.trim().is_empty()),
            _ => {}
        }
    }
    k
}

/// The setup-state file on a Linux CN (joysetup, agentsetup, init and ur agree).
pub const SETUP_STATE_FILE: &str = "/opt/triton/config/triton-setup-state.json";
/// Where the binary caches its output.
pub const CACHE_FILE: &str = "/run/triton/sysinfo.json";
/// The pool tool the binary runs for the `Zpool` key.
pub const TRITON_POOL: &str = "/usr/bin/triton-pool";

impl HostPaths {
    /// The paths of a running CN, below `root` (`/` in production).
    pub fn real(root: &Path, pool_status: Option<String>) -> HostPaths {
        HostPaths {
            sys: root.join("sys"),
            proc: root.join("proc"),
            os_release: vec![root.join("usr/lib/os-release"), root.join("etc/os-release")],
            networking_json: root.join("etc/triton-networking.json"),
            node_config: vec![root.join("etc/node.config"), root.join("opt/triton/config/node.config")],
            setup_state: root.join(SETUP_STATE_FILE.trim_start_matches('/')),
            pool_status,
            pool_details: None,
        }
    }
}

/// One physical NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    #[serde(rename = "MAC Address")]
    pub mac: String,
    #[serde(rename = "ip4addr")]
    pub ip4addr: String,
    #[serde(rename = "Link Status")]
    pub link_status: String,
    #[serde(rename = "NIC Names")]
    pub nic_names: Vec<String>,
}

/// One vnic that has its own link (a macvlan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vnic {
    #[serde(rename = "MAC Address")]
    pub mac: String,
    #[serde(rename = "ip4addr")]
    pub ip4addr: String,
    #[serde(rename = "Link Status")]
    pub link_status: String,
    #[serde(rename = "Host Interface", skip_serializing_if = "Option::is_none", default)]
    pub host_interface: Option<String>,
    #[serde(rename = "VLAN")]
    pub vlan: String,
}

/// One bond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregation {
    #[serde(rename = "LACP mode")]
    pub lacp_mode: String,
    #[serde(rename = "Interfaces")]
    pub interfaces: Vec<String>,
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    #[serde(rename = "Size in GB")]
    pub size_gb: u64,
}

/// The sysinfo object. Field order is SmartOS's output order; `None`
/// fields are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysinfo {
    #[serde(rename = "Live Image", skip_serializing_if = "Option::is_none", default)]
    pub live_image: Option<String>,
    #[serde(rename = "System Type")]
    pub system_type: String,
    #[serde(rename = "Boot Time", skip_serializing_if = "Option::is_none", default)]
    pub boot_time: Option<String>,
    #[serde(rename = "Datacenter Name", skip_serializing_if = "Option::is_none", default)]
    pub datacenter_name: Option<String>,
    #[serde(rename = "SDC Version")]
    pub sdc_version: String,
    #[serde(rename = "Manufacturer", skip_serializing_if = "Option::is_none", default)]
    pub manufacturer: Option<String>,
    #[serde(rename = "Product", skip_serializing_if = "Option::is_none", default)]
    pub product: Option<String>,
    #[serde(rename = "Serial Number", skip_serializing_if = "Option::is_none", default)]
    pub serial_number: Option<String>,
    #[serde(rename = "SKU Number", skip_serializing_if = "Option::is_none", default)]
    pub sku_number: Option<String>,
    #[serde(rename = "HW Version", skip_serializing_if = "Option::is_none", default)]
    pub hw_version: Option<String>,
    #[serde(rename = "HW Family", skip_serializing_if = "Option::is_none", default)]
    pub hw_family: Option<String>,
    #[serde(rename = "Setup")]
    pub setup: String,
    #[serde(rename = "VM Capable")]
    pub vm_capable: bool,
    #[serde(rename = "Bhyve Capable")]
    pub bhyve_capable: bool,
    #[serde(rename = "HVM API")]
    pub hvm_api: bool,
    #[serde(rename = "CPU Type", skip_serializing_if = "Option::is_none", default)]
    pub cpu_type: Option<String>,
    #[serde(rename = "CPU Virtualization", skip_serializing_if = "Option::is_none", default)]
    pub cpu_virtualization: Option<String>,
    #[serde(rename = "CPU Physical Cores", skip_serializing_if = "Option::is_none", default)]
    pub cpu_physical_cores: Option<u32>,
    #[serde(rename = "Admin NIC Tag")]
    pub admin_nic_tag: String,
    #[serde(rename = "Admin IP", skip_serializing_if = "Option::is_none", default)]
    pub admin_ip: Option<String>,
    #[serde(rename = "UUID", skip_serializing_if = "Option::is_none", default)]
    pub uuid: Option<String>,
    #[serde(rename = "Hostname", skip_serializing_if = "Option::is_none", default)]
    pub hostname: Option<String>,
    #[serde(rename = "CPU Total Cores", skip_serializing_if = "Option::is_none", default)]
    pub cpu_total_cores: Option<u32>,
    #[serde(rename = "MiB of Memory", skip_serializing_if = "Option::is_none", default)]
    pub mib_of_memory: Option<String>,
    #[serde(rename = "Zpool", skip_serializing_if = "Option::is_none", default)]
    pub zpool: Option<String>,
    #[serde(rename = "Zpool Encrypted", skip_serializing_if = "Option::is_none", default)]
    pub zpool_encrypted: Option<bool>,
    #[serde(rename = "Zpool Disks", skip_serializing_if = "Option::is_none", default)]
    pub zpool_disks: Option<String>,
    #[serde(rename = "Zpool Profile", skip_serializing_if = "Option::is_none", default)]
    pub zpool_profile: Option<String>,
    #[serde(rename = "Zpool Creation", skip_serializing_if = "Option::is_none", default)]
    pub zpool_creation: Option<u64>,
    #[serde(rename = "Zpool Size in GiB", skip_serializing_if = "Option::is_none", default)]
    pub zpool_size_in_gib: Option<u64>,
    #[serde(rename = "Disks", default)]
    pub disks: BTreeMap<String, Disk>,
    #[serde(rename = "Boot Parameters", default)]
    pub boot_parameters: BTreeMap<String, String>,
    #[serde(rename = "Network Interfaces", default)]
    pub network_interfaces: BTreeMap<String, Nic>,
    #[serde(rename = "Virtual Network Interfaces", default)]
    pub virtual_network_interfaces: BTreeMap<String, Vnic>,
    #[serde(rename = "Link Aggregations", default)]
    pub link_aggregations: BTreeMap<String, Aggregation>,
    /// What was missing or unreadable (for stderr; not serialised).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Errors of the cache file.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("writing sysinfo cache {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serialising sysinfo: {0}")]
    Serialise(#[from] serde_json::Error),
}

/// Reads a small text file, `None` if it is missing or unreadable.
fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// A trimmed, non-empty value of a sysfs/procfs attribute.
fn read_value(path: &Path) -> Option<String> {
    read(path).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `TRITON_RELEASE` from an os-release text (quotes removed).
pub fn triton_release(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.trim().strip_prefix("TRITON_RELEASE=")?;
        let v = v.trim().trim_matches('"').trim_matches('\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// `btime` from `/proc/stat`.
pub fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// `MemTotal` from `/proc/meminfo`, in MiB.
pub fn mem_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") | None => Some(n / 1024),
            _ => None,
        }
    })
}

/// What sysinfo reports from `/proc/cpuinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    pub model: Option<String>,
    /// Logical CPUs (threads).
    pub threads: u32,
    /// Sockets (distinct `physical id`, at least 1 when there is any CPU).
    pub sockets: u32,
    /// `vmx`, `svm` or `none`.
    pub virtualization: &'static str,
}

/// Parses `/proc/cpuinfo` (x86 field names; other architectures give the
/// thread count and `none`).
pub fn cpu_info(cpuinfo: &str) -> CpuInfo {
    let mut c = CpuInfo { virtualization: "none", ..CpuInfo::default() };
    let mut sockets: Vec<&str> = Vec::new();
    for line in cpuinfo.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => c.threads += 1,
            "model name" if c.model.is_none() && !v.is_empty() => c.model = Some(v.to_string()),
            "physical id" if !sockets.contains(&v) => sockets.push(v),
            "flags" if c.virtualization == "none" => {
                let flags: Vec<&str> = v.split_whitespace().collect();
                if flags.contains(&"vmx") {
                    c.virtualization = "vmx";
                } else if flags.contains(&"svm") {
                    c.virtualization = "svm";
                }
            }
            _ => {}
        }
    }
    c.sockets = if sockets.is_empty() { u32::from(c.threads > 0) } else { sockets.len() as u32 };
    c
}

/// `complete` of the setup-state file text; `None` if it is not that JSON.
pub fn setup_complete(text: &str) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(v.get("complete")?.as_bool().unwrap_or(false))
}

/// The pool name when `triton-pool status` says it is imported.
pub fn imported_pool(status: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(status).ok()?;
    if v.get("imported").is_none_or(serde_json::Value::is_null) {
        return None;
    }
    v.get("pool")?.as_str().filter(|p| !p.is_empty()).map(str::to_string)
}

/// Every `key=value` of the command line (last wins), as strings.
pub fn boot_parameters(cmdline: &Cmdline) -> BTreeMap<String, String> {
    cmdline.iter().filter_map(|(k, v)| Some((k.to_string(), v?.to_string()))).collect()
}

/// SmartOS's `Link Status` for a Linux `operstate`.
pub fn link_status(operstate: Option<&str>) -> &'static str {
    match operstate {
        Some("up") => "up",
        Some("down" | "lowerlayerdown" | "notpresent") => "down",
        _ => "unknown",
    }
}

/// A link in `/sys/class/net`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    name: String,
    /// The permanent MAC (bond members: `perm_hwaddr`).
    mac: Option<Mac>,
    operstate: Option<String>,
    physical: bool,
    /// `lower_<name>` entries (macvlan/VLAN parent).
    lower: Option<String>,
    /// Bond members (`bonding/slaves`).
    slaves: Option<Vec<String>>,
}

fn links(sys: &Path) -> Vec<Link> {
    let dir = sys.join("class/net");
    let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<Link> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let p = dir.join(&name);
            let mac = read_value(&p.join("bonding_slave/perm_hwaddr"))
                .or_else(|| read_value(&p.join("address")))
                .and_then(|m| Mac::parse(&m));
            let lower = fs::read_dir(&p).ok().and_then(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .find_map(|n| n.strip_prefix("lower_").map(str::to_string))
            });
            Some(Link {
                mac,
                operstate: read_value(&p.join("operstate")),
                physical: p.join("device").exists(),
                lower,
                slaves: read(&p.join("bonding/slaves")).map(|s| s.split_whitespace().map(str::to_string).collect()),
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn disks(sys: &Path) -> BTreeMap<String, Disk> {
    let dir = sys.join("block");
    let Ok(entries) = fs::read_dir(&dir) else { return BTreeMap::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        // The same rule as disklayout's: what is not a disk (loop, zvol, ...).
        .filter(|n| disklayout::inventory::classify(n) == disklayout::disk::DiskKind::Disk)
        .filter_map(|n| {
            let sectors: u64 = read_value(&dir.join(&n).join("size"))?.parse().ok()?;
            let bytes = sectors.saturating_mul(512);
            (bytes > 0).then(|| (n, Disk { size_gb: (bytes + 500_000_000) / 1_000_000_000 }))
        })
        .collect()
}

/// A hostname that means "not set".
fn unset_hostname(h: &str) -> bool {
    matches!(h, "" | "(none)" | "localhost" | "localhost.localdomain")
}

/// Collects the sysinfo object from the host described by `host`.
pub fn collect(host: &HostPaths) -> Sysinfo {
    let mut warnings = Vec::new();
    let dmi = host.sys.join("class/dmi/id");
    let dmi_value = |f: &str| read_value(&dmi.join(f));

    let cmdline = Cmdline::parse(&read(&host.proc.join("cmdline")).unwrap_or_default());
    let node_config = host.node_config.iter().find_map(|p| read(p)).map(|t| NodeConfig::parse(&t));
    if node_config.is_none() {
        warnings.push(format!("no node.config ({})", display_all(&host.node_config)));
    }
    let networking = match read(&host.networking_json) {
        None => {
            warnings.push(format!("{}: missing; NIC tags from the command line only", host.networking_json.display()));
            None
        }
        Some(t) => match NetworkingJson::parse(&t) {
            Ok(n) => Some(n),
            Err(e) => {
                warnings.push(format!("{}: {e}", host.networking_json.display()));
                None
            }
        },
    };

    let live_image = host.os_release.iter().filter_map(|p| read(p)).find_map(|t| triton_release(&t));
    if live_image.is_none() {
        warnings.push(format!("no TRITON_RELEASE in {}", display_all(&host.os_release)));
    }
    let boot_time = read(&host.proc.join("stat")).and_then(|s| boot_time(&s)).map(|b| b.to_string());
    let datacenter_name = node_config
        .as_ref()
        .and_then(|c| c.get("datacenter_name"))
        .or(networking.as_ref().and_then(|n| n.datacenter_name.as_deref()))
        .map(str::to_string);

    let setup = match read(&host.setup_state) {
        None => false,
        Some(t) => setup_complete(&t).unwrap_or_else(|| {
            warnings.push(format!("{}: not a setup-state JSON object; Setup is false", host.setup_state.display()));
            false
        }),
    };

    let cpu = cpu_info(&read(&host.proc.join("cpuinfo")).unwrap_or_default());
    let mib = read(&host.proc.join("meminfo")).and_then(|m| mem_mib(&m));
    if mib.is_none() {
        warnings.push("no MemTotal in meminfo; MiB of Memory left out".into());
    }

    let uuid = dmi_value("product_uuid").and_then(|u| identity::smartos_uuid(&u));
    if uuid.is_none() {
        warnings.push("no usable SMBIOS UUID (missing, unreadable or all zeros); UUID left out".into());
    }

    // Admin tag, MAC and IP.
    let admin_tag = networking.as_ref().and_then(|n| n.admin_tag.clone()).unwrap_or_else(|| "admin".to_string());
    let admin_mac = networking
        .as_ref()
        .and_then(NetworkingJson::admin_mac)
        .or_else(|| cmdline.get("admin_nic").and_then(Mac::parse))
        .or_else(|| cmdline.bootif().ok().flatten());
    let cmdline_ip = cmdline.ip().ok().flatten().map(|c| c.address.to_string());
    let admin_vnic_ip = networking.as_ref().and_then(|n| {
        n.vnics
            .iter()
            .filter(|v| v.nic_tag.as_deref() == Some(admin_tag.as_str()))
            .find_map(|v| v.ip.clone().filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()))
    });
    let admin_ip = admin_vnic_ip.or(cmdline_ip.clone());

    let hostname = read_value(&host.proc.join("sys/kernel/hostname")).filter(|h| !unset_hostname(h)).or_else(|| {
        identity::hostname(cmdline.get("hostname"), node_config.as_ref().and_then(|c| c.get("hostname")), admin_mac)
    });

    // Links.
    let all_links = links(&host.sys);
    let nictags = networking.as_ref().map(|n| n.nictags.as_slice()).unwrap_or_default();
    let vnics = networking.as_ref().map(|n| n.vnics.as_slice()).unwrap_or_default();
    let vnic_ip = |mac: Mac, untagged: bool| {
        vnics
            .iter()
            .filter(|v| Mac::parse(&v.mac) == Some(mac))
            .filter(|v| !untagged || v.vlan_id.unwrap_or(0) == 0)
            .find_map(|v| v.ip.clone().filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()))
    };
    let mut network_interfaces = BTreeMap::new();
    for l in all_links.iter().filter(|l| l.physical) {
        let Some(mac) = l.mac else {
            warnings.push(format!("{}: no MAC address; left out of Network Interfaces", l.name));
            continue;
        };
        let nic_names: Vec<String> =
            nictags.iter().filter(|t| Mac::parse(&t.mac) == Some(mac)).map(|t| t.name.clone()).collect();
        let mut ip4addr = vnic_ip(mac, true);
        if ip4addr.is_none() && Some(mac) == admin_mac {
            ip4addr = admin_ip.clone();
        }
        network_interfaces.insert(
            l.name.clone(),
            Nic {
                mac: mac.to_string(),
                ip4addr: ip4addr.unwrap_or_default(),
                link_status: link_status(l.operstate.as_deref()).to_string(),
                nic_names,
            },
        );
    }
    let admin_found = network_interfaces.values().any(|n| n.nic_names.contains(&admin_tag));
    if !admin_found {
        let admin_mac_s = admin_mac.map(|m| m.to_string());
        match network_interfaces.values_mut().find(|n| Some(&n.mac) == admin_mac_s.as_ref()) {
            Some(n) => n.nic_names.push(admin_tag.clone()),
            None => {
                warnings.push(format!("no physical NIC carries the {admin_tag:?} tag; ur will not find its admin NIC"))
            }
        }
    }

    let mut virtual_network_interfaces = BTreeMap::new();
    for l in all_links.iter().filter(|l| !l.physical && l.slaves.is_none()) {
        let Some(mac) = l.mac else { continue };
        let Some(v) = vnics.iter().find(|v| Mac::parse(&v.mac) == Some(mac)) else { continue };
        // The vnic is the physical NIC itself (or a VLAN on it): not a virtual interface.
        if all_links.iter().any(|p| p.physical && p.mac == Some(mac)) {
            continue;
        }
        virtual_network_interfaces.insert(
            l.name.clone(),
            Vnic {
                mac: mac.to_string(),
                ip4addr: v.ip.clone().unwrap_or_default(),
                link_status: link_status(l.operstate.as_deref()).to_string(),
                host_interface: l.lower.clone(),
                vlan: v.vlan_id.unwrap_or(0).to_string(),
            },
        );
    }

    let mut link_aggregations = BTreeMap::new();
    for a in networking.as_ref().map(|n| n.aggregations.as_slice()).unwrap_or_default() {
        let Some(bond) = all_links.iter().find(|l| l.name == a.name && l.slaves.is_some()) else { continue };
        link_aggregations.insert(
            a.name.clone(),
            Aggregation {
                lacp_mode: a.lacp_mode.clone().unwrap_or_else(|| "off".to_string()),
                interfaces: bond.slaves.clone().unwrap_or_default(),
            },
        );
    }

    let zpool = host.pool_status.as_deref().and_then(imported_pool);
    let pk = match (&zpool, &host.pool_details) {
        (Some(_), Some(d)) => pool_keys(d),
        _ => PoolKeys::default(),
    };

    Sysinfo {
        live_image,
        system_type: "Linux".into(),
        boot_time,
        datacenter_name,
        sdc_version: "7.0".into(),
        manufacturer: dmi_value("sys_vendor"),
        product: dmi_value("product_name"),
        serial_number: dmi_value("product_serial"),
        sku_number: dmi_value("product_sku"),
        hw_version: dmi_value("product_version"),
        hw_family: dmi_value("product_family"),
        setup: setup.to_string(),
        vm_capable: false,
        bhyve_capable: false,
        hvm_api: false,
        cpu_type: cpu.model.clone(),
        cpu_virtualization: (cpu.threads > 0).then(|| cpu.virtualization.to_string()),
        cpu_physical_cores: (cpu.sockets > 0).then_some(cpu.sockets),
        admin_nic_tag: admin_tag,
        admin_ip,
        uuid,
        hostname,
        cpu_total_cores: (cpu.threads > 0).then_some(cpu.threads),
        mib_of_memory: mib.map(|m| m.to_string()),
        zpool,
        zpool_encrypted: pk.encrypted,
        zpool_disks: (!pk.disks.is_empty()).then(|| pk.disks.join(",")),
        zpool_profile: pk.profile,
        zpool_creation: pk.creation,
        zpool_size_in_gib: pk.size_gib,
        disks: disks(&host.sys),
        boot_parameters: boot_parameters(&cmdline),
        network_interfaces,
        virtual_network_interfaces,
        link_aggregations,
        warnings,
    }
}

fn display_all(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

impl Sysinfo {
    /// Pretty JSON with a trailing newline, as SmartOS prints it.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self).map(|s| s + "\n")
    }
}

/// The cache text if it is a sysinfo object (so a damaged cache is collected again).
pub fn read_cache(path: &Path) -> Option<String> {
    let text = read(path)?;
    serde_json::from_str::<Sysinfo>(&text).ok()?;
    Some(if text.ends_with('\n') { text } else { text + "\n" })
}

/// Writes the cache atomically (temporary file in the same directory, then rename).
pub fn write_cache(path: &Path, text: &str) -> Result<(), CacheError> {
    let err = |source| CacheError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, text).map_err(err)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(e)
    })
}

/// A top-level JSON object with its key order kept.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = m.next_entry()? {
                    out.push(e);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A shell-safe name part: anything but `[A-Za-z0-9_]` becomes `_`.
fn name_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(","),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// SmartOS's `sysinfo -p`: one `Name='value'` line per value, spaces (and
/// anything not valid in a shell name) as `_`; a nested object `Network
/// Interfaces: {e1: {MAC Address}}` becomes `Network_Interface_e1_MAC_Address`
/// (the plural's trailing `s` dropped); arrays are comma-joined.
pub fn parseable(json: &str) -> Result<String, serde_json::Error> {
    let Entries(top) = serde_json::from_str(json)?;
    let mut out = String::new();
    for (k, v) in top {
        match v {
            serde_json::Value::Object(m) => {
                let prefix = name_part(k.strip_suffix('s').unwrap_or(&k));
                for (name, inner) in m {
                    match inner {
                        serde_json::Value::Object(fields) => {
                            for (f, fv) in fields {
                                out += &format!(
                                    "{prefix}_{}_{}={}\n",
                                    name_part(&name),
                                    name_part(&f),
                                    quote(&scalar(&fv))
                                );
                            }
                        }
                        other => out += &format!("{prefix}_{}={}\n", name_part(&name), quote(&scalar(&other))),
                    }
                }
            }
            other => out += &format!("{}={}\n", name_part(&k), quote(&scalar(&other))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
