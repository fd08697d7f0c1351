//! Who this node is on the bus: sysinfo's `UUID` and the MAC of the admin
//! NIC, found as triton-netconfig's `adminNicFromSysinfo` does: the first
//! `Network Interfaces` entry (in the order sysinfo printed them) whose
//! `NIC Names` contains `Admin NIC Tag` (default `admin`).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Tag used when sysinfo has no `Admin NIC Tag`.
pub const DEFAULT_ADMIN_TAG: &str = "admin";

/// UUID and admin MAC (exactly as sysinfo prints it; it becomes part of the
/// request queue's name and binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uuid: String,
    pub admin_mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("sysinfo output is not a JSON object: {0}")]
    NotJson(String),
    #[error("sysinfo has no \"UUID\" string")]
    NoUuid,
    #[error("sysinfo \"UUID\" {0:?} is not usable in a routing key (only letters, digits and '-')")]
    BadUuid(String),
    #[error(
        "No admin NIC detected: no \"Network Interfaces\" entry has {tag:?} in its \"NIC Names\" \
         (sysinfo lists {count} interface(s)); check networking.json's nictags and admin_tag"
    )]
    NoAdminNic { tag: String, count: usize },
    #[error("admin NIC {nic:?} has no usable \"MAC Address\" (got {got})")]
    BadMac { nic: String, got: String },
}

/// `Network Interfaces` as (name, value) pairs in document order.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of network interfaces")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Ordered, E> {
                Ok(Ordered(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct View {
    #[serde(rename = "UUID")]
    uuid: Option<Value>,
    #[serde(rename = "Admin NIC Tag")]
    admin_tag: Option<Value>,
    #[serde(rename = "Network Interfaces", default)]
    nics: Option<Ordered>,
}

fn usable_in_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Identity {
    /// From sysinfo's stdout.
    pub fn from_sysinfo(text: &str) -> Result<Identity, IdentityError> {
        let view: View = serde_json::from_str(text).map_err(|e| IdentityError::NotJson(e.to_string()))?;
        let uuid = match view.uuid {
            Some(Value::String(s)) => s,
            _ => return Err(IdentityError::NoUuid),
        };
        if !usable_in_key(&uuid) {
            return Err(IdentityError::BadUuid(uuid));
        }
        let tag = match view.admin_tag {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => DEFAULT_ADMIN_TAG.to_string(),
        };
        let nics = view.nics.map(|o| o.0).unwrap_or_default();
        let found = nics.iter().find(|(_, nic)| {
            nic.get("NIC Names")
                .and_then(Value::as_array)
                .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(tag.as_str())))
        });
        let Some((name, nic)) = found else {
            return Err(IdentityError::NoAdminNic { tag, count: nics.len() });
        };
        match nic.get("MAC Address") {
            Some(Value::String(mac))
                if !mac.is_empty()
                    && mac.len() <= 64
                    && !mac.contains(['.', '*', '#'])
                    && !mac.contains(char::is_whitespace) =>
            {
                Ok(Identity { uuid, admin_mac: mac.clone() })
            }
            other => Err(IdentityError::BadMac {
                nic: name.clone(),
                got: other.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into()),
            }),
        }
    }

    /// `ur.request.<uuid>.<adminMac>`.
    pub fn request_queue(&self) -> String {
        format!("ur.request.{}.{}", self.uuid, self.admin_mac)
    }

    /// The three keys the request queue is bound to.
    pub fn request_bindings(&self) -> [String; 3] {
        [
            format!("ur.execute.{}-{}.*", self.uuid, self.admin_mac),
            format!("ur.execute.{}.*", self.uuid),
            "ur.broadcast.*.*".to_string(),
        ]
    }

    /// `ur.ping.<uuid>` (queue name and binding).
    pub fn ping_queue(&self) -> String {
        format!("ur.ping.{}", self.uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "564d5535-1f2e-4c5b-9f5e-0123456789ab";

    fn sysinfo(nics: &str, tag: Option<&str>) -> String {
        let tag = tag.map(|t| format!("\"Admin NIC Tag\":\"{t}\",")).unwrap_or_default();
        format!("{{\"UUID\":\"{UUID}\",{tag}\"Setup\":\"false\",\"Network Interfaces\":{nics}}}")
    }

    #[test]
    fn first_nic_with_the_admin_tag_in_document_order() {
        // Names sort differently from the document order on purpose.
        let s = sysinfo(
            r#"{"zz0":{"MAC Address":"00:00:00:00:00:01","NIC Names":["external"]},
                "yy1":{"MAC Address":"00:0c:29:d4:5b:fa","NIC Names":["storage","admin"]},
                "aa2":{"MAC Address":"00:0c:29:d4:5b:fb","NIC Names":["admin"]}}"#,
            None,
        );
        let id = Identity::from_sysinfo(&s).expect("identity");
        assert_eq!(id, Identity { uuid: UUID.into(), admin_mac: "00:0c:29:d4:5b:fa".into() });
        assert_eq!(id.request_queue(), format!("ur.request.{UUID}.00:0c:29:d4:5b:fa"));
        assert_eq!(
            id.request_bindings(),
            [
                format!("ur.execute.{UUID}-00:0c:29:d4:5b:fa.*"),
                format!("ur.execute.{UUID}.*"),
                "ur.broadcast.*.*".to_string()
            ]
        );
        assert_eq!(id.ping_queue(), format!("ur.ping.{UUID}"));
    }

    #[test]
    fn admin_nic_tag_is_honoured() {
        let s = sysinfo(
            r#"{"e0":{"MAC Address":"00:00:00:00:00:01","NIC Names":["admin"]},
                "e1":{"MAC Address":"00:00:00:00:00:02","NIC Names":["mgmt"]}}"#,
            Some("mgmt"),
        );
        assert_eq!(Identity::from_sysinfo(&s).expect("identity").admin_mac, "00:00:00:00:00:02");
    }

    #[test]
    fn errors_say_what_is_missing() {
        assert!(matches!(Identity::from_sysinfo("not json"), Err(IdentityError::NotJson(_))));
        assert!(matches!(Identity::from_sysinfo("[1]"), Err(IdentityError::NotJson(_))));
        assert_eq!(Identity::from_sysinfo("{}"), Err(IdentityError::NoUuid));
        assert_eq!(Identity::from_sysinfo(r#"{"UUID":5}"#), Err(IdentityError::NoUuid));
        assert_eq!(Identity::from_sysinfo(r#"{"UUID":"a.b"}"#), Err(IdentityError::BadUuid("a.b".into())));
        let e = Identity::from_sysinfo(&sysinfo(r#"{"e0":{"MAC Address":"x","NIC Names":["external"]}}"#, None))
            .expect_err("no admin");
        assert_eq!(e, IdentityError::NoAdminNic { tag: "admin".into(), count: 1 });
        assert!(e.to_string().starts_with("No admin NIC detected"), "{e}");
        assert_eq!(
            Identity::from_sysinfo(&format!("{{\"UUID\":\"{UUID}\"}}")),
            Err(IdentityError::NoAdminNic { tag: "admin".into(), count: 0 })
        );
        assert_eq!(
            Identity::from_sysinfo(&sysinfo(r#"{"e0":{"NIC Names":["admin"]}}"#, None)),
            Err(IdentityError::BadMac { nic: "e0".into(), got: "nothing".into() })
        );
        // Wrong types inside an interface entry are skipped, not a crash.
        let e = Identity::from_sysinfo(&sysinfo(r#"{"e0":{"NIC Names":"admin"},"e1":7}"#, None));
        assert!(matches!(e, Err(IdentityError::NoAdminNic { count: 2, .. })));
        assert!(matches!(Identity::from_sysinfo(&sysinfo("[]", None)), Err(IdentityError::NotJson(_))));
    }
}
