//! Component tests: desired → plan → fake kernel; op log, final state, and an
//! empty second plan in every scenario.

use std::net::Ipv4Addr;

use boot_params::{Mac, NetworkingJson};

use crate::fake::Fake;
use crate::model::{BondMode, Cidr, LinkKind, Observed, MAIN_TABLE};
use crate::plan::{plan, plan_full, Op, Plan};
use crate::{apply_ops, configure_with, load, ConfigureError, Desired, LinkApi};

const A: &str = "00:0c:29:d4:5b:fa";
const E: &str = "00:0c:29:d4:5b:04";
const X: &str = "90:b8:d0:00:00:07";

fn mac(s: &str) -> Mac {
    Mac::parse(s).expect("mac")
}

fn cidr(s: &str) -> Cidr {
    Cidr::parse(s).expect("cidr")
}

fn desired(json: &str) -> Desired {
    let n = NetworkingJson::parse(json).expect("parse");
    assert_eq!(n.validate(), vec![], "fixture must be valid");
    Desired::from_json(&n).expect("desired")
}

/// Checks the orderings the kernel needs, replaying `log` from `initial`.
fn check_order(initial: &Observed, log: &[Op]) {
    let mut up: Vec<String> = initial.links.iter().filter(|l| l.up).map(|l| l.name.clone()).collect();
    let mut exists: Vec<String> = initial.links.iter().map(|l| l.name.clone()).collect();
    for (i, op) in log.iter().enumerate() {
        match op {
            Op::CreateBond { name, .. } => exists.push(name.clone()),
            Op::CreateVlan { name, parent, .. } | Op::CreateMacvlan { name, parent, .. } => {
                assert!(exists.contains(parent), "op {i} `{op}`: lower link not there yet");
                exists.push(name.clone());
            }
            Op::Enslave { ifname, bond } => {
                assert!(exists.contains(bond), "op {i} `{op}`: bond not created yet");
                assert!(!up.contains(ifname), "op {i} `{op}`: member still up");
                up.push(ifname.clone());
            }
            Op::SetDown { ifname } => up.retain(|n| n != ifname),
            Op::SetUp { ifname } => {
                assert!(exists.contains(ifname), "op {i} `{op}`");
                up.push(ifname.clone())
            }
            Op::AddAddress { ifname, .. } => assert!(up.contains(ifname), "op {i} `{op}`: link not up yet"),
            Op::ReplaceRoute { .. } => {
                assert!(log[i..].iter().all(|o| matches!(o, Op::ReplaceRoute { .. })), "routes come last")
            }
            Op::SetMtu { ifname, .. } | Op::DelAddress { ifname, .. } => assert!(exists.contains(ifname), "op {i}"),
        }
    }
}

/// Plans, applies to the fake, checks ordering, and that a second plan is empty.
fn run(f: &mut Fake, d: &Desired) -> Plan {
    let initial = f.state.clone();
    let p = plan_full(d, &initial);
    apply_ops(f, &p.ops).map_err(|(n, e)| format!("op {n}: {e}")).expect("apply");
    assert_eq!(f.log, p.ops);
    check_order(&initial, &f.log);
    let again = plan(d, &f.state);
    assert!(again.is_empty(), "second plan not empty: {again:?}\nfirst: {:?}", p.ops);
    p
}

fn addrs_of(f: &Fake, name: &str) -> Vec<Cidr> {
    let i = f.state.link(name).expect("link").index;
    f.state.addrs_on(i).map(|a| a.cidr).collect()
}

fn admin_only(mtu: u32) -> String {
    format!(
        r#"{{"nictags":[{{"name":"admin","mac":"{A}","mtu":{mtu}}}],"admin_tag":"admin","resolvers":["10.99.99.11"],
        "vnics":[{{"mac":"{A}","ip":"10.99.99.78","netmask":"255.255.255.0","vlan_id":0,"nic_tag":"admin"}}],
        "dns_domain":"example.com","datacenter_name":"us-east-1","hostname":"cn1"}}"#
    )
}

#[test]
fn single_admin_nic_after_stage1_needs_nothing() {
    let d = desired(&admin_only(1500));
    let mut f = Fake::with_nics(&[("eth0", mac(A))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    let p = run(&mut f, &d);
    assert_eq!(p.ops, vec![], "stage-1 admin address kept as is");
    assert_eq!(addrs_of(&f, "eth0"), [cidr("10.99.99.78/24")]);
    assert_eq!(p.placements[0].vnic, "admin0");
    assert_eq!(p.placements[0].ifname, "eth0");
}

#[test]
fn single_admin_nic_from_scratch() {
    let d = desired(&admin_only(1500));
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth9", mac("02:00:00:00:00:99"))]);
    let p = run(&mut f, &d);
    assert_eq!(
        p.ops,
        [Op::SetUp { ifname: "eth0".into() }, Op::AddAddress { ifname: "eth0".into(), cidr: cidr("10.99.99.78/24") }]
    );
    assert!(!f.state.link("eth9").expect("eth9").up, "NICs not in the file are left alone");
}

fn two_nics_json(ext_mtu: u32, routes: &str) -> String {
    format!(
        r#"{{"nictags":[{{"name":"admin","mac":"{A}","mtu":1500}},{{"name":"external","mac":"{E}","mtu":{ext_mtu}}}],
        "admin_tag":"admin","resolvers":["10.99.99.11","8.8.8.8"],"routes":{routes},
        "vnics":[{{"mac":"{A}","ip":"10.99.99.78","netmask":"255.255.255.0","vlan_id":0,"nic_tag":"admin","primary":false}},
                 {{"mac":"{E}","ip":"10.88.88.134","netmask":"255.255.255.0","gateway":"10.88.88.2","vlan_id":0,"nic_tag":"external"}}]}}"#
    )
}

#[test]
fn admin_and_external_on_two_nics() {
    let d = desired(&two_nics_json(1500, "{}"));
    assert_eq!(d.default_gateway, Some(Ipv4Addr::new(10, 88, 88, 2)));
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    let p = run(&mut f, &d);
    assert_eq!(
        p.ops,
        [
            Op::SetUp { ifname: "eth1".into() },
            Op::AddAddress { ifname: "eth1".into(), cidr: cidr("10.88.88.134/24") },
            Op::ReplaceRoute { dst: cidr("0.0.0.0/0"), gateway: Ipv4Addr::new(10, 88, 88, 2) },
        ]
    );
    assert!(!p.ops.iter().any(|o| o.ifname() == "eth0"), "admin NIC untouched");
    let r = &f.state.routes[0];
    assert_eq!((r.dst, r.gateway, r.table), (cidr("0.0.0.0/0"), Some(Ipv4Addr::new(10, 88, 88, 2)), MAIN_TABLE));
}

#[test]
fn mtu_9000_tag() {
    let d = desired(&two_nics_json(9000, "{}"));
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    let p = run(&mut f, &d);
    assert_eq!(p.ops[0], Op::SetMtu { ifname: "eth1".into(), mtu: 9000 });
    assert_eq!(f.state.link("eth1").expect("eth1").mtu, 9000);
    assert_eq!(f.state.link("eth0").expect("eth0").mtu, 1500);
}

#[test]
fn static_routes() {
    let d = desired(&two_nics_json(1500, r#"{"10.1.0.0/16":"10.88.88.1","192.168.5.5":"10.99.99.1"}"#));
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    let p = run(&mut f, &d);
    let routes: Vec<&Op> = p.ops.iter().filter(|o| matches!(o, Op::ReplaceRoute { .. })).collect();
    assert_eq!(
        routes,
        [
            &Op::ReplaceRoute { dst: cidr("0.0.0.0/0"), gateway: Ipv4Addr::new(10, 88, 88, 2) },
            &Op::ReplaceRoute { dst: cidr("10.1.0.0/16"), gateway: Ipv4Addr::new(10, 88, 88, 1) },
            &Op::ReplaceRoute { dst: cidr("192.168.5.5/32"), gateway: Ipv4Addr::new(10, 99, 99, 1) },
        ]
    );
    let eth0 = f.state.link("eth0").expect("eth0").index;
    assert!(f.state.routes.iter().any(|r| r.dst == cidr("192.168.5.5/32") && r.oif == Some(eth0)));
}

#[test]
fn unreachable_route_gateway_is_a_warning() {
    let d = desired(&two_nics_json(1500, r#"{"10.1.0.0/16":"172.16.0.1"}"#));
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    let p = run(&mut f, &d);
    assert!(p.warnings.iter().any(|w| w.contains("172.16.0.1")), "{:?}", p.warnings);
}

#[test]
fn missing_nic_is_a_warning_and_the_rest_is_configured() {
    let d = desired(&two_nics_json(1500, "{}"));
    let mut f = Fake::with_nics(&[("eth0", mac(A))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    let p = run(&mut f, &d);
    assert_eq!(p.ops, vec![]);
    assert!(p.warnings.iter().any(|w| w.contains(E) && w.contains("external")), "{:?}", p.warnings);
    assert!(p.warnings.iter().any(|w| w.contains("external0")), "{:?}", p.warnings);
    assert!(p.warnings.iter().any(|w| w.contains("default route")), "{:?}", p.warnings);
    assert_eq!(p.placements.len(), 1);
}

fn aggr_json(lacp: &str, mtu: u32) -> String {
    format!(
        r#"{{"nictags":[{{"name":"admin","mac":"aggr0","mtu":1500}},{{"name":"external","mac":"aggr0","mtu":{mtu}}}],
        "admin_tag":"admin","resolvers":["10.99.99.11"],"routes":{{}},
        "vnics":[{{"mac":"{A}","ip":"10.99.99.78","netmask":"255.255.255.0","vlan_id":0,"nic_tag":"admin"}},
                 {{"mac":"{X}","ip":"10.88.88.134","netmask":"255.255.255.0","gateway":"10.88.88.2","vlan_id":3,"nic_tag":"external","primary":true}}],
        "aggregations":[{{"name":"aggr0","macs":["{A}","{E}"],"lacp_mode":"{lacp}","nic_tags_provided":["admin","external"]}}]}}"#
    )
}

#[test]
fn aggregation_with_admin_and_vlan_external() {
    let d = desired(&aggr_json("active", 1500));
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    let p = run(&mut f, &d);
    let s = |o: &Op| o.to_string();
    let log: Vec<String> = p.ops.iter().map(s).collect();
    assert_eq!(
        log,
        [
            format!("link add aggr0 address {A} type bond mode 802.3ad lacp_active on"),
            "addr del 10.99.99.78/24 dev eth0".into(),
            "link set eth0 down".into(),
            "link set eth0 master aggr0".into(),
            "link set eth1 master aggr0".into(),
            "link set aggr0 up".into(),
            "link set eth0 up".into(),
            "link set eth1 up".into(),
            "link add aggr0.3 link aggr0 type vlan id 3".into(),
            "link set aggr0.3 up".into(),
            format!("link add external0 link aggr0.3 address {X} type macvlan mode bridge"),
            "link set external0 up".into(),
            "addr add 10.99.99.78/24 dev aggr0".into(),
            "addr add 10.88.88.134/24 dev external0".into(),
            "route replace 0.0.0.0/0 via 10.88.88.2".into(),
        ]
    );
    let st = &f.state;
    let bond = st.link("aggr0").expect("bond");
    assert_eq!((bond.kind.clone(), bond.bond_mode, bond.mac), (LinkKind::Bond, Some(BondMode::Lacp), Some(mac(A))));
    for m in ["eth0", "eth1"] {
        let l = st.link(m).expect("member");
        assert_eq!(l.controller, Some(bond.index), "{m}");
        assert!(l.up, "{m}");
    }
    let vlan = st.link("aggr0.3").expect("vlan");
    assert_eq!((vlan.vlan_id, vlan.parent), (Some(3), Some(bond.index)));
    let mv = st.link("external0").expect("macvlan");
    assert_eq!((mv.kind.clone(), mv.mac, mv.parent), (LinkKind::Macvlan, Some(mac(X)), Some(vlan.index)));
    assert_eq!(addrs_of(&f, "aggr0"), [cidr("10.99.99.78/24")]);
    assert_eq!(addrs_of(&f, "eth0"), []);
    assert_eq!(addrs_of(&f, "external0"), [cidr("10.88.88.134/24")]);
    let names: Vec<(&str, &str)> = p.placements.iter().map(|p| (p.vnic.as_str(), p.ifname.as_str())).collect();
    assert_eq!(names, [("admin0", "aggr0"), ("external0", "external0")]);
}

#[test]
fn aggregation_lacp_off_and_jumbo() {
    let d = desired(&aggr_json("off", 9000));
    assert_eq!(d.bonds[0].mode, BondMode::BalanceXor);
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    let p = run(&mut f, &d);
    assert!(p.ops.contains(&Op::SetMtu { ifname: "aggr0".into(), mtu: 9000 }));
    for n in ["aggr0", "eth0", "eth1", "aggr0.3", "external0"] {
        assert_eq!(f.state.link(n).expect("link").mtu, 9000, "{n}");
    }
    assert_eq!(f.state.link("aggr0").expect("bond").bond_mode, Some(BondMode::BalanceXor));
}

#[test]
fn aggregation_with_a_missing_member() {
    let d = desired(&aggr_json("passive", 1500));
    assert!(!d.bonds[0].lacp_active);
    let mut f = Fake::with_nics(&[("eth0", mac(A))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    let p = run(&mut f, &d);
    assert!(p.warnings.iter().any(|w| w.contains(E) && w.contains("aggr0")), "{:?}", p.warnings);
    assert_eq!(addrs_of(&f, "aggr0"), [cidr("10.99.99.78/24")]);
}

#[test]
fn vnic_with_its_own_mac_gets_a_macvlan() {
    let json = format!(
        r#"{{"nictags":[{{"name":"admin","mac":"{A}"}},{{"name":"external","mac":"{E}"}}],"admin_tag":"admin",
        "vnics":[{{"mac":"{A}","ip":"10.99.99.78","netmask":"255.255.255.0","nic_tag":"admin"}},
                 {{"mac":"{X}","ip":"10.88.88.134","netmask":"255.255.255.0","nic_tag":"external","mtu":1400}},
                 {{"mac":"{E}","ip":"10.77.0.5","netmask":"255.255.0.0","nic_tag":"external","vlan_id":12}}]}}"#
    );
    let d = desired(&json);
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    let p = run(&mut f, &d);
    let mv = f.state.link("external0").expect("macvlan");
    assert_eq!((mv.mac, mv.mtu), (Some(mac(X)), 1400));
    assert_eq!(addrs_of(&f, "eth1.12"), [cidr("10.77.0.5/16")], "same MAC as the NIC: address on the VLAN link");
    assert_eq!(p.placements[2].vnic, "external1");
    assert!(d.default_gateway.is_none());
    assert!(!p.ops.iter().any(|o| matches!(o, Op::ReplaceRoute { .. })));
}

#[test]
fn default_gateway_choice() {
    let v = |m: &str, ip: &str, gw: &str, tag: &str, primary: bool| {
        format!(
            r#"{{"mac":"{m}","ip":"{ip}","netmask":"255.255.255.0","gateway":"{gw}","nic_tag":"{tag}","primary":{primary}}}"#
        )
    };
    let file = |vnics: &[String]| {
        format!(
            r#"{{"nictags":[{{"name":"admin","mac":"{A}"}},{{"name":"external","mac":"{E}"}}],"admin_tag":"admin","vnics":[{}]}}"#,
            vnics.join(",")
        )
    };
    let admin = v(A, "10.99.99.78", "10.99.99.1", "admin", false);
    let ext = v(E, "10.88.88.134", "10.88.88.2", "external", false);
    let ext2 = v(X, "10.66.0.4", "10.66.0.1", "external", true);
    let gw = |vnics: &[String]| desired(&file(vnics)).default_gateway.map(|g| g.to_string());
    assert_eq!(gw(&[admin.clone(), ext.clone()]).as_deref(), Some("10.88.88.2"));
    assert_eq!(gw(&[admin.clone(), ext, ext2]).as_deref(), Some("10.66.0.1"));
    assert_eq!(gw(&[admin]).as_deref(), Some("10.99.99.1"));
}

#[test]
fn existing_default_route_via_another_gateway_is_replaced_once() {
    let d = desired(&two_nics_json(1500, "{}"));
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    f.stage1("eth0", cidr("10.99.99.78/24"));
    f.apply(&Op::ReplaceRoute { dst: cidr("0.0.0.0/0"), gateway: Ipv4Addr::new(10, 99, 99, 1) }).expect("stage1 route");
    f.log.clear();
    run(&mut f, &d);
    assert_eq!(f.state.routes.len(), 1);
    assert_eq!(f.state.routes[0].gateway, Some(Ipv4Addr::new(10, 88, 88, 2)));
}

#[test]
fn conflicting_interface_name_is_a_warning() {
    let json = format!(
        r#"{{"nictags":[{{"name":"eth","mac":"{A}"}}],"admin_tag":"eth",
        "vnics":[{{"mac":"{X}","ip":"10.99.99.78","netmask":"255.255.255.0","nic_tag":"eth"}}]}}"#
    );
    let d = desired(&json);
    let mut f = Fake::with_nics(&[("eth0", mac(E)), ("eth1", mac(A))]);
    let p = run(&mut f, &d);
    assert!(p.warnings.iter().any(|w| w.contains("eth0 exists")), "{:?}", p.warnings);
    assert_eq!(p.ops, [Op::SetUp { ifname: "eth1".into() }]);
}

#[test]
fn dhcp_vnic_is_skipped_with_a_warning() {
    let json = format!(
        r#"{{"nictags":[{{"name":"admin","mac":"{A}"}}],"vnics":[{{"mac":"{A}","ip":"dhcp","nic_tag":"admin"}}]}}"#
    );
    let d = desired(&json);
    assert!(d.vnics.is_empty());
    assert!(d.warnings[0].contains("dhcp"));
}

fn write_files(dir: &std::path::Path, json: &str, hash: Option<&str>) -> (std::path::PathBuf, std::path::PathBuf) {
    let j = dir.join("triton-networking.json");
    let h = dir.join("triton-networking.json.hash");
    std::fs::write(&j, json).expect("write json");
    if let Some(hash) = hash {
        std::fs::write(&h, hash).expect("write hash");
    }
    (j, h)
}

#[test]
fn configure_reports_and_writes_resolv_conf() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = admin_only(1500);
    let hash = boot_params::networking::sha1_hex(json.as_bytes());
    let (j, h) = write_files(dir.path(), &json, Some(&hash));
    let resolv = dir.path().join("resolv.conf");
    let d = load(&j, &h).expect("load");
    let mut f = Fake::with_nics(&[("eth0", mac(A))]);
    let r = configure_with(&mut f, &d, &resolv).expect("configure");
    assert!(r.resolv_conf_written);
    let text = std::fs::read_to_string(&resolv).expect("resolv");
    assert!(text.contains("search us-east-1.example.com\nnameserver 10.99.99.11\n"), "{text}");
    let v = serde_json::to_value(&r).expect("json");
    assert_eq!(v["addresses"], serde_json::json!({"admin0": "10.99.99.78/24"}));
    assert_eq!(v["ops"][0], serde_json::json!({"op": "set_up", "ifname": "eth0"}));
    assert_eq!(v["vnics"][0]["ifname"], "eth0");
    assert_eq!(v["vnics"][0]["mac"], A);
    assert_eq!(v["warnings"], serde_json::json!([]));
    // Second run: nothing to do, resolv.conf unchanged.
    let r2 = configure_with(&mut f, &d, &resolv).expect("again");
    assert_eq!((r2.ops.len(), r2.resolv_conf_written), (0, false));
    assert!(std::fs::read_dir(dir.path()).expect("ls").all(|e| !e
        .expect("e")
        .file_name()
        .to_string_lossy()
        .contains(".tmp.")));
}

#[test]
fn bad_files_apply_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let json = admin_only(1500);
    let (j, h) = write_files(dir.path(), &json, Some("0000000000000000000000000000000000000000"));
    let e = load(&j, &h).expect_err("hash");
    assert!(matches!(e, ConfigureError::Hash { .. }), "{e}");
    assert!(e.to_string().contains("nothing was applied"), "{e}");

    let e = load(&dir.path().join("nope.json"), &h).expect_err("missing");
    assert!(matches!(e, ConfigureError::Missing { .. }), "{e}");

    let bad = admin_only(1500).replace("\"vlan_id\":0", "\"vlan_id\":5000");
    let (j, h) = write_files(dir.path(), &bad, Some(&boot_params::networking::sha1_hex(bad.as_bytes())));
    let e = load(&j, &h).expect_err("invalid");
    assert!(matches!(e, ConfigureError::Invalid { .. }) && e.to_string().contains("vlan_id 5000"), "{e}");

    let (j, _) = write_files(dir.path(), &json, None);
    let d = load(&j, &dir.path().join("absent.hash")).expect("no hash is a warning");
    assert!(d.warnings.iter().any(|w| w.contains("not checked")));
}

#[test]
fn apply_failure_names_op_and_count() {
    let d = desired(&two_nics_json(1500, "{}"));
    let mut f = Fake::with_nics(&[("eth0", mac(A)), ("eth1", mac(E))]);
    f.fail_at = Some(2);
    let e = configure_with(&mut f, &d, std::path::Path::new("/nonexistent/resolv.conf")).expect_err("fails");
    let msg = e.to_string();
    assert!(matches!(e, ConfigureError::Apply { applied: 2, planned: 5, .. }), "{msg}");
    assert!(msg.contains("addr add 10.99.99.78/24 dev eth0"), "{msg}");
}
