//! QEMU (TCG) tests of stage 2 on the built PI: networking from
//! triton-networking.json, the zones pool on virtio disks across boots,
//! node mode, the supervisor and its control CLI.
//!
//! Needs a built platform (`out/latest` or `$TRITON_PI_DIR`).

use std::time::Duration;

use ci::cn::{slirp_networking, Cn, BOOT, PASSWORD};
use ci::http::HttpServer;
use ci::platform::Platform;
use ci::qemu::Vm;
use serde_json::json;

const CMD: Duration = Duration::from_secs(60);

fn no_panic(vm: &Vm) {
    assert!(!vm.saw(|l| l.contains("Kernel panic")), "kernel panicked:\n{}", vm.lines().join("\n"));
}

/// A damaged or malformed networking.json changes nothing: the admin
/// address from `ip=` stays, the event says why, the node finishes booting.
fn bad_networking_keeps_boot_address(name: &str, mac: &str, json_text: &[u8], hash: Option<&str>, says: &str) {
    let p = Platform::locate().expect("platform");
    let http = HttpServer::serve_dir(&p.dir).expect("http");
    let mut cn = Cn::new(&p, &http, name, mac, None);
    cn.set_file("etc/triton-networking.json", json_text);
    if let Some(h) = hash {
        cn.set_file("etc/triton-networking.json.hash", h);
    }
    let mut vm = cn.boot(1).expect("boot");
    let ev = vm.wait_event("networking", BOOT).expect("networking event");
    assert_eq!(ev["ok"], false, "{ev}");
    assert!(ev["error"].as_str().unwrap_or_default().contains(says), "error should say {says:?}: {ev}");
    let kept = ev["kept"].as_array().expect("kept addresses");
    assert!(kept.iter().any(|k| k.as_str().unwrap_or_default().ends_with("=10.0.2.15/24")), "{ev}");
    vm.wait_event("mode", BOOT).expect("mode event");
    vm.login(PASSWORD).expect("login");
    let out = vm.sh_ok("ip -4 -o addr show", CMD).expect("ip addr");
    assert!(out.contains("10.0.2.15/24"), "admin address must stay up:\n{out}");
    no_panic(&vm);
}

#[test]
fn malformed_networking_json_keeps_the_boot_address() {
    bad_networking_keeps_boot_address("badjson", "52:54:00:12:35:01", b"{\"nictags\": [", None, "not valid JSON");
}

#[test]
fn wrong_hash_networking_json_keeps_the_boot_address() {
    let text = slirp_networking("52:54:00:12:35:02").to_string();
    bad_networking_keeps_boot_address(
        "badhash",
        "52:54:00:12:35:02",
        text.as_bytes(),
        Some(&"0".repeat(40)),
        "does not match",
    );
}

/// Two NICs in an LACP aggregation providing the external tag, an external
/// vnic with its own MAC on VLAN 3, next to the admin NIC; applying again
/// changes nothing.
#[test]
fn aggregation_and_vlan_from_networking_json() {
    let p = Platform::locate().expect("platform");
    let http = HttpServer::serve_dir(&p.dir).expect("http");
    let mac = "52:54:00:12:35:03";
    let (m1, m2, vmac) = ("52:54:00:aa:00:01", "52:54:00:aa:00:02", "52:54:00:ee:00:03");
    let mut n = slirp_networking(mac);
    n["nictags"].as_array_mut().expect("nictags").push(json!({"name": "external", "mac": "aggr0", "mtu": 1500}));
    n["aggregations"] =
        json!([{"name": "aggr0", "macs": [m1, m2], "lacp_mode": "active", "nic_tags_provided": ["external"]}]);
    n["vnics"].as_array_mut().expect("vnics").push(json!({
        "mac": vmac, "ip": "10.88.88.5", "netmask": "255.255.255.0", "vlan_id": 3,
        "nic_tag": "external", "nic_tags_provided": ["external"], "resolvers": []
    }));
    let mut cn = Cn::new(&p, &http, "aggr", mac, Some(&n));
    cn.spec.extra_nics = vec![(m1.into(), "virtio-net-pci".into()), (m2.into(), "virtio-net-pci".into())];
    let mut vm = cn.boot(1).expect("boot");
    let ev = vm.wait_event("networking", BOOT).expect("networking event");
    assert_eq!(ev["ok"], true, "{ev}");
    assert_eq!(ev["addresses"]["external0"], "10.88.88.5/24", "{ev}");
    assert_eq!(ev["addresses"]["admin0"], "10.0.2.15/24", "{ev}");
    vm.wait_event("mode", BOOT).expect("mode event");
    vm.login(PASSWORD).expect("login");
    let mode = vm.sh_ok("cat /sys/class/net/aggr0/bonding/mode", CMD).expect("bond mode");
    assert!(mode.contains("802.3ad"), "{mode}");
    let slaves = vm.sh_ok("cat /sys/class/net/aggr0/bonding/slaves", CMD).expect("slaves");
    assert_eq!(slaves.split_whitespace().count(), 2, "two members: {slaves}");
    let vlan = vm.sh_ok("cat /proc/net/vlan/aggr0.3", CMD).expect("vlan");
    assert!(vlan.contains("VID: 3"), "{vlan}");
    let ext = vm.sh_ok("ip -d -o link show external0; ip -4 -o addr show external0", CMD).expect("external0");
    assert!(ext.contains("macvlan") && ext.contains(vmac) && ext.contains("10.88.88.5/24"), "{ext}");
    let plan = vm.sh_ok("triton-net plan", CMD).expect("plan");
    assert!(plan.contains("in sync"), "applying again must change nothing:\n{plan}");
    let resolv = vm.sh_ok("cat /etc/resolv.conf", CMD).expect("resolv.conf");
    assert!(resolv.contains("nameserver 10.0.2.3") && resolv.contains("ci-1.ci.example"), "{resolv}");
    no_panic(&vm);
}
