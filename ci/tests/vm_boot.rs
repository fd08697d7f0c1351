//! QEMU (TCG) boot tests of the built PI, direct `-kernel/-initrd` with the
//! squashfs fetched over HTTP from a server on the host's loopback, passed as
//! `fetch=<url>` the way booter passes it.
//!
//! Needs a built platform (`out/latest` or `$TRITON_PI_DIR`): the test command
//! (`ci/test.sh`) builds it first.

use std::path::Path;
use std::time::Duration;

use ci::http::HttpServer;
use ci::inject::initrd_with_files;
use ci::platform::Platform;
use ci::qemu::{Vm, VmSpec};

const BOOT: Duration = Duration::from_secs(300);

fn spec(p: &Platform, mac: &str, nic: &str, fetch: &str) -> VmSpec {
    VmSpec::netboot(p, mac, nic, fetch)
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
fn stops_in_rescue(
    name: &str,
    mac: &str,
    serve: &Path,
    path: &str,
    inject: &[(&str, &[u8])],
    phase: &str,
    message: &str,
) {
    let p = Platform::locate().expect("platform");
    let http = HttpServer::serve_dir(serve).expect("http");
    let mut s = spec(&p, mac, "virtio-net-pci", &http.guest_url(path));
    let tmp = tempfile::tempdir().expect("tmp");
    if !inject.is_empty() {
        s.initrd = tmp.path().join("initrd");
        initrd_with_files(&p.x86("initrd"), inject, &s.initrd).expect("inject");
    }
    let mut vm = Vm::start(name, &s).expect("qemu");
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
    stops_in_rescue("mismatch", "52:54:00:12:34:58", d.path(), "filesystem.squashfs", &[], "verify", "sha256 mismatch");
}

#[test]
fn failed_fetch_stops_in_rescue_shell() {
    let d = tempfile::tempdir().expect("tmp");
    stops_in_rescue("nofetch", "52:54:00:12:34:59", d.path(), "os/missing/filesystem.squashfs", &[], "fetch", "404");
}

#[test]
fn booter_squashfs_hash_mismatch_stops_in_rescue_shell() {
    let p = Platform::locate().expect("platform");
    let wrong = format!("{}\n", "0".repeat(64));
    stops_in_rescue(
        "booterhash",
        "52:54:00:12:34:5b",
        &p.dir,
        "x86_64/filesystem.squashfs",
        &[("filesystem.squashfs.hash", wrong.as_bytes())],
        "verify",
        "differs from booter's",
    );
}

/// SMBIOS UUID → sysinfo UUID and /etc/hostid; no `hostname=` → the admin
/// MAC with dashes; node.config's root_shadow → a working console login;
/// booter's squashfs hash file checked.
#[test]
fn node_identity_and_console_login_from_node_config() {
    const PASSWORD: &str = "triton-test";
    const SHADOW: &str =
        "$6$tritonci$xuDjYU/6KX3NUapGihw3W.UYZCBTPjR3CKe6OCmWl35MlIHznEx6gPusz.jad.lj/v1NiC2OFO3H2LjufbEkJ0";
    let p = Platform::locate().expect("platform");
    let http = HttpServer::serve_dir(&p.dir).expect("http");
    let mac = "52:54:00:12:34:5a";
    let mut s = spec(&p, mac, "virtio-net-pci", &http.guest_url("x86_64/filesystem.squashfs"));
    s.uuid = Some("4c4c4544-0036-3010-8036-b5c04f4e3032".into());
    let tmp = tempfile::tempdir().expect("tmp");
    s.initrd = tmp.path().join("initrd");
    let node_config = format!("datacenter_name='ci-1'\nroot_shadow='{SHADOW}'\n");
    let hash = std::fs::read(p.x86("filesystem.squashfs.hash")).expect("hash");
    initrd_with_files(
        &p.x86("initrd"),
        &[("etc/node.config", node_config.as_bytes()), ("filesystem.squashfs.hash", &hash)],
        &s.initrd,
    )
    .expect("inject");
    let mut vm = Vm::start("identity", &s).expect("qemu");

    let verify = vm.wait_event("verify", BOOT).expect("verify");
    assert_eq!(verify["checked"], serde_json::json!(["initrd", "booter"]), "{verify}");
    let rootfs = vm.wait_event("rootfs", BOOT).expect("rootfs");
    assert!(rootfs["carried"].as_array().is_some_and(|a| a.iter().any(|c| c == "etc/node.config")), "{rootfs}");
    let ev = vm.wait_event("stage2", BOOT).expect("stage2");
    assert_eq!(ev["ok"], true, "{ev}");
    let uuid = "44454c4c-3600-1030-8036-b5c04f4e3032";
    assert_eq!(ev["uuid"], uuid);
    let hostid = u32::from_le_bytes(boot_params::identity::hostid_bytes(uuid));
    assert_eq!(ev["hostid"], format!("{hostid:08x}"));
    assert_eq!(ev["hostname"], "52-54-00-12-34-5a");
    assert_eq!(ev["root_password"], "from node.config");
    let arc = ev["arc_max"].as_u64().expect("arc_max");
    assert!((256 << 20..=1 << 30).contains(&arc), "ARC cap {arc} for a 2 GiB node");

    // Log in on the console with the password from node.config.
    let mut logged_in = false;
    for attempt in 0..3 {
        std::thread::sleep(Duration::from_secs(5));
        vm.type_line("root").expect("type");
        std::thread::sleep(Duration::from_secs(3));
        vm.type_line(PASSWORD).expect("type");
        std::thread::sleep(Duration::from_secs(3));
        vm.type_line(&format!("echo LOGIN{attempt}-$(id -u)-$(hostname)-$(od -An -tx4 /etc/hostid | tr -d ' ')"))
            .expect("type");
        let want = format!("LOGIN{attempt}-0-52-54-00-12-34-5a-{hostid:08x}");
        if vm.wait_line("login output", Duration::from_secs(20), |l| l.contains(&want)).is_ok() {
            logged_in = true;
            break;
        }
    }
    assert!(logged_in, "console login with node.config's root_shadow failed:\n{}", vm.lines().join("\n"));
    no_panic(&vm);
}

/// `triton.rescue`: the node comes up to stage 2, then stops in a root shell
/// on the console before the zones pool would be imported.
#[test]
fn triton_rescue_stops_in_stage2_with_a_root_shell() {
    let p = Platform::locate().expect("platform");
    let http = HttpServer::serve_dir(&p.dir).expect("http");
    let mut s = spec(&p, "52:54:00:12:34:5c", "virtio-net-pci", &http.guest_url("x86_64/filesystem.squashfs"));
    s.append.push_str(" triton.rescue");
    let mut vm = Vm::start("rescue", &s).expect("qemu");
    let ev = vm.wait_event("stage2", BOOT).expect("stage2");
    assert_eq!(ev["ok"], true, "{ev}");
    let r = vm.wait_event("rescue", Duration::from_secs(60)).expect("rescue");
    assert_eq!(r["stage"], "Root", "{r}");
    assert!(r["reason"].as_str().unwrap_or_default().contains("before pool import"), "{r}");
    std::thread::sleep(Duration::from_secs(3));
    vm.type_line("echo RESCUE-$((20+22))-$(id -u)").expect("type");
    vm.wait_line("root shell", Duration::from_secs(60), |l| l.contains("RESCUE-42-0")).expect("root shell works");
    no_panic(&vm);
}

/// The standalone initrd (`triton-pi build --standalone`) boots with no
/// `fetch=` and no network: the embedded squashfs is verified and used.
#[test]
fn standalone_initrd_boots_without_fetch() {
    let p = Platform::locate().expect("platform");
    let stamp = std::fs::read_to_string(p.dir.join("etc/version/platform")).expect("stamp");
    let initrd = p.dir.parent().expect("out").join(format!("platform-{}-standalone.initrd", stamp.trim()));
    assert!(initrd.is_file(), "{} missing: build with --standalone", initrd.display());
    let mut s = spec(&p, "52:54:00:12:34:5d", "virtio-net-pci", "unused");
    s.initrd = initrd;
    s.append = "console=ttyS0,115200n8 panic=0".into();
    let vm = Vm::start("standalone", &s).expect("qemu");
    let e = vm.wait_event("embedded", BOOT).expect("embedded");
    assert_eq!(e["ok"], true, "{e}");
    let v = vm.wait_event("verify", BOOT).expect("verify");
    assert_eq!(v["ok"], true, "{v}");
    let ev = vm.wait_event("stage2", BOOT).expect("stage2");
    assert_eq!(ev["ok"], true, "{ev}");
    assert!(!vm.saw(|l| l.contains("\"phase\":\"network\"")), "no network phase without fetch=");
    no_panic(&vm);
}

/// Booter with HTTP boot off: no `ip=` (DHCP from QEMU's user network) and
/// the squashfs over TFTP (QEMU's built-in server), verified as over HTTP.
#[test]
fn dhcp_and_tftp_fetch_boot_to_stage2() {
    let p = Platform::locate().expect("platform");
    let mac = "52:54:00:12:34:5e";
    let mut s = spec(&p, mac, "virtio-net-pci", "tftp://10.0.2.2/x86_64/filesystem.squashfs");
    s.append = format!(
        "console=ttyS0,115200n8 panic=0 BOOTIF=01-{} fetch=tftp://10.0.2.2/x86_64/filesystem.squashfs",
        mac.replace(':', "-")
    );
    s.tftp_root = Some(p.dir.clone());
    let vm = Vm::start("tftp", &s).expect("qemu");
    let net = vm.wait_event("network", BOOT).expect("network event");
    assert_eq!(net["ok"], true, "{net}");
    assert_eq!(net["method"], "dhcp", "{net}");
    assert_eq!(net["ip"], "10.0.2.15/24", "{net}");
    assert_eq!(net["gateway"], "10.0.2.2", "{net}");
    let fetch = vm.wait_event("fetch", Duration::from_secs(900)).expect("fetch event");
    assert_eq!(fetch["ok"], true, "{fetch}");
    assert_eq!(fetch["proto"], "tftp", "{fetch}");
    let size = std::fs::metadata(p.x86("filesystem.squashfs")).expect("size").len();
    assert_eq!(fetch["bytes"], size, "{fetch}");
    let verify = vm.wait_event("verify", BOOT).expect("verify event");
    assert_eq!(verify["ok"], true, "{verify}");
    let ev = vm.wait_event("stage2", BOOT).expect("stage2");
    assert_eq!(ev["ok"], true, "{ev}");
    no_panic(&vm);
}
