//! `plan(desired, observed) -> ops`: the ordered netlink operations that take
//! the kernel from what it has to what networking.json asks for. Pure.
//!
//! Order: `lo` up; per bond: create, move file-owned addresses off members,
//! members down, enslave, MTU, bond up, members up; plain NICs: MTU, up;
//! per vnic: VLAN link (create, up), macvlan (create, MTU, up); then address
//! moves/additions; then the default route and static routes. Every link is
//! referred to by name, so an op may name a link an earlier op creates.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use boot_params::Mac;
use serde::Serialize;

use crate::desired::{vlan_name, Desired, DesiredVnic, Provider};
use crate::model::{ser_mac, BondMode, Cidr, Link, LinkKind, Observed, MAIN_TABLE};

/// Linux's MTU for a new bond (members take the bond's MTU).
pub const NEW_BOND_MTU: u32 = 1500;

/// One change to the kernel's network state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `ip link add <name> address <mac> type bond mode <mode> miimon 100 xmit_hash_policy layer3+4`
    CreateBond {
        name: String,
        #[serde(serialize_with = "ser_mac")]
        mac: Mac,
        mode: BondMode,
        lacp_active: bool,
    },
    /// `ip link add <name> link <parent> type vlan id <vlan_id>`
    CreateVlan { name: String, parent: String, vlan_id: u16 },
    /// `ip link add <name> link <parent> address <mac> type macvlan mode bridge`
    CreateMacvlan {
        name: String,
        parent: String,
        #[serde(serialize_with = "ser_mac")]
        mac: Mac,
    },
    /// `ip link set <ifname> down`
    SetDown { ifname: String },
    /// `ip link set <ifname> master <bond>`
    Enslave { ifname: String, bond: String },
    /// `ip link set <ifname> mtu <mtu>`
    SetMtu { ifname: String, mtu: u32 },
    /// `ip link set <ifname> up`
    SetUp { ifname: String },
    /// `ip addr del <cidr> dev <ifname>` (only to move a file-owned address)
    DelAddress { ifname: String, cidr: Cidr },
    /// `ip addr add <cidr> dev <ifname>`
    AddAddress { ifname: String, cidr: Cidr },
    /// `ip route replace <dst> via <gateway>`
    ReplaceRoute { dst: Cidr, gateway: Ipv4Addr },
}

impl Op {
    /// The interface the op acts on (the route's: empty).
    pub fn ifname(&self) -> &str {
        match self {
            Op::CreateBond { name, .. } | Op::CreateVlan { name, .. } | Op::CreateMacvlan { name, .. } => name,
            Op::SetDown { ifname }
            | Op::Enslave { ifname, .. }
            | Op::SetMtu { ifname, .. }
            | Op::SetUp { ifname }
            | Op::DelAddress { ifname, .. }
            | Op::AddAddress { ifname, .. } => ifname,
            Op::ReplaceRoute { .. } => "",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateBond { name, mac, mode, lacp_active } => {
                let m = match mode {
                    BondMode::BalanceXor => "balance-xor".to_string(),
                    BondMode::Lacp => format!("802.3ad lacp_active {}", if *lacp_active { "on" } else { "off" }),
                };
                write!(f, "link add {name} address {mac} type bond mode {m}")
            }
            Op::CreateVlan { name, parent, vlan_id } => {
                write!(f, "link add {name} link {parent} type vlan id {vlan_id}")
            }
            Op::CreateMacvlan { name, parent, mac } => {
                write!(f, "link add {name} link {parent} address {mac} type macvlan mode bridge")
            }
            Op::SetDown { ifname } => write!(f, "link set {ifname} down"),
            Op::Enslave { ifname, bond } => write!(f, "link set {ifname} master {bond}"),
            Op::SetMtu { ifname, mtu } => write!(f, "link set {ifname} mtu {mtu}"),
            Op::SetUp { ifname } => write!(f, "link set {ifname} up"),
            Op::DelAddress { ifname, cidr } => write!(f, "addr del {cidr} dev {ifname}"),
            Op::AddAddress { ifname, cidr } => write!(f, "addr add {cidr} dev {ifname}"),
            Op::ReplaceRoute { dst, gateway } => write!(f, "route replace {dst} via {gateway}"),
        }
    }
}

/// Where a vnic's address lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// `<nic_tag><N>`.
    pub vnic: String,
    /// The kernel interface carrying the address.
    pub ifname: String,
    pub nic_tag: String,
    #[serde(serialize_with = "ser_mac")]
    pub mac: Mac,
    pub address: Cidr,
    pub vlan_id: u16,
}

/// The ops, plus what could not be planned and where each vnic went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub warnings: Vec<String>,
    pub placements: Vec<Placement>,
}

/// The ordered ops only (see [`plan_full`]).
pub fn plan(d: &Desired, o: &Observed) -> Vec<Op> {
    plan_full(d, o).ops
}

struct Planner<'a> {
    o: &'a Observed,
    links: Vec<Op>,
    addr_ops: Vec<Op>,
    warnings: Vec<String>,
    /// MTU each link will have after the ops so far.
    mtu: BTreeMap<String, u32>,
    /// Links the plan sets down or takes an address from: their routes go.
    disturbed: BTreeSet<String>,
    /// Addresses already taken off a bond member.
    moved: BTreeSet<(String, Cidr)>,
}

/// A tag's carrier: its interface name and the existing link, if any.
#[derive(Clone)]
struct Carrier<'a> {
    ifname: String,
    link: Option<&'a Link>,
}

impl<'a> Planner<'a> {
    fn push(&mut self, op: Op) {
        self.links.push(op);
    }

    fn mtu_of(&self, name: &str) -> Option<u32> {
        self.mtu.get(name).copied()
    }

    fn set_mtu(&mut self, name: &str, want: Option<u32>) {
        if let Some(m) = want {
            if self.mtu_of(name) != Some(m) {
                self.push(Op::SetMtu { ifname: name.into(), mtu: m });
                self.mtu.insert(name.into(), m);
            }
        }
    }

    fn up(&mut self, name: &str, link: Option<&Link>) {
        if !link.is_some_and(|l| l.up) {
            self.push(Op::SetUp { ifname: name.into() });
        }
    }

    fn bonds(&mut self, d: &Desired, carriers: &mut BTreeMap<String, Carrier<'a>>) {
        let o = self.o;
        let owned_ips: BTreeSet<Ipv4Addr> = d.vnics.iter().map(|v| v.cidr.addr).collect();
        for b in &d.bonds {
            let existing = o.link(&b.name);
            if let Some(l) = existing {
                if l.kind != LinkKind::Bond {
                    self.warnings.push(format!(
                        "aggregation {}: an interface of that name already exists and is not a bond ({:?}); aggregation and its vnics skipped (rename the aggregation in NAPI)",
                        b.name, l.kind
                    ));
                    continue;
                }
                if let Some(m) = l.bond_mode.filter(|m| *m != b.mode) {
                    self.warnings.push(format!(
                        "bond {} is in mode {m:?}, the file asks {:?}; the mode of an existing bond is not changed (reboot to apply)",
                        b.name, b.mode
                    ));
                }
            }
            let members: Vec<(Mac, Option<&Link>)> = b.members.iter().map(|m| (*m, o.nic_by_mac(*m))).collect();
            for (m, _) in members.iter().filter(|(_, l)| l.is_none()) {
                self.warnings.push(format!(
                    "aggregation {}: member NIC {m} not found; bond built from the other members (check the NIC's cabling and driver, or the aggregation in NAPI)",
                    b.name
                ));
            }
            if existing.is_none() {
                if members.iter().all(|(_, l)| l.is_none()) {
                    self.warnings.push(format!(
                        "aggregation {}: none of its NICs is present; bond not created and its vnics skipped",
                        b.name
                    ));
                    continue;
                }
                self.push(Op::CreateBond {
                    name: b.name.clone(),
                    mac: b.mac,
                    mode: b.mode,
                    lacp_active: b.lacp_active,
                });
                self.mtu.insert(b.name.clone(), NEW_BOND_MTU);
            }
            let bond_index = existing.map(|l| l.index);
            let mut to_up = Vec::new();
            for (_, nic) in &members {
                let Some(nic) = nic else { continue };
                if bond_index.is_some() && nic.controller == bond_index {
                    if !nic.up {
                        to_up.push(nic.name.clone());
                    }
                    continue;
                }
                if let Some(c) = nic.controller {
                    self.warnings.push(format!(
                        "aggregation {}: NIC {} is already enslaved to {}; not moved (release it or fix the aggregation in NAPI)",
                        b.name,
                        nic.name,
                        o.name_of(c)
                    ));
                    continue;
                }
                // The file's addresses (the stage-1 admin address) move to the bond.
                for a in o.addrs_on(nic.index).filter(|a| owned_ips.contains(&a.cidr.addr)) {
                    self.push(Op::DelAddress { ifname: nic.name.clone(), cidr: a.cidr });
                    self.moved.insert((nic.name.clone(), a.cidr));
                    self.disturbed.insert(nic.name.clone());
                }
                if nic.up {
                    self.push(Op::SetDown { ifname: nic.name.clone() });
                    self.disturbed.insert(nic.name.clone());
                }
                self.push(Op::Enslave { ifname: nic.name.clone(), bond: b.name.clone() });
                to_up.push(nic.name.clone());
            }
            self.set_mtu(&b.name, b.mtu);
            self.up(&b.name, existing);
            let bond_mtu = self.mtu_of(&b.name);
            for (_, nic) in members.iter().filter_map(|(m, l)| l.map(|l| (m, l))) {
                if let Some(m) = bond_mtu {
                    self.mtu.insert(nic.name.clone(), m);
                }
            }
            for n in to_up {
                self.push(Op::SetUp { ifname: n });
            }
            carriers.insert(b.name.clone(), Carrier { ifname: b.name.clone(), link: existing });
        }
    }

    fn nics(&mut self, d: &Desired, carriers: &mut BTreeMap<String, Carrier<'a>>) {
        let o = self.o;
        for n in &d.nics {
            let Some(nic) = o.nic_by_mac(n.mac) else {
                self.warnings.push(format!(
                    "nic tag {}: no NIC with MAC {} is present; its vnics are not configured (check the NIC's cabling and driver, or the tag assignment in NAPI)",
                    n.tags.join(","),
                    n.mac
                ));
                continue;
            };
            if let Some(c) = nic.controller {
                self.warnings.push(format!(
                    "nic tag {}: NIC {} ({}) is enslaved to {}; its vnics are not configured (a tag on an aggregated NIC must name the aggregation)",
                    n.tags.join(","),
                    nic.name,
                    n.mac,
                    o.name_of(c)
                ));
                continue;
            }
            self.set_mtu(&nic.name, n.mtu);
            self.up(&nic.name, Some(nic));
            carriers.insert(n.mac.to_string(), Carrier { ifname: nic.name.clone(), link: Some(nic) });
        }
    }

    /// Builds the links a vnic sits on; returns where its address goes.
    fn vnic(
        &mut self,
        v: &DesiredVnic,
        prov: &Carrier<'a>,
        vlans: &mut BTreeMap<String, Option<&'a Link>>,
    ) -> Option<Carrier<'a>> {
        let o = self.o;
        let mut base = prov.clone();
        if v.vlan_id != 0 {
            let name = vlan_name(&prov.ifname, v.vlan_id);
            let link = match vlans.get(&name) {
                Some(l) => *l,
                None => {
                    let l = match o.link(&name) {
                        Some(l)
                            if l.kind == LinkKind::Vlan
                                && l.vlan_id == Some(v.vlan_id)
                                && prov.link.is_some_and(|p| Some(p.index) == l.parent) =>
                        {
                            Some(l)
                        }
                        Some(l) => {
                            self.warnings.push(format!(
                                "vnic {} ({}): interface {name} exists but is not VLAN {} on {} ({:?}, vlan {:?}, parent {:?}); vnic skipped (delete that interface)",
                                v.name, v.cidr, v.vlan_id, prov.ifname, l.kind, l.vlan_id, l.parent.map(|p| o.name_of(p))
                            ));
                            return None;
                        }
                        None => {
                            self.push(Op::CreateVlan {
                                name: name.clone(),
                                parent: prov.ifname.clone(),
                                vlan_id: v.vlan_id,
                            });
                            let m = self.mtu_of(&prov.ifname);
                            if let Some(m) = m {
                                self.mtu.insert(name.clone(), m);
                            }
                            None
                        }
                    };
                    self.up(&name, l);
                    vlans.insert(name.clone(), l);
                    l
                }
            };
            base = Carrier { ifname: name, link };
        }
        if v.mac == v.provider_mac {
            return Some(base);
        }
        let link = match o.link(&v.name) {
            Some(l)
                if l.kind == LinkKind::Macvlan
                    && l.mac == Some(v.mac)
                    && base.link.is_some_and(|p| Some(p.index) == l.parent) =>
            {
                Some(l)
            }
            Some(l) => {
                self.warnings.push(format!(
                    "vnic {} ({}): interface {} exists but is not a macvlan with MAC {} on {} ({:?}, mac {:?}); vnic skipped (delete or rename that interface)",
                    v.name, v.cidr, v.name, v.mac, base.ifname, l.kind, l.mac
                ));
                return None;
            }
            None => {
                self.push(Op::CreateMacvlan { name: v.name.clone(), parent: base.ifname.clone(), mac: v.mac });
                if let Some(m) = self.mtu_of(&base.ifname) {
                    self.mtu.insert(v.name.clone(), m);
                }
                None
            }
        };
        self.set_mtu(&v.name, v.mtu);
        self.up(&v.name, link);
        Some(Carrier { ifname: v.name.clone(), link })
    }

    fn address(&mut self, v: &DesiredVnic, target: &Carrier<'a>) {
        let o = self.o;
        if let Some(l) = target.link {
            if o.addrs_on(l.index).any(|a| a.cidr == v.cidr) {
                return;
            }
        }
        for a in o.addrs.iter().filter(|a| a.cidr.addr == v.cidr.addr) {
            let on = o.name_of(a.index);
            if self.moved.contains(&(on.clone(), a.cidr)) {
                continue;
            }
            self.addr_ops.push(Op::DelAddress { ifname: on.clone(), cidr: a.cidr });
            self.disturbed.insert(on);
        }
        self.addr_ops.push(Op::AddAddress { ifname: target.ifname.clone(), cidr: v.cidr });
    }

    fn route(&self, dst: Cidr, gateway: Ipv4Addr) -> Option<Op> {
        let o = self.o;
        let ok = o.routes.iter().any(|r| {
            r.table == MAIN_TABLE
                && r.dst == dst
                && r.gateway == Some(gateway)
                && !r.oif.is_some_and(|i| self.disturbed.contains(&o.name_of(i)))
        });
        (!ok).then_some(Op::ReplaceRoute { dst, gateway })
    }
}

/// Plans the ops, with warnings for what is missing and the vnic placements.
pub fn plan_full(d: &Desired, o: &Observed) -> Plan {
    let mut p = Planner {
        o,
        links: Vec::new(),
        addr_ops: Vec::new(),
        warnings: d.warnings.clone(),
        mtu: o.links.iter().map(|l| (l.name.clone(), l.mtu)).collect(),
        disturbed: BTreeSet::new(),
        moved: BTreeSet::new(),
    };
    if let Some(lo) = o.link("lo") {
        p.up("lo", Some(lo));
    }
    // Carriers keyed by bond name or NIC MAC.
    let mut carriers: BTreeMap<String, Carrier> = BTreeMap::new();
    p.bonds(d, &mut carriers);
    p.nics(d, &mut carriers);

    let mut vlans = BTreeMap::new();
    let mut placements = Vec::new();
    for v in &d.vnics {
        let key = match &v.provider {
            Provider::Bond(b) => b.clone(),
            Provider::Nic(m) => m.to_string(),
        };
        let Some(prov) = carriers.get(&key).cloned() else {
            p.warnings.push(format!(
                "vnic {} ({} {}) not configured: nic tag {} has no link (see the warning about it)",
                v.name, v.mac, v.cidr, v.nic_tag
            ));
            continue;
        };
        let Some(target) = p.vnic(v, &prov, &mut vlans) else { continue };
        p.address(v, &target);
        placements.push(Placement {
            vnic: v.name.clone(),
            ifname: target.ifname.clone(),
            nic_tag: v.nic_tag.clone(),
            mac: v.mac,
            address: v.cidr,
            vlan_id: v.vlan_id,
        });
    }

    let mut ops = std::mem::take(&mut p.links);
    ops.append(&mut p.addr_ops);
    let reachable = |gw: Ipv4Addr| placements.iter().any(|pl| pl.address.contains(gw));
    if let Some(gw) = d.default_gateway {
        if reachable(gw) {
            ops.extend(p.route(Cidr::new(Ipv4Addr::UNSPECIFIED, 0), gw));
        } else {
            p.warnings.push(format!("default route via {gw} not set: no configured vnic is on the gateway's subnet"));
        }
    }
    for r in &d.routes {
        if reachable(r.gateway) {
            ops.extend(p.route(r.dst, r.gateway));
        } else {
            p.warnings.push(format!(
                "route {} via {} not set: no configured vnic is on the gateway's subnet (fix the network's routes in NAPI)",
                r.dst, r.gateway
            ));
        }
    }
    Plan { ops, warnings: p.warnings, placements }
}
