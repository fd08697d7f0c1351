//! QEMU (TCG) boot tests of the built PI, direct `-kernel/-initrd` with the
//! squashfs fetched over HTTP from a server on the host's loopback, passed as
//! `fetch=<url>` the way booter passes it.
//!
//! Needs a built platform (`out/latest` or `$TRITON_PI_DIR`): the test command
//! (`ci/test.sh`) builds it first.

use std::path::Path;
use std::time::Duration;

use ci::http::HttpServer;
use ci::platform::Platform;
use ci::qemu::{Vm, VmSpec};

const BOOT: Duration = Duration::from_secs(300);

fn cmdline(mac: &str, fetch: &str) -> String {
    format!(
        "console=ttyS0,115200n8 panic=0 BOOTIF=01-{} ip=10.0.2.15:::255.255.255.0:: hostname=cn-test fetch={fetch}",
        mac.replace(':', "-")
    )
}

fn spec(p: &Platform, mac: &str, nic: &str, fetch: &str) -> VmSpec {
    VmSpec {
        kernel: p.x86("vmlinuz"),
        initrd: p.x86("initrd"),
        append: cmdline(mac, fetch),
        mac: mac.into(),
        nic_model: nic.into(),
        memory_mib: 2048,
        cpus: 1,
    }
}

fn no_panic(vm: &Vm) {
    assert!(!vm.saw(|l| l.contains("Kernel panic")), "kernel panicked:\n{}", vm.lines().join("\n"));
}

fn boots_to_stage2(nic: &str, mac: &str) {
    let p = Platform::locate().expect("platform");
    let info = p.buildinfo().expect("buildinfo");
    let http = HttpServer::serve_dir(&p.dir).expect("http");
    let vm = Vm::start(nic, &spec(&p, mac, nic, &http.guest_url("x86_64/filesystem.squashfs"))).expect("qemu");

    let net = vm.wait_event("network", BOOT).expect("network event");
    assert_eq!(net["ok"], true, "{net}");
    assert_eq!(net["mac"], mac);
    assert_eq!(net["ip"], "10.0.2.15/24");
    let verify = vm.wait_event("verify", BOOT).expect("verify event");
    assert_eq!(verify["ok"], true, "{verify}");
    let want = std::fs::read_to_string(p.x86("filesystem.squashfs.hash")).expect("hash");
    assert_eq!(verify["sha256"], want.trim());

    let ev = vm.wait_event("stage2", BOOT).expect("stage2 event");
    assert_eq!(ev["ok"], true, "{ev}");
    assert_eq!(ev["kernel"], info["kernel"], "{ev}");
    let zfs = ev["zfs"].as_str().expect("zfs version");
    let pkg = info["zfs"].as_str().expect("zfs package version");
    // /sys/module/zfs/version is "<upstream>-<debian revision>" of the package.
    assert!(pkg.starts_with(zfs.split('-').next().unwrap_or("?")), "zfs module {zfs} vs package {pkg}");
    no_panic(&vm);
}

#[test]
fn virtio_net_cn_boots_to_stage2_with_zfs() {
    boots_to_stage2("virtio-net-pci", "52:54:00:12:34:56");
}

#[test]
fn e1000_cn_boots_to_stage2_with_zfs() {
    boots_to_stage2("e1000", "52:54:00:12:34:57");
}

/// Boots with `fetch` pointing at something wrong; expects `phase` to fail
/// with `message`, then a working rescue shell and no kernel panic.
fn stops_in_rescue(name: &str, mac: &str, serve: &Path, path: &str, phase: &str, message: &str) {
    let p = Platform::locate().expect("platform");
    let http = HttpServer::serve_dir(serve).expect("http");
    let mut vm = Vm::start(name, &spec(&p, mac, "virtio-net-pci", &http.guest_url(path))).expect("qemu");
    let ev = vm.wait_event(phase, BOOT).expect("phase event");
    assert_eq!(ev["ok"], false, "{ev}");
    let err = ev["error"].as_str().unwrap_or_default();
    assert!(err.contains(message), "{phase} error {err:?} should say {message:?}");
    let rescue = vm.wait_event("rescue", Duration::from_secs(60)).expect("rescue event");
    assert!(rescue["reason"].as_str().unwrap_or_default().contains(message), "{rescue}");
    vm.wait_line("rescue banner", Duration::from_secs(30), |l| l.contains("Starting a rescue shell")).expect("banner");
    // The shell answers on the console.
    std::thread::sleep(Duration::from_secs(2));
    vm.type_line("echo RESCUE-$((20+22))").expect("type");
    vm.wait_line("shell output", Duration::from_secs(60), |l| l.contains("RESCUE-42") && !l.contains("$(("))
        .expect("shell works");
    assert!(!vm.saw(|l| l.contains("\"phase\":\"stage2\"")), "must not reach stage 2");
    no_panic(&vm);
}

#[test]
fn squashfs_hash_mismatch_stops_in_rescue_shell() {
    let p = Platform::locate().expect("platform");
    let d = tempfile::tempdir().expect("tmp");
    // A squashfs that is not the one this initrd was built with.
    std::fs::copy(p.x86("initrd"), d.path().join("filesystem.squashfs")).expect("copy");
    stops_in_rescue("mismatch", "52:54:00:12:34:58", d.path(), "filesystem.squashfs", "verify", "sha256 mismatch");
}

#[test]
fn failed_fetch_stops_in_rescue_shell() {
    let d = tempfile::tempdir().expect("tmp");
    stops_in_rescue("nofetch", "52:54:00:12:34:59", d.path(), "os/missing/filesystem.squashfs", "fetch", "404");
}
