//! A DHCPv4 client for stage 1, used when the kernel command line has no
//! static `ip=` (or `ip=dhcp`): DISCOVER → OFFER → REQUEST → ACK on one NIC,
//! once. Stage 1 does not renew: stage 2 configures networking from
//! `/etc/triton-networking.json`; the lease is recorded in
//! `/run/triton/dhcp.json` for it.
//!
//! [`Client`] is the pure protocol state machine (builds messages, digests
//! replies, decides what to send next); [`obtain`] is the thin socket driver.
//!
//! Socket: an AF_INET UDP socket bound to 0.0.0.0:68 with `SO_BINDTODEVICE`
//! and `SO_BROADCAST`. Linux delivers limited-broadcast (255.255.255.255)
//! datagrams to it although the interface has no address yet, and the
//! broadcast flag in our messages asks servers to broadcast their replies
//! (RFC 2131 4.1). A server that unicasts to the offered address anyway is
//! not heard: the kernel drops IP unicast for an address it does not own.
//! Raw AF_PACKET sockets would catch those; booter's DHCP server and
//! dnsmasq honour the flag, so the simpler socket is used.

use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use boot_params::{IpConfig, Mac};
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use serde::Serialize;

/// Vendor class identifier (option 60). booter's DHCP server only answers
/// clients whose class id starts with `PXEClient` (or `SUNW`); this is the
/// value the Linux CN platform has used for its DHCP fallback.
pub const CLASS_ID: &str = "PXEClient.Linux.x86_64";
/// Unanswered REQUESTs before going back to DISCOVER.
pub const REQUEST_TRIES: u32 = 3;
/// BOOTP's minimum message size; some relays and servers drop shorter ones.
const MIN_LEN: usize = 300;

/// What the server leased us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The server identifier (option 54).
    pub server: Ipv4Addr,
    pub lease_secs: Option<u32>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
}

impl Lease {
    /// The address part, in the form stage 1 configures (like a static `ip=`).
    pub fn ip_config(&self) -> IpConfig {
        IpConfig {
            address: self.address,
            prefix_len: self.prefix_len,
            gateway: self.gateway,
            hostname: self.hostname.clone(),
            device: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Selecting,
    Requesting { server: Ipv4Addr, address: Ipv4Addr, sent: u32 },
    Bound,
}

/// What the driver does after a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Not for us, or not what we wait for.
    Ignore(String),
    /// Send this message (the REQUEST after an OFFER).
    Send(Vec<u8>),
    /// The server refused (NAK): start over with this DISCOVER.
    Restart {
        reason: String,
        discover: Vec<u8>,
    },
    Bound(Lease),
}

/// The DHCP client protocol state, without I/O.
#[derive(Debug, Clone)]
pub struct Client {
    mac: Mac,
    xid: u32,
    secs: u16,
    state: State,
    /// The last offer seen, for error messages.
    offered: Option<(Ipv4Addr, Ipv4Addr)>,
    naks: Vec<String>,
}

impl Client {
    pub fn new(mac: Mac, xid: u32) -> Client {
        Client { mac, xid, secs: 0, state: State::Selecting, offered: None, naks: Vec::new() }
    }

    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// Seconds since the client started (the `secs` field of later messages).
    pub fn set_secs(&mut self, secs: u16) {
        self.secs = secs;
    }

    /// The last (server, address) offered, if any.
    pub fn offered(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        self.offered
    }

    /// NAK reasons received so far.
    pub fn naks(&self) -> &[String] {
        &self.naks
    }

    pub fn is_bound(&self) -> bool {
        self.state == State::Bound
    }

    /// Starts (or restarts) selecting: the DISCOVER to broadcast.
    pub fn discover(&mut self) -> Vec<u8> {
        self.state = State::Selecting;
        encode(&self.message(MessageType::Discover))
    }

    /// Nothing useful arrived in time: the message to send again. After
    /// [`REQUEST_TRIES`] unanswered REQUESTs the offer is dropped and
    /// discovery starts over.
    pub fn on_timeout(&mut self) -> Vec<u8> {
        match self.state {
            State::Requesting { server, address, sent } if sent < REQUEST_TRIES => {
                self.state = State::Requesting { server, address, sent: sent + 1 };
                self.request(server, address)
            }
            _ => self.discover(),
        }
    }

    /// Digests one datagram received on port 68.
    pub fn on_reply(&mut self, bytes: &[u8]) -> Next {
        let Ok(m) = Message::from_bytes(bytes) else {
            return Next::Ignore("not a DHCP message".into());
        };
        if m.opcode() != Opcode::BootReply {
            return Next::Ignore("not a BOOTREPLY".into());
        }
        if m.xid() != self.xid {
            return Next::Ignore(format!("xid {:#010x} is not ours ({:#010x})", m.xid(), self.xid));
        }
        if m.chaddr().get(..6) != Some(&self.mac.0[..]) {
            return Next::Ignore("chaddr is not our MAC".into());
        }
        let server = match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => m.siaddr(),
        };
        match (&self.state, m.opts().msg_type()) {
            (State::Selecting, Some(MessageType::Offer)) => {
                let address = m.yiaddr();
                if address.is_unspecified() || address.is_broadcast() {
                    return Next::Ignore(format!("offer from {server} has no usable address ({address})"));
                }
                self.offered = Some((server, address));
                self.state = State::Requesting { server, address, sent: 1 };
                Next::Send(self.request(server, address))
            }
            (State::Requesting { server: chosen, address, .. }, Some(t @ (MessageType::Ack | MessageType::Nak))) => {
                let (chosen, address) = (*chosen, *address);
                if !server.is_unspecified() && server != chosen {
                    return Next::Ignore(format!("{t:?} from {server}, not from the chosen server {chosen}"));
                }
                if t == MessageType::Nak {
                    let why = match m.opts().get(OptionCode::Message) {
                        Some(DhcpOption::Message(s)) => s.clone(),
                        _ => "no reason given".into(),
                    };
                    let reason = format!("{chosen} refused {address}: {why}");
                    self.naks.push(reason.clone());
                    // A fresh transaction for the new discovery.
                    self.xid = self.xid.wrapping_mul(0x9E37_79B9).wrapping_add(1);
                    return Next::Restart { reason, discover: self.discover() };
                }
                let address = if m.yiaddr().is_unspecified() { address } else { m.yiaddr() };
                self.state = State::Bound;
                Next::Bound(lease_from(&m, address, chosen))
            }
            (_, t) => Next::Ignore(format!("{t:?} while {:?}", self.state)),
        }
    }

    fn message(&self, t: MessageType) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(self.xid, z, z, z, z, &self.mac.0);
        m.set_opcode(Opcode::BootRequest)
            .set_htype(HType::Eth)
            .set_secs(self.secs)
            // We have no address yet: ask servers and relays to broadcast their replies.
            .set_flags(Flags::default().set_broadcast());
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(t));
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac.0);
        o.insert(DhcpOption::ClientIdentifier(client_id));
        o.insert(DhcpOption::ClassIdentifier(CLASS_ID.as_bytes().to_vec()));
        o.insert(DhcpOption::MaxMessageSize(1500));
        o.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::Hostname,
            OptionCode::DomainName,
            OptionCode::AddressLeaseTime,
            OptionCode::ServerIdentifier,
        ]));
        m
    }

    fn request(&self, server: Ipv4Addr, address: Ipv4Addr) -> Vec<u8> {
        let mut m = self.message(MessageType::Request);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(address));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        encode(&m)
    }
}

fn encode(m: &Message) -> Vec<u8> {
    // Encoding into a Vec only fails for options longer than the format
    // allows; ours are fixed and short.
    let mut b = m.to_vec().unwrap_or_default();
    if b.len() < MIN_LEN {
        b.resize(MIN_LEN, 0);
    }
    b
}

fn lease_from(m: &Message, address: Ipv4Addr, server: Ipv4Addr) -> Lease {
    let o = m.opts();
    let prefix_len = match o.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => boot_params::netmask_prefix(&mask.to_string()),
        _ => None,
    }
    .unwrap_or_else(|| classful_prefix(address));
    let gateway = match o.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.iter().copied().find(|g| !g.is_unspecified()),
        _ => None,
    };
    let dns = match o.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let lease_secs = match o.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(s)) => Some(*s),
        _ => None,
    };
    let text = |code| match o.get(code) {
        Some(DhcpOption::Hostname(s) | DhcpOption::DomainName(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Lease {
        address,
        prefix_len,
        gateway,
        dns,
        server,
        lease_secs,
        hostname: text(OptionCode::Hostname),
        domain: text(OptionCode::DomainName),
    }
}

/// The pre-CIDR default prefix, for a server that sends no subnet mask.
fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Retransmission timing: waits of `first`, doubling up to `max`, until
/// `total` has passed (RFC 2131 4.1 suggests 4 s doubling to 64 s).
#[derive(Debug, Clone)]
pub struct Timing {
    pub first: Duration,
    pub max: Duration,
    pub total: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing { first: Duration::from_secs(4), max: Duration::from_secs(16), total: Duration::from_secs(60) }
    }
}

impl Timing {
    /// How long to wait after the `n`-th (0-based) transmission of a message.
    pub fn wait(&self, n: u32) -> Duration {
        self.first.saturating_mul(1u32 << n.min(16)).min(self.max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP on {ifname}: {op}: {source}")]
    Socket {
        ifname: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "no DHCP offer on {ifname} ({mac}) within {secs} s ({sent} DISCOVERs sent): is booter's DHCP server \
         reachable on this network and does it know this NIC? Or give a static address on the kernel \
         command line: ip=<addr>:::<netmask>::"
    )]
    NoOffer { ifname: String, mac: Mac, secs: u64, sent: u32 },
    #[error("DHCP on {ifname} ({mac}): {server} offered {address} but no acknowledgement came within {secs} s{naks}")]
    NoAck { ifname: String, mac: Mac, secs: u64, server: Ipv4Addr, address: Ipv4Addr, naks: String },
}

/// A transaction id from the OS-seeded std hasher, mixed with the MAC.
pub fn random_xid(mac: Mac) -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(&mac.0);
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish() as u32
}

/// Obtains a lease on `ifname` (which must be up). `log` gets one line per
/// retransmission and NAK.
pub fn obtain(ifname: &str, mac: Mac, timing: &Timing, log: &mut dyn FnMut(&str)) -> Result<Lease, DhcpError> {
    let sock = open_socket(ifname)?;
    let sock_err = |op| move |source| DhcpError::Socket { ifname: ifname.to_string(), op, source };
    let dest = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let start = Instant::now();
    let deadline = start + timing.total;
    let mut client = Client::new(mac, random_xid(mac));
    let mut pkt = client.discover();
    // Retransmissions come from `on_timeout`; replies that need an answer are answered at once.
    let mut n = 0u32;
    let mut sent = 0u32;
    let mut buf = vec![0u8; 4096];
    loop {
        sock.send_to(&pkt, dest).map_err(sock_err("send"))?;
        sent += 1;
        let mut until = (Instant::now() + timing.wait(n)).min(deadline);
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            sock.set_read_timeout(Some(until - now)).map_err(sock_err("set timeout"))?;
            let len = match sock.recv_from(&mut buf) {
                Ok((len, _)) => len,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(sock_err("receive")(e)),
            };
            match client.on_reply(&buf[..len]) {
                Next::Ignore(_) => {}
                Next::Bound(lease) => return Ok(lease),
                Next::Send(p) => {
                    // OFFER → REQUEST.
                    sock.send_to(&p, dest).map_err(sock_err("send"))?;
                    n = 0;
                    until = (Instant::now() + timing.wait(0)).min(deadline);
                }
                Next::Restart { reason, discover } => {
                    log(&format!("dhcp: NAK: {reason}; discovering again"));
                    sock.send_to(&discover, dest).map_err(sock_err("send"))?;
                    n = 0;
                    until = (Instant::now() + timing.wait(0)).min(deadline);
                }
            }
        }
        if Instant::now() >= deadline {
            let secs = timing.total.as_secs();
            let ifname = ifname.to_string();
            return Err(match client.offered() {
                None => DhcpError::NoOffer { ifname, mac, secs, sent },
                Some((server, address)) => {
                    let naks = if client.naks().is_empty() {
                        String::new()
                    } else {
                        format!(" (NAKs: {})", client.naks().join("; "))
                    };
                    DhcpError::NoAck { ifname, mac, secs, server, address, naks }
                }
            });
        }
        n += 1;
        client.set_secs(start.elapsed().as_secs().min(u64::from(u16::MAX)) as u16);
        pkt = client.on_timeout();
        log(&format!("dhcp: no answer on {ifname} after {} s; sending again", start.elapsed().as_secs()));
    }
}

/// UDP 0.0.0.0:68 on `ifname` only, allowed to broadcast.
fn open_socket(ifname: &str) -> Result<UdpSocket, DhcpError> {
    use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    let err = |op| move |e: nix::Error| DhcpError::Socket { ifname: ifname.to_string(), op, source: e.into() };
    let fd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(err("socket"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(err("SO_REUSEADDR"))?;
    setsockopt(&fd, sockopt::Broadcast, &true).map_err(err("SO_BROADCAST"))?;
    setsockopt(&fd, sockopt::BindToDevice, &OsString::from(ifname)).map_err(err("SO_BINDTODEVICE"))?;
    bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, 68)).map_err(err("bind 0.0.0.0:68"))?;
    Ok(UdpSocket::from(fd))
}

/// Records the lease for stage 2 (`/run/triton/dhcp.json`).
pub fn write_record(path: &Path, ifname: &str, mac: Mac, lease: &Lease) -> io::Result<()> {
    let mut v = serde_json::to_value(lease).map_err(io::Error::other)?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("ifname".into(), ifname.into());
        m.insert("mac".into(), mac.to_string().into());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        m.insert("obtained_unix".into(), now.as_secs().into());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{v:#}\n"))?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 99, 9);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 99, 124);

    fn decode(b: &[u8]) -> Message {
        Message::from_bytes(b).expect("decodes")
    }

    /// A server reply to `req`, of type `t`, with the usual options.
    fn reply(req: &[u8], t: MessageType, server: Ipv4Addr) -> Message {
        let r = decode(req);
        let mut m =
            Message::new_with_id(r.xid(), Ipv4Addr::UNSPECIFIED, ADDR, server, Ipv4Addr::UNSPECIFIED, r.chaddr());
        m.set_opcode(Opcode::BootReply).set_flags(r.flags());
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(t));
        o.insert(DhcpOption::ServerIdentifier(server));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 99, 99, 7)]));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 99, 99, 11), Ipv4Addr::new(10, 99, 99, 12)]));
        o.insert(DhcpOption::AddressLeaseTime(3600));
        o.insert(DhcpOption::Hostname("cn1".into()));
        o.insert(DhcpOption::DomainName("example.com".into()));
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().expect("encode")
    }

    #[test]
    fn discover_shape() {
        let mut c = Client::new(MAC, 0x1234_5678);
        let d = c.discover();
        assert!(d.len() >= MIN_LEN);
        let m = decode(&d);
        assert_eq!(m.opcode(), Opcode::BootRequest);
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(&m.chaddr()[..6], &MAC.0);
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(
            m.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert_eq!(m.opts().get(OptionCode::ClassIdentifier), Some(&DhcpOption::ClassIdentifier(CLASS_ID.into())));
        let Some(DhcpOption::ParameterRequestList(p)) = m.opts().get(OptionCode::ParameterRequestList) else {
            panic!("no parameter request list");
        };
        for want in
            [OptionCode::SubnetMask, OptionCode::Router, OptionCode::DomainNameServer, OptionCode::AddressLeaseTime]
        {
            assert!(p.contains(&want), "{want:?}");
        }
    }

    #[test]
    fn offer_request_ack() {
        let mut c = Client::new(MAC, 7);
        let d = c.discover();
        let Next::Send(req) = c.on_reply(&bytes(&reply(&d, MessageType::Offer, SERVER))) else {
            panic!("offer → request");
        };
        let r = decode(&req);
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.xid(), 7);
        assert!(r.flags().broadcast());
        assert_eq!(r.opts().get(OptionCode::RequestedIpAddress), Some(&DhcpOption::RequestedIpAddress(ADDR)));
        assert_eq!(r.opts().get(OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
        // A second offer (another server) while requesting is ignored.
        assert!(matches!(
            c.on_reply(&bytes(&reply(&d, MessageType::Offer, Ipv4Addr::new(10, 0, 0, 1)))),
            Next::Ignore(_)
        ));
        let Next::Bound(lease) = c.on_reply(&bytes(&reply(&req, MessageType::Ack, SERVER))) else {
            panic!("ack → bound");
        };
        assert_eq!(
            lease,
            Lease {
                address: ADDR,
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 99, 99, 7)),
                dns: vec![Ipv4Addr::new(10, 99, 99, 11), Ipv4Addr::new(10, 99, 99, 12)],
                server: SERVER,
                lease_secs: Some(3600),
                hostname: Some("cn1".into()),
                domain: Some("example.com".into()),
            }
        );
        assert_eq!(lease.ip_config().prefix_len, 24);
        assert!(c.is_bound());
        assert!(matches!(c.on_reply(&bytes(&reply(&req, MessageType::Ack, SERVER))), Next::Ignore(_)));
    }

    #[test]
    fn foreign_replies_are_ignored() {
        let mut c = Client::new(MAC, 7);
        let d = c.discover();
        let mut wrong_xid = reply(&d, MessageType::Offer, SERVER);
        wrong_xid.set_xid(8);
        assert!(matches!(c.on_reply(&bytes(&wrong_xid)), Next::Ignore(m) if m.contains("xid")));
        let mut wrong_mac = reply(&d, MessageType::Offer, SERVER);
        wrong_mac.set_chaddr(&[0x52, 0x54, 0, 0, 0, 1]);
        assert!(matches!(c.on_reply(&bytes(&wrong_mac)), Next::Ignore(m) if m.contains("chaddr")));
        // Our own broadcast DISCOVER looped back.
        assert!(matches!(c.on_reply(&d), Next::Ignore(m) if m.contains("BOOTREPLY")));
        assert!(matches!(c.on_reply(b"garbage"), Next::Ignore(_)));
        // An ACK before any offer.
        assert!(matches!(c.on_reply(&bytes(&reply(&d, MessageType::Ack, SERVER))), Next::Ignore(_)));
        let mut no_addr = reply(&d, MessageType::Offer, SERVER);
        no_addr.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        assert!(matches!(c.on_reply(&bytes(&no_addr)), Next::Ignore(_)));
        assert!(matches!(c.on_reply(&bytes(&reply(&d, MessageType::Offer, SERVER))), Next::Send(_)));
    }

    #[test]
    fn nak_restarts_with_a_new_xid() {
        let mut c = Client::new(MAC, 7);
        let d = c.discover();
        let Next::Send(req) = c.on_reply(&bytes(&reply(&d, MessageType::Offer, SERVER))) else { panic!("request") };
        // A NAK from another server is not ours to act on.
        assert!(matches!(
            c.on_reply(&bytes(&reply(&req, MessageType::Nak, Ipv4Addr::new(10, 0, 0, 1)))),
            Next::Ignore(_)
        ));
        let mut nak = reply(&req, MessageType::Nak, SERVER);
        nak.opts_mut().insert(DhcpOption::Message("address in use".into()));
        let Next::Restart { reason, discover } = c.on_reply(&bytes(&nak)) else { panic!("restart") };
        assert!(reason.contains("address in use") && reason.contains("10.99.99.124"), "{reason}");
        let m = decode(&discover);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert_ne!(m.xid(), 7);
        assert_eq!(c.naks().len(), 1);
        // The old transaction's late ACK no longer counts.
        assert!(matches!(c.on_reply(&bytes(&reply(&req, MessageType::Ack, SERVER))), Next::Ignore(_)));
    }

    #[test]
    fn timeouts_retransmit_then_rediscover() {
        let mut c = Client::new(MAC, 7);
        let d = c.discover();
        assert_eq!(decode(&c.on_timeout()).opts().msg_type(), Some(MessageType::Discover));
        let Next::Send(_) = c.on_reply(&bytes(&reply(&d, MessageType::Offer, SERVER))) else { panic!("request") };
        for _ in 1..REQUEST_TRIES {
            c.set_secs(9);
            let m = decode(&c.on_timeout());
            assert_eq!(m.opts().msg_type(), Some(MessageType::Request));
            assert_eq!(m.secs(), 9);
        }
        assert_eq!(decode(&c.on_timeout()).opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(c.offered(), Some((SERVER, ADDR)));
    }

    #[test]
    fn no_mask_is_classful_and_backoff_doubles() {
        let mut c = Client::new(MAC, 1);
        let d = c.discover();
        let Next::Send(req) = c.on_reply(&bytes(&reply(&d, MessageType::Offer, SERVER))) else { panic!("request") };
        let mut ack = reply(&req, MessageType::Ack, SERVER);
        ack.opts_mut().remove(OptionCode::SubnetMask);
        ack.opts_mut().remove(OptionCode::Router);
        let Next::Bound(l) = c.on_reply(&bytes(&ack)) else { panic!("bound") };
        assert_eq!((l.prefix_len, l.gateway), (8, None));
        let t = Timing::default();
        let waits: Vec<u64> = (0..5).map(|n| t.wait(n).as_secs()).collect();
        assert_eq!(waits, vec![4, 8, 16, 16, 16]);
        assert!(waits.iter().sum::<u64>() >= t.total.as_secs());
    }

    #[test]
    fn record_is_json() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("triton/dhcp.json");
        let lease = Lease {
            address: ADDR,
            prefix_len: 24,
            gateway: None,
            dns: vec![],
            server: SERVER,
            lease_secs: Some(60),
            hostname: None,
            domain: None,
        };
        write_record(&p, "eth0", MAC, &lease).expect("write");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
        assert_eq!(v["address"], "10.99.99.124");
        assert_eq!(v["mac"], "52:54:00:12:34:56");
        assert_eq!(v["lease_secs"], 60);
        assert_eq!(v["ifname"], "eth0");
    }
}
