//! The CN description file (TOML or JSON, our format): headnode-wide
//! settings booter takes from SAPI/CNAPI/NAPI, and per-CN what NAPI/CNAPI
//! would hold (admin NIC, nic tags, aggregations, vnics, serial console,
//! kernel_args). `parse` checks syntax, `validate` checks meaning and turns
//! it into [`Datacenter`] + [`Cn`] with typed MACs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use boot_params::Mac;
use serde::{Deserialize, Serialize};

/// The file as written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The dhcpd zone's admin IP (booter's `serverIp`).
    #[serde(alias = "serverIp")]
    pub server_ip: Ipv4Addr,
    /// booter's `ipxeHTTP`: `http://` (true, booter's default) or `tftp://` URLs.
    #[serde(alias = "ipxeHTTP", default = "yes")]
    pub ipxe_http: bool,
    /// Netmask of the admin network (default for CNs and the dev booter's bridge).
    #[serde(default = "default_netmask")]
    pub admin_netmask: Ipv4Addr,
    /// `user:pass:host:port`; default `guest:guest:<server_ip>:5672`.
    pub rabbitmq: Option<String>,
    /// DNS resolvers (admin network's); default none.
    #[serde(default)]
    pub resolvers: Vec<Ipv4Addr>,
    pub dns_domain: Option<String>,
    pub datacenter_name: Option<String>,
    /// Extra `/extra/joysetup/node.config` keys (override the derived ones).
    #[serde(default)]
    pub node_config: BTreeMap<String, String>,
    #[serde(default, rename = "cn")]
    pub cns: Vec<CnFile>,
}

fn yes() -> bool {
    true
}

fn default_netmask() -> Ipv4Addr {
    Ipv4Addr::new(255, 255, 255, 0)
}

/// Serial console as CNAPI stores it (`serial`): ttya..ttyd → ttyS0..3.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Serial {
    Ttya,
    #[default]
    Ttyb,
    Ttyc,
    Ttyd,
    None,
}

impl Serial {
    /// booter's serial unit: `none` is -1 (booter writes `ttyS-1` then).
    pub fn unit(self) -> i32 {
        match self {
            Serial::Ttya => 0,
            Serial::Ttyb => 1,
            Serial::Ttyc => 2,
            Serial::Ttyd => 3,
            Serial::None => -1,
        }
    }
}

/// One CN as written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CnFile {
    /// The booting (admin) NIC's MAC.
    pub mac: String,
    /// Admin IP.
    pub ip: Ipv4Addr,
    /// Default: the file's `admin_netmask`.
    pub netmask: Option<Ipv4Addr>,
    /// Gateway of the admin vnic (networking.json only; booter puts none in `ip=`).
    pub gateway: Option<Ipv4Addr>,
    /// Default: the MAC with dashes (what booter/CNAPI use for an un-setup CN).
    pub hostname: Option<String>,
    /// Platform stamp; default: the newest installed.
    pub platform: Option<String>,
    #[serde(default)]
    pub serial: Serial,
    /// nic tag → MAC or aggregation name. Without an `admin` entry the CN is
    /// like an un-setup one: `admin_nic=<mac>` on the kernel line.
    #[serde(default)]
    pub nic_tags: BTreeMap<String, String>,
    /// MTU per nic tag (networking.json `nictags[].mtu`); default 1500.
    #[serde(default)]
    pub mtu: BTreeMap<String, u32>,
    #[serde(default)]
    pub aggregations: Vec<AggrFile>,
    /// vnics beyond the admin one.
    #[serde(default)]
    pub vnics: Vec<VnicFile>,
    /// Stored CNAPI kernel_args; win over booter's own keys.
    #[serde(default)]
    pub kernel_args: BTreeMap<String, String>,
    /// networking.json `routes` (dst → gateway).
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggrFile {
    pub name: String,
    pub macs: Vec<String>,
    #[serde(default = "default_lacp")]
    pub lacp_mode: String,
}

fn default_lacp() -> String {
    "off".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VnicFile {
    pub mac: String,
    pub nic_tag: String,
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub vlan_id: u16,
    #[serde(default)]
    pub resolvers: Vec<Ipv4Addr>,
}

/// Why a CN description cannot be used; every message says what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Syntax { path: String, reason: String },
    #[error("cn {cn}: {field} {value:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)")]
    BadMac { cn: String, field: String, value: String },
    #[error("MAC {mac} is used twice ({first} and {second}); every NIC needs its own MAC")]
    DuplicateMac { mac: String, first: String, second: String },
    #[error("IP {ip} is given to both {first} and {second}")]
    DuplicateIp { ip: Ipv4Addr, first: String, second: String },
    #[error("hostname {0:?} is used by two CNs")]
    DuplicateHostname(String),
    #[error(
        "cn {cn}: nic tag {tag:?} points at {target:?}, which is neither a MAC nor one of its aggregations ({known})"
    )]
    UnknownAggregation { cn: String, tag: String, target: String, known: String },
    #[error("cn {cn}: aggregation {aggr:?}: {reason}")]
    BadAggregation { cn: String, aggr: String, reason: String },
    #[error("cn {cn}: vnic {mac}: {reason}")]
    BadVnic { cn: String, mac: String, reason: String },
    #[error("cn {cn}: {what} {value:?} {reason}")]
    BadWord { cn: String, what: String, value: String, reason: String },
    #[error("{what} {value:?} {reason}")]
    BadSetting { what: String, value: String, reason: String },
    #[error("the admin netmask {0} is not a contiguous netmask")]
    BadNetmask(Ipv4Addr),
}

/// Headnode-wide facts booter uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Datacenter {
    pub server_ip: Ipv4Addr,
    pub ipxe_http: bool,
    pub admin_netmask: Ipv4Addr,
    pub rabbitmq: String,
    pub resolvers: Vec<Ipv4Addr>,
    pub dns_domain: Option<String>,
    pub datacenter_name: Option<String>,
    pub node_config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregation {
    pub name: String,
    pub macs: Vec<Mac>,
    pub lacp_mode: String,
}

/// Where a nic tag lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagTarget {
    Nic(Mac),
    Aggr(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vnic {
    pub mac: Mac,
    pub nic_tag: String,
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub vlan_id: u16,
    pub resolvers: Vec<Ipv4Addr>,
}

/// One validated CN.
#[derive(Debug, Clone, PartialEq)]
pub struct Cn {
    pub hostname: String,
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub platform: Option<String>,
    pub serial: Serial,
    pub nic_tags: BTreeMap<String, TagTarget>,
    pub mtu: BTreeMap<String, u32>,
    pub aggregations: Vec<Aggregation>,
    pub vnics: Vec<Vnic>,
    pub kernel_args: BTreeMap<String, String>,
    pub routes: BTreeMap<String, String>,
}

impl Cn {
    /// `aabbccddeeff`: the bootfs directory name.
    pub fn mac_plain(&self) -> String {
        mac_plain(self.mac)
    }

    /// `AABBCCDDEEFF`: the `boot.ipxe.01<...>` suffix.
    pub fn mac_upper(&self) -> String {
        mac_plain(self.mac).to_ascii_uppercase()
    }

    /// Every MAC of a NIC this CN has (admin, tag targets, aggr members, vnics), admin first.
    pub fn nic_macs(&self) -> Vec<Mac> {
        let mut out = vec![self.mac];
        let mut add = |m: Mac| {
            if !out.contains(&m) {
                out.push(m)
            }
        };
        for t in self.nic_tags.values() {
            if let TagTarget::Nic(m) = t {
                add(*m);
            }
        }
        for a in &self.aggregations {
            a.macs.iter().for_each(|m| add(*m));
        }
        for v in &self.vnics {
            add(v.mac);
        }
        out
    }
}

/// The whole validated description.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub dc: Datacenter,
    pub cns: Vec<Cn>,
}

pub fn mac_plain(m: Mac) -> String {
    hex::encode(m.0)
}

/// Reads a `.toml` or `.json` description.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let p = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: p.clone(), reason: e.to_string() })?;
    parse(&text, path.extension().is_some_and(|e| e == "json"), &p)
}

/// Parses TOML (or JSON when `json`); `origin` names the source in errors.
pub fn parse(text: &str, json: bool, origin: &str) -> Result<ConfigFile, ConfigError> {
    let syntax = |reason: String| ConfigError::Syntax { path: origin.to_string(), reason };
    if json {
        serde_json::from_str(text).map_err(|e| syntax(e.to_string()))
    } else {
        toml::from_str(text).map_err(|e| syntax(e.to_string()))
    }
}

fn word_ok(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '"' || c.is_control())
}

fn key_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn netmask_ok(m: Ipv4Addr) -> bool {
    let v = u32::from(m);
    v.leading_ones() + v.trailing_zeros() == 32
}

impl ConfigFile {
    /// Checks meaning: MACs, duplicates, tag targets, aggregations, words
    /// that go on the kernel command line.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        if !netmask_ok(self.admin_netmask) {
            return Err(ConfigError::BadNetmask(self.admin_netmask));
        }
        let rabbitmq = self.rabbitmq.clone().unwrap_or_else(|| format!("guest:guest:{}:5672", self.server_ip));
        if !word_ok(&rabbitmq) {
            return Err(ConfigError::BadSetting {
                what: "rabbitmq".into(),
                value: rabbitmq,
                reason: "must be one word user:pass:host:port".into(),
            });
        }
        for k in self.node_config.keys() {
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ConfigError::BadSetting {
                    what: "node_config key".into(),
                    value: k.clone(),
                    reason: "must be letters, digits and _ (it is a shell variable)".into(),
                });
            }
        }
        let dc = Datacenter {
            server_ip: self.server_ip,
            ipxe_http: self.ipxe_http,
            admin_netmask: self.admin_netmask,
            rabbitmq,
            resolvers: self.resolvers.clone(),
            dns_domain: self.dns_domain.clone(),
            datacenter_name: self.datacenter_name.clone(),
            node_config: self.node_config.clone(),
        };
        let mut macs: BTreeMap<[u8; 6], String> = BTreeMap::new();
        let mut ips: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        ips.insert(self.server_ip, "server_ip".into());
        let mut hostnames = BTreeSet::new();
        let mut cns = Vec::new();
        for f in &self.cns {
            let cn = f.validate(&dc)?;
            if !hostnames.insert(cn.hostname.clone()) {
                return Err(ConfigError::DuplicateHostname(cn.hostname));
            }
            for m in cn.nic_macs() {
                if let Some(first) = macs.insert(m.0, cn.hostname.clone()) {
                    return Err(ConfigError::DuplicateMac {
                        mac: m.to_string(),
                        first: format!("cn {first}"),
                        second: format!("cn {}", cn.hostname),
                    });
                }
            }
            let mut own_ips = vec![cn.ip];
            own_ips.extend(cn.vnics.iter().map(|v| v.ip));
            for ip in own_ips {
                if let Some(first) = ips.insert(ip, format!("cn {}", cn.hostname)) {
                    return Err(ConfigError::DuplicateIp { ip, first, second: format!("cn {}", cn.hostname) });
                }
            }
            cns.push(cn);
        }
        Ok(Config { dc, cns })
    }
}

impl CnFile {
    fn validate(&self, dc: &Datacenter) -> Result<Cn, ConfigError> {
        let hostname = self.hostname.clone().unwrap_or_else(|| self.mac.to_ascii_lowercase().replace(':', "-"));
        let cn = hostname.clone();
        let mac_of = |field: &str, value: &str| {
            Mac::parse(value).filter(|_| value.contains(':')).ok_or_else(|| ConfigError::BadMac {
                cn: cn.clone(),
                field: field.into(),
                value: value.into(),
            })
        };
        let bad_word = |what: &str, value: &str, reason: &str| ConfigError::BadWord {
            cn: cn.clone(),
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        };
        let mac = mac_of("mac", &self.mac)?;
        if !hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') || hostname.is_empty() {
            return Err(bad_word("hostname", &hostname, "must be letters, digits, '-' and '.'"));
        }
        let netmask = self.netmask.unwrap_or(dc.admin_netmask);
        if !netmask_ok(netmask) {
            return Err(bad_word("netmask", &netmask.to_string(), "is not a contiguous netmask"));
        }
        if let Some(p) = &self.platform {
            if !is_stamp(p) {
                return Err(bad_word("platform", p, "is not a platform stamp like 20260101T000000Z"));
            }
        }
        let mut aggregations = Vec::new();
        for a in &self.aggregations {
            let bad = |reason: String| ConfigError::BadAggregation { cn: cn.clone(), aggr: a.name.clone(), reason };
            if !key_ok(&a.name) || Mac::parse(&a.name).is_some() {
                return Err(bad("the name must be a word like aggr0".into()));
            }
            if aggregations.iter().any(|x: &Aggregation| x.name == a.name) {
                return Err(bad("defined twice".into()));
            }
            if a.macs.is_empty() {
                return Err(bad("has no member MACs (macs = [...])".into()));
            }
            let macs = a
                .macs
                .iter()
                .map(|m| mac_of(&format!("aggregation {} member", a.name), m))
                .collect::<Result<Vec<_>, _>>()?;
            if macs.contains(&mac) {
                return Err(bad(format!("member {mac} is the admin (booting) NIC; boot from a plain NIC")));
            }
            if !matches!(a.lacp_mode.as_str(), "off" | "active" | "passive") {
                return Err(bad(format!("lacp_mode {:?} must be off, active or passive", a.lacp_mode)));
            }
            aggregations.push(Aggregation { name: a.name.clone(), macs, lacp_mode: a.lacp_mode.clone() });
        }
        let mut nic_tags = BTreeMap::new();
        for (tag, target) in &self.nic_tags {
            if !key_ok(tag) {
                return Err(bad_word("nic tag", tag, "must be letters, digits and _"));
            }
            let t = if target.contains(':') {
                TagTarget::Nic(mac_of(&format!("nic_tags.{tag}"), target)?)
            } else if aggregations.iter().any(|a| &a.name == target) {
                TagTarget::Aggr(target.clone())
            } else {
                let known: Vec<&str> = aggregations.iter().map(|a| a.name.as_str()).collect();
                return Err(ConfigError::UnknownAggregation {
                    cn: cn.clone(),
                    tag: tag.clone(),
                    target: target.clone(),
                    known: if known.is_empty() { "it has none".into() } else { known.join(", ") },
                });
            };
            if let TagTarget::Nic(m) = &t {
                if let Some(a) = aggregations.iter().find(|a| a.macs.contains(m)) {
                    return Err(bad_word(
                        &format!("nic tag {tag}"),
                        target,
                        &format!("is a member of aggregation {}; point the tag at {} instead", a.name, a.name),
                    ));
                }
            }
            nic_tags.insert(tag.clone(), t);
        }
        if let Some(TagTarget::Aggr(a)) = nic_tags.get("admin") {
            return Err(bad_word("nic tag admin", a, "must be the booting NIC's MAC (booter boots from a plain NIC)"));
        }
        if let Some(TagTarget::Nic(m)) = nic_tags.get("admin") {
            if *m != mac {
                return Err(bad_word("nic tag admin", &m.to_string(), &format!("must be the booting MAC {mac}")));
            }
        }
        for (tag, m) in &self.mtu {
            if !(576..=9216).contains(m) {
                return Err(bad_word(&format!("mtu.{tag}"), &m.to_string(), "is outside 576..9216"));
            }
        }
        let mut vnics = Vec::new();
        for v in &self.vnics {
            let vmac = mac_of("vnic mac", &v.mac)?;
            let bad = |reason: String| ConfigError::BadVnic { cn: cn.clone(), mac: v.mac.clone(), reason };
            if vmac == mac {
                return Err(bad("is the admin NIC; the admin vnic is made from mac/ip/netmask".into()));
            }
            if v.nic_tag != "admin" && !nic_tags.contains_key(&v.nic_tag) {
                return Err(bad(format!("nic_tag {:?} is not in this CN's nic_tags", v.nic_tag)));
            }
            if !netmask_ok(v.netmask) {
                return Err(bad(format!("netmask {} is not contiguous", v.netmask)));
            }
            if v.vlan_id > 4094 {
                return Err(bad(format!("vlan_id {} is outside 0..4094", v.vlan_id)));
            }
            vnics.push(Vnic {
                mac: vmac,
                nic_tag: v.nic_tag.clone(),
                ip: v.ip,
                netmask: v.netmask,
                gateway: v.gateway,
                vlan_id: v.vlan_id,
                resolvers: v.resolvers.clone(),
            });
        }
        for (k, v) in &self.kernel_args {
            if !key_ok(k) {
                return Err(bad_word("kernel_args key", k, "must be letters, digits, '_', '-' and '.'"));
            }
            if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad_word(&format!("kernel_args.{k}"), v, "must not contain spaces"));
            }
        }
        Ok(Cn {
            hostname,
            mac,
            ip: self.ip,
            netmask,
            gateway: self.gateway,
            platform: self.platform.clone(),
            serial: self.serial,
            nic_tags,
            mtu: self.mtu.clone(),
            aggregations,
            vnics,
            kernel_args: self.kernel_args.clone(),
            routes: self.routes.clone(),
        })
    }
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && b[0] == b'2'
}

/// The dev booter's default description: `n` admin-only CNs on
/// 10.99.99.0/24, booter at 10.99.99.9.
pub fn dev_default(n: usize) -> ConfigFile {
    let mut f = parse(DEFAULT_TOML, false, "embedded default").unwrap_or_else(|e| panic!("embedded config: {e}"));
    let template = f.cns.first().cloned();
    if let Some(t) = template {
        f.cns = (1..=n)
            .map(|i| CnFile {
                mac: format!("52:54:00:99:00:{i:02x}"),
                ip: Ipv4Addr::new(10, 99, 99, 100 + i as u8),
                hostname: Some(format!("cn{i}")),
                ..t.clone()
            })
            .collect();
    }
    f
}

/// The embedded default (one CN).
pub const DEFAULT_TOML: &str = include_str!("default-config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn one(cn: &str) -> Result<Config, ConfigError> {
        parse(&format!("server_ip = \"10.99.99.9\"\n[[cn]]\n{cn}"), false, "t").expect("syntax").validate()
    }

    #[test]
    fn default_config_is_valid() {
        let c = dev_default(3).validate().expect("valid");
        assert_eq!(c.cns.len(), 3);
        assert_eq!(c.cns[2].mac.to_string(), "52:54:00:99:00:03");
        assert_eq!(c.cns[2].ip, Ipv4Addr::new(10, 99, 99, 103));
        assert_eq!(c.dc.rabbitmq, "guest:guest:10.99.99.9:5672");
        assert!(c.dc.ipxe_http);
    }

    #[test]
    fn booter_names_are_accepted() {
        let f = parse(r#"{"serverIp":"10.0.0.1","ipxeHTTP":false}"#, true, "j").expect("json");
        assert_eq!(f.server_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert!(!f.ipxe_http);
        assert!(matches!(parse("server_ip = \"1.2.3.4\"\nbogus = 1", false, "t"), Err(ConfigError::Syntax { .. })));
    }

    #[test]
    fn hostname_defaults_to_dashed_mac() {
        let c = one("mac = \"52:54:00:AA:00:01\"\nip = \"10.99.99.10\"").expect("valid");
        assert_eq!(c.cns[0].hostname, "52-54-00-aa-00-01");
        assert_eq!(c.cns[0].mac_upper(), "525400AA0001");
        assert_eq!(c.cns[0].mac_plain(), "525400aa0001");
    }

    #[test]
    fn errors_say_what_to_fix() {
        let e = one("mac = \"52:54:00:aa:00\"\nip = \"10.99.99.10\"").expect_err("must fail");
        assert!(e.to_string().contains("is not a MAC address"), "{e}");
        let e = one("mac = \"52:54:00:aa:00:01\"\nip = \"10.99.99.10\"\nnic_tags = { external = \"aggr9\" }")
            .expect_err("must fail");
        assert!(matches!(e, ConfigError::UnknownAggregation { .. }), "{e}");
        assert!(e.to_string().contains("it has none"), "{e}");
        let e =
            one("mac = \"52:54:00:aa:00:01\"\nip = \"10.99.99.10\"\n[[cn.aggregations]]\nname = \"aggr0\"\nmacs = []")
                .expect_err("must fail");
        assert!(e.to_string().contains("no member MACs"), "{e}");
        let e = one("mac = \"52:54:00:aa:00:01\"\nip = \"10.99.99.10\"\nkernel_args = { a = \"b c\" }")
            .expect_err("must fail");
        assert!(e.to_string().contains("spaces"), "{e}");
        let e = one("mac = \"52:54:00:aa:00:01\"\nip = \"10.99.99.10\"\n[[cn.aggregations]]\nname = \"aggr0\"\n\
             macs = [\"52:54:00:aa:00:02\"]\nlacp_mode = \"fast\"")
        .expect_err("must fail");
        assert!(e.to_string().contains("off, active or passive"), "{e}");
    }

    #[test]
    fn duplicates_are_refused() {
        let f = parse(
            "server_ip = \"10.99.99.9\"\n[[cn]]\nmac = \"52:54:00:aa:00:01\"\nip = \"10.99.99.10\"\n\
             [[cn]]\nmac = \"52:54:00:AA:00:01\"\nip = \"10.99.99.11\"\nhostname = \"b\"",
            false,
            "t",
        )
        .expect("syntax");
        let e = f.validate().expect_err("must fail");
        assert!(matches!(e, ConfigError::DuplicateMac { .. }), "{e}");
        let f =
            parse("server_ip = \"10.99.99.9\"\n[[cn]]\nmac = \"52:54:00:aa:00:01\"\nip = \"10.99.99.9\"", false, "t")
                .expect("syntax");
        assert!(matches!(f.validate(), Err(ConfigError::DuplicateIp { .. })));
    }

    #[test]
    fn stamps() {
        assert!(is_stamp("20261125T135222Z"));
        assert!(!is_stamp("20261125T135222"));
        assert!(!is_stamp("2026112xT135222Z"));
    }
}
