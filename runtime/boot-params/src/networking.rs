//! `/etc/triton-networking.json` as booter writes it (contracts 4.2), and its
//! `.hash` (SHA-1 hex of the JSON text). Triton's format: unknown keys are
//! kept (and can be logged), never fatal; `validate` lists every problem.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;
use sha1::{Digest, Sha1};

use crate::ip::netmask_prefix;
use crate::Mac;

type Extra = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct NicTag {
    pub name: String,
    /// MAC of the NIC providing the tag, or the name of an aggregation.
    pub mac: String,
    pub mtu: Option<u32>,
    #[serde(flatten)]
    pub other: Extra,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Vnic {
    pub mac: String,
    pub ip: Option<String>,
    pub netmask: Option<String>,
    pub gateway: Option<String>,
    pub vlan_id: Option<u32>,
    pub nic_tag: Option<String>,
    pub mtu: Option<u32>,
    #[serde(default)]
    pub primary: bool,
    #[serde(default)]
    pub resolvers: Vec<String>,
    #[serde(default)]
    pub nic_tags_provided: Vec<String>,
    #[serde(flatten)]
    pub other: Extra,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Aggregation {
    pub name: String,
    #[serde(default)]
    pub macs: Vec<String>,
    pub lacp_mode: Option<String>,
    #[serde(default)]
    pub nic_tags_provided: Vec<String>,
    #[serde(flatten)]
    pub other: Extra,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct NetworkingJson {
    #[serde(default)]
    pub nictags: Vec<NicTag>,
    pub admin_tag: Option<String>,
    #[serde(default)]
    pub resolvers: Vec<String>,
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    #[serde(default)]
    pub vnics: Vec<Vnic>,
    #[serde(default)]
    pub aggregations: Vec<Aggregation>,
    pub hostname: Option<String>,
    pub dns_domain: Option<String>,
    pub datacenter_name: Option<String>,
    #[serde(flatten)]
    pub other: Extra,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkingError {
    #[error("triton-networking.json is not valid JSON for booter's format: {0}")]
    Parse(String),
    #[error("triton-networking.json.hash {expected} does not match the file's SHA-1 {actual}")]
    Hash { expected: String, actual: String },
    #[error("triton-networking.json: {0}")]
    Invalid(String),
}

/// SHA-1 hex of the text, the way booter writes `networking.json.hash`.
pub fn sha1_hex(text: &[u8]) -> String {
    hex::encode(Sha1::digest(text))
}

/// Checks `text` against the `.hash` file content.
pub fn check_hash(text: &[u8], hash_file: &str) -> Result<(), NetworkingError> {
    let expected = hash_file.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
    let actual = sha1_hex(text);
    if expected == actual {
        Ok(())
    } else {
        Err(NetworkingError::Hash { expected, actual })
    }
}

impl NetworkingJson {
    pub fn parse(text: &str) -> Result<NetworkingJson, NetworkingError> {
        serde_json::from_str(text).map_err(|e| NetworkingError::Parse(e.to_string()))
    }

    /// Every problem that would make the node's networking wrong.
    pub fn validate(&self) -> Vec<NetworkingError> {
        let mut errs = Vec::new();
        let mut bad = |m: String| errs.push(NetworkingError::Invalid(m));
        let aggr_names: Vec<&str> = self.aggregations.iter().map(|a| a.name.as_str()).collect();
        for t in &self.nictags {
            if Mac::parse(&t.mac).is_none() && !aggr_names.contains(&t.mac.as_str()) {
                bad(format!("nic tag {:?}: mac {:?} is neither a MAC nor an aggregation", t.name, t.mac));
            }
            if let Some(m) = t.mtu.filter(|m| !(576..=9216).contains(m)) {
                bad(format!("nic tag {:?}: mtu {m} outside 576..9216", t.name));
            }
        }
        match &self.admin_tag {
            Some(a) if !self.nictags.iter().any(|t| &t.name == a) => {
                bad(format!("admin_tag {a:?} is not one of the nictags"))
            }
            _ => {}
        }
        for v in &self.vnics {
            let who = format!("vnic {}", v.mac);
            if Mac::parse(&v.mac).is_none() {
                bad(format!("{who}: not a MAC address"));
            }
            if let Some(ip) = &v.ip {
                if ip.parse::<Ipv4Addr>().is_err() && ip != "dhcp" {
                    bad(format!("{who}: ip {ip:?} is not an IPv4 address"));
                }
            }
            if let Some(m) = &v.netmask {
                if netmask_prefix(m).is_none() {
                    bad(format!("{who}: netmask {m:?} is not a contiguous IPv4 netmask"));
                }
            }
            if let Some(g) = &v.gateway {
                if g.parse::<Ipv4Addr>().is_err() {
                    bad(format!("{who}: gateway {g:?} is not an IPv4 address"));
                }
            }
            if let Some(id) = v.vlan_id.filter(|id| *id > 4094) {
                bad(format!("{who}: vlan_id {id} outside 0..4094"));
            }
            if let Some(t) = &v.nic_tag {
                if !self.nictags.iter().any(|n| &n.name == t) {
                    bad(format!("{who}: nic_tag {t:?} is not one of the nictags"));
                }
            }
        }
        for a in &self.aggregations {
            if a.macs.is_empty() {
                bad(format!("aggregation {:?} has no member MACs", a.name));
            }
            for m in &a.macs {
                if Mac::parse(m).is_none() {
                    bad(format!("aggregation {:?}: member {m:?} is not a MAC", a.name));
                }
            }
            if let Some(l) = a.lacp_mode.as_deref().filter(|l| !matches!(*l, "off" | "active" | "passive")) {
                bad(format!("aggregation {:?}: lacp_mode {l:?} is not off, active or passive", a.name));
            }
        }
        for r in &self.resolvers {
            if r.parse::<Ipv4Addr>().is_err() {
                bad(format!("resolver {r:?} is not an IPv4 address"));
            }
        }
        errs
    }

    /// The MAC the admin tag is on, when it is a plain NIC.
    pub fn admin_mac(&self) -> Option<Mac> {
        let tag = self.admin_tag.as_deref().unwrap_or("admin");
        self.nictags.iter().find(|t| t.name == tag).and_then(|t| Mac::parse(&t.mac))
    }

    /// Top-level keys we do not use (to log, not to reject).
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.other.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTER: &str = r#"{
      "nictags": [ {"name":"admin","mac":"00:0c:29:d4:5b:fa","mtu":1500,"uuid":"x"},
                   {"name":"external","mac":"aggr0","mtu":9000} ],
      "admin_tag": "admin",
      "resolvers": ["10.99.99.11","8.8.8.8"],
      "routes": {"10.1.0.0/16": "10.88.88.1"},
      "vnics": [
        {"belongs_to_type":"server","mac":"00:0c:29:d4:5b:fa","primary":false,"ip":"10.99.99.78",
         "netmask":"255.255.255.0","vlan_id":0,"nic_tag":"admin","resolvers":["10.99.99.11"],
         "nic_tags_provided":["admin"]},
        {"mac":"00:0c:29:d4:5b:04","ip":"10.88.88.134","netmask":"255.255.255.0","gateway":"10.88.88.2",
         "vlan_id":12,"nic_tag":"external"}
      ],
      "aggregations": [{"name":"aggr0","macs":["00:0c:29:d4:5b:01","00:0c:29:d4:5b:02"],"lacp_mode":"active",
                        "nic_tags_provided":["external"]}],
      "hostname": "cn1", "dns_domain": "example.com", "datacenter_name": "us-east-1",
      "nictag_rules": {}
    }"#;

    #[test]
    fn booter_file_parses_and_validates() {
        let n = NetworkingJson::parse(BOOTER).expect("parse");
        assert_eq!(n.validate(), vec![]);
        assert_eq!(n.admin_mac(), Mac::parse("00:0c:29:d4:5b:fa"));
        assert_eq!(n.vnics[1].vlan_id, Some(12));
        assert_eq!(n.aggregations[0].lacp_mode.as_deref(), Some("active"));
        assert_eq!(n.unknown_keys(), ["nictag_rules"]);
        assert!(n.vnics[0].other.contains_key("belongs_to_type"));
    }

    #[test]
    fn problems_are_all_reported() {
        let mut n = NetworkingJson::parse(BOOTER).expect("parse");
        n.vnics[1].vlan_id = Some(5000);
        n.vnics[1].netmask = Some("255.0.255.0".into());
        n.aggregations[0].lacp_mode = Some("fast".into());
        n.admin_tag = Some("nope".into());
        let e: Vec<String> = n.validate().iter().map(|e| e.to_string()).collect();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e.iter().any(|m| m.contains("vlan_id 5000")));
        assert!(e.iter().any(|m| m.contains("lacp_mode \"fast\"")));
    }

    #[test]
    fn malformed_and_hash() {
        assert!(matches!(NetworkingJson::parse("{\"vnics\": 3}"), Err(NetworkingError::Parse(_))));
        assert!(matches!(NetworkingJson::parse("not json"), Err(NetworkingError::Parse(_))));
        let h = sha1_hex(BOOTER.as_bytes());
        assert_eq!(check_hash(BOOTER.as_bytes(), &h), Ok(()));
        assert_eq!(check_hash(BOOTER.as_bytes(), &format!("{}\n", h.to_uppercase())), Ok(()));
        assert!(matches!(check_hash(b"{}", &h), Err(NetworkingError::Hash { .. })));
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
