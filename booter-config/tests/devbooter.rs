//! The dev booter end to end (root, built PI): one CN netboots through
//! iPXE (DHCP option 175 → boot.ipxe over TFTP → kernel over TFTP, initrd
//! and modules over HTTP → squashfs over HTTP by stage 1), comes up
//! unsetup and `ready`, and answers ping on the admin network.

use std::path::Path;
use std::time::{Duration, Instant};

use booter_config::cmd::default_pi;
use booter_config::config::dev_default;
use booter_config::{DevBooter, DevBooterOpts};

fn skip(why: &str) {
    eprintln!("SKIPPED devbooter: {why}");
}

#[test]
fn cn_netboots_to_ready_and_answers_ping() {
    if !nix::unistd::geteuid().is_root() {
        return skip("needs root (network namespace, tap, dnsmasq)");
    }
    let pi = default_pi();
    if !pi.join("x86_64/vmlinuz").is_file() {
        return skip(&format!("no built PI at {} (cargo run --release -p image -- build)", pi.display()));
    }
    for tool in ["dnsmasq", "qemu-system-x86_64", "ip"] {
        let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return skip(&format!("{tool} is not installed (ci/setup.sh)"));
        }
    }
    if !Path::new(booter_config::devbooter::VIRTIO_ROM).is_file() {
        return skip("Debian's ipxe-qemu ROMs are not installed");
    }
    let work = tempfile::Builder::new().prefix("devbooter-test-").tempdir_in("/var/tmp").expect("work dir");
    let cfg = dev_default(1).validate().expect("default config");
    let mut opts = DevBooterOpts::new(work.path());
    opts.netns = format!("tbooter-test-{}", std::process::id());
    opts.echo = std::env::var_os("TRITON_CI_ECHO").is_some();
    opts.qemu.no_reboot = true;
    let t0 = Instant::now();
    let mut b = DevBooter::start(opts, cfg.dc.clone(), &pi).expect("start the dev booter");
    let cn = cfg.cns[0].clone();
    b.add_cn(cn.clone()).expect("add cn1");
    let console = b.boot(&cn.hostname).expect("boot cn1").console.clone();
    let mode = console
        .wait_event_where("mode", Duration::from_secs(170), |v| v["mode"].is_string())
        .unwrap_or_else(|e| panic!("{e}\nartifacts: {}", b.opts.artifacts.display()));
    assert_eq!(mode["mode"], "unsetup", "{mode}");
    let ready = console.wait_event("ready", Duration::from_secs(60)).expect("ready event");
    assert_eq!(ready["ok"], true);
    let fetch = console.wait_event("fetch", Duration::from_secs(1)).expect("fetch event");
    assert_eq!(fetch["proto"], "http", "{fetch}");
    assert!(fetch["url"].as_str().is_some_and(|u| u.starts_with("http://10.99.99.9/os/")), "{fetch}");
    eprintln!("cn1 ready after {:.1}s", t0.elapsed().as_secs_f64());
    let mut pinged = false;
    for _ in 0..10 {
        if b.ping(cn.ip) {
            pinged = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(pinged, "cn1 ({}) does not answer ping from the admin network", cn.ip);
    let http = std::fs::read_to_string(b.opts.artifacts.join("http.log")).expect("http.log");
    assert!(http.contains("/bootfs/525400990001/networking.json 200"), "{http}");
    let ns = b.netns().to_string();
    b.stop();
    assert!(!Path::new("/run/netns").join(&ns).exists(), "netns {ns} left behind");
}
