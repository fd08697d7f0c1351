//! Netboot end to end (root + built PI): compute nodes boot from a dev
//! booter (`booter-config`: private netns, dnsmasq DHCP/TFTP, HTTP) exactly
//! the way a Triton CN boots from sdc-booter: SeaBIOS → Debian's iPXE ROM →
//! DHCP with option 175 → booter's `boot.ipxe.01<MAC>` over TFTP → kernel
//! over TFTP, initrd + hash/node.config/networking.json modules over HTTP →
//! our stage 1 fetches the squashfs over HTTP → stage 2 → `ready`.
//!
//! Each test is one scenario with its own dev booter (netns `tnb-<id>-<pid>`,
//! so two tests run side by side). Tests run in name order; with
//! `--test-threads=2` the long pool scenario (b) starts second, next to the
//! quick smoke test (a), and the rest run on the other thread, so the suite
//! takes about as long as b (~10-12 min under TCG):
//!
//! - `a_*`: a blank CN (booter's default serial `ttyb`) → unsetup, ready, ping.
//! - `b_*`: pool created from the console in boot 1, imported in boots 2-4
//!   (setup mode), a /var file kept across three boots, clean `triton-ctl
//!   reboot`s exporting the pool and netbooting again through iPXE; boot 5
//!   without the pool disk → absent, unsetup, reachable.
//! - `c_*`: two CNs at once with their own networking.json (one with an
//!   external tag + vnic), consoles on ttyS0 (`ttya`) and ttyS1 (`ttyb`):
//!   also scenario e (serial console on either port).
//! - `d1_*`..`d4_*`: bad inputs: squashfs 404, squashfs hash mismatch
//!   (booter's hash wrong; squashfs replaced), `BOOTIF` naming no NIC, and
//!   in one boot a corrupt networking.json hash + malformed node.config +
//!   no disk.
//!
//! Every VM's console is kept, with timestamps, under
//! `target/netboot-artifacts/<test>/` (with dnsmasq.log and http.log); each
//! scenario fails on `Kernel panic`, `BUG:`, `Oops` or `Call Trace` on any
//! console and prints per-phase timings per CN (from the `TRITON-EVENT`
//! `ms` fields). Without root or a built PI a test prints `SKIPPED netboot:
//! <why>` and passes. `TRITON_CI_ECHO=1` echoes the consoles.
//!
//! The tftp root holds the PI as hard links to `out/latest`: a test that
//! breaks a platform file unlinks it first, never writes through the link.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use booter_config::config::{self, Cn};
use ci::scenario::{cidr, description, exported, replace_file, timings, Scenario};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The zones pool as server setup lays it out (legacy mounts for
/// var/opt/config, cores, a swap zvol), with setup marked complete.
fn create_triton_pool(s: &mut Scenario, name: &str) {
    let script = ci::cn::create_pool_commands(&[]);
    for line in &script {
        s.sh_ok(name, line);
    }
}

/// a. A blank CN (one blank disk, no hostname: booter's un-setup form, and
/// booter's default serial ttyb) netboots through iPXE to unsetup and ready,
/// fetched the squashfs over HTTP from booter, answers ping; the namespace
/// is gone afterwards.
#[test]
fn a_blank_cn_netboots_unsetup_and_answers_ping() {
    let cns = "[[cn]]\nmac = \"52:54:00:99:0a:01\"\nip = \"10.99.99.110\"\n";
    let Some(mut s) = Scenario::start("a_blank_cn", "a", cns, |_| {}) else { return };
    let cn = s.cfg.cns[0].clone();
    let name = cn.hostname.clone();
    assert_eq!(name, "52-54-00-99-0a-01");
    s.boot(&name);
    let fetch = s.event(&name, "fetch");
    assert_eq!(fetch["ok"], true, "{fetch}");
    assert_eq!(fetch["proto"], "http", "{fetch}");
    assert!(fetch["url"].as_str().is_some_and(|u| u.starts_with("http://10.99.99.9/os/")), "{fetch}");
    let verify = s.event(&name, "verify");
    assert_eq!(verify["checked"], serde_json::json!(["initrd", "booter"]), "booter's hash module: {verify}");
    let net = s.event(&name, "networking");
    assert_eq!(net["ok"], true, "{net}");
    let pool = s.event(&name, "pool");
    assert_eq!(pool["outcome"], "absent", "{pool}");
    let mode = s.event(&name, "mode");
    assert_eq!(mode["mode"], "unsetup", "{mode}");
    let ready = s.event(&name, "ready");
    assert_eq!(ready["ok"], true, "{ready}");
    s.assert_pings(&name, cn.ip);
    let http = fs::read_to_string(s.artifacts.join("http.log")).expect("http.log");
    for want in ["/bootfs/525400990a01/networking.json 200", "/extra/joysetup/node.config 200", "/initrd 200"] {
        assert!(http.contains(want), "http.log should show {want}:\n{http}");
    }
    let console_log = fs::read_to_string(s.artifacts.join(format!("{name}.console.log"))).expect("console log");
    assert!(console_log.contains("console=ttyS1,115200n8"), "booter's default ttyb → ttyS1");
    s.finish();
}

/// b. A pool created from the console in boot 1 is imported in boots 2-4
/// (setup mode); a file written to /var in boot 2 is still there in boots 3
/// and 4; each reboot is a clean `triton-ctl reboot` that exports the pool
/// and netboots again through iPXE. Boot 5 without the pool's disk:
/// outcome absent, unsetup, reachable.
#[test]
fn b_pool_created_imported_and_var_kept_across_netboots() {
    let cns = "[[cn]]\nhostname = \"cnb\"\nmac = \"52:54:00:99:0b:01\"\nip = \"10.99.99.111\"\nserial = \"ttya\"\n";
    let Some(mut s) = Scenario::start("b_pool_across_boots", "b", cns, |_| {}) else { return };
    let (n, ip) = ("cnb", s.cn("cnb").ip);

    // Boot 1: blank disk; create the pool as server setup would.
    s.boot(n);
    let pool = s.event(n, "pool");
    assert_eq!(pool["outcome"], "absent", "boot 1: {pool}");
    assert_eq!(s.event(n, "mode")["mode"], "unsetup");
    s.event(n, "ready");
    s.login(n);
    create_triton_pool(&mut s, n);
    s.reboot(n);

    // Boot 2: imported, setup; write a file into /var.
    let pool = s.event(n, "pool");
    assert_eq!(pool["outcome"], "imported", "boot 2: {pool}");
    let mode = s.event(n, "mode");
    assert_eq!(mode["mode"], "setup", "boot 2: {mode}");
    s.event(n, "ready");
    s.assert_pings(n, ip);
    s.login(n);
    let mounts = s.sh_ok(n, "findmnt -rno SOURCE,TARGET -t zfs");
    assert!(mounts.lines().any(|l| l.trim() == "zones/var /var"), "zones/var on /var:\n{mounts}");
    s.sh_ok(n, "echo kept-$((6*7)) > /var/tmp/netboot-kept && sync");

    // Boots 3 and 4: still there.
    for boot in [3, 4] {
        s.reboot(n);
        let pool = s.event(n, "pool");
        assert_eq!(pool["outcome"], "imported", "boot {boot}: {pool}");
        assert_eq!(s.event(n, "mode")["mode"], "setup", "boot {boot}");
        s.event(n, "ready");
        s.login(n);
        let kept = s.sh_ok(n, "cat /var/tmp/netboot-kept");
        assert_eq!(kept.trim(), "kept-42", "boot {boot}: /var content");
    }

    // Boot 5: the pool's disk is gone.
    s.mark(n);
    s.type_line(n, "triton-ctl poweroff");
    let ev = s.event(n, "shutdown");
    assert_eq!((ev["action"].clone(), ev["ok"].clone()), ("poweroff".into(), true.into()), "{ev}");
    assert!(exported(&ev), "poweroff should export the pool: {ev}");
    if s.b.vm_mut(n).expect("vm").wait_exit(Duration::from_secs(180)).is_none() {
        s.fail("QEMU did not exit after poweroff");
    }
    s.b.vm_mut(n).expect("vm").disks.clear();
    s.boot(n);
    let pool = s.event(n, "pool");
    assert_eq!(pool["outcome"], "absent", "boot 5 (no disk): {pool}");
    let mode = s.event(n, "mode");
    assert_eq!(mode["mode"], "unsetup", "boot 5: {mode}");
    s.event(n, "ready");
    s.assert_pings(n, ip);
    s.finish();
}

/// The `ip/prefix` of every vnic in the networking.json booter serves `cn`.
fn served_addresses(s: &Scenario, cn: &Cn) -> BTreeSet<String> {
    let p = s.b.root.dir.join("bootfs").join(cn.mac_plain()).join("networking.json");
    let v: Value = serde_json::from_str(&fs::read_to_string(&p).expect("networking.json")).expect("JSON");
    v["vnics"]
        .as_array()
        .expect("vnics")
        .iter()
        .map(|n| cidr(n["ip"].as_str().expect("ip"), n["netmask"].as_str().expect("netmask")))
        .collect()
}

/// c + e. Two CNs on one admin network boot at the same time with their own
/// networking.json (different admin IPs; one also has an external nic tag
/// on a second NIC and a vnic on it); both reach ready, each networking
/// event has exactly its own file's addresses, both answer ping. Their
/// consoles are on different serial ports (`ttya` → ttyS0, `ttyb` → ttyS1):
/// each capture shows the whole boot, and the CN's other port does not.
#[test]
fn c_two_cns_at_once_own_networking_serial_ttya_and_ttyb() {
    let cns = "[[cn]]\nhostname = \"cna\"\nmac = \"52:54:00:99:0c:01\"\nip = \"10.99.99.121\"\nserial = \"ttya\"\n\
               [[cn]]\nhostname = \"cnb\"\nmac = \"52:54:00:99:0c:02\"\nip = \"10.99.99.122\"\nserial = \"ttyb\"\n\
               nic_tags = { admin = \"52:54:00:99:0c:02\", external = \"52:54:00:99:0c:12\" }\n\
               [[cn.vnics]]\nmac = \"52:54:00:99:0c:22\"\nnic_tag = \"external\"\nip = \"10.88.88.22\"\n\
               netmask = \"255.255.255.0\"\n";
    let Some(mut s) = Scenario::start("c_two_cns_serial_ports", "c", cns, |_| {}) else { return };
    s.boot("cna");
    s.boot("cnb");
    for n in ["cna", "cnb"] {
        let cn = s.cn(n);
        let want = served_addresses(&s, &cn);
        let ev = s.event(n, "networking");
        assert_eq!(ev["ok"], true, "{n}: {ev}");
        let got: BTreeSet<String> = ev["addresses"]
            .as_object()
            .expect("addresses")
            .values()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(got, want, "{n}: networking event addresses vs its own networking.json: {ev}");
        assert!(got.contains(&format!("{}/24", cn.ip)), "{n}: admin address {}: {ev}", cn.ip);
    }
    assert!(served_addresses(&s, &s.cn("cnb")).contains("10.88.88.22/24"));
    for n in ["cna", "cnb"] {
        assert_eq!(s.event(n, "mode")["mode"], "unsetup", "{n}");
        s.event(n, "ready");
    }
    for n in ["cna", "cnb"] {
        s.assert_pings(n, s.cn(n).ip);
    }
    // e: the console each CN's `serial` names carries the boot; the other does not.
    for (n, port, other) in [("cna", "ttyS0", "ttyS1"), ("cnb", "ttyS1", "ttyS0")] {
        let log = fs::read_to_string(s.artifacts.join(format!("{n}.console.log"))).expect("console log");
        assert!(log.contains(&format!("console={port},115200n8")), "{n}: booter's console={port}");
        for phase in ["modules", "fetch", "stage2", "ready"] {
            assert!(
                log.lines().any(|l| l.starts_with('[') && l.contains(&format!("\"phase\":\"{phase}\""))),
                "{n}: the timestamped {port} capture lacks the {phase} event"
            );
        }
        let raw = fs::read_to_string(s.artifacts.join(format!("{n}.{other}.log"))).unwrap_or_default();
        assert!(!raw.contains("TRITON-EVENT"), "{n}: the boot went to {other}, not the console booter named");
    }
    s.finish();
}

/// d1. The squashfs is missing from booter's tftp root (HTTP 404): the
/// fetch fails saying so, stage 1 stops in a rescue shell that answers.
#[test]
fn d1_squashfs_404_rescue_shell() {
    let cns = "[[cn]]\nhostname = \"cn404\"\nmac = \"52:54:00:99:0d:01\"\nip = \"10.99.99.131\"\nserial = \"ttya\"\n";
    let Some(mut s) = Scenario::start("d1_squashfs_404", "d1", cns, |o| o.qemu.disks = 0) else { return };
    let stamp = s.b.platform.clone();
    fs::remove_file(s.platform_file(&stamp, "filesystem.squashfs")).expect("remove the squashfs");
    s.boot("cn404");
    let ev = s.event_where("cn404", "fetch", true, |_| true);
    assert_eq!(ev["ok"], false, "{ev}");
    assert!(ev["error"].as_str().unwrap_or_default().contains("404"), "the fetch error should say 404: {ev}");
    s.rescue_shell_answers("cn404", "404");
    let http = fs::read_to_string(s.artifacts.join("http.log")).expect("http.log");
    assert!(http.contains("/platform/x86_64/filesystem.squashfs 404"), "{http}");
    s.finish();
}

/// d2. Squashfs hash mismatches, two CNs at once on two installed platforms:
/// booter's `filesystem.squashfs.hash` is wrong (→ "differs from booter's"),
/// and a squashfs replaced by another file whose booter hash agrees (→ the
/// hash pinned in the initrd catches it). Both stop in a rescue shell.
#[test]
fn d2_squashfs_hash_mismatch_rescue_shell() {
    let other = "20000101T000000Z";
    let cns = format!(
        "[[cn]]\nhostname = \"cnhash\"\nmac = \"52:54:00:99:0d:21\"\nip = \"10.99.99.132\"\nserial = \"ttya\"\n\
         [[cn]]\nhostname = \"cnswap\"\nmac = \"52:54:00:99:0d:22\"\nip = \"10.99.99.133\"\nplatform = \"{other}\"\n"
    );
    // The second platform must be installed before the CN using it is added.
    let Some(mut s) = Scenario::start("d2_squashfs_hash_mismatch", "d2", "", |o| o.qemu.disks = 0) else { return };
    let pi = booter_config::cmd::default_pi();
    let copy = tempfile::Builder::new().prefix("netboot-d2-pi-").tempdir_in("/var/tmp").expect("tmp");
    let dir = copy.path().join(format!("platform-{other}"));
    let st = std::process::Command::new("cp")
        .arg("-al")
        .arg(pi.canonicalize().expect("PI"))
        .arg(&dir)
        .status()
        .expect("cp -al");
    assert!(st.success(), "cp -al of the PI");
    assert_eq!(s.b.install_platform(&dir).expect("install the second platform"), other);
    s.cfg = config::parse(&description(&cns), false, "d2").expect("description").validate().expect("valid");
    for cn in s.cfg.cns.clone() {
        s.b.add_cn(cn).expect("add cn");
    }
    let main = s.b.platform.clone();
    replace_file(&s.platform_file(&main, "filesystem.squashfs.hash"), format!("{}\n", "0".repeat(64)).as_bytes());
    // Another file as the squashfs (the kernel: small), with a matching booter hash.
    let vmlinuz = fs::read(s.platform_file(other, "vmlinuz")).expect("vmlinuz");
    replace_file(&s.platform_file(other, "filesystem.squashfs"), &vmlinuz);
    let sha = hex::encode(Sha256::digest(&vmlinuz));
    replace_file(&s.platform_file(other, "filesystem.squashfs.hash"), format!("{sha}\n").as_bytes());
    assert_ne!(
        fs::read(pi.join("x86_64/filesystem.squashfs.hash")).expect("PI hash"),
        format!("{sha}\n").into_bytes(),
        "the built PI must be untouched"
    );
    s.boot("cnhash");
    s.boot("cnswap");
    for (n, says) in [("cnhash", "differs from booter's"), ("cnswap", "sha256 mismatch")] {
        let ev = s.event_where(n, "verify", true, |_| true);
        assert_eq!(ev["ok"], false, "{n}: {ev}");
        assert!(ev["error"].as_str().unwrap_or_default().contains(says), "{n}: verify error should say {says:?}: {ev}");
    }
    for (n, says) in [("cnhash", "differs from booter's"), ("cnswap", "sha256 mismatch")] {
        s.rescue_shell_answers(n, says);
    }
    s.finish();
}

/// d3. `BOOTIF` names a NIC the CN does not have (boot.ipxe edited in the
/// tftp root): stage 1 waits 30 s for the MAC, says which NICs it saw, and
/// stops in a rescue shell.
#[test]
fn d3_bootif_unknown_nic_rescue_shell() {
    let cns = "[[cn]]\nhostname = \"cnbif\"\nmac = \"52:54:00:99:0d:31\"\nip = \"10.99.99.134\"\nserial = \"ttya\"\n";
    let Some(mut s) = Scenario::start("d3_bootif_unknown_nic", "d3", cns, |o| o.qemu.disks = 0) else { return };
    let cn = s.cn("cnbif");
    let ipxe = s.b.root.dir.join(format!("boot.ipxe.01{}", cn.mac_upper()));
    let text = fs::read_to_string(&ipxe).expect("boot.ipxe");
    assert!(text.contains("BOOTIF=01-52-54-00-99-0d-31 "), "{text}");
    replace_file(&ipxe, text.replace("BOOTIF=01-52-54-00-99-0d-31 ", "BOOTIF=01-52-54-00-99-0d-ff ").as_bytes());
    s.boot("cnbif");
    let ev = s.event_where("cnbif", "network", true, |_| true);
    assert_eq!(ev["ok"], false, "{ev}");
    let err = ev["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("no network interface with MAC 52:54:00:99:0d:ff appeared within 30 s"),
        "network error should name the missing MAC: {ev}"
    );
    assert!(err.contains("52:54:00:99:0d:31"), "and list the NICs it saw: {ev}");
    assert!(ev["ms"].as_u64().unwrap_or(0) >= 30_000, "stage 1 waits 30 s for the NIC: {ev}");
    s.rescue_shell_answers("cnbif", "52:54:00:99:0d:ff");
    s.finish();
}

/// d4. Non-fatal bad inputs in one boot: networking.json whose hash does not
/// match (nothing applied, the boot address kept, reachable), a malformed
/// node.config (a warning per bad line, the rest used) and no disk at all
/// (pool absent, unsetup): the node still reaches ready and answers ping.
#[test]
fn d4_bad_networking_hash_malformed_node_config_no_disk_still_ready() {
    let cns = "[[cn]]\nhostname = \"cnbad\"\nmac = \"52:54:00:99:0d:41\"\nip = \"10.99.99.135\"\nserial = \"ttya\"\n";
    let Some(mut s) = Scenario::start("d4_bad_inputs_nonfatal", "d4", cns, |o| o.qemu.disks = 0) else { return };
    let cn = s.cn("cnbad");
    let hash = s.b.root.dir.join("bootfs").join(cn.mac_plain()).join("networking.json.hash");
    replace_file(&hash, "0".repeat(40).as_bytes());
    let node_config = s.b.root.dir.join("extra/joysetup/node.config");
    let good = fs::read_to_string(&node_config).expect("node.config");
    let n = good.lines().count();
    // Lines n+1.. are broken three different ways.
    let bad = format!("{good}this line has no equals sign\nbad-key='x'\ndns_domain='unbalanced\n");
    replace_file(&node_config, bad.as_bytes());
    s.boot("cnbad");
    let ev = s.event("cnbad", "networking");
    assert_eq!(ev["ok"], false, "{ev}");
    assert!(ev["error"].as_str().unwrap_or_default().contains("does not match"), "hash error: {ev}");
    let kept: Vec<&str> = ev["kept"].as_array().expect("kept").iter().filter_map(Value::as_str).collect();
    assert!(kept.iter().any(|k| k.ends_with(&format!("={}/24", cn.ip))), "boot address kept: {ev}");
    s.line("cnbad", "networking message", Duration::from_secs(5), |l| {
        l.contains("keeping the boot address") && !l.contains("TRITON-EVENT")
    });
    let lines = s.boot_lines("cnbad");
    for (no, why) in
        [(n + 1, "no '=' in line"), (n + 2, "\"bad-key\" is not a valid key"), (n + 3, "unbalanced quotes")]
    {
        let want = format!("warning: /etc/node.config line {no}: {why}");
        assert!(lines.iter().any(|l| l.contains(&want)), "console should say {want:?}");
    }
    let pool = s.event("cnbad", "pool");
    assert_eq!(pool["outcome"], "absent", "{pool}");
    let mode = s.event("cnbad", "mode");
    assert_eq!(mode["mode"], "unsetup", "{mode}");
    let ready = s.event("cnbad", "ready");
    assert_eq!(ready["ok"], true, "{ready}");
    s.assert_pings("cnbad", cn.ip);
    s.finish();
}

#[test]
fn timings_group_events_by_boot() {
    let lines: Vec<String> = [
        r#"[  1.0] TRITON-EVENT {"phase":"modules","ok":true,"ms":800}"#,
        r#"TRITON-EVENT {"phase":"fetch","ok":false,"ms":31000,"error":"404"}"#,
        "noise",
        r#"TRITON-EVENT {"phase":"modules","ok":true,"ms":700}"#,
        r#"TRITON-EVENT {"phase":"ready","ok":true,"uptime_ms":61000}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        timings("cn1", &lines),
        "  cn1 boot 1: modules 800 · fetch! 31000\n  cn1 boot 2: modules 700 · ready@61000\n"
    );
}
