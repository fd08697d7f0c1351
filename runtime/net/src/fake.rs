//! An in-memory kernel for tests: records every op and changes its
//! [`Observed`] the way Linux would (bond members take the bond's MAC and
//! MTU and are opened on enslave; enslaving needs the member down; new VLAN
//! and macvlan links inherit the lower link's MTU; setting a link down drops
//! the routes through it; a gateway must be on a configured subnet).

use std::net::Ipv4Addr;

use boot_params::Mac;

use crate::apply::{ApplyError, LinkApi};
use crate::model::{Addr, Cidr, Link, LinkKind, Observed, Route, MAIN_TABLE};
use crate::plan::{Op, NEW_BOND_MTU};

/// The recording fake.
#[derive(Debug, Clone, Default)]
pub struct Fake {
    pub state: Observed,
    /// Every op applied successfully, in order.
    pub log: Vec<Op>,
    /// Fail the op at this position of the log (to test error paths).
    pub fail_at: Option<usize>,
}

impl Fake {
    pub fn new(state: Observed) -> Fake {
        Fake { state, log: Vec::new(), fail_at: None }
    }

    /// A state with `lo` (up) and the given NICs (down, MTU 1500, physical).
    pub fn with_nics(nics: &[(&str, Mac)]) -> Fake {
        let mut f = Fake::default();
        f.add_link(Link {
            index: 1,
            name: "lo".into(),
            mac: None,
            perm_mac: None,
            mtu: 65536,
            up: true,
            kind: LinkKind::Physical,
            controller: None,
            parent: None,
            vlan_id: None,
            bond_mode: None,
        });
        for (name, mac) in nics {
            let index = f.next_index();
            f.add_link(Link {
                index,
                name: (*name).into(),
                mac: Some(*mac),
                perm_mac: Some(*mac),
                mtu: 1500,
                up: false,
                kind: LinkKind::Physical,
                controller: None,
                parent: None,
                vlan_id: None,
                bond_mode: None,
            });
        }
        f
    }

    pub fn add_link(&mut self, l: Link) {
        self.state.links.push(l);
    }

    fn next_index(&self) -> u32 {
        self.state.links.iter().map(|l| l.index).max().unwrap_or(0) + 1
    }

    /// What stage 1 does: the admin NIC up with the `ip=` address.
    pub fn stage1(&mut self, ifname: &str, cidr: Cidr) {
        if let Some(l) = self.state.links.iter_mut().find(|l| l.name == ifname) {
            l.up = true;
            let index = l.index;
            self.state.addrs.push(Addr { index, cidr });
        }
    }

    fn err(op: &Op, message: impl Into<String>) -> ApplyError {
        ApplyError::Op {
            op: op.to_string(),
            ifname: op.ifname().to_string(),
            message: message.into(),
            hint: String::new(),
        }
    }

    fn idx(&self, op: &Op, name: &str) -> Result<u32, ApplyError> {
        self.state
            .link(name)
            .map(|l| l.index)
            .ok_or_else(|| ApplyError::NoSuchLink { op: op.to_string(), ifname: name.to_string() })
    }

    fn link_mut(&mut self, index: u32) -> &mut Link {
        // Indexes come from `idx`, so the link exists.
        let pos = self.state.links.iter().position(|l| l.index == index).unwrap_or(0);
        &mut self.state.links[pos]
    }

    fn new_link(&mut self, op: &Op, name: &str) -> Result<Link, ApplyError> {
        if self.state.link(name).is_some() {
            return Err(Fake::err(op, "File exists (EEXIST)"));
        }
        Ok(Link {
            index: self.next_index(),
            name: name.into(),
            mac: None,
            perm_mac: None,
            mtu: NEW_BOND_MTU,
            up: false,
            kind: LinkKind::Physical,
            controller: None,
            parent: None,
            vlan_id: None,
            bond_mode: None,
        })
    }

    fn reachable(&self, gw: Ipv4Addr) -> Option<u32> {
        self.state
            .addrs
            .iter()
            .find(|a| a.cidr.contains(gw) && self.state.link_by_index(a.index).is_some_and(|l| l.up))
            .map(|a| a.index)
    }

    fn emulate(&mut self, op: &Op) -> Result<(), ApplyError> {
        match op {
            Op::CreateBond { name, mac, mode, .. } => {
                let mut l = self.new_link(op, name)?;
                l.kind = LinkKind::Bond;
                l.mac = Some(*mac);
                l.bond_mode = Some(*mode);
                self.add_link(l);
            }
            Op::CreateVlan { name, parent, vlan_id } => {
                let p = self.idx(op, parent)?;
                let (pmac, pmtu) = (self.link_mut(p).mac, self.link_mut(p).mtu);
                let mut l = self.new_link(op, name)?;
                l.kind = LinkKind::Vlan;
                l.mac = pmac;
                l.mtu = pmtu;
                l.parent = Some(p);
                l.vlan_id = Some(*vlan_id);
                self.add_link(l);
            }
            Op::CreateMacvlan { name, parent, mac } => {
                let p = self.idx(op, parent)?;
                let pmtu = self.link_mut(p).mtu;
                let mut l = self.new_link(op, name)?;
                l.kind = LinkKind::Macvlan;
                l.mac = Some(*mac);
                l.mtu = pmtu;
                l.parent = Some(p);
                self.add_link(l);
            }
            Op::SetDown { ifname } => {
                let i = self.idx(op, ifname)?;
                self.link_mut(i).up = false;
                self.state.routes.retain(|r| r.oif != Some(i));
            }
            Op::SetUp { ifname } => {
                let i = self.idx(op, ifname)?;
                self.link_mut(i).up = true;
            }
            Op::Enslave { ifname, bond } => {
                let i = self.idx(op, ifname)?;
                let b = self.idx(op, bond)?;
                let (bmac, bmtu, bkind) = {
                    let bl = self.link_mut(b);
                    (bl.mac, bl.mtu, bl.kind.clone())
                };
                if bkind != LinkKind::Bond {
                    return Err(Fake::err(op, format!("{bond} is not a bond")));
                }
                let l = self.link_mut(i);
                if l.up {
                    return Err(Fake::err(op, "Device or resource busy (EBUSY): a bond member must be down"));
                }
                if l.controller.is_some() {
                    return Err(Fake::err(op, "Device or resource busy (EBUSY): already enslaved"));
                }
                l.controller = Some(b);
                l.mac = bmac;
                l.mtu = bmtu;
                l.up = true;
            }
            Op::SetMtu { ifname, mtu } => {
                let i = self.idx(op, ifname)?;
                let l = self.link_mut(i);
                if let Some(p) = l.parent {
                    let pm = self.link_mut(p).mtu;
                    if *mtu > pm {
                        return Err(Fake::err(
                            op,
                            format!("Invalid argument (EINVAL): above the lower link's MTU {pm}"),
                        ));
                    }
                }
                self.link_mut(i).mtu = *mtu;
                for l in self.state.links.iter_mut() {
                    if l.controller == Some(i) {
                        l.mtu = *mtu;
                    }
                    if l.parent == Some(i) && l.mtu > *mtu {
                        l.mtu = *mtu;
                    }
                }
            }
            Op::AddAddress { ifname, cidr } => {
                let i = self.idx(op, ifname)?;
                if self.state.addrs_on(i).any(|a| a.cidr.addr == cidr.addr) {
                    return Err(Fake::err(op, "File exists (EEXIST)"));
                }
                self.state.addrs.push(Addr { index: i, cidr: *cidr });
            }
            Op::DelAddress { ifname, cidr } => {
                let i = self.idx(op, ifname)?;
                let before = self.state.addrs.len();
                self.state.addrs.retain(|a| !(a.index == i && a.cidr == *cidr));
                if self.state.addrs.len() == before {
                    return Err(Fake::err(op, "Cannot assign requested address (EADDRNOTAVAIL)"));
                }
                // Routes through the subnet on that link go with it.
                self.state.routes.retain(|r| !(r.oif == Some(i) && r.gateway.is_some_and(|g| cidr.contains(g))));
            }
            Op::ReplaceRoute { dst, gateway } => {
                let Some(oif) = self.reachable(*gateway) else {
                    return Err(Fake::err(op, "Network is unreachable (ENETUNREACH)"));
                };
                self.state.routes.retain(|r| !(r.table == MAIN_TABLE && r.dst == *dst));
                self.state.routes.push(Route { dst: *dst, gateway: Some(*gateway), oif: Some(oif), table: MAIN_TABLE });
            }
        }
        Ok(())
    }
}

impl LinkApi for Fake {
    fn observe(&mut self) -> Result<Observed, ApplyError> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, op: &Op) -> Result<(), ApplyError> {
        if self.fail_at == Some(self.log.len()) {
            return Err(Fake::err(op, "injected failure"));
        }
        self.emulate(op)?;
        self.log.push(op.clone());
        Ok(())
    }
}
