//! QEMU (TCG) tests of stage 2 on the built PI: networking from
//! triton-networking.json, the zones pool on virtio disks across boots,
//! node mode, the supervisor and its control CLI.
//!
//! Needs a built platform (`out/latest` or `$TRITON_PI_DIR`).

use std::time::Duration;

use ci::cn::{create_pool_commands, slirp_networking, Cn, BOOT, PASSWORD};
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

/// Creates the zones pool the way joysetup lays it out (legacy mounts for
/// var/opt/config, cores, a swap zvol), marks setup complete and installs a
/// test service manifest on /opt, as server setup would.
fn create_triton_pool(vm: &mut Vm) {
    let manifest = "mkdir -p /run/o/triton/services && printf 'name = \"ci-hello\"\\nexec = [\"/bin/sh\", \"-c\", \"echo hello-from-ci; exec sleep 100000\"]\\nneeds = [\"pool\"]\\nmodes = [\"setup\"]\\n' > /run/o/triton/services/ci-hello.toml";
    for line in create_pool_commands(&[manifest]) {
        vm.sh_ok(&line, CMD).unwrap_or_else(|e| panic!("creating the pool: {e:#}"));
    }
}

/// `sysinfo` on the CN, parsed.
fn sysinfo(vm: &mut Vm) -> serde_json::Value {
    let out = vm.sh_ok("sysinfo -u 2>/dev/null && sysinfo 2>/dev/null", CMD).expect("sysinfo");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("sysinfo output is not JSON ({e}):\n{out}"))
}

/// The pool event and the mode event of the current boot.
fn pool_and_mode(vm: &Vm) -> (serde_json::Value, serde_json::Value) {
    let pool = vm.wait_event("pool", BOOT).expect("pool event");
    let mode = vm.wait_event("mode", Duration::from_secs(60)).expect("mode event");
    (pool, mode)
}

/// Reboots through the control CLI and checks the orderly shutdown
/// exported the pool (QEMU runs with -no-reboot, so it exits).
fn reboot_via_ctl(vm: &mut Vm, expect_export: bool) {
    vm.type_line("triton-ctl reboot").expect("type");
    let ev = vm.wait_event("shutdown", Duration::from_secs(180)).expect("shutdown event");
    assert_eq!(ev["action"], "reboot", "{ev}");
    if expect_export {
        assert_eq!(ev["ok"], true, "pool export at shutdown: {ev}");
    }
    vm.wait_exit(Duration::from_secs(120)).expect("QEMU exits on reboot");
}

/// A blank CN comes up unsetup; a pool created on it (as server setup
/// does) is exported by a clean reboot through `triton-ctl`, imported on the
/// next boot with the Triton layout mounted (/var seeded from the image,
/// /opt, cores, swap) and the node setup with the pool's service running; a
/// file in /var is kept across the following reboot.
#[test]
fn zones_pool_created_imported_and_var_kept_across_boots() {
    let p = Platform::locate().expect("platform");
    let http = HttpServer::serve_dir(&p.dir).expect("http");
    let mac = "52:54:00:12:35:10";
    let mut cn = Cn::new(&p, &http, "pool", mac, Some(&slirp_networking(mac)));
    cn.spec.uuid = Some("4c4c4544-0036-3010-8036-b5c04f4e3033".into());
    cn.add_disk(4).expect("disk");

    // Boot 1: blank disk.
    let mut vm = cn.boot(1).expect("boot 1");
    let (pool, mode) = pool_and_mode(&vm);
    assert_eq!(pool["outcome"], "absent", "{pool}");
    assert_eq!(mode["mode"], "unsetup", "{mode}");
    vm.login(PASSWORD).expect("login");
    let info = sysinfo(&mut vm);
    assert_eq!(info["Setup"], "false", "unsetup CN: {info}");
    assert_eq!(info["System Type"], "Linux");
    assert_eq!(info["UUID"], "44454c4c-3600-1030-8036-b5c04f4e3033", "SmartOS byte order: {info}");
    assert_eq!(info["Hostname"], "52-54-00-12-35-10", "booter finds unsetup CNs by the dashed MAC");
    assert_eq!(info["Network Interfaces"]["eth0"]["NIC Names"], json!(["admin"]), "{info}");
    create_triton_pool(&mut vm);
    reboot_via_ctl(&mut vm, true);
    drop(vm);

    // Boot 2: imported, layout mounted, setup, service up.
    let mut vm = cn.boot(2).expect("boot 2");
    let (pool, mode) = pool_and_mode(&vm);
    assert_eq!(pool["outcome"], "imported", "{pool}");
    assert_eq!(mode["mode"], "setup", "{mode}");
    vm.login(PASSWORD).expect("login");
    let mounts = vm.sh_ok("findmnt -rno SOURCE,TARGET -t zfs", CMD).expect("findmnt");
    for (src, dst) in [("zones/var", "/var"), ("zones/opt", "/opt"), ("zones/cores/global", "/zones/global/cores")] {
        assert!(mounts.lines().any(|l| l.trim() == format!("{src} {dst}")), "{src} on {dst}:\n{mounts}");
    }
    let seeded = vm.sh_ok("ls /var/lib/dpkg/status /var/.triton-var-seeded", CMD).expect("seeded /var");
    assert!(seeded.contains("/var/lib/dpkg/status"), "{seeded}");
    let swap = vm.sh_ok("cat /proc/swaps", CMD).expect("swaps");
    assert!(swap.lines().count() >= 2, "swap zvol in use:\n{swap}\npool event: {pool}");
    let core = vm.sh_ok("cat /proc/sys/kernel/core_pattern", CMD).expect("core_pattern");
    assert_eq!(core.trim(), "/zones/global/cores/core.%e.%p");
    let info = sysinfo(&mut vm);
    assert_eq!(info["Setup"], "true", "the setup-state file says complete: {info}");
    assert_eq!(info["Zpool"], "zones", "{info}");
    let status = vm.sh_ok("triton-ctl status", CMD).expect("status");
    assert!(status.lines().any(|l| l.contains("ci-hello") && l.contains("running")), "{status}");
    let log = vm.sh_ok("cat /var/log/ci-hello.log", CMD).expect("service log");
    assert!(log.contains("hello-from-ci"), "{log}");
    vm.sh_ok("echo kept-$((6*7)) > /var/tmp/ci-kept", CMD).expect("write /var");
    reboot_via_ctl(&mut vm, true);
    drop(vm);

    // Boot 3: the file is still there.
    let mut vm = cn.boot(3).expect("boot 3");
    let (pool, mode) = pool_and_mode(&vm);
    assert_eq!(pool["outcome"], "imported", "{pool}");
    assert_eq!(mode["mode"], "setup", "{mode}");
    vm.login(PASSWORD).expect("login");
    let kept = vm.sh_ok("cat /var/tmp/ci-kept", CMD).expect("read /var");
    assert_eq!(kept.trim(), "kept-42");

    // Boot 4: noimport=true leaves the pool alone; unsetup says why.
    reboot_via_ctl(&mut vm, true);
    drop(vm);
    cn.spec.append.push_str(" noimport=true");
    let mut vm = cn.boot(4).expect("boot 4");
    let (pool, mode) = pool_and_mode(&vm);
    assert_eq!(pool["outcome"], "noimport", "{pool}");
    assert_eq!(mode["mode"], "unsetup", "{mode}");
    assert!(mode["reason"].as_str().unwrap_or_default().contains("noimport"), "{mode}");
    vm.login(PASSWORD).expect("login");
    let pools = vm.sh_ok("zpool list -H -o name 2>&1 || true", CMD).expect("zpool list");
    assert!(!pools.lines().any(|l| l.trim() == "zones"), "noimport must not import: {pools}");
    vm.type_line("triton-ctl poweroff").expect("type");
    vm.wait_exit(Duration::from_secs(180)).expect("poweroff");
    drop(vm);

    // Boot 5: the pool's disk is gone: unsetup, not stuck.
    cn.spec.append = cn.spec.append.replace(" noimport=true", "");
    cn.spec.disks.clear();
    let vm = cn.boot(5).expect("boot 5");
    let (pool, mode) = pool_and_mode(&vm);
    assert_eq!(pool["outcome"], "absent", "{pool}");
    assert_eq!(mode["mode"], "unsetup", "{mode}");
    vm.wait_event("ready", Duration::from_secs(60)).expect("ready");
    no_panic(&vm);
}
