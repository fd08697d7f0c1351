//! Namespace tests: the real rtnetlink executor in a private network
//! namespace, with veth pairs (chosen MACs) standing in for NICs.
//!
//! Needs root and `ip` (iproute2). Skips are printed straight to stderr (not
//! captured by the test harness), never silent. Bond and VLAN cases run only
//! where the kernel has those link types; otherwise they say
//! "skipped: kernel lacks <type>" (the QEMU image test covers them).

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use net::netlink::Netlink;
use net::{Cidr, LinkApi, LinkKind, Observed, Op};

const NIC0: &str = "02:aa:00:00:00:01";
const NIC1: &str = "02:aa:00:00:00:02";
const VX: &str = "02:aa:00:00:00:77";

/// Printed to the real stderr so it shows without `--nocapture`.
/// A skipped case, in the form the test command counts (`SKIPPED <why>`).
fn skip(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED netns: {why}");
}

/// Effective uid 0, from `/proc/self/status` (`Uid: real effective ...`).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

fn can_run() -> bool {
    if !is_root() {
        skip("not root (creating network namespaces needs CAP_SYS_ADMIN)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        skip("`ip` (iproute2) not found");
        return false;
    }
    true
}

/// A named network namespace, deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("nettest-{}-{tag}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &name]).status().expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        Netns { name }
    }

    /// `ip -n <ns> <args>`; returns success and output.
    fn ip(&self, args: &str) -> (bool, String) {
        let out = Command::new("ip").args(["-n", &self.name]).args(args.split_whitespace()).output().expect("run ip");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn ip_ok(&self, args: &str) -> String {
        let (ok, out) = self.ip(args);
        assert!(ok, "ip -n {} {args}: {out}", self.name);
        out
    }

    /// A veth "NIC" `name` with `mac`, its peer up (for carrier).
    fn nic(&self, name: &str, mac: &str) {
        self.ip_ok(&format!("link add {name} address {mac} type veth peer name p-{name}"));
        self.ip_ok(&format!("link set p-{name} up"));
    }

    /// Whether the kernel can create links of `kind` (extra args after the type).
    fn supports(&self, kind: &str, extra: &str) -> bool {
        let (ok, _) = self.ip(&format!("link add probe0 {extra} type {kind}"));
        if ok {
            self.ip("link del probe0");
        }
        ok
    }

    /// Runs `f` on a thread that has entered the namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).expect("open netns");
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn write_json(dir: &Path, json: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let j = dir.join("triton-networking.json");
    let h = dir.join("triton-networking.json.hash");
    std::fs::write(&j, json).expect("write json");
    std::fs::write(&h, boot_params::networking::sha1_hex(json.as_bytes())).expect("write hash");
    (j, h)
}

fn observe() -> Observed {
    Netlink::new().expect("netlink").observe().expect("observe")
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).expect("cidr")
}

fn addrs(o: &Observed, name: &str) -> Vec<Cidr> {
    let i = o.link(name).unwrap_or_else(|| panic!("no link {name}")).index;
    o.addrs_on(i).map(|a| a.cidr).collect()
}

#[test]
fn netns_veth_nics_addresses_mtu_macvlan_routes() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("basic");
    ns.nic("nic0", NIC0);
    ns.nic("nic1", NIC1);
    // Stage 1: admin NIC up with the ip= address.
    ns.ip_ok("link set nic0 up");
    ns.ip_ok("addr add 10.99.99.78/24 dev nic0");
    if !ns.supports("macvlan", "link nic1") {
        skip("kernel lacks macvlan");
        return;
    }
    let json = format!(
        r#"{{"nictags":[{{"name":"admin","mac":"{NIC0}","mtu":1500}},{{"name":"external","mac":"{NIC1}","mtu":9000}}],
        "admin_tag":"admin","resolvers":["10.99.99.11","8.8.8.8"],
        "routes":{{"10.1.0.0/16":"10.88.88.1","192.168.5.5":"10.99.99.1"}},
        "vnics":[{{"mac":"{NIC0}","ip":"10.99.99.78","netmask":"255.255.255.0","vlan_id":0,"nic_tag":"admin"}},
                 {{"mac":"{NIC1}","ip":"10.88.88.134","netmask":"255.255.255.0","gateway":"10.88.88.2","vlan_id":0,"nic_tag":"external"}},
                 {{"mac":"{VX}","ip":"10.88.88.140","netmask":"255.255.255.0","vlan_id":0,"nic_tag":"external"}}],
        "hostname":"cn1","dns_domain":"example.com","datacenter_name":"dc1"}}"#
    );
    let dir = tempfile::tempdir().expect("tmp");
    let (j, h) = write_json(dir.path(), &json);
    let resolv = dir.path().join("resolv.conf");

    let (first, second, o) = ns.run(|| {
        let first = net::configure(&j, &h, &resolv).expect("first configure");
        let second = net::configure(&j, &h, &resolv).expect("second configure");
        (first, second, observe())
    });

    assert_eq!(first.warnings, Vec::<String>::new());
    assert!(first.ops.contains(&Op::SetMtu { ifname: "nic1".into(), mtu: 9000 }), "{:?}", first.ops);
    assert!(
        !first.ops.iter().any(|op| op.ifname() == "nic0"),
        "stage-1 admin NIC must not be touched: {:?}",
        first.ops
    );
    assert_eq!(second.ops, vec![], "second apply must do nothing");
    assert!(!second.resolv_conf_written);

    assert_eq!(addrs(&o, "nic0"), [cidr("10.99.99.78/24")], "admin address kept");
    assert!(o.link("nic0").expect("nic0").up);
    let nic1 = o.link("nic1").expect("nic1");
    assert_eq!((nic1.mtu, nic1.up), (9000, true));
    assert_eq!(addrs(&o, "nic1"), [cidr("10.88.88.134/24")]);
    let mv = o.link("external1").expect("macvlan external1");
    assert_eq!(mv.kind, LinkKind::Macvlan);
    assert_eq!(mv.mac.map(|m| m.to_string()).as_deref(), Some(VX));
    assert_eq!(mv.parent, Some(nic1.index));
    assert_eq!(addrs(&o, "external1"), [cidr("10.88.88.140/24")]);

    let has_route = |dst: &str, gw: [u8; 4]| {
        o.routes.iter().any(|r| r.table == 254 && r.dst == cidr(dst) && r.gateway == Some(Ipv4Addr::from(gw)))
    };
    assert!(has_route("0.0.0.0/0", [10, 88, 88, 2]), "{:?}", o.routes);
    assert!(has_route("10.1.0.0/16", [10, 88, 88, 1]), "{:?}", o.routes);
    assert!(has_route("192.168.5.5/32", [10, 99, 99, 1]), "{:?}", o.routes);

    let text = std::fs::read_to_string(&resolv).expect("resolv.conf");
    assert!(text.contains("search dc1.example.com\nnameserver 10.99.99.11\nnameserver 8.8.8.8\n"), "{text}");
    let ip_addr = ns.ip_ok("-4 -o addr show dev nic0");
    assert!(ip_addr.contains("10.99.99.78/24"), "{ip_addr}");
}

#[test]
fn netns_missing_nic_is_a_warning() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("missing");
    ns.nic("nic0", NIC0);
    let json = format!(
        r#"{{"nictags":[{{"name":"admin","mac":"{NIC0}"}},{{"name":"external","mac":"{NIC1}"}}],"admin_tag":"admin",
        "vnics":[{{"mac":"{NIC0}","ip":"10.99.99.78","netmask":"255.255.255.0","nic_tag":"admin"}},
                 {{"mac":"{NIC1}","ip":"10.88.88.134","netmask":"255.255.255.0","gateway":"10.88.88.2","nic_tag":"external"}}]}}"#
    );
    let dir = tempfile::tempdir().expect("tmp");
    let (j, h) = write_json(dir.path(), &json);
    let resolv = dir.path().join("resolv.conf");
    let (r, again) = ns.run(|| {
        let r = net::configure(&j, &h, &resolv).expect("configure");
        (r, net::configure(&j, &h, &resolv).expect("again"))
    });
    assert!(r.warnings.iter().any(|w| w.contains(NIC1)), "{:?}", r.warnings);
    assert_eq!(r.addresses.get("admin0"), Some(&cidr("10.99.99.78/24")));
    assert_eq!(again.ops, vec![]);
}

#[test]
fn netns_bad_hash_applies_nothing() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("hash");
    ns.nic("nic0", NIC0);
    let json = format!(
        r#"{{"nictags":[{{"name":"admin","mac":"{NIC0}"}}],"vnics":[{{"mac":"{NIC0}","ip":"10.99.99.78","netmask":"255.255.255.0","nic_tag":"admin"}}]}}"#
    );
    let dir = tempfile::tempdir().expect("tmp");
    let (j, h) = write_json(dir.path(), &json);
    std::fs::write(&h, "da39a3ee5e6b4b0d3255bfef95601890afd80709").expect("hash");
    let resolv = dir.path().join("resolv.conf");
    let (res, o) = ns.run(|| (net::configure(&j, &h, &resolv), observe()));
    assert!(matches!(res, Err(net::ConfigureError::Hash { .. })), "{res:?}");
    assert_eq!(addrs(&o, "nic0"), []);
    assert!(!o.link("nic0").expect("nic0").up);
    assert!(!resolv.exists());
}

/// Bond + VLAN on real links: only where the kernel has them.
#[test]
fn netns_bond_and_vlan_when_supported() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("bond");
    ns.nic("nic0", NIC0);
    ns.nic("nic1", NIC1);
    let mut lacking = Vec::new();
    if !ns.supports("bond", "") {
        lacking.push("bond");
    }
    if !ns.supports("vlan", "link nic0 id 5") {
        lacking.push("vlan");
    }
    if !ns.supports("macvlan", "link nic0") {
        lacking.push("macvlan");
    }
    if !lacking.is_empty() {
        skip(&format!(
            "bond_and_vlan: this kernel lacks {} (covered by ci/tests/vm_node.rs on the image's kernel)",
            lacking.join(", ")
        ));
        return;
    }
    ns.ip_ok("link set nic0 up");
    ns.ip_ok("addr add 10.99.99.78/24 dev nic0");
    let json = format!(
        r#"{{"nictags":[{{"name":"admin","mac":"aggr0"}},{{"name":"external","mac":"aggr0","mtu":9000}}],"admin_tag":"admin",
        "vnics":[{{"mac":"{NIC0}","ip":"10.99.99.78","netmask":"255.255.255.0","nic_tag":"admin"}},
                 {{"mac":"{VX}","ip":"10.88.88.134","netmask":"255.255.255.0","gateway":"10.88.88.2","vlan_id":3,"nic_tag":"external"}}],
        "aggregations":[{{"name":"aggr0","macs":["{NIC0}","{NIC1}"],"lacp_mode":"off"}}]}}"#
    );
    let dir = tempfile::tempdir().expect("tmp");
    let (j, h) = write_json(dir.path(), &json);
    let resolv = dir.path().join("resolv.conf");
    let (first, second, o) = ns.run(|| {
        let first = net::configure(&j, &h, &resolv).expect("configure");
        (first, net::configure(&j, &h, &resolv).expect("again"), observe())
    });
    assert_eq!(second.ops, vec![], "first: {:?}", first.ops);
    let bond = o.link("aggr0").expect("bond");
    assert_eq!(bond.kind, LinkKind::Bond);
    assert_eq!(o.link("nic1").expect("nic1").controller, Some(bond.index));
    assert_eq!(addrs(&o, "aggr0"), [cidr("10.99.99.78/24")]);
    assert_eq!(o.link("aggr0.3").expect("vlan").vlan_id, Some(3));
    assert_eq!(addrs(&o, "external0"), [cidr("10.88.88.134/24")]);
}
