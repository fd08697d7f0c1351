//! QEMU (TCG) test of the commands the headnode's setup scripts call on a
//! Linux CN, run on the built PI against real disks and a real ZFS:
//! `disklayout` → `mkzpool` (the `-B` refusal and the plain create),
//! `json` on sysinfo and the pool JSON, the `zfs` pass-through for the dump
//! zvol, the `systemctl` shim, `config.sh`, `bootparams`, `zonename`,
//! `imgadm sources`, NTP tools present, and sysinfo's pool keys afterwards.
//!
//! Needs a built platform (`out/latest` or `$TRITON_PI_DIR`).

use std::time::Duration;

use ci::cn::{slirp_networking, Cn, PASSWORD, SHADOW};
use ci::http::HttpServer;
use ci::platform::Platform;
use serde_json::Value;

const CMD: Duration = Duration::from_secs(90);

#[test]
fn setup_commands_on_real_disks() {
    let p = Platform::locate().expect("platform");
    let http = HttpServer::serve_dir(&p.dir).expect("http");
    let mac = "52:54:00:12:36:01";
    let mut cn = Cn::new(&p, &http, "tools", mac, Some(&slirp_networking(mac)));
    cn.set_file(
        "etc/node.config",
        format!(
            "datacenter_name='dc-tools'\nimgapi_domain='imgapi.dc-tools.example'\n\
             evil='$(touch /tmp/pwned); x'\nroot_shadow='{SHADOW}'\n"
        ),
    );
    for _ in 0..3 {
        cn.add_disk(6).expect("disk");
    }
    let mut vm = cn.boot(1).expect("boot");
    vm.wait_event("ready", Duration::from_secs(300)).expect("ready");
    vm.login(PASSWORD).expect("login");
    let sh = |vm: &mut ci::qemu::Vm, c: &str| {
        vm.sh_ok(&format!("PATH=/usr/bin:/usr/sbin:/sbin; {c}"), CMD).unwrap_or_else(|e| panic!("{c}: {e:#}"))
    };

    // Three equal disks → raidz1, capacity in bytes for joysetup's disk check.
    let layout: Value = serde_json::from_str(&sh(&mut vm, "disklayout 2>/dev/null")).expect("disklayout JSON");
    assert_eq!(layout["vdevs"][0]["type"], "raidz", "{layout}");
    assert_eq!(layout["vdevs"][0]["devices"].as_array().map(Vec::len), Some(3), "{layout}");
    sh(&mut vm, "disklayout > /tmp/pool.json");
    let capacity: u64 = sh(&mut vm, "json capacity < /tmp/pool.json").trim().parse().expect("capacity");
    assert!(capacity > 10 << 30, "raidz1 of 3×6 GiB: {capacity}");
    let ram: u64 = sh(&mut vm, "sysinfo 2>/dev/null | json 'MiB of Memory'").trim().parse().expect("MiB of Memory");
    assert!((1500..=2100).contains(&ram), "{ram}");
    // A layout the disks cannot take is refused with a reason.
    let (out, rc) = vm.sh("disklayout -w 9 mirror > /dev/null", CMD).expect("sh");
    assert_ne!(rc, 0, "impossible layout must fail: {out:?}");

    // joysetup's create_zpool: -B refused on Linux, the plain create works.
    let (out, rc) = vm.sh("mkzpool -B -f zones /tmp/pool.json", CMD).expect("sh");
    assert_ne!(rc, 0, "-B must be refused: {out:?}");
    assert!(out.join("\n").contains("without -B"), "{out:?}");
    sh(&mut vm, "mkzpool -f zones /tmp/pool.json && test -f /zones/.system_pool && zfs set atime=off zones");
    let health = sh(&mut vm, "zpool list -H -o health,altroot zones; findmnt -rno TARGET /zones");
    assert!(health.contains("ONLINE") && health.contains("/zones"), "{health}");
    // The dump zvol exactly as joysetup creates it (illumos checksum value).
    sh(&mut vm, "zfs create -V 512mb -o checksum=noparity -b $(getconf PAGESIZE) -o logbias=throughput -o sync=always -o primarycache=metadata -o secondarycache=none zones/dump");
    assert_eq!(sh(&mut vm, "zfs get -H -o value checksum zones/dump").trim(), "on");
    // The systemd unit joysetup restarts does not exist here: the shim says so and succeeds.
    sh(&mut vm, "systemctl restart triton-lxd.service");

    // config.sh: values assigned, never executed.
    let cfg = sh(&mut vm, ". /usr/triton/bin/config.sh; load_sdc_config; echo \"dc=$CONFIG_datacenter_name img=$CONFIG_imgapi_domain\"; ls /tmp/pwned 2>&1 || true");
    assert!(cfg.contains("dc=dc-tools img=imgapi.dc-tools.example"), "{cfg}");
    assert!(cfg.contains("No such file"), "a value must not run: {cfg}");
    assert!(sh(&mut vm, "bootparams").lines().any(|l| l.starts_with("console=")));
    assert_eq!(sh(&mut vm, "zonename").trim(), "global");
    sh(&mut vm, "test -x /usr/sbin/ntpdate && test -x /usr/bin/ntpdig && ntpdig --help >/dev/null 2>&1 || ntpdig -V");

    // imgadm as setup_imgadm drives it.
    sh(&mut vm, "imgadm list -H; for s in $(imgadm sources); do imgadm sources -f -d $s; done; imgadm sources -f -a http://$CONFIG_imgapi_domain");
    let sources = sh(&mut vm, "imgadm sources");
    assert_eq!(sources.trim(), "http://imgapi.dc-tools.example", "{sources}");

    // sysinfo now reports the pool.
    let info: Value =
        serde_json::from_str(&sh(&mut vm, "sysinfo -u 2>/dev/null; sysinfo 2>/dev/null")).expect("sysinfo");
    assert_eq!(info["Zpool"], "zones", "{info}");
    assert_eq!(info["Zpool Profile"], "raidz", "{info}");
    assert_eq!(info["Zpool Disks"].as_str().map(|d| d.split(',').count()), Some(3), "{info}");
    assert!(info["Zpool Size in GiB"].as_u64().is_some_and(|g| g >= 15), "{info}");
    assert!(info["Zpool Creation"].as_u64().is_some_and(|t| t > 1_700_000_000), "{info}");
    assert!(!vm.saw(|l| l.contains("Kernel panic") || l.contains("Call Trace")));
}
