//! The real [`LinkApi`]: rtnetlink on a current-thread tokio runtime it owns,
//! so callers stay synchronous. The socket belongs to the network namespace
//! of the thread that calls [`Netlink::new`].

use std::net::IpAddr;

use boot_params::Mac;
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoBond, InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlag, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion, LinkAddRequest};

use crate::apply::{ApplyError, LinkApi};
use crate::model::{Addr, BondMode, Cidr, Link, LinkKind, Observed, Route};
use crate::plan::Op;

/// `MACVLAN_MODE_BRIDGE` from `<linux/if_link.h>`.
const MACVLAN_MODE_BRIDGE: u32 = 4;
/// `BOND_XMIT_POLICY_LAYER34`: hash on IP addresses and ports, like illumos' L4 policy.
const XMIT_HASH_LAYER34: u8 = 1;
/// Link monitoring interval for bond members, ms.
const MIIMON_MS: u32 = 100;

/// rtnetlink-backed [`LinkApi`].
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Netlink")
    }
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Netlink, ApplyError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(ApplyError::Connect)?;
        let handle = rt
            .block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection()?;
                tokio::spawn(conn);
                Ok::<_, std::io::Error>(handle)
            })
            .map_err(ApplyError::Connect)?;
        Ok(Netlink { rt, handle })
    }
}

impl LinkApi for Netlink {
    fn observe(&mut self) -> Result<Observed, ApplyError> {
        let h = self.handle.clone();
        self.rt.block_on(observe(h))
    }

    fn apply(&mut self, op: &Op) -> Result<(), ApplyError> {
        let h = self.handle.clone();
        self.rt.block_on(apply(h, op))
    }
}

fn mac_of(b: &[u8]) -> Option<Mac> {
    let a: [u8; 6] = b.try_into().ok()?;
    (a != [0; 6]).then_some(Mac(a))
}

fn obs_err(what: &'static str) -> impl Fn(rtnetlink::Error) -> ApplyError {
    move |e| ApplyError::Observe { what, message: e.to_string() }
}

/// Turns a link message into a [`Link`].
pub fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        perm_mac: None,
        mtu: 0,
        up: m.header.flags.contains(&LinkFlag::Up),
        kind: LinkKind::Physical,
        controller: None,
        parent: None,
        vlan_id: None,
        bond_mode: None,
    };
    let mut lower = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(b) => l.mac = mac_of(b),
            LinkAttribute::PermAddress(b) => l.perm_mac = mac_of(b),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::Link(p) => lower = Some(*p),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => {
                            l.kind = match k {
                                InfoKind::Bond => LinkKind::Bond,
                                InfoKind::Vlan => LinkKind::Vlan,
                                InfoKind::MacVlan => LinkKind::Macvlan,
                                other => LinkKind::Other(other.to_string()),
                            }
                        }
                        LinkInfo::Data(InfoData::Vlan(v)) => {
                            for x in v {
                                if let InfoVlan::Id(id) = x {
                                    l.vlan_id = Some(*id);
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::Bond(b)) => {
                            for x in b {
                                if let InfoBond::Mode(m) = x {
                                    l.bond_mode = BondMode::from_kernel(*m);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if matches!(l.kind, LinkKind::Vlan | LinkKind::Macvlan) {
        l.parent = lower;
    }
    l
}

fn parse_route(m: &RouteMessage) -> Option<Route> {
    if m.header.address_family != AddressFamily::Inet || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut dst = std::net::Ipv4Addr::UNSPECIFIED;
    let (mut gateway, mut oif) = (None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(Route { dst: Cidr::new(dst, m.header.destination_prefix_length), gateway, oif, table })
}

async fn observe(h: Handle) -> Result<Observed, ApplyError> {
    let mut o = Observed::default();
    let mut links = h.link().get().execute();
    while let Some(m) = links.try_next().await.map_err(obs_err("links"))? {
        o.links.push(parse_link(&m));
    }
    let mut addrs = h.address().get().execute();
    while let Some(m) = addrs.try_next().await.map_err(obs_err("addresses"))? {
        if m.header.family != AddressFamily::Inet {
            continue;
        }
        let mut ip = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(IpAddr::V4(v)) => ip = Some(*v),
                AddressAttribute::Address(IpAddr::V4(v)) if ip.is_none() => ip = Some(*v),
                _ => {}
            }
        }
        if let Some(ip) = ip {
            o.addrs.push(Addr { index: m.header.index, cidr: Cidr::new(ip, m.header.prefix_len) });
        }
    }
    let mut routes = h.route().get(IpVersion::V4).execute();
    while let Some(m) = routes.try_next().await.map_err(obs_err("routes"))? {
        o.routes.extend(parse_route(&m));
    }
    Ok(o)
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

/// What to do about a failed op, from its errno.
fn hint(op: &Op, errno: i32) -> &'static str {
    let creates = matches!(op, Op::CreateBond { .. } | Op::CreateVlan { .. } | Op::CreateMacvlan { .. });
    match errno {
        libc::EPERM => "; PID 1 needs CAP_NET_ADMIN",
        libc::EOPNOTSUPP if creates => {
            "; the kernel has no driver for this link type: make sure the bonding, 8021q and macvlan modules are in the image and loaded"
        }
        libc::EEXIST if creates => "; an interface of that name already exists: delete or rename it",
        libc::EBUSY if matches!(op, Op::Enslave { .. }) => "; the NIC must be down and not a member of another bond or bridge",
        libc::EINVAL | libc::ERANGE if matches!(op, Op::SetMtu { .. }) => {
            "; the MTU is outside what the driver or the lower link allows: lower the nic tag's or vnic's mtu in NAPI"
        }
        libc::ENETUNREACH | libc::EINVAL if matches!(op, Op::ReplaceRoute { .. }) => {
            "; the gateway is not on a configured subnet: fix the vnic gateway or the routes in NAPI"
        }
        libc::EADDRNOTAVAIL if matches!(op, Op::DelAddress { .. }) => "; the address was already gone",
        _ => "",
    }
}

fn op_err(op: &Op) -> impl Fn(rtnetlink::Error) -> ApplyError + '_ {
    move |e| ApplyError::Op {
        op: op.to_string(),
        ifname: op.ifname().to_string(),
        hint: hint(op, errno(&e)).to_string(),
        message: e.to_string(),
    }
}

async fn index(h: &Handle, op: &Op, name: &str) -> Result<u32, ApplyError> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(m.header.index),
        Ok(None) => Err(ApplyError::NoSuchLink { op: op.to_string(), ifname: name.into() }),
        Err(e) if errno(&e) == libc::ENODEV => Err(ApplyError::NoSuchLink { op: op.to_string(), ifname: name.into() }),
        Err(e) => Err(op_err(op)(e)),
    }
}

/// rtnetlink's vlan/macvlan builders ask for the link up; the plan has its own `SetUp`.
fn created_down(mut req: LinkAddRequest) -> LinkAddRequest {
    let m = req.message_mut();
    m.header.flags.retain(|f| *f != LinkFlag::Up);
    m.header.change_mask.retain(|f| *f != LinkFlag::Up);
    req
}

async fn apply(h: Handle, op: &Op) -> Result<(), ApplyError> {
    let e = op_err(op);
    match op {
        Op::CreateBond { name, mac, mode, lacp_active } => {
            let mut data = vec![
                InfoBond::Mode(mode.kernel_value()),
                InfoBond::MiiMon(MIIMON_MS),
                InfoBond::XmitHashPolicy(XMIT_HASH_LAYER34),
            ];
            if *mode == BondMode::Lacp {
                // Fast LACPDUs, like illumos' default `lacp-timer short`.
                data.push(InfoBond::AdLacpRate(1));
                data.push(InfoBond::AdLacpActive(u8::from(*lacp_active)));
            }
            let mut req = h.link().add().name(name.clone()).address(mac.0.to_vec());
            req.message_mut().attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Bond),
                LinkInfo::Data(InfoData::Bond(data)),
            ]));
            req.execute().await.map_err(e)
        }
        Op::CreateVlan { name, parent, vlan_id } => {
            let p = index(&h, op, parent).await?;
            created_down(h.link().add().vlan(name.clone(), p, *vlan_id)).execute().await.map_err(e)
        }
        Op::CreateMacvlan { name, parent, mac } => {
            let p = index(&h, op, parent).await?;
            let req = h.link().add().macvlan(name.clone(), p, MACVLAN_MODE_BRIDGE).address(mac.0.to_vec());
            created_down(req).execute().await.map_err(e)
        }
        Op::SetDown { ifname } => {
            let i = index(&h, op, ifname).await?;
            h.link().set(i).down().execute().await.map_err(e)
        }
        Op::SetUp { ifname } => {
            let i = index(&h, op, ifname).await?;
            h.link().set(i).up().execute().await.map_err(e)
        }
        Op::SetMtu { ifname, mtu } => {
            let i = index(&h, op, ifname).await?;
            h.link().set(i).mtu(*mtu).execute().await.map_err(e)
        }
        Op::Enslave { ifname, bond } => {
            let i = index(&h, op, ifname).await?;
            let b = index(&h, op, bond).await?;
            h.link().set(i).controller(b).execute().await.map_err(e)
        }
        Op::AddAddress { ifname, cidr } => {
            let i = index(&h, op, ifname).await?;
            h.address().add(i, IpAddr::V4(cidr.addr), cidr.prefix).execute().await.map_err(e)
        }
        Op::DelAddress { ifname, cidr } => {
            let i = index(&h, op, ifname).await?;
            let mut s = h
                .address()
                .get()
                .set_link_index_filter(i)
                .set_address_filter(IpAddr::V4(cidr.addr))
                .set_prefix_length_filter(cidr.prefix)
                .execute();
            let Some(msg) = s.try_next().await.map_err(&e)? else {
                return Err(ApplyError::Op {
                    op: op.to_string(),
                    ifname: ifname.clone(),
                    message: "address not present".into(),
                    hint: "; it was removed by something else; rerun".into(),
                });
            };
            h.address().del(msg).execute().await.map_err(e)
        }
        Op::ReplaceRoute { dst, gateway } => h
            .route()
            .add()
            .v4()
            .destination_prefix(dst.addr, dst.prefix)
            .gateway(*gateway)
            .replace()
            .execute()
            .await
            .map_err(e),
    }
}
