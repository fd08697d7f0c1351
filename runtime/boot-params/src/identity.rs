//! Node identity rules shared by init (`/etc/hostid`, hostname) and sysinfo.
//!
//! UUID: the kernel (like dmidecode) prints the SMBIOS UUID with its first
//! three fields byte-swapped (SMBIOS >= 2.6 stores them little-endian);
//! SmartOS prints the raw byte order. Our server UUID is SmartOS's, so a CN
//! keeps its CNAPI identity when it moves between SmartOS and Linux:
//! `smartos_uuid` swaps the first three fields of the kernel's value.
//!
//! hostid: CRC-32 (IEEE) of that lower-case 36-character UUID, stored as 4
//! bytes little-endian in `/etc/hostid` (linux-live's sethostid function,
//! applied to the sysinfo UUID so that both always agree).

use crate::Mac;

/// The SmartOS/sysinfo form of `/sys/class/dmi/id/product_uuid`, or `None`
/// when it is not a UUID or carries no identity (all zeros or all ones).
pub fn smartos_uuid(kernel_uuid: &str) -> Option<String> {
    let s = kernel_uuid.trim().to_ascii_lowercase();
    let parts: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if parts.len() != 5
        || parts.iter().zip(lens).any(|(p, l)| p.len() != l || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let hex: String = parts.concat();
    if hex.bytes().all(|b| b == b'0') || hex.bytes().all(|b| b == b'f') {
        return None;
    }
    let swap = |p: &str| -> String {
        let bytes: Vec<&str> = (0..p.len()).step_by(2).map(|i| &p[i..i + 2]).collect();
        bytes.into_iter().rev().collect()
    };
    Some(format!("{}-{}-{}-{}-{}", swap(parts[0]), swap(parts[1]), swap(parts[2]), parts[3], parts[4]))
}

/// The 4 bytes of `/etc/hostid` for a server UUID.
pub fn hostid_bytes(uuid: &str) -> [u8; 4] {
    crc32fast::hash(uuid.to_ascii_lowercase().as_bytes()).to_le_bytes()
}

/// Hostname: `hostname=` from the kernel command line, else node.config's
/// `hostname`, else the admin MAC with dashes (what booter matches for an
/// unsetup CN, contracts 10.5).
pub fn hostname(cmdline: Option<&str>, node_config: Option<&str>, admin_mac: Option<Mac>) -> Option<String> {
    let valid = |h: &&str| !h.is_empty() && h.len() <= 63 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    cmdline
        .filter(valid)
        .or(node_config.filter(valid))
        .map(str::to_string)
        .or_else(|| admin_mac.map(|m| m.to_string().replace(':', "-")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_rule() {
        assert_eq!(
            smartos_uuid("4C4C4544-0036-3010-8036-B5C04F4E3032\n").as_deref(),
            Some("44454c4c-3600-1030-8036-b5c04f4e3032")
        );
        assert_eq!(smartos_uuid("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(smartos_uuid("not-a-uuid"), None);
        // Applying the rule twice gives the kernel form back.
        let u = "12345678-9abc-def0-1234-56789abcdef0";
        assert_eq!(smartos_uuid(&smartos_uuid(u).expect("u")).as_deref(), Some(u));
    }

    #[test]
    fn hostid_rule() {
        // CRC-32/IEEE of the string, little-endian.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF43926);
        assert_eq!(
            hostid_bytes("44454C4C-3600-1030-8036-B5C04F4E3032"),
            hostid_bytes("44454c4c-3600-1030-8036-b5c04f4e3032")
        );
        let b = hostid_bytes("a");
        assert_eq!(u32::from_le_bytes(b), crc32fast::hash(b"a"));
    }

    #[test]
    fn hostname_order() {
        let mac = Mac::parse("10:dd:b1:a2:57:bf");
        assert_eq!(hostname(Some("cn1"), Some("x"), mac).as_deref(), Some("cn1"));
        assert_eq!(hostname(None, Some("cn2"), mac).as_deref(), Some("cn2"));
        assert_eq!(hostname(None, None, mac).as_deref(), Some("10-dd-b1-a2-57-bf"));
        assert_eq!(hostname(Some("bad name"), None, mac).as_deref(), Some("10-dd-b1-a2-57-bf"));
        assert_eq!(hostname(None, None, None), None);
    }
}
