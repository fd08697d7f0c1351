//! Pure rendering of what booter writes for a Linux CN (contracts 2.3, 4.1,
//! 4.2): the kernel arguments, `boot.ipxe.01<MAC>`, `menu.lst.01<MAC>`,
//! `bootfs/<mac>/networking.json` (+ `.hash`) and node.config.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::config::{Cn, Datacenter, TagTarget};

/// `<proto>://` of everything but the kernel line's relative path.
pub fn proto(dc: &Datacenter) -> &'static str {
    if dc.ipxe_http {
        "http"
    } else {
        "tftp"
    }
}

/// booter's kernel_args, in order: CNAPI's (`hostname`, `rabbitmq`, then the
/// stored per-server ones), then booter's NIC keys unless already present
/// (`<tag>_nic=<mac>`, `<tag>_nic=<aggr>`, `<aggr>_aggr="m1,m2"`,
/// `<aggr>_lacp_mode=`, and `admin_nic=<boot mac>` when no admin tag).
pub fn kernel_args(dc: &Datacenter, cn: &Cn) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        vec![("hostname".into(), cn.hostname.clone()), ("rabbitmq".into(), dc.rabbitmq.clone())];
    let put = |out: &mut Vec<(String, String)>, k: String, v: String, overwrite: bool| match out
        .iter_mut()
        .find(|(key, _)| *key == k)
    {
        Some(slot) if overwrite => slot.1 = v,
        Some(_) => {}
        None => out.push((k, v)),
    };
    for (k, v) in &cn.kernel_args {
        put(&mut out, k.clone(), v.clone(), true);
    }
    // Plain NICs first (in MAC order of the CN's NICs), then aggregations.
    for m in cn.nic_macs() {
        for (tag, t) in &cn.nic_tags {
            if *t == TagTarget::Nic(m) {
                put(&mut out, format!("{tag}_nic"), m.to_string(), false);
            }
        }
    }
    for a in &cn.aggregations {
        for (tag, t) in &cn.nic_tags {
            if *t == TagTarget::Aggr(a.name.clone()) {
                put(&mut out, format!("{tag}_nic"), a.name.clone(), false);
            }
        }
        let macs: Vec<String> = a.macs.iter().map(|m| m.to_string()).collect();
        put(&mut out, format!("{}_aggr", a.name), format!("\"{}\"", macs.join(",")), false);
        put(&mut out, format!("{}_lacp_mode", a.name), a.lacp_mode.clone(), false);
    }
    if !cn.nic_tags.contains_key("admin") {
        put(&mut out, "admin_nic".into(), cn.mac.to_string(), false);
    }
    out
}

/// Facts the boot.ipxe / menu.lst builders need besides the CN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles<'a> {
    /// Platform stamp the CN boots.
    pub platform: &'a str,
    /// `os/<p>/platform/x86_64/initrd.hash` exists on the booter.
    pub use_hash: bool,
    /// File names in `bootfs/<mac>/`, in booter's order ([`bootfs_order`]).
    pub bootfs_files: &'a [String],
}

/// networking.json and its hash first, then the rest sorted.
pub fn bootfs_order(mut files: Vec<String>) -> Vec<String> {
    let rank = |f: &str| match f {
        "networking.json" => 0,
        "networking.json.hash" => 1,
        _ => 2,
    };
    files.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    files
}

fn kernel_path(p: &str) -> String {
    format!("/os/{p}/platform/x86_64/vmlinuz")
}
fn initrd_path(p: &str) -> String {
    format!("/os/{p}/platform/x86_64/initrd")
}
fn squashfs_path(p: &str) -> String {
    format!("/os/{p}/platform/x86_64/filesystem.squashfs")
}

/// `boot.ipxe.01<MAC>`, booter's Linux template line for line (lines
/// joined by `\n`, no newline at the end, as booter writes it).
pub fn boot_ipxe(dc: &Datacenter, cn: &Cn, f: &BootFiles<'_>) -> String {
    let proto = proto(dc);
    let srv = dc.server_ip;
    let p = f.platform;
    let kargs: Vec<String> = kernel_args(dc, cn).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let squashfs = squashfs_path(p);
    let initrd = initrd_path(p);
    let mut l = vec!["#!ipxe".to_string()];
    l.push(format!(
        "kernel {} boot=live console=tty0 console=ttyS{},115200n8 BOOTIF=01-{} ip={}:::{}:: {} fetch={proto}://{srv}{squashfs}",
        kernel_path(p),
        cn.serial.unit(),
        cn.mac.to_string().replace(':', "-"),
        cn.ip,
        cn.netmask,
        kargs.join(" "),
    ));
    l.push(format!("initrd {proto}://{srv}{initrd}"));
    if f.use_hash {
        l.push(format!("module {proto}://{srv}{squashfs}.hash filesystem.squashfs.hash"));
        l.push(format!("module {proto}://{srv}{initrd}.hash initrd.hash"));
    }
    l.push(format!("module {proto}://{srv}/extra/joysetup/node.config /etc/node.config"));
    for bf in f.bootfs_files {
        l.push(format!("module {proto}://${{next-server}}/bootfs/{}/{bf} /etc/triton-{bf}", cn.mac_plain()));
    }
    l.push("boot".into());
    l.join("\n")
}

/// `menu.lst.01<MAC>`: booter's simplified GRUB legacy menu for Linux.
pub fn menu_lst(cn: &Cn, f: &BootFiles<'_>) -> String {
    let console = format!("console=ttyS{},115200n8", cn.serial.unit());
    let mut l = vec![
        "default 0".to_string(),
        "timeout 5".into(),
        "min_mem64 1024".into(),
        format!("variable os_console {console}"),
        String::new(),
        "title Live 64-bit".into(),
        format!("   kernel$ {} console=tty0 {console}", kernel_path(f.platform)),
        format!("   initrd$ {}", initrd_path(f.platform)),
    ];
    for bf in f.bootfs_files {
        let (ty, name) = match bf.strip_suffix(".hash") {
            Some(n) => ("hash", n),
            None => ("file", bf.as_str()),
        };
        l.push(format!("  module$ /bootfs/{}/{bf} type={ty} name={name}", cn.mac_plain()));
    }
    l.push("  module$ /extra/joysetup/node.config type=file name=etc/node.config".into());
    l.push(String::new());
    l.join("\n")
}

/// networking.json's nic tag entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NicTagOut {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
}

/// A NAPI NIC object as booter copies it into `vnics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VnicOut {
    pub belongs_to_type: &'static str,
    pub mac: String,
    pub primary: bool,
    pub ip: String,
    pub netmask: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub vlan_id: u16,
    pub nic_tag: String,
    pub resolvers: Vec<String>,
    pub nic_tags_provided: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AggrOut {
    pub name: String,
    pub macs: Vec<String>,
    pub lacp_mode: String,
    pub nic_tags_provided: Vec<String>,
}

/// booter's networking.json (contracts 4.2), keys in booter's order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NetworkingOut {
    pub nictags: Vec<NicTagOut>,
    pub resolvers: Vec<String>,
    pub routes: BTreeMap<String, String>,
    pub vnics: Vec<VnicOut>,
    pub aggregations: Vec<AggrOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    pub hostname: String,
    pub admin_tag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter_name: Option<String>,
}

fn ips(v: &[Ipv4Addr]) -> Vec<String> {
    v.iter().map(Ipv4Addr::to_string).collect()
}

/// Builds networking.json for `cn`. The admin tag falls back to the boot
/// MAC (booter does this for un-setup CNs).
pub fn networking(dc: &Datacenter, cn: &Cn) -> NetworkingOut {
    let mtu = |tag: &str| cn.mtu.get(tag).copied().unwrap_or(1500);
    let target = |t: &TagTarget| match t {
        TagTarget::Nic(m) => m.to_string(),
        TagTarget::Aggr(a) => a.clone(),
    };
    let mut nictags: Vec<NicTagOut> =
        cn.nic_tags.iter().map(|(n, t)| NicTagOut { name: n.clone(), mac: target(t), mtu: mtu(n) }).collect();
    if !cn.nic_tags.contains_key("admin") {
        nictags.push(NicTagOut { name: "admin".into(), mac: cn.mac.to_string(), mtu: mtu("admin") });
    }
    let provided = |t: &TagTarget| -> Vec<String> {
        cn.nic_tags.iter().filter(|(_, x)| *x == t).map(|(n, _)| n.clone()).collect()
    };
    let mut vnics = vec![VnicOut {
        belongs_to_type: "server",
        mac: cn.mac.to_string(),
        primary: true,
        ip: cn.ip.to_string(),
        netmask: cn.netmask.to_string(),
        gateway: cn.gateway.map(|g| g.to_string()),
        vlan_id: 0,
        nic_tag: "admin".into(),
        resolvers: ips(&dc.resolvers),
        nic_tags_provided: provided(&TagTarget::Nic(cn.mac)),
        mtu: cn.mtu.get("admin").copied(),
    }];
    let mut resolvers = ips(&dc.resolvers);
    for v in &cn.vnics {
        for r in ips(&v.resolvers) {
            if !resolvers.contains(&r) {
                resolvers.push(r);
            }
        }
        vnics.push(VnicOut {
            belongs_to_type: "server",
            mac: v.mac.to_string(),
            primary: false,
            ip: v.ip.to_string(),
            netmask: v.netmask.to_string(),
            gateway: v.gateway.map(|g| g.to_string()),
            vlan_id: v.vlan_id,
            nic_tag: v.nic_tag.clone(),
            resolvers: ips(&v.resolvers),
            nic_tags_provided: provided(&TagTarget::Nic(v.mac)),
            mtu: None,
        });
    }
    let aggregations = cn
        .aggregations
        .iter()
        .map(|a| AggrOut {
            name: a.name.clone(),
            macs: a.macs.iter().map(|m| m.to_string()).collect(),
            lacp_mode: a.lacp_mode.clone(),
            nic_tags_provided: provided(&TagTarget::Aggr(a.name.clone())),
        })
        .collect();
    NetworkingOut {
        nictags,
        resolvers,
        routes: cn.routes.clone(),
        vnics,
        aggregations,
        dns_domain: dc.dns_domain.clone(),
        hostname: cn.hostname.clone(),
        admin_tag: "admin".into(),
        datacenter_name: dc.datacenter_name.clone(),
    }
}

/// The text booter writes (`JSON.stringify(conf, null, 2)`: two-space
/// indent, no final newline) and its `.hash` (SHA-1 hex, no newline).
pub fn networking_files(dc: &Datacenter, cn: &Cn) -> (String, String) {
    let text = serde_json::to_string_pretty(&networking(dc, cn)).unwrap_or_else(|e| panic!("serialising: {e}"));
    let hash = boot_params::networking::sha1_hex(text.as_bytes());
    (text, hash)
}

/// `/extra/joysetup/node.config`: `key='value'` lines, sorted by key; the
/// derived keys (`datacenter_name`, `dns_domain`, `dns_resolvers`,
/// `rabbitmq`, `assets_admin_ip`) are overridden by `dc.node_config`.
pub fn node_config(dc: &Datacenter) -> String {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    if let Some(d) = &dc.datacenter_name {
        kv.insert("datacenter_name".into(), d.clone());
    }
    if let Some(d) = &dc.dns_domain {
        kv.insert("dns_domain".into(), d.clone());
    }
    if !dc.resolvers.is_empty() {
        kv.insert("dns_resolvers".into(), ips(&dc.resolvers).join(","));
    }
    kv.insert("rabbitmq".into(), dc.rabbitmq.clone());
    kv.insert("assets_admin_ip".into(), dc.server_ip.to_string());
    kv.extend(dc.node_config.clone());
    kv.iter().map(|(k, v)| format!("{k}='{}'\n", v.replace('\'', "'\\''"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn cfg(extra: &str) -> crate::config::Config {
        parse(
            &format!(
                "server_ip = \"10.99.99.9\"\nresolvers = [\"10.99.99.9\"]\n[[cn]]\nhostname = \"cn1\"\n\
                 mac = \"10:dd:b1:a2:57:bf\"\nip = \"10.99.99.124\"\n{extra}"
            ),
            false,
            "t",
        )
        .expect("syntax")
        .validate()
        .expect("valid")
    }

    #[test]
    fn contract_example_line_for_line() {
        let c = cfg("");
        let files = bootfs_order(vec!["networking.json.hash".into(), "networking.json".into()]);
        let f = BootFiles { platform: "20210731T223008Z", use_hash: false, bootfs_files: &files };
        let mut dc = c.dc.clone();
        dc.rabbitmq = "guest:guest:10.99.99.16:5672".into();
        let want = "#!ipxe\n\
kernel /os/20210731T223008Z/platform/x86_64/vmlinuz boot=live console=tty0 console=ttyS1,115200n8 BOOTIF=01-10-dd-b1-a2-57-bf ip=10.99.99.124:::255.255.255.0:: hostname=cn1 rabbitmq=guest:guest:10.99.99.16:5672 admin_nic=10:dd:b1:a2:57:bf fetch=http://10.99.99.9/os/20210731T223008Z/platform/x86_64/filesystem.squashfs\n\
initrd http://10.99.99.9/os/20210731T223008Z/platform/x86_64/initrd\n\
module http://10.99.99.9/extra/joysetup/node.config /etc/node.config\n\
module http://${next-server}/bootfs/10ddb1a257bf/networking.json /etc/triton-networking.json\n\
module http://${next-server}/bootfs/10ddb1a257bf/networking.json.hash /etc/triton-networking.json.hash\n\
boot";
        assert_eq!(boot_ipxe(&dc, &c.cns[0], &f), want);
    }

    #[test]
    fn stored_kernel_args_win_and_aggr_keys() {
        let c = cfg(
            "nic_tags = { admin = \"10:dd:b1:a2:57:bf\", external = \"aggr0\" }\n\
             kernel_args = { rabbitmq = \"u:p:10.0.0.1:5672\", external_nic = \"x\" }\n\
             [[cn.aggregations]]\nname = \"aggr0\"\nmacs = [\"10:dd:b1:a2:57:c0\", \"10:dd:b1:a2:57:c1\"]\nlacp_mode = \"active\"",
        );
        let k = kernel_args(&c.dc, &c.cns[0]);
        let s: Vec<String> = k.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            s,
            [
                "hostname=cn1",
                "rabbitmq=u:p:10.0.0.1:5672",
                "external_nic=x",
                "admin_nic=10:dd:b1:a2:57:bf",
                "aggr0_aggr=\"10:dd:b1:a2:57:c0,10:dd:b1:a2:57:c1\"",
                "aggr0_lacp_mode=active",
            ]
        );
    }

    #[test]
    fn node_config_quotes() {
        let mut c = cfg("");
        c.dc.node_config.insert("x".into(), "it's".into());
        let t = node_config(&c.dc);
        assert!(t.contains("x='it'\\''s'\n"), "{t}");
        let parsed = boot_params::NodeConfig::parse(&t);
        assert_eq!(parsed.get("x"), Some("it's"));
        assert_eq!(parsed.get("rabbitmq"), Some("guest:guest:10.99.99.9:5672"));
    }

    #[test]
    fn serial_none_is_ttys_minus_one() {
        let c = cfg("serial = \"none\"");
        let f = BootFiles { platform: "20210731T223008Z", use_hash: true, bootfs_files: &[] };
        let t = boot_ipxe(&c.dc, &c.cns[0], &f);
        assert!(t.contains(" console=ttyS-1,115200n8 "), "{t}");
        assert!(t.contains("\nmodule http://10.99.99.9/os/20210731T223008Z/platform/x86_64/initrd.hash initrd.hash\n"));
    }
}
