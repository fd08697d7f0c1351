use std::net::Ipv4Addr;

/// A static IPv4 configuration from the kernel's `ip=` syntax:
/// `<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>`.
/// booter writes `ip=<ip>:::<netmask>::` (contracts 2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub device: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpParseError {
    #[error("client address {0:?} is not an IPv4 address")]
    Address(String),
    #[error("gateway {0:?} is not an IPv4 address")]
    Gateway(String),
    #[error("netmask {0:?} is not a contiguous IPv4 netmask (e.g. 255.255.255.0)")]
    Netmask(String),
    #[error("a static address needs a netmask (ip=<ip>:::<netmask>::)")]
    MissingNetmask,
}

impl IpConfig {
    /// `Ok(None)` for the autoconfiguration forms (`dhcp`, `on`, `any`, ...).
    pub fn parse(s: &str) -> Result<Option<IpConfig>, IpParseError> {
        if matches!(s, "dhcp" | "on" | "any" | "bootp" | "rarp" | "both" | "off" | "none" | "") {
            return Ok(None);
        }
        let f: Vec<&str> = s.split(':').collect();
        let field = |i: usize| f.get(i).copied().filter(|v| !v.is_empty());
        let address = field(0)
            .ok_or_else(|| IpParseError::Address(String::new()))?
            .parse::<Ipv4Addr>()
            .map_err(|_| IpParseError::Address(f[0].to_string()))?;
        let gateway =
            field(2).map(|g| g.parse::<Ipv4Addr>().map_err(|_| IpParseError::Gateway(g.to_string()))).transpose()?;
        let mask = field(3).ok_or(IpParseError::MissingNetmask)?;
        let prefix_len = netmask_prefix(mask).ok_or_else(|| IpParseError::Netmask(mask.to_string()))?;
        Ok(Some(IpConfig {
            address,
            prefix_len,
            gateway,
            hostname: field(4).map(str::to_string),
            device: field(5).map(str::to_string),
        }))
    }
}

/// `255.255.255.0` → 24; `None` if not a contiguous mask.
pub fn netmask_prefix(mask: &str) -> Option<u8> {
    let m = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(IpConfig::parse("dhcp"), Ok(None));
        let c = IpConfig::parse("10.0.2.15:10.0.2.2:10.0.2.1:255.255.0.0:cn1:eth0:off").expect("ok").expect("some");
        assert_eq!(c.prefix_len, 16);
        assert_eq!(c.gateway, Some(Ipv4Addr::new(10, 0, 2, 1)));
        assert_eq!(c.hostname.as_deref(), Some("cn1"));
        assert_eq!(c.device.as_deref(), Some("eth0"));
    }

    #[test]
    fn masks() {
        assert_eq!(netmask_prefix("255.255.255.255"), Some(32));
        assert_eq!(netmask_prefix("0.0.0.0"), Some(0));
        assert_eq!(netmask_prefix("255.255.254.0"), Some(23));
        assert_eq!(netmask_prefix("255.0.255.0"), None);
        assert_eq!(IpConfig::parse("10.0.0.1:::"), Err(IpParseError::MissingNetmask));
        assert!(matches!(IpConfig::parse("10.0.0.x:::255.0.0.0::"), Err(IpParseError::Address(_))));
    }
}
