//! A small SNTP server (RFC 4330 server side) answering NTP client requests
//! with this host's clock, so a CN's `ntpdate -b <ntp_hosts>` and
//! `ntpdig -j <ntp_hosts>` (joysetup's clock check) succeed against the
//! headnode double. Its socket is created inside the dev booter's network
//! namespace when one is given.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// An NTP packet without extension fields or MAC.
pub const PACKET_LEN: usize = 48;
/// The stratum we claim: one step below a (pretend) reference clock.
pub const STRATUM: u8 = 2;
/// 2^-20 s ≈ 1 µs: the clock is read with `SystemTime` (nanoseconds).
pub const PRECISION: i8 = -20;
/// Reference ID of a stratum-2 server: the upstream's IPv4 address. We have
/// none; 127.127.1.0 is the classic "local clock" pseudo-address.
pub const REFERENCE_ID: [u8; 4] = [127, 127, 1, 0];

const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;

/// A 32.32 fixed-point NTP timestamp (seconds since 1900).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    pub fn from_system(t: SystemTime) -> NtpTimestamp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() + NTP_UNIX_OFFSET;
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTimestamp(((secs & 0xffff_ffff) << 32) | frac)
    }

    /// Back to a `SystemTime` (era 0 only, enough until 2036).
    pub fn to_system(self) -> SystemTime {
        let secs = self.0 >> 32;
        let nanos = ((self.0 & 0xffff_ffff) * 1_000_000_000) >> 32;
        let unix = secs.saturating_sub(NTP_UNIX_OFFSET);
        UNIX_EPOCH + Duration::new(unix, nanos as u32)
    }
}

/// The fields of an NTP packet that SNTP uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtpPacket {
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    /// 16.16 fixed-point seconds.
    pub root_delay: u32,
    /// 16.16 fixed-point seconds.
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
    pub reference: NtpTimestamp,
    pub origin: NtpTimestamp,
    pub receive: NtpTimestamp,
    pub transmit: NtpTimestamp,
}

#[derive(Debug, PartialEq, Eq)]
pub enum NtpError {
    /// Fewer than 48 bytes.
    Short(usize),
    /// Version outside 1..=4.
    Version(u8),
}

impl std::fmt::Display for NtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NtpError::Short(n) => write!(f, "NTP packet of {n} bytes (at least {PACKET_LEN} expected)"),
            NtpError::Version(v) => write!(f, "NTP version {v} (1 to 4 expected)"),
        }
    }
}

impl std::error::Error for NtpError {}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn ts_at(b: &[u8], i: usize) -> NtpTimestamp {
    NtpTimestamp((u64::from(u32_at(b, i)) << 32) | u64::from(u32_at(b, i + 4)))
}

impl NtpPacket {
    pub fn parse(b: &[u8]) -> Result<NtpPacket, NtpError> {
        if b.len() < PACKET_LEN {
            return Err(NtpError::Short(b.len()));
        }
        let version = (b[0] >> 3) & 0x7;
        if !(1..=4).contains(&version) {
            return Err(NtpError::Version(version));
        }
        Ok(NtpPacket {
            leap: b[0] >> 6,
            version,
            mode: b[0] & 0x7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: u32_at(b, 4),
            root_dispersion: u32_at(b, 8),
            reference_id: [b[12], b[13], b[14], b[15]],
            reference: ts_at(b, 16),
            origin: ts_at(b, 24),
            receive: ts_at(b, 32),
            transmit: ts_at(b, 40),
        })
    }

    pub fn to_bytes(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (self.leap << 6) | ((self.version & 0x7) << 3) | (self.mode & 0x7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        for (i, t) in [self.reference, self.origin, self.receive, self.transmit].iter().enumerate() {
            b[16 + i * 8..24 + i * 8].copy_from_slice(&t.0.to_be_bytes());
        }
        b
    }

    /// A client request (mode 3) as `ntpdig` sends it, stamped `now`.
    pub fn client_request(now: SystemTime) -> NtpPacket {
        NtpPacket {
            leap: 3,
            version: 4,
            mode: MODE_CLIENT,
            stratum: 0,
            poll: 6,
            precision: PRECISION,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: [0; 4],
            reference: NtpTimestamp::default(),
            origin: NtpTimestamp::default(),
            receive: NtpTimestamp::default(),
            transmit: NtpTimestamp::from_system(now),
        }
    }
}

/// The server's answer to `request` received at `received` and sent at
/// `now`: leap 0 (synchronised), the client's version, mode 4, stratum 2,
/// the client's transmit timestamp as origin. `None` for anything that is
/// not a client request (we never answer servers, broadcasts or control).
pub fn answer(request: &[u8], received: SystemTime, now: SystemTime) -> Option<[u8; PACKET_LEN]> {
    let req = NtpPacket::parse(request).ok()?;
    if req.mode != MODE_CLIENT {
        return None;
    }
    let reply = NtpPacket {
        leap: 0,
        version: req.version,
        mode: MODE_SERVER,
        stratum: STRATUM,
        poll: req.poll.clamp(4, 17),
        precision: PRECISION,
        // ~7.8 ms and ~15.6 ms: a plausible LAN stratum-2 server.
        root_delay: 0x0000_0200,
        root_dispersion: 0x0000_0400,
        reference_id: REFERENCE_ID,
        // "Last set" a little while ago; never zero (zero means unsynchronised).
        reference: NtpTimestamp::from_system(now.checked_sub(Duration::from_secs(16)).unwrap_or(now)),
        origin: req.transmit,
        receive: NtpTimestamp::from_system(received),
        transmit: NtpTimestamp::from_system(now),
    };
    Some(reply.to_bytes())
}

/// Moves the calling thread into network namespace `name` (`/run/netns/<name>`).
pub fn enter_netns(name: &str) -> io::Result<()> {
    let path = std::path::Path::new("/run/netns").join(name);
    let f = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("setns into {}: {e}", path.display())))
}

/// A running SNTP server; stopped on drop.
#[derive(Debug)]
pub struct Sntp {
    addr: SocketAddrV4,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sntp {
    /// Binds UDP `addr` (port 0: any) inside `netns` (or here) and answers
    /// client requests until stopped.
    pub fn start(netns: Option<&str>, addr: SocketAddrV4) -> io::Result<Sntp> {
        let (tx, rx) = std::sync::mpsc::channel::<io::Result<SocketAddrV4>>();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (req2, stop2, ns) = (requests.clone(), stop.clone(), netns.map(str::to_string));
        let thread = std::thread::Builder::new().name("headnode-sntp".into()).spawn(move || {
            let sock = (|| -> io::Result<UdpSocket> {
                if let Some(ns) = &ns {
                    enter_netns(ns)?;
                }
                let s = UdpSocket::bind(addr)?;
                s.set_read_timeout(Some(Duration::from_millis(200)))?;
                Ok(s)
            })();
            let sock = match sock {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let local = match sock.local_addr() {
                Ok(SocketAddr::V4(a)) => a,
                Ok(other) => {
                    let _ = tx.send(Err(io::Error::other(format!("bound to {other}, not IPv4"))));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(local));
            serve(&sock, &req2, &stop2);
        })?;
        let addr = rx
            .recv()
            .map_err(|_| io::Error::other("the SNTP thread ended before binding"))?
            .map_err(|e| io::Error::new(e.kind(), format!("SNTP server on udp {addr}: {e}")))?;
        Ok(Sntp { addr, requests, stop, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Client requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sntp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(sock: &UdpSocket, requests: &AtomicU64, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let received = SystemTime::now();
        if let Some(reply) = answer(&buf[..n], received, SystemTime::now()) {
            if sock.send_to(&reply, peer).is_ok() {
                requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        let n = NtpTimestamp::from_system(t);
        assert_eq!(n.0 >> 32, 1_700_000_000 + NTP_UNIX_OFFSET);
        assert_eq!(n.0 & 0xffff_ffff, 0x8000_0000, "half a second");
        let back = n.to_system();
        let diff = back.duration_since(t).or_else(|e| Ok::<_, ()>(e.duration())).expect("diff");
        assert!(diff < Duration::from_micros(1), "{diff:?}");
    }

    #[test]
    fn packets_round_trip() {
        let p = NtpPacket::client_request(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let b = p.to_bytes();
        assert_eq!(b[0], 0xe3, "LI 3, VN 4, mode 3 (what ntpdig sends)");
        assert_eq!(NtpPacket::parse(&b), Ok(p));
        assert_eq!(NtpPacket::parse(&b[..47]), Err(NtpError::Short(47)));
        let mut v0 = b;
        v0[0] = 0x03;
        assert_eq!(NtpPacket::parse(&v0), Err(NtpError::Version(0)));
    }

    #[test]
    fn answers_a_client_request() {
        let sent = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let req = NtpPacket::client_request(sent).to_bytes();
        let rx = UNIX_EPOCH + Duration::new(1_700_000_005, 0);
        let tx = rx + Duration::from_micros(30);
        let r = NtpPacket::parse(&answer(&req, rx, tx).expect("an answer")).expect("parses");
        assert_eq!((r.leap, r.version, r.mode, r.stratum), (0, 4, MODE_SERVER, STRATUM));
        assert_eq!(r.origin, NtpTimestamp::from_system(sent), "origin = the client's transmit");
        assert_eq!(r.receive, NtpTimestamp::from_system(rx));
        assert_eq!(r.transmit, NtpTimestamp::from_system(tx));
        assert!(r.reference < r.receive && r.reference.0 != 0);
        assert_eq!(r.reference_id, REFERENCE_ID);
        assert_eq!(r.poll, 6);
        // ntpdate-era v3 clients get a v3 answer.
        let mut v3 = req;
        v3[0] = 0x1b;
        assert_eq!(NtpPacket::parse(&answer(&v3, rx, tx).expect("v3 answer")).expect("parses").version, 3);
    }

    #[test]
    fn ignores_what_is_not_a_client_request() {
        let now = SystemTime::now();
        let mut p = NtpPacket::client_request(now);
        p.mode = MODE_SERVER;
        assert!(answer(&p.to_bytes(), now, now).is_none());
        assert!(answer(&[0xe3; 20], now, now).is_none());
    }

    /// A real UDP exchange on loopback.
    #[test]
    fn serves_on_loopback() {
        let mut s = Sntp::start(None, SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0)).expect("start");
        let c = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let t0 = SystemTime::now();
        let req = NtpPacket::client_request(t0);
        c.send_to(&req.to_bytes(), s.addr()).expect("send");
        let mut buf = [0u8; 100];
        let (n, _) = c.recv_from(&mut buf).expect("an answer");
        let r = NtpPacket::parse(&buf[..n]).expect("parses");
        assert_eq!(r.origin, req.transmit);
        assert!(r.transmit.to_system() >= t0 - Duration::from_secs(1));
        assert_eq!(s.requests(), 1);
        s.stop();
    }
}
