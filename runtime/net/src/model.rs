//! What the kernel has: links, IPv4 addresses, IPv4 routes (main table).
//! Pure data; `observe` in [`crate::netlink`] fills it from rtnetlink and the
//! fake mutates it in memory.

use std::fmt;
use std::net::Ipv4Addr;

use boot_params::Mac;
use serde::{Serialize, Serializer};

/// Linux `IFNAMSIZ - 1`: the longest interface name the kernel accepts.
pub const IFNAME_MAX: usize = 15;

/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;

/// An IPv4 address with its prefix length (`10.99.99.78/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Cidr {
        Cidr { addr, prefix }
    }

    /// The network this address is in (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    fn mask(&self) -> u32 {
        match self.prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p.min(32))),
        }
    }

    /// Parses `a.b.c.d/n`, or a bare `a.b.c.d` as a host (`/32`).
    pub fn parse(s: &str) -> Option<Cidr> {
        match s.split_once('/') {
            Some((a, p)) => {
                let prefix: u8 = p.parse().ok().filter(|p| *p <= 32)?;
                Some(Cidr::new(a.parse().ok()?, prefix))
            }
            None => Some(Cidr::new(s.parse().ok()?, 32)),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

pub(crate) fn ser_mac<S: Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(m)
}

/// What kind of link the kernel reports (`IFLA_INFO_KIND`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// No `IFLA_INFO_KIND`: a real NIC driver (or loopback).
    Physical,
    Bond,
    Vlan,
    Macvlan,
    /// Anything else (`veth`, `bridge`, ...), with the kernel's kind name.
    Other(String),
}

/// Bonding mode, as far as this crate sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    /// Linux `balance-xor` (mode 2): static aggregation, Triton `lacp_mode` "off".
    BalanceXor,
    /// Linux `802.3ad` (mode 4): LACP, Triton `lacp_mode` "active"/"passive".
    Lacp,
}

impl BondMode {
    /// The kernel's `IFLA_BOND_MODE` value.
    pub fn kernel_value(self) -> u8 {
        match self {
            BondMode::BalanceXor => 2,
            BondMode::Lacp => 4,
        }
    }

    pub fn from_kernel(v: u8) -> Option<BondMode> {
        match v {
            2 => Some(BondMode::BalanceXor),
            4 => Some(BondMode::Lacp),
            _ => None,
        }
    }
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Current MAC (`IFLA_ADDRESS`). Bond members show the bond's MAC.
    pub mac: Option<Mac>,
    /// Burnt-in MAC (`IFLA_PERM_ADDRESS`), when the driver has one.
    pub perm_mac: Option<Mac>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub kind: LinkKind,
    /// The bond (or bridge) this link is enslaved to (`IFLA_MASTER`).
    pub controller: Option<u32>,
    /// Lower link of a VLAN or macvlan (`IFLA_LINK`).
    pub parent: Option<u32>,
    pub vlan_id: Option<u16>,
    pub bond_mode: Option<BondMode>,
}

impl Link {
    /// The MAC that identifies the hardware: the permanent one when known
    /// (a bond member's current MAC is the bond's), else the current one.
    pub fn hw_mac(&self) -> Option<Mac> {
        self.perm_mac.or(self.mac)
    }

    /// A link that can stand for a NIC in the file: not one of the virtual
    /// kinds this crate creates.
    pub fn is_nic_like(&self) -> bool {
        !matches!(self.kind, LinkKind::Bond | LinkKind::Vlan | LinkKind::Macvlan) && self.name != "lo"
    }
}

/// An IPv4 address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub cidr: Cidr,
}

/// An IPv4 route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix; `0.0.0.0/0` is the default route.
    pub dst: Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub table: u32,
}

/// A snapshot of the kernel's network state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
}

impl Observed {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The NIC whose hardware MAC is `mac`: a physical NIC first, then another
    /// non-virtual link such as a veth.
    pub fn nic_by_mac(&self, mac: Mac) -> Option<&Link> {
        let mut cands = self.links.iter().filter(|l| l.is_nic_like() && l.hw_mac() == Some(mac));
        let all: Vec<&Link> = cands.by_ref().collect();
        all.iter().find(|l| l.kind == LinkKind::Physical).or(all.first()).copied()
    }

    /// Addresses on the link with `index`.
    pub fn addrs_on(&self, index: u32) -> impl Iterator<Item = &Addr> {
        self.addrs.iter().filter(move |a| a.index == index)
    }

    /// Name of the link with `index` (for messages); `#<index>` if unknown.
    pub fn name_of(&self, index: u32) -> String {
        self.link_by_index(index).map(|l| l.name.clone()).unwrap_or_else(|| format!("#{index}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_forms() {
        let c = Cidr::parse("10.1.2.3/16").expect("cidr");
        assert_eq!(c.network(), Ipv4Addr::new(10, 1, 0, 0));
        assert!(c.contains(Ipv4Addr::new(10, 1, 200, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert_eq!(Cidr::parse("10.1.2.3"), Some(Cidr::new(Ipv4Addr::new(10, 1, 2, 3), 32)));
        assert_eq!(Cidr::parse("0.0.0.0/0").map(|c| c.contains(Ipv4Addr::new(1, 2, 3, 4))), Some(true));
        assert_eq!(Cidr::parse("10.1.2.3/33"), None);
        assert_eq!(Cidr::parse("10.1.2/8"), None);
        assert_eq!(c.to_string(), "10.1.2.3/16");
    }
}
