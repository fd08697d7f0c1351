//! Namespace tests for stage 1's DHCP client and TFTP fetch against dnsmasq.
//!
//! Each test builds a private pair of network namespaces joined by a veth
//! (server side: dnsmasq with DHCP + TFTP; client side: our code, run in a
//! thread that has `setns`-ed into the client namespace). A [`Lab`] guard
//! kills dnsmasq and deletes the namespaces on drop, also when a test fails.
//!
//! Needs root, `ip` (iproute2) and `/usr/sbin/dnsmasq`; otherwise each test
//! says why it is skipped.

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boot_params::{FetchSource, Mac, TftpUrl};
use init::dhcp::{self, DhcpError, Timing};
use init::fetch::{self, FetchError, Policy};
use init::net::{self, Iface};
use init::tftp;
use sha2::{Digest, Sha256};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const SERVER_IP: &str = "10.77.0.1";
const CLIENT_MAC: &str = "02:00:5e:10:77:55";
const LEASED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 55);

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (network namespaces and veth need CAP_NET_ADMIN)".into());
    }
    if !Path::new(DNSMASQ).exists() {
        return Some(format!("{DNSMASQ} is not installed (ci/setup.sh installs it)"));
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED {}: {why}", module_path!());
            return;
        }
    };
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth, optionally with dnsmasq on the server side.
struct Lab {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    dnsmasq: Option<Child>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let id = std::process::id() % 100_000;
        let lab = Lab {
            server_ns: format!("triton-t{id}{tag}s"),
            client_ns: format!("triton-t{id}{tag}c"),
            server_if: format!("vs{id}{tag}"),
            client_if: format!("vc{id}{tag}"),
            dnsmasq: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for ns in [&lab.server_ns, &lab.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            ip(&["netns", "add", ns]);
        }
        ip(&[
            "link",
            "add",
            &lab.server_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "address",
            CLIENT_MAC,
            "netns",
            &lab.client_ns,
        ]);
        ip(&["-n", &lab.server_ns, "addr", "add", &format!("{SERVER_IP}/24"), "dev", &lab.server_if]);
        ip(&["-n", &lab.server_ns, "link", "set", "lo", "up"]);
        ip(&["-n", &lab.server_ns, "link", "set", &lab.server_if, "up"]);
        lab
    }

    fn tftp_root(&self) -> PathBuf {
        self.dir.path().join("tftp")
    }

    /// Starts dnsmasq (DHCP with a fixed address for CLIENT_MAC, TFTP) and
    /// waits until it has logged that it is ready.
    fn start_dnsmasq(&mut self) {
        let root = self.tftp_root();
        std::fs::create_dir_all(&root).expect("tftp root");
        let d = self.dir.path();
        let log = d.join("dnsmasq.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server_ns, DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--port=0"])
            .arg(format!("--interface={}", self.server_if))
            .arg("--bind-interfaces")
            .arg("--user=root")
            .arg("--group=root")
            .arg("--dhcp-authoritative")
            .arg("--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,1h")
            .arg(format!("--dhcp-host={CLIENT_MAC},{LEASED}"))
            .arg(format!("--dhcp-option=option:router,{SERVER_IP}"))
            .arg("--dhcp-option=option:dns-server,10.77.0.53,10.77.0.54")
            .arg("--dhcp-broadcast")
            .arg("--enable-tftp")
            .arg(format!("--tftp-root={}", root.display()))
            .arg(format!("--dhcp-leasefile={}", d.join("leases").display()))
            .arg(format!("--pid-file={}", d.join("dnsmasq.pid").display()))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            // Everything is in the log file (shown when an assertion fails).
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        self.dnsmasq = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("TFTP root") || text.contains("DHCP, IP range") {
                return;
            }
            if let Some(Ok(Some(st))) = self.dnsmasq.as_mut().map(|c| c.try_wait()) {
                panic!("dnsmasq exited with {st}: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsmasq did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Runs `f` on a thread that has entered the client namespace.
    fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.client_ns);
        std::thread::spawn(move || {
            let fd = File::open(&path).expect("open netns");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            // `ip netns exec` execs dnsmasq, so this is dnsmasq's own pid.
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// The client interface, as net::configure wants it (looked up in the current namespace).
fn client_iface(name: &str) -> Iface {
    let index = nix::net::if_::if_nametoindex(name).expect("ifindex");
    Iface { name: name.to_string(), index, mac: Mac::parse(CLIENT_MAC) }
}

/// ~40 MiB of varied bytes: > 65535 blocks at blksize 512 (forces the block
/// number rollover), with a few runs of zeros.
fn write_image(path: &Path) -> (u64, String) {
    let mut f = std::io::BufWriter::new(File::create(path).expect("create image"));
    let mut h = Sha256::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for i in 0..40 {
        if i % 7 != 3 {
            for b in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
        } else {
            chunk.fill(0);
        }
        f.write_all(&chunk).expect("write");
        h.update(&chunk);
        total += chunk.len() as u64;
    }
    // An odd tail so the last block is short.
    f.write_all(b"tail").expect("write");
    h.update(b"tail");
    f.flush().expect("flush");
    (total + 4, hex::encode(h.finalize()))
}

#[test]
fn dhcp_lease_then_tftp_fetch_with_rollover() {
    require_root!();
    let mut lab = Lab::new("a");
    std::fs::create_dir_all(lab.tftp_root()).expect("tftp root");
    let (size, sha) = write_image(&lab.tftp_root().join("fs.img"));
    lab.start_dnsmasq();
    let client_if = lab.client_if.clone();
    let dest = lab.dir.path().join("fetched.img");
    let record = lab.dir.path().join("run/triton/dhcp.json");

    let (lease, fetched, lines, missing) = lab.in_client(move || {
        let iface = client_iface(&client_if);
        let mac = iface.mac.expect("mac");
        net::configure(&iface, None).expect("link up");
        let timing =
            Timing { first: Duration::from_secs(1), max: Duration::from_secs(2), total: Duration::from_secs(15) };
        let lease = dhcp::obtain(&client_if, mac, &timing, &mut |l| eprintln!("{l}")).expect("lease");
        dhcp::write_record(&record, &client_if, mac, &lease).expect("record");
        net::configure(&iface, Some(&lease.ip_config())).expect("configure the lease");

        let mut policy = Policy { attempts: 2, first_backoff: Duration::from_millis(100), ..Policy::default() };
        policy.tftp = tftp::Options { blksize: 512, ..tftp::Options::default() };
        let src = FetchSource::Tftp(TftpUrl::parse(&format!("tftp://{SERVER_IP}/fs.img")).expect("url"));
        let mut lines = Vec::new();
        let fetched = fetch::fetch(&src, &dest, &policy, &mut |l| lines.push(l.to_string()));

        let gone = FetchSource::Tftp(TftpUrl::parse(&format!("tftp://{SERVER_IP}/no/such.img")).expect("url"));
        let missing = fetch::fetch(&gone, &dest.with_extension("missing"), &policy, &mut |_| {});
        (lease, fetched, lines, missing)
    });

    assert_eq!(lease.address, LEASED, "dnsmasq log:\n{}", lab.log());
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.gateway, Some(SERVER_IP.parse().expect("ip")));
    assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 77, 0, 53), Ipv4Addr::new(10, 77, 0, 54)]);
    assert_eq!(lease.server, SERVER_IP.parse::<Ipv4Addr>().expect("ip"));
    assert_eq!(lease.lease_secs, Some(3600));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir.path().join("run/triton/dhcp.json")).expect("record"))
            .expect("json");
    assert_eq!(rec["address"], LEASED.to_string());
    assert_eq!(rec["mac"], CLIENT_MAC);

    // The lease is on the interface, with the default route.
    let addrs = ip_out(&["-n", &lab.client_ns, "-4", "addr", "show", "dev", &lab.client_if]);
    assert!(addrs.contains("10.77.0.55/24"), "{addrs}");
    let routes = ip_out(&["-n", &lab.client_ns, "-4", "route", "show", "default"]);
    assert!(routes.contains(&format!("via {SERVER_IP}")), "{routes}");

    let fetched = fetched.unwrap_or_else(|e| panic!("tftp fetch: {e}\n{}", lab.log()));
    assert_eq!(fetched.proto, "tftp");
    assert_eq!(fetched.bytes, size);
    assert!(size / 512 > 65535, "the image must need more than 65535 blocks");
    assert_eq!(fetched.sha256.as_str(), sha);
    assert_eq!(std::fs::metadata(lab.dir.path().join("fetched.img")).expect("dest").len(), size);
    // tsize made it into the progress lines as a percentage.
    assert!(lines.last().is_some_and(|l| l.contains("(100%)")), "{lines:?}");

    let e = missing.expect_err("a missing file fails");
    assert!(matches!(e, FetchError::TftpRefused { .. }), "{e}");
    let m = e.to_string();
    assert!(m.contains("no/such.img") && m.contains("file not found"), "{m}");
    eprintln!("tftp: {} bytes in {:?}; missing file: {m}", fetched.bytes, fetched.elapsed);
}

#[test]
fn dhcp_without_a_server_times_out_clearly() {
    require_root!();
    let lab = Lab::new("b");
    let client_if = lab.client_if.clone();
    let (err, took) = lab.in_client(move || {
        let iface = client_if_up(&client_if);
        let timing = Timing {
            first: Duration::from_millis(200),
            max: Duration::from_millis(400),
            total: Duration::from_secs(2),
        };
        let start = Instant::now();
        let mut log = Vec::new();
        let r = dhcp::obtain(&iface.name, iface.mac.expect("mac"), &timing, &mut |l| log.push(l.to_string()));
        (r.expect_err("no server"), start.elapsed())
    });
    assert!(matches!(err, DhcpError::NoOffer { sent, .. } if sent >= 4), "{err}");
    let m = err.to_string();
    assert!(m.contains(&lab.client_if) && m.contains(CLIENT_MAC) && m.contains("2 s"), "{m}");
    assert!(m.contains("ip=<addr>"), "{m}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "{took:?}");
}

fn client_if_up(name: &str) -> Iface {
    let iface = client_iface(name);
    net::configure(&iface, None).expect("link up");
    iface
}
