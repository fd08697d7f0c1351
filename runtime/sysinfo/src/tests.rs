use super::*;
use serde_json::Value;

const KERNEL_UUID: &str = "4C4C4544-0036-3010-8036-B5C04F4E3032";
const SMARTOS_UUID: &str = "44454c4c-3600-1030-8036-b5c04f4e3032";
const ADMIN_MAC: &str = "00:0c:29:d4:5b:fa";
const EXT_MAC: &str = "00:0c:29:d4:5b:04";

const NETWORKING: &str = r#"{
  "nictags": [ {"name":"admin","mac":"00:0c:29:d4:5b:fa","mtu":1500},
               {"name":"external","mac":"00:0c:29:d4:5b:04","mtu":1500},
               {"name":"storage","mac":"00:0c:29:d4:5b:04","mtu":1500} ],
  "admin_tag": "admin",
  "resolvers": ["10.99.99.11"],
  "routes": {},
  "vnics": [
    {"mac":"00:0c:29:d4:5b:fa","ip":"10.99.99.78","netmask":"255.255.255.0","vlan_id":0,"nic_tag":"admin"},
    {"mac":"00:0c:29:d4:5b:04","ip":"10.88.88.134","netmask":"255.255.255.0","gateway":"10.88.88.2",
     "vlan_id":0,"nic_tag":"external"},
    {"mac":"90:b8:d0:00:00:01","ip":"10.77.0.5","netmask":"255.255.0.0","vlan_id":7,"nic_tag":"storage"}
  ],
  "aggregations": [],
  "datacenter_name": "from-networking"
}"#;

const CPUINFO: &str = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU E5-2650 v2\nphysical id\t: 0\n\
flags\t\t: fpu vme vmx sse\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU E5-2650 v2\nphysical id\t: 0\n\
flags\t\t: fpu vme vmx sse\n\nprocessor\t: 2\nmodel name\t: Intel(R) Xeon(R) CPU E5-2650 v2\nphysical id\t: 1\n\
flags\t\t: fpu vme vmx sse\n\n";

const CMDLINE: &str = "boot=live console=tty0 console=ttyS1,115200n8 BOOTIF=01-00-0c-29-d4-5b-fa \
ip=10.99.99.124:::255.255.255.0:: rabbitmq=guest:guest:10.99.99.16:5672 headnode=false quiet \
aggr1_aggr=\"00:00:00:00:00:01,00:00:00:00:00:02\"\n";

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn write(&self, rel: &str, text: &str) {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }
    fn remove(&self, rel: &str) {
        fs::remove_file(self.root().join(rel)).expect("rm");
    }
    fn nic(&self, name: &str, mac: &str, oper: &str, physical: bool) {
        let d = format!("sys/class/net/{name}");
        self.write(&format!("{d}/address"), &format!("{mac}\n"));
        self.write(&format!("{d}/operstate"), &format!("{oper}\n"));
        self.write(&format!("{d}/mtu"), "1500\n");
        self.write(&format!("{d}/speed"), "1000\n");
        if physical {
            fs::create_dir_all(self.root().join(&d).join("device")).expect("device");
        }
    }
    fn paths(&self, pool: Option<&str>) -> HostPaths {
        HostPaths::real(self.root(), pool.map(str::to_string))
    }
    fn json(&self, pool: Option<&str>) -> Value {
        serde_json::to_value(collect(&self.paths(pool))).expect("json")
    }
}

/// A CN that booted with everything booter sends, set up.
fn full_host() -> Fake {
    let f = Fake { dir: tempfile::tempdir().expect("tempdir") };
    let id = "sys/class/dmi/id";
    f.write(&format!("{id}/product_uuid"), &format!("{KERNEL_UUID}\n"));
    f.write(&format!("{id}/sys_vendor"), "Dell Inc.\n");
    f.write(&format!("{id}/product_name"), "PowerEdge R720\n");
    f.write(&format!("{id}/product_serial"), "6S0BN02\n");
    f.write(&format!("{id}/product_sku"), "\n");
    f.write(&format!("{id}/product_version"), "A01\n");
    f.write(&format!("{id}/bios_version"), "2.9.0\n");
    f.nic("lo", "00:00:00:00:00:00", "unknown", false);
    f.nic("eno1", ADMIN_MAC, "up", true);
    f.nic("eno2", EXT_MAC, "lowerlayerdown", true);
    f.nic("eno3", "00:0c:29:d4:5b:05", "down", true);
    f.nic("storage0", "90:b8:d0:00:00:01", "up", false);
    fs::create_dir_all(f.root().join("sys/class/net/storage0/lower_eno2")).expect("lower");
    f.write("sys/block/sda/size", "937703088\n");
    f.write("sys/block/loop0/size", "1000\n");
    f.write("sys/block/zd0/size", "1000\n");
    f.write("proc/meminfo", "MemTotal:       131072000 kB\nMemFree:        120000000 kB\n");
    f.write("proc/cpuinfo", CPUINFO);
    f.write("proc/cmdline", CMDLINE);
    f.write("proc/uptime", "1234.5 2000.1\n");
    f.write("proc/stat", "cpu  1 2 3\nintr 5\nbtime 1627800000\nprocesses 10\n");
    f.write("proc/sys/kernel/hostname", "cn1\n");
    f.write("usr/lib/os-release", "NAME=\"Debian GNU/Linux\"\nTRITON_RELEASE=\"20250101T000000Z\"\n");
    f.write("etc/triton-networking.json", NETWORKING);
    f.write("etc/node.config", "datacenter_name='us-east-1'\nsapi_domain='sapi.x'\n");
    f.write("opt/triton/config/triton-setup-state.json", r#"{"node_type":"computenode","complete":true}"#);
    f
}

#[test]
fn every_cnapi_key_with_its_type() {
    let f = full_host();
    let v = f.json(Some(r#"{"pool":"zones","hostid":"1234abcd","imported":{"name":"zones","state":"active","health":"ONLINE"},"importable":[],"datasets":[]}"#));
    let o = v.as_object().expect("object");
    // UUID: uuid-shaped, lower case, first three fields byte-swapped.
    let uuid = v["UUID"].as_str().expect("UUID");
    assert_eq!(uuid, SMARTOS_UUID);
    let lens: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(lens, [8, 4, 4, 4, 12]);
    assert_eq!(v["Live Image"], "20250101T000000Z");
    assert_eq!(v["System Type"], "Linux");
    assert_eq!(v["Hostname"], "cn1");
    assert_eq!(v["Boot Time"], "1627800000");
    assert_eq!(v["Setup"], "true");
    let mib: u64 = v["MiB of Memory"].as_str().expect("string").parse().expect("integer string");
    assert_eq!(mib, 128000);
    assert_eq!(v["SDC Version"], "7.0");
    assert_eq!(v["VM Capable"], false);
    assert_eq!(v["Bhyve Capable"], false);
    assert_eq!(v["HVM API"], false);
    assert_eq!(v["Datacenter Name"], "us-east-1");
    assert_eq!(v["Admin NIC Tag"], "admin");
    assert_eq!(v["Admin IP"], "10.99.99.78");
    assert_eq!(v["Zpool"], "zones");
    // Boot Parameters: strings; headnode and rabbitmq are what CNAPI and ur read.
    let bp = &v["Boot Parameters"];
    assert_eq!(bp["headnode"], "false");
    assert_eq!(bp["rabbitmq"], "guest:guest:10.99.99.16:5672");
    assert_eq!(bp["console"], "ttyS1,115200n8");
    assert_eq!(bp["aggr1_aggr"], "00:00:00:00:00:01,00:00:00:00:00:02");
    assert!(bp.get("quiet").is_none());
    assert!(bp.as_object().expect("map").values().all(Value::is_string));
    // Hardware.
    assert_eq!(v["Manufacturer"], "Dell Inc.");
    assert_eq!(v["Product"], "PowerEdge R720");
    assert_eq!(v["Serial Number"], "6S0BN02");
    assert_eq!(v["HW Version"], "A01");
    assert!(o.get("SKU Number").is_none(), "empty DMI value left out");
    assert!(o.get("Serial_Number").is_none() && o.get("Boot Params").is_none(), "linux-live names not used");
    assert_eq!(v["CPU Type"], "Intel(R) Xeon(R) CPU E5-2650 v2");
    assert_eq!(v["CPU Total Cores"], 3);
    assert_eq!(v["CPU Physical Cores"], 2);
    assert_eq!(v["CPU Virtualization"], "vmx");
    assert_eq!(v["Disks"], serde_json::json!({"sda": {"Size in GB": 480}}));
}

#[test]
fn network_interfaces_and_nic_names() {
    let v = full_host().json(None);
    let nics = v["Network Interfaces"].as_object().expect("map");
    assert_eq!(nics.keys().collect::<Vec<_>>(), ["eno1", "eno2", "eno3"], "physical NICs only");
    assert_eq!(
        v["Network Interfaces"]["eno1"],
        serde_json::json!({"MAC Address": ADMIN_MAC, "ip4addr": "10.99.99.78", "Link Status": "up", "NIC Names": ["admin"]})
    );
    assert_eq!(
        v["Network Interfaces"]["eno2"],
        serde_json::json!({"MAC Address": EXT_MAC, "ip4addr": "10.88.88.134", "Link Status": "down",
                           "NIC Names": ["external", "storage"]})
    );
    assert_eq!(v["Network Interfaces"]["eno3"]["NIC Names"], serde_json::json!([]));
    assert_eq!(v["Network Interfaces"]["eno3"]["ip4addr"], "");
    assert_eq!(
        v["Virtual Network Interfaces"],
        serde_json::json!({"storage0": {"MAC Address": "90:b8:d0:00:00:01", "ip4addr": "10.77.0.5",
                           "Link Status": "up", "Host Interface": "eno2", "VLAN": "7"}})
    );
    // triton-netconfig's rule: first NIC whose NIC Names has the Admin NIC Tag.
    let tag = v["Admin NIC Tag"].as_str().expect("tag");
    let admin = nics.values().find(|n| n["NIC Names"].as_array().expect("arr").iter().any(|t| t == tag));
    assert_eq!(admin.expect("admin nic")["MAC Address"], ADMIN_MAC);
}

#[test]
fn setup_state_complete_incomplete_missing_damaged() {
    let f = full_host();
    let rel = "opt/triton/config/triton-setup-state.json";
    assert_eq!(f.json(None)["Setup"], "true");
    f.write(rel, r#"{"node_type":"computenode","complete":false,"seen_states":["zpool_created"]}"#);
    assert_eq!(f.json(None)["Setup"], "false");
    f.write(rel, r#"{"node_type":"computenode"}"#);
    assert_eq!(f.json(None)["Setup"], "false");
    f.write(rel, "{not json");
    let s = collect(&f.paths(None));
    assert_eq!(s.setup, "false");
    assert!(s.warnings.iter().any(|w| w.contains("setup-state")), "{:?}", s.warnings);
    f.remove(rel);
    let v = f.json(None);
    assert_eq!(v["Setup"], "false");
    assert!(v["Setup"].is_string());
}

#[test]
fn unsetup_cn_without_networking_json() {
    // First boot: no networking.json, no hostname set yet, no pool.
    let f = full_host();
    f.remove("etc/triton-networking.json");
    f.write("proc/sys/kernel/hostname", "(none)\n");
    f.remove("etc/node.config");
    let s = collect(&f.paths(Some(r#"{"pool":"zones","hostid":"0","imported":null,"importable":[],"datasets":[]}"#)));
    let v = serde_json::to_value(&s).expect("json");
    assert_eq!(v["Admin NIC Tag"], "admin");
    assert_eq!(v["Admin IP"], "10.99.99.124", "from ip= on the command line");
    assert_eq!(v["Hostname"], "00-0c-29-d4-5b-fa", "admin MAC with dashes, as booter matches");
    assert_eq!(v["Network Interfaces"]["eno1"]["NIC Names"], serde_json::json!(["admin"]), "BOOTIF NIC");
    assert_eq!(v["Network Interfaces"]["eno1"]["ip4addr"], "10.99.99.124");
    assert_eq!(v["Network Interfaces"]["eno2"]["NIC Names"], serde_json::json!([]));
    assert!(v.get("Zpool").is_none(), "pool not imported");
    assert!(v.get("Datacenter Name").is_none());
    assert!(s.warnings.iter().any(|w| w.contains("networking.json")));
}

#[test]
fn empty_host_never_panics_and_keeps_required_shape() {
    let f = Fake { dir: tempfile::tempdir().expect("tempdir") };
    let s = collect(&f.paths(Some("garbage")));
    let v = serde_json::to_value(&s).expect("json");
    assert!(v.get("UUID").is_none());
    assert!(v.get("MiB of Memory").is_none());
    assert!(v.get("Zpool").is_none());
    assert_eq!(v["Setup"], "false");
    assert_eq!(v["System Type"], "Linux");
    assert_eq!(v["Network Interfaces"], serde_json::json!({}));
    assert!(s.warnings.iter().any(|w| w.contains("UUID")));
    // All-zero UUID carries no identity.
    f.write("sys/class/dmi/id/product_uuid", "00000000-0000-0000-0000-000000000000\n");
    assert!(f.json(None).get("UUID").is_none());
}

#[test]
fn json_key_order_follows_smartos() {
    let s = collect(&full_host().paths(None));
    let text = s.to_json().expect("json");
    let pos = |k: &str| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} missing"));
    let order = ["Live Image", "System Type", "Boot Time", "Setup", "Admin NIC Tag", "UUID", "Hostname"];
    assert!(order.windows(2).all(|w| pos(w[0]) < pos(w[1])), "{text}");
    assert!(text.ends_with("}\n"));
    // The cache round-trips through the struct.
    let back: Sysinfo = serde_json::from_str(&text).expect("parse back");
    assert_eq!(back.uuid.as_deref(), Some(SMARTOS_UUID));
}

#[test]
fn cache_is_written_atomically_and_damage_is_ignored() {
    let f = full_host();
    let cache = f.root().join("run/triton/sysinfo.json");
    assert_eq!(read_cache(&cache), None);
    let text = collect(&f.paths(None)).to_json().expect("json");
    write_cache(&cache, &text).expect("write");
    assert_eq!(read_cache(&cache).as_deref(), Some(text.as_str()));
    let left: Vec<_> = fs::read_dir(cache.parent().expect("dir")).expect("ls").collect();
    assert_eq!(left.len(), 1, "no temporary file left behind");
    fs::write(&cache, "{\"truncated").expect("damage");
    assert_eq!(read_cache(&cache), None);
}

#[test]
fn parseable_output() {
    let text = collect(&full_host().paths(None)).to_json().expect("json");
    let p = parseable(&text).expect("parseable");
    let lines: Vec<&str> = p.lines().collect();
    assert_eq!(lines[0], "Live_Image='20250101T000000Z'");
    assert!(lines.contains(&"MiB_of_Memory='128000'"));
    assert!(lines.contains(&"Setup='true'"));
    assert!(lines.contains(&"VM_Capable='false'"));
    assert!(lines.contains(&"Network_Interface_eno1_MAC_Address='00:0c:29:d4:5b:fa'"));
    assert!(lines.contains(&"Network_Interface_eno2_NIC_Names='external,storage'"));
    assert!(lines.contains(&"Network_Interface_eno1_Link_Status='up'"));
    assert!(lines.contains(&"Virtual_Network_Interface_storage0_Host_Interface='eno2'"));
    assert!(lines.contains(&"Boot_Parameter_rabbitmq='guest:guest:10.99.99.16:5672'"));
    assert!(lines.contains(&"Disk_sda_Size_in_GB='480'"));
    // Every line is a shell assignment.
    assert!(lines.iter().all(|l| {
        let (k, v) = l.split_once('=').expect("=");
        k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && v.starts_with('\'') && v.ends_with('\'')
    }));
    assert_eq!(quote("it's"), "'it'\\''s'");
    assert!(parseable("[1]").is_err());
}

#[test]
fn small_parsers() {
    assert_eq!(triton_release("A=1\nTRITON_RELEASE='x'\n").as_deref(), Some("x"));
    assert_eq!(triton_release("TRITON_RELEASE=\n"), None);
    assert_eq!(boot_time("btime x\n"), None);
    assert_eq!(mem_mib("MemTotal: 2048 kB\n"), Some(2));
    assert_eq!(mem_mib("MemTotal: lots\n"), None);
    assert_eq!(cpu_info("").threads, 0);
    assert_eq!(cpu_info("").sockets, 0);
    // No physical id (e.g. some VMs): one socket.
    let c = cpu_info("processor : 0\nflags : svm\nprocessor : 1\n");
    assert_eq!((c.threads, c.sockets, c.virtualization), (2, 1, "svm"));
    assert_eq!(setup_complete("{\"complete\": \"yes\"}"), Some(false));
    assert_eq!(imported_pool("{\"pool\":\"zones\"}"), None);
    assert_eq!(imported_pool("{\"pool\":\"zones\",\"imported\":{\"name\":\"zones\"}}").as_deref(), Some("zones"));
    assert_eq!(link_status(Some("dormant")), "unknown");
    assert_eq!(link_status(None), "unknown");
}

#[test]
fn bond_members_report_their_permanent_mac() {
    let f = full_host();
    f.write("etc/triton-networking.json", &NETWORKING.replace(
        "\"aggregations\": []",
        "\"aggregations\": [{\"name\":\"aggr0\",\"macs\":[\"00:0c:29:d4:5b:04\",\"00:0c:29:d4:5b:05\"],\"lacp_mode\":\"active\"}]",
    ));
    // Bonding gives members the bond's MAC; perm_hwaddr keeps their own.
    f.nic("eno3", EXT_MAC, "up", true);
    f.write("sys/class/net/eno3/bonding_slave/perm_hwaddr", "00:0c:29:d4:5b:05\n");
    f.nic("aggr0", EXT_MAC, "up", false);
    f.write("sys/class/net/aggr0/bonding/slaves", "eno2 eno3\n");
    let v = f.json(None);
    assert_eq!(v["Network Interfaces"]["eno3"]["MAC Address"], "00:0c:29:d4:5b:05");
    assert_eq!(
        v["Link Aggregations"],
        serde_json::json!({"aggr0": {"LACP mode": "active", "Interfaces": ["eno2", "eno3"]}})
    );
    assert!(v["Virtual Network Interfaces"].get("aggr0").is_none());
}

#[test]
fn pool_keys_from_zpool_list_and_zfs_get() {
    let d = PoolDetails {
        zpool_list: "zones\t21474836480\n\tmirror-0\t-\n\t\t/dev/vda1\t-\n\t\t/dev/nvme0n1p1\t-\ncache\t-\n\t/dev/sdc1\t-\nspare\t-\n\t/dev/sdd1\t-\n"
            .into(),
        zfs_get: "creation\t1764000000\nencryption\toff\n".into(),
    };
    let k = pool_keys(&d);
    assert_eq!(k.size_gib, Some(20));
    assert_eq!(k.disks, vec!["vda".to_string(), "nvme0n1".to_string()]);
    assert_eq!(k.profile.as_deref(), Some("mirror"));
    assert_eq!(k.creation, Some(1_764_000_000));
    assert_eq!(k.encrypted, Some(false));
}

#[test]
fn pool_keys_striped_raidz_and_garbage() {
    let striped = PoolDetails {
        zpool_list: "zones\t1073741824\n\t/dev/sda1\t-\n\t/dev/disk/by-id/ata-X-part1\t-\n".into(),
        zfs_get: String::new(),
    };
    let k = pool_keys(&striped);
    assert_eq!(k.profile.as_deref(), Some("striped"));
    assert_eq!(k.disks, vec!["sda".to_string(), "ata-X".to_string()]);
    let raidz = PoolDetails {
        zpool_list: "zones\t1\n\traidz2-0\t-\n\t\t/dev/sda1\n".into(),
        zfs_get: "encryption\taes-256-gcm\n".into(),
    };
    let k = pool_keys(&raidz);
    assert_eq!(k.profile.as_deref(), Some("raidz2"));
    assert_eq!(k.encrypted, Some(true));
    assert_eq!(pool_keys(&PoolDetails { zpool_list: "garbage".into(), zfs_get: "x".into() }), PoolKeys::default());
}
