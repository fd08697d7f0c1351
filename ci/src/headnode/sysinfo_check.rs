//! What CNAPI (and booter, through CNAPI's server record) needs from a
//! sysinfo published on `ur.sysinfo.<uuid>.<id>`: a pure check that returns
//! every problem found, worded for a test failure.
//!
//! The rules follow CNAPI's `onSysinfoReceivedUr` (routing-key UUID equals
//! `UUID`; `Setup.toString()`), `ModelServer.updateFromSysinfo` (`assert.uuid`,
//! `Number(Boot Time)`, `parseInt(MiB of Memory)`, `Boot Parameters.headnode`,
//! `Live Image`), `doNapiSysinfoUpdate` (`Network Interfaces[*].NIC Names`),
//! triton-netconfig's `adminNicFromSysinfo`/`adminIpFromSysinfo`, and booter's
//! rule that an unsetup server is found by `Hostname` == its admin MAC with
//! `:` replaced by `-`.

use std::net::IpAddr;

use serde_json::{Map, Value};

/// What the headnode expects of a server's sysinfo beyond its shape.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The platform stamp booter served (`Live Image` must equal it).
    pub platform: Option<String>,
}

/// `8-4-4-4-12` hex digits, as assert-plus's `assert.uuid` accepts.
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A MAC as six `:`-separated hex pairs.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Lowercase, `-` → `:` (for comparing MACs written either way).
pub fn normalize_mac(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('-', ":")
}

/// The server UUID in `ur.sysinfo.<uuid>.<id>`, if the key has that shape.
pub fn routing_key_uuid(routing_key: &str) -> Option<&str> {
    let parts: Vec<&str> = routing_key.split('.').collect();
    match parts.as_slice() {
        ["ur", "sysinfo", uuid, id] if !uuid.is_empty() && !id.is_empty() => Some(uuid),
        _ => None,
    }
}

/// JavaScript's `Number(v)` being a finite number, for a JSON string or number.
fn js_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// `Boot Time` as seconds since the epoch (CNAPI: `Number(v) * 1000` ms).
pub fn boot_time(sysinfo: &Value) -> Option<f64> {
    sysinfo.get("Boot Time").and_then(js_number)
}

/// The admin tag (`Admin NIC Tag`, default `admin`).
pub fn admin_tag(sysinfo: &Value) -> &str {
    sysinfo.get("Admin NIC Tag").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("admin")
}

/// triton-netconfig's admin NIC: the first `Network Interfaces` entry whose
/// `NIC Names` contains the admin tag.
pub fn admin_nic(sysinfo: &Value) -> Option<&Map<String, Value>> {
    let tag = admin_tag(sysinfo);
    sysinfo
        .get("Network Interfaces")?
        .as_object()?
        .values()
        .filter_map(Value::as_object)
        .find(|nic| nic.get("NIC Names").and_then(Value::as_array).is_some_and(|names| names.iter().any(|n| n == tag)))
}

/// The admin NIC's MAC (normalized), if any.
pub fn admin_mac(sysinfo: &Value) -> Option<String> {
    admin_nic(sysinfo).and_then(|n| n.get("MAC Address")).and_then(Value::as_str).map(normalize_mac)
}

/// triton-netconfig's admin IP: `Admin IP` if it parses, else the admin NIC's `ip4addr`.
pub fn admin_ip(sysinfo: &Value) -> Option<IpAddr> {
    let parse = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| s.parse::<IpAddr>().ok());
    parse(sysinfo.get("Admin IP")).or_else(|| parse(admin_nic(sysinfo).and_then(|n| n.get("ip4addr"))))
}

/// `Setup` as CNAPI reads it: `v === 'true' || v === true`.
pub fn is_setup(sysinfo: &Value) -> bool {
    matches!(sysinfo.get("Setup"), Some(Value::Bool(true)))
        || sysinfo.get("Setup").and_then(Value::as_str) == Some("true")
}

/// Every problem CNAPI or booter would have with this sysinfo (empty when
/// none). Each entry names the key and what is wrong with it.
pub fn check(routing_key: &str, sysinfo: &Value, expect: &Expect) -> Vec<String> {
    let mut bad = Vec::new();
    let key_uuid = routing_key_uuid(routing_key);
    if key_uuid.is_none() {
        bad.push(format!("routing key {routing_key:?} is not ur.sysinfo.<uuid>.<id>"));
    }
    let Some(obj) = sysinfo.as_object() else {
        bad.push("the sysinfo is not a JSON object".into());
        return bad;
    };
    let get = |k: &str| obj.get(k);

    // UUID: assert.uuid, and equal to the routing key's.
    match get("UUID").and_then(Value::as_str) {
        None => bad.push(format!("UUID is missing or not a string: {:?}", get("UUID"))),
        Some(u) => {
            if !is_uuid(u) {
                bad.push(format!("UUID {u:?} is not a UUID"));
            }
            if let Some(k) = key_uuid {
                if k != u {
                    bad.push(format!("UUID {u:?} differs from the routing key's {k:?}"));
                }
            }
        }
    }

    // Setup: CNAPI calls .toString() and compares with 'true'.
    match get("Setup") {
        None | Some(Value::Null) => bad.push("Setup is missing (CNAPI calls Setup.toString())".into()),
        Some(Value::Bool(_)) => {}
        Some(Value::String(s)) if s == "true" || s == "false" => {}
        Some(v) => bad.push(format!("Setup is {v}, not true/false or \"true\"/\"false\"")),
    }

    match get("System Type") {
        Some(Value::String(s)) if s == "Linux" => {}
        v => bad.push(format!("System Type is {v:?}, not \"Linux\"")),
    }

    match get("Boot Time") {
        Some(v) if js_number(v).is_some_and(|t| t > 0.0) => {}
        v => bad.push(format!("Boot Time is {v:?}, not a positive number or numeric string")),
    }

    // parseInt(v, 10): an integer number or a string of digits.
    let mib_ok = match get("MiB of Memory") {
        Some(Value::Number(n)) => n.as_u64().is_some_and(|m| m > 0),
        Some(Value::String(s)) => !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) && s != "0",
        _ => false,
    };
    if !mib_ok {
        bad.push(format!("MiB of Memory is {:?}, not a positive integer", get("MiB of Memory")));
    }

    if let Some(t) = get("Admin NIC Tag") {
        if !t.is_string() {
            bad.push(format!("Admin NIC Tag is {t}, not a string"));
        }
    }

    // Network Interfaces: every entry has NIC Names (netconfig calls
    // indexOf on it) and a MAC; one of them carries the admin tag.
    match get("Network Interfaces").and_then(Value::as_object) {
        None => bad.push(format!("Network Interfaces is {:?}, not an object", get("Network Interfaces"))),
        Some(nics) => {
            for (name, nic) in nics {
                match nic.get("NIC Names") {
                    Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
                    v => bad.push(format!("Network Interfaces.{name}: NIC Names is {v:?}, not an array of strings")),
                }
                match nic.get("MAC Address").and_then(Value::as_str) {
                    Some(m) if is_mac(m) => {}
                    v => bad.push(format!("Network Interfaces.{name}: MAC Address {v:?} is not a MAC")),
                }
            }
            if admin_nic(sysinfo).is_none() {
                bad.push(format!(
                    "no Network Interfaces entry has the admin tag {:?} in its NIC Names (triton-netconfig finds no admin NIC)",
                    admin_tag(sysinfo)
                ));
            }
        }
    }

    if admin_ip(sysinfo).is_none() {
        bad.push(format!("neither Admin IP ({:?}) nor the admin NIC's ip4addr is an IP address", get("Admin IP")));
    }

    // Hostname: booter finds an unsetup server by its admin MAC in dashes.
    match get("Hostname").and_then(Value::as_str) {
        None | Some("") => bad.push(format!("Hostname is {:?}, not a non-empty string", get("Hostname"))),
        Some(h) => {
            if !is_setup(sysinfo) {
                if let Some(mac) = admin_mac(sysinfo) {
                    let want = mac.replace(':', "-");
                    if h != want {
                        bad.push(format!("Hostname {h:?} of an unsetup server is not its admin MAC {want:?}"));
                    }
                }
            }
        }
    }

    match get("Live Image").and_then(Value::as_str) {
        None => bad.push(format!("Live Image is {:?}, not a string", get("Live Image"))),
        Some(l) => {
            if let Some(p) = &expect.platform {
                if l != p {
                    bad.push(format!("Live Image {l:?} is not the platform served ({p:?})"));
                }
            }
        }
    }

    match get("Boot Parameters") {
        Some(Value::Object(bp)) => {
            if bp.get("headnode").and_then(Value::as_str) == Some("true") {
                bad.push("Boot Parameters.headnode is \"true\" on a compute node".into());
            }
        }
        v => bad.push(format!("Boot Parameters is {v:?}, not an object")),
    }

    if let Some(z) = get("Zpool Creation") {
        if js_number(z).is_none() {
            bad.push(format!("Zpool Creation is {z}, not a number"));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UUID: &str = "564d5535-0a3c-44c1-9f2e-10ddb1a257bf";

    /// Contracts §6.2's example, with the SmartOS key names CNAPI reads
    /// (`Boot Parameters`, `Serial Number`) and a real UUID.
    fn good() -> Value {
        json!({
            "Boot Parameters": {"boot": "live", "console": "ttyS1,115200n8", "admin_mac": "10-dd-b1-a2-57-bf",
                "admin_ip": "10.99.99.124", "admin_netmask": "255.255.255.0",
                "rabbitmq": "guest:guest:10.99.99.16:5672",
                "fetch": "http://10.99.99.9/os/20210731T223008Z/platform/x86_64/filesystem.squashfs"},
            "SDC Version": "7.0", "Hostname": "10-dd-b1-a2-57-bf", "VM Capable": false, "Bhyve Capable": false,
            "HVM API": false, "Live Image": "20210731T223008Z", "Admin NIC Tag": "admin", "Boot Time": 1627800000,
            "Setup": false, "System Type": "Linux", "CPU Type": "Intel(R) Xeon(R) ...", "CPU Physical Cores": 2,
            "CPU Total Cores": 32, "CPU Virtualization": "vmx", "MiB of Memory": 128000, "MiB of Memory Free": 120000,
            "Disks": {"sda": {"Size in GB": 480}}, "Zpool": "zones", "Zpool Size in GiB": 430,
            "Zpool Creation": 1627800000, "Zpool Disks": ["sda"], "Zpool Profile": "stripe",
            "Network Interfaces": {"eno1": {"MAC Address": "10:dd:b1:a2:57:bf", "Link Status": "up",
                "ip4addr": "10.99.99.124", "NIC Names": ["admin"]}},
            "Virtual Network Interfaces": {}, "Link Aggregations": {}, "Admin IP": "10.99.99.124",
            "Manufacturer": "QEMU", "Product": "Standard PC", "Serial Number": "x", "UUID": UUID
        })
    }

    fn key() -> String {
        format!("ur.sysinfo.{UUID}.1a2b3c4d")
    }

    fn expect() -> Expect {
        Expect { platform: Some("20210731T223008Z".into()) }
    }

    fn problems(v: &Value) -> Vec<String> {
        check(&key(), v, &expect())
    }

    fn has(p: &[String], what: &str) -> bool {
        p.iter().any(|x| x.contains(what))
    }

    #[test]
    fn the_contract_example_passes() {
        assert_eq!(problems(&good()), Vec::<String>::new());
        let v = good();
        assert_eq!(admin_mac(&v).as_deref(), Some("10:dd:b1:a2:57:bf"));
        assert_eq!(admin_ip(&v), Some("10.99.99.124".parse().expect("ip")));
        assert_eq!(boot_time(&v), Some(1627800000.0));
        assert!(!is_setup(&v));
    }

    #[test]
    fn smartos_style_strings_pass() {
        let mut v = good();
        v["Setup"] = json!("true");
        v["Boot Time"] = json!("1627800000");
        v["MiB of Memory"] = json!("128000");
        v["Zpool Creation"] = json!("1627800000");
        // A set-up server keeps the hostname it was given.
        v["Hostname"] = json!("cn1");
        assert_eq!(problems(&v), Vec::<String>::new());
        assert!(is_setup(&v));
        assert_eq!(boot_time(&v), Some(1627800000.0));
    }

    #[test]
    fn uuid_problems() {
        let mut v = good();
        v["UUID"] = json!("564D5535-0a3c-44c1-9f2e-10ddb1a257bf");
        assert!(has(&problems(&v), "differs from the routing key"), "{:?}", problems(&v));
        v["UUID"] = json!("not-a-uuid");
        let p = problems(&v);
        assert!(has(&p, "is not a UUID") && has(&p, "differs"), "{p:?}");
        v.as_object_mut().expect("object").remove("UUID");
        assert!(has(&problems(&v), "UUID is missing"));
        assert!(has(&check("ur.startup.x", &good(), &expect()), "routing key"));
    }

    #[test]
    fn type_problems() {
        let cases: &[(&str, Value, &str)] = &[
            ("Setup", Value::Null, "Setup is missing"),
            ("Setup", json!(1), "Setup is 1"),
            ("Setup", json!("yes"), "Setup is \"yes\""),
            ("System Type", json!("SunOS"), "System Type"),
            ("Boot Time", json!("soon"), "Boot Time"),
            ("Boot Time", json!(0), "Boot Time"),
            ("MiB of Memory", json!(1.5), "MiB of Memory"),
            ("MiB of Memory", json!("12x"), "MiB of Memory"),
            ("Live Image", json!("20990101T000000Z"), "not the platform served"),
            ("Live Image", json!(5), "Live Image"),
            ("Boot Parameters", json!("boot=live"), "Boot Parameters is"),
            ("Boot Parameters", json!({"headnode": "true"}), "headnode"),
            ("Hostname", json!("cn1"), "not its admin MAC"),
            ("Hostname", json!(""), "Hostname"),
            ("Zpool Creation", json!("yesterday"), "Zpool Creation"),
            ("Admin NIC Tag", json!(7), "Admin NIC Tag"),
        ];
        for (k, val, want) in cases {
            let mut v = good();
            v[*k] = val.clone();
            let p = problems(&v);
            assert!(has(&p, want), "{k} = {val}: want {want:?} in {p:?}");
        }
        let p = check(&key(), &json!([1, 2]), &expect());
        assert!(has(&p, "not a JSON object"), "{p:?}");
    }

    #[test]
    fn the_admin_nic_follows_the_admin_tag() {
        let mut v = good();
        v["Network Interfaces"] = json!({
            "eth0": {"MAC Address": "52:54:00:00:00:01", "ip4addr": "", "NIC Names": []},
            "eth1": {"MAC Address": "10:dd:b1:a2:57:bf", "ip4addr": "10.99.99.124", "NIC Names": ["external", "admin"]}
        });
        assert_eq!(problems(&v), Vec::<String>::new());
        assert_eq!(admin_mac(&v).as_deref(), Some("10:dd:b1:a2:57:bf"));

        // A custom admin tag.
        v["Admin NIC Tag"] = json!("mgmt");
        let p = problems(&v);
        assert!(has(&p, "admin tag \"mgmt\""), "{p:?}");
        // Admin IP still parses, so the IP rule holds.
        assert!(!has(&p, "neither Admin IP"), "{p:?}");

        // No Admin IP and no admin NIC: no IP for CNAPI either.
        v.as_object_mut().expect("object").remove("Admin IP");
        assert!(has(&problems(&v), "neither Admin IP"));

        // Admin IP unparsable: the admin NIC's ip4addr is used.
        let mut v = good();
        v["Admin IP"] = json!("dhcp");
        assert_eq!(problems(&v), Vec::<String>::new());
        assert_eq!(admin_ip(&v), Some("10.99.99.124".parse().expect("ip")));

        // An entry without NIC Names would make netconfig throw.
        let mut v = good();
        v["Network Interfaces"]["eth9"] = json!({"MAC Address": "52:54:00:00:00:09"});
        assert!(has(&problems(&v), "eth9: NIC Names"));
        v["Network Interfaces"]["eth9"] = json!({"MAC Address": "52-54-00-00-00-09", "NIC Names": []});
        assert!(has(&problems(&v), "eth9: MAC Address"));
        v["Network Interfaces"] = json!([]);
        assert!(has(&problems(&v), "Network Interfaces is"));
    }

    #[test]
    fn helpers() {
        assert!(is_uuid(UUID));
        assert!(!is_uuid("564d5535-0a3c-44c1-9f2e-10ddb1a257b"));
        assert!(!is_uuid("564d5535-0a3c-44c1-9f2e-10ddb1a257bg"));
        assert!(is_mac("52:54:00:AB:cd:01"));
        assert!(!is_mac("52:54:00:ab:cd"));
        assert_eq!(normalize_mac("52-54-00-AB-CD-01"), "52:54:00:ab:cd:01");
        assert_eq!(routing_key_uuid(&key()), Some(UUID));
        assert_eq!(routing_key_uuid("ur.sysinfo.x"), None);
        assert_eq!(routing_key_uuid("ur.execute.a.b"), None);
    }
}
