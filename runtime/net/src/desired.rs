//! What triton-networking.json asks for, resolved into links to have
//! (bonds, NICs providing tags, vnics), routes and resolv.conf. Pure.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use boot_params::{netmask_prefix, Mac, NetworkingJson};

use crate::model::{BondMode, Cidr, IFNAME_MAX};

/// An aggregation (Linux bond) to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredBond {
    /// The aggregation's name, used as the bond's interface name.
    pub name: String,
    /// Member NICs by MAC, in the file's order.
    pub members: Vec<Mac>,
    pub mode: BondMode,
    /// LACP active (`lacp_mode: "active"`) or passive; ignored for balance-xor.
    pub lacp_active: bool,
    /// The bond's MAC: its first member's, so it does not depend on which
    /// member the kernel enslaves first.
    pub mac: Mac,
    pub mtu: Option<u32>,
}

/// A plain NIC that provides one or more nic tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNic {
    pub mac: Mac,
    pub tags: Vec<String>,
    pub mtu: Option<u32>,
}

/// What carries a nic tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Nic(Mac),
    Bond(String),
}

/// A vnic: one IPv4 address of the node on one nic tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVnic {
    /// `<nic_tag><N>` (see the crate docs).
    pub name: String,
    pub nic_tag: String,
    pub mac: Mac,
    pub cidr: Cidr,
    pub gateway: Option<Ipv4Addr>,
    /// 0: untagged.
    pub vlan_id: u16,
    pub mtu: Option<u32>,
    pub primary: bool,
    pub provider: Provider,
    /// MAC of the provider (a NIC's, or a bond's first member's).
    pub provider_mac: Mac,
}

/// A static route from `routes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    pub dst: Cidr,
    pub gateway: Ipv4Addr,
}

/// Everything the node's networking should be, from one networking.json.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub admin_tag: String,
    pub bonds: Vec<DesiredBond>,
    pub nics: Vec<DesiredNic>,
    pub vnics: Vec<DesiredVnic>,
    pub default_gateway: Option<Ipv4Addr>,
    pub routes: Vec<StaticRoute>,
    /// Full text of resolv.conf.
    pub resolv_conf: String,
    /// Entries of the file that are skipped (reported, not fatal).
    pub warnings: Vec<String>,
}

/// Why a networking.json cannot be turned into a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error("nic tag {tag:?}: mac {mac:?} is neither a MAC address nor the name of an aggregation; fix nictags[].mac in NAPI (nic tag assignment) and reboot")]
    TagProvider { tag: String, mac: String },
    #[error("aggregation {aggr:?}: member {mac:?} is not a MAC address; fix the aggregation's macs in NAPI")]
    BadMember { aggr: String, mac: String },
    #[error("aggregation {aggr:?} has no member MACs; give it at least one NIC in NAPI or delete it")]
    AggrNoMembers { aggr: String },
    #[error(
        "NIC {mac} is a member of both aggregation {first:?} and {second:?}; a NIC can be in one aggregation only"
    )]
    MemberTwice { mac: Mac, first: String, second: String },
    #[error("aggregation {aggr:?}: lacp_mode {mode:?} is not off, active or passive; fix it in NAPI")]
    BadLacp { aggr: String, mode: String },
    #[error("vnic {mac:?}: mac is not a MAC address; fix the NIC in NAPI")]
    BadVnicMac { mac: String },
    #[error(
        "vnic {mac}: nic_tag {tag:?} is not one of nictags; add the tag to the server's NICs or fix the vnic's nic_tag"
    )]
    UnknownTag { mac: Mac, tag: String },
    #[error("vnic {mac}: no nic_tag, and no nic tag is provided by this MAC; set the vnic's nic_tag in NAPI")]
    NoTag { mac: Mac },
    #[error("vnic {mac}: {field} {value:?} is not valid; fix the vnic in NAPI")]
    BadField { mac: Mac, field: &'static str, value: String },
    #[error("vnic {mac}: vlan_id {vlan_id} is outside 0..4094; fix the network's vlan_id in NAPI")]
    BadVlan { mac: Mac, vlan_id: u32 },
    #[error("address {ip} is given to both vnic {first} and vnic {second}; remove one in NAPI")]
    DuplicateAddress { ip: Ipv4Addr, first: Mac, second: Mac },
    #[error("interface name {name:?} would be used twice (nic tags {first:?} and {second:?}); shorten one nic tag name so their first {max} characters differ", max = IFNAME_MAX - 1)]
    NameClash { name: String, first: String, second: String },
    #[error("route {dst:?} via {gateway:?}: destination must be a.b.c.d[/n] and gateway an IPv4 address; fix the network's routes in NAPI")]
    BadRoute { dst: String, gateway: String },
}

/// `<tag><n>`, the tag cut so the whole fits in [`IFNAME_MAX`].
pub fn vnic_name(tag: &str, n: usize) -> String {
    let suffix = n.to_string();
    format!("{}{suffix}", truncate(tag, IFNAME_MAX - suffix.len()))
}

/// `<parent>.<vid>`, the parent cut so the whole fits in [`IFNAME_MAX`].
pub fn vlan_name(parent: &str, vid: u16) -> String {
    let suffix = format!(".{vid}");
    format!("{}{suffix}", truncate(parent, IFNAME_MAX - suffix.len()))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn max_mtu(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

impl Desired {
    /// Resolves a (validated) networking.json. Entries that cannot be
    /// configured at all are errors; vnics without a static address are
    /// skipped with a warning.
    pub fn from_json(n: &NetworkingJson) -> Result<Desired, DesiredError> {
        let mut d = Desired { admin_tag: n.admin_tag.clone().unwrap_or_else(|| "admin".into()), ..Desired::default() };

        // Aggregations.
        let mut member_of: HashMap<Mac, String> = HashMap::new();
        for a in &n.aggregations {
            let mut members = Vec::new();
            for m in &a.macs {
                let mac =
                    Mac::parse(m).ok_or_else(|| DesiredError::BadMember { aggr: a.name.clone(), mac: m.clone() })?;
                if let Some(first) = member_of.insert(mac, a.name.clone()) {
                    if first != a.name {
                        return Err(DesiredError::MemberTwice { mac, first, second: a.name.clone() });
                    }
                    continue;
                }
                members.push(mac);
            }
            let Some(&mac) = members.first() else {
                return Err(DesiredError::AggrNoMembers { aggr: a.name.clone() });
            };
            let (mode, lacp_active) = match a.lacp_mode.as_deref() {
                None | Some("off") => (BondMode::BalanceXor, false),
                Some("active") => (BondMode::Lacp, true),
                Some("passive") => (BondMode::Lacp, false),
                Some(other) => return Err(DesiredError::BadLacp { aggr: a.name.clone(), mode: other.into() }),
            };
            d.bonds.push(DesiredBond { name: a.name.clone(), members, mode, lacp_active, mac, mtu: None });
        }

        // Nic tags → providers.
        let mut providers: BTreeMap<String, (Provider, Mac)> = BTreeMap::new();
        for t in &n.nictags {
            if let Some(b) = d.bonds.iter_mut().find(|b| b.name == t.mac) {
                b.mtu = max_mtu(b.mtu, t.mtu);
                providers.insert(t.name.clone(), (Provider::Bond(b.name.clone()), b.mac));
            } else if let Some(mac) = Mac::parse(&t.mac) {
                match d.nics.iter_mut().find(|x| x.mac == mac) {
                    Some(x) => {
                        x.tags.push(t.name.clone());
                        x.mtu = max_mtu(x.mtu, t.mtu);
                    }
                    None => d.nics.push(DesiredNic { mac, tags: vec![t.name.clone()], mtu: t.mtu }),
                }
                providers.insert(t.name.clone(), (Provider::Nic(mac), mac));
            } else {
                return Err(DesiredError::TagProvider { tag: t.name.clone(), mac: t.mac.clone() });
            }
        }

        // Vnics.
        let mut per_tag: BTreeMap<String, usize> = BTreeMap::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for v in &n.vnics {
            let mac = Mac::parse(&v.mac).ok_or_else(|| DesiredError::BadVnicMac { mac: v.mac.clone() })?;
            let tag = match &v.nic_tag {
                Some(t) => t.clone(),
                None => providers
                    .iter()
                    .find(|(_, (_, pm))| *pm == mac)
                    .map(|(t, _)| t.clone())
                    .ok_or(DesiredError::NoTag { mac })?,
            };
            let (provider, provider_mac) =
                providers.get(&tag).cloned().ok_or_else(|| DesiredError::UnknownTag { mac, tag: tag.clone() })?;
            let slot = per_tag.entry(tag.clone()).or_insert(0);
            let name = vnic_name(&tag, *slot);
            *slot += 1;
            if let Some(first) = names.insert(name.clone(), tag.clone()) {
                return Err(DesiredError::NameClash { name, first, second: tag });
            }
            let bad = |field: &'static str, value: &str| DesiredError::BadField { mac, field, value: value.into() };
            let ip = match v.ip.as_deref() {
                None => {
                    d.warnings.push(format!("vnic {mac} ({name}): no ip; skipped"));
                    continue;
                }
                Some("dhcp") => {
                    d.warnings.push(format!(
                        "vnic {mac} ({name}): ip=dhcp is not supported on the platform; skipped (give the NIC a static address in NAPI)"
                    ));
                    continue;
                }
                Some(ip) => ip.parse::<Ipv4Addr>().map_err(|_| bad("ip", ip))?,
            };
            let netmask = v.netmask.as_deref().ok_or_else(|| bad("netmask", ""))?;
            let prefix = netmask_prefix(netmask).ok_or_else(|| bad("netmask", netmask))?;
            let gateway = match v.gateway.as_deref() {
                None | Some("") => None,
                Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|_| bad("gateway", g))?),
            };
            let vlan_id = match v.vlan_id.unwrap_or(0) {
                id @ 0..=4094 => id as u16,
                id => return Err(DesiredError::BadVlan { mac, vlan_id: id }),
            };
            if let Some(other) = d.vnics.iter().find(|o| o.cidr.addr == ip) {
                return Err(DesiredError::DuplicateAddress { ip, first: other.mac, second: mac });
            }
            // Lower links must carry the largest MTU of what sits on them.
            match &provider {
                Provider::Bond(b) => {
                    if let Some(b) = d.bonds.iter_mut().find(|x| &x.name == b) {
                        b.mtu = max_mtu(b.mtu, v.mtu);
                    }
                }
                Provider::Nic(m) => {
                    if let Some(x) = d.nics.iter_mut().find(|x| x.mac == *m) {
                        x.mtu = max_mtu(x.mtu, v.mtu);
                    }
                }
            }
            d.vnics.push(DesiredVnic {
                name,
                nic_tag: tag,
                mac,
                cidr: Cidr::new(ip, prefix),
                gateway,
                vlan_id,
                mtu: v.mtu,
                primary: v.primary,
                provider,
                provider_mac,
            });
        }

        // Default gateway: the primary vnic's, else the first non-admin
        // vnic's, else the admin vnic's.
        let with_gw = || d.vnics.iter().filter(|v| v.gateway.is_some());
        d.default_gateway = with_gw()
            .find(|v| v.primary)
            .or_else(|| with_gw().find(|v| v.nic_tag != d.admin_tag))
            .or_else(|| with_gw().next())
            .and_then(|v| v.gateway);

        for (dst, gw) in &n.routes {
            let bad = || DesiredError::BadRoute { dst: dst.clone(), gateway: gw.clone() };
            let dst_c = Cidr::parse(dst).ok_or_else(bad)?;
            let gateway = gw.parse::<Ipv4Addr>().map_err(|_| bad())?;
            d.routes.push(StaticRoute { dst: Cidr::new(dst_c.network(), dst_c.prefix), gateway });
        }

        d.resolv_conf = resolv_conf(n);
        Ok(d)
    }
}

/// resolv.conf text: `search <datacenter_name>.<dns_domain>` (or just
/// `dns_domain`), then one `nameserver` per resolver (top-level resolvers, or
/// the vnics' resolvers when there are none), deduplicated, in order.
pub fn resolv_conf(n: &NetworkingJson) -> String {
    let mut out = String::from("# Written at boot from /etc/triton-networking.json; edits are lost on reboot.\n");
    let domain = match (n.datacenter_name.as_deref(), n.dns_domain.as_deref()) {
        (Some(dc), Some(dom)) if !dc.is_empty() && !dom.is_empty() => Some(format!("{dc}.{dom}")),
        (_, Some(dom)) if !dom.is_empty() => Some(dom.to_string()),
        _ => None,
    };
    if let Some(dom) = domain {
        out.push_str(&format!("search {dom}\n"));
    }
    let mut seen: Vec<&str> = Vec::new();
    let all: Vec<&String> = if n.resolvers.is_empty() {
        n.vnics.iter().flat_map(|v| v.resolvers.iter()).collect()
    } else {
        n.resolvers.iter().collect()
    };
    for r in all {
        if !seen.contains(&r.as_str()) {
            seen.push(r);
            out.push_str(&format!("nameserver {r}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz() {
        assert_eq!(vnic_name("admin", 0), "admin0");
        assert_eq!(vnic_name("a_very_long_nic_tag", 12), "a_very_long_n12");
        assert_eq!(vlan_name("aggr0", 3), "aggr0.3");
        assert_eq!(vlan_name("enp129s0f1np1", 4094), "enp129s0f1.4094");
        assert!(vlan_name("enp129s0f1np1", 4094).len() <= IFNAME_MAX);
    }

    fn json(s: &str) -> NetworkingJson {
        NetworkingJson::parse(s).expect("parse")
    }

    #[test]
    fn errors_name_the_culprit() {
        let e = Desired::from_json(&json(r#"{"nictags":[{"name":"admin","mac":"aggrX"}]}"#)).expect_err("bad");
        assert!(e.to_string().contains("aggrX") && e.to_string().contains("admin"), "{e}");
        let e = Desired::from_json(&json(
            r#"{"aggregations":[{"name":"a0","macs":["02:00:00:00:00:01"]},{"name":"a1","macs":["02:00:00:00:00:01"]}]}"#,
        ))
        .expect_err("twice");
        assert!(matches!(e, DesiredError::MemberTwice { .. }), "{e}");
        let e = Desired::from_json(&json(
            r#"{"nictags":[{"name":"admin","mac":"02:00:00:00:00:01"}],
                "vnics":[{"mac":"02:00:00:00:00:01","ip":"10.0.0.1","netmask":"255.255.255.0","nic_tag":"nope"}]}"#,
        ))
        .expect_err("tag");
        assert!(e.to_string().contains("\"nope\""), "{e}");
        let e = Desired::from_json(&json(r#"{"routes":{"10.0.0.0/40":"10.0.0.1"}}"#)).expect_err("route");
        assert!(matches!(e, DesiredError::BadRoute { .. }), "{e}");
    }

    #[test]
    fn resolv_conf_forms() {
        let n = json(
            r#"{"resolvers":["10.0.0.1","8.8.8.8","10.0.0.1"],"dns_domain":"example.com","datacenter_name":"us-east-1"}"#,
        );
        assert_eq!(
            resolv_conf(&n).lines().skip(1).collect::<Vec<_>>(),
            ["search us-east-1.example.com", "nameserver 10.0.0.1", "nameserver 8.8.8.8"]
        );
        let n = json(r#"{"dns_domain":"example.com","vnics":[{"mac":"02:00:00:00:00:01","resolvers":["1.1.1.1"]}]}"#);
        assert_eq!(resolv_conf(&n).lines().skip(1).collect::<Vec<_>>(), ["search example.com", "nameserver 1.1.1.1"]);
    }
}
