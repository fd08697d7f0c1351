//! A small TFTP read client for `fetch=tftp://...` (booter writes TFTP URLs
//! when its HTTP boot setting is off).
//!
//! RFC 1350 read requests in octet mode, with the option extension
//! (RFC 2347): `blksize` (RFC 2348) so a 121 MiB image is ~86k round trips
//! rather than ~250k, and `tsize` (RFC 2349) so progress shows a percentage.
//! Block numbers roll over from 65535 to 0, as tftp-hpa, dnsmasq, iPXE and
//! curl do, so images larger than 65535 blocks work.
//!
//! Why not a crate: on crates.io `async-tftp` and `tftpd` are servers (the
//! latter's client is a command-line tool writing to a file), `tftp_client`
//! speaks plain RFC 1350 without blksize/tsize and returns the whole file in
//! memory, and `ttftp` has no options. We need the data streamed into the
//! same hashing sink as HTTP.
//!
//! Layout: [`Packet`] encode/decode and the [`Receiver`] state machine are
//! pure (no sockets, unit-tested); [`read`] is the thin UDP driver.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use boot_params::TftpUrl;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// RFC 1350's block size, used when the server ignores `blksize`.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Largest block that fits a 1500-byte Ethernet MTU (1500 - 20 IP - 8 UDP - 4 TFTP).
pub const ETHERNET_BLKSIZE: u16 = 1468;

/// Transfer options and the retransmission policy of one attempt.
#[derive(Debug, Clone)]
pub struct Options {
    /// Block size to ask for (8..=65464); 512 means "do not ask".
    pub blksize: u16,
    /// Ask the server for the file size (for the progress percentage).
    pub tsize: bool,
    /// How long to wait for the next packet before retransmitting.
    pub timeout: Duration,
    /// Retransmissions of one packet before the attempt fails.
    pub retries: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options { blksize: ETHERNET_BLKSIZE, tsize: true, timeout: Duration::from_secs(3), retries: 5 }
    }
}

/// A TFTP packet. `Data` borrows from the received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq { file: String, mode: String, options: Vec<(String, String)> },
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: u16, message: String },
    Oack { options: Vec<(String, String)> },
}

impl Packet<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let cstr = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Rrq { file, mode, options } => {
                out.extend_from_slice(&RRQ.to_be_bytes());
                cstr(&mut out, file);
                cstr(&mut out, mode);
                for (k, v) in options {
                    cstr(&mut out, k);
                    cstr(&mut out, v);
                }
            }
            Packet::Data { block, data } => {
                out.extend_from_slice(&DATA.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&ERROR.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                cstr(&mut out, message);
            }
            Packet::Oack { options } => {
                out.extend_from_slice(&OACK.to_be_bytes());
                for (k, v) in options {
                    cstr(&mut out, k);
                    cstr(&mut out, v);
                }
            }
        }
        out
    }
}

impl<'a> Packet<'a> {
    /// Decodes one datagram; `None` if it is not a well-formed TFTP packet
    /// a client can receive (RRQ is decoded too, for tests and symmetry).
    pub fn decode(b: &'a [u8]) -> Option<Packet<'a>> {
        let op = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
        let rest = &b[2..];
        let u16_at = |i: usize| Some(u16::from_be_bytes([*rest.get(i)?, *rest.get(i + 1)?]));
        match op {
            RRQ => {
                let mut s = strings(rest)?;
                if s.len() < 2 || s.len() % 2 != 0 {
                    return None;
                }
                let options = s.split_off(2).chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
                let mode = s.pop()?;
                let file = s.pop()?;
                Some(Packet::Rrq { file, mode, options })
            }
            DATA => Some(Packet::Data { block: u16_at(0)?, data: &rest[2..] }),
            ACK if rest.len() == 2 => Some(Packet::Ack { block: u16_at(0)? }),
            ERROR => {
                let code = u16_at(0)?;
                // Some servers omit the final NUL; be lenient with the text.
                let msg = &rest[2..];
                let msg = msg.split(|c| *c == 0).next().unwrap_or_default();
                Some(Packet::Error { code, message: String::from_utf8_lossy(msg).into_owned() })
            }
            OACK => {
                let s = strings(rest)?;
                if s.len() % 2 != 0 {
                    return None;
                }
                Some(Packet::Oack { options: s.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect() })
            }
            _ => None,
        }
    }
}

/// Splits NUL-terminated strings; `None` unless the last one is terminated.
fn strings(b: &[u8]) -> Option<Vec<String>> {
    if b.is_empty() {
        return Some(Vec::new());
    }
    if *b.last()? != 0 {
        return None;
    }
    Some(b[..b.len() - 1].split(|c| *c == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// RFC 1350 error code names.
pub fn error_name(code: u16) -> &'static str {
    match code {
        1 => "file not found",
        2 => "access violation",
        3 => "disk full",
        4 => "illegal operation",
        5 => "unknown transfer ID",
        6 => "file already exists",
        7 => "no such user",
        8 => "option negotiation refused",
        _ => "not defined",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("server error {code} ({}): {message:?}", error_name(*code))]
    Server { code: u16, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("no answer from {peer} for {secs} s ({what}; {blocks} blocks received)")]
    Timeout { peer: SocketAddr, secs: u64, what: String, blocks: u64 },
    #[error("cannot resolve {host}:{port}: {message}")]
    Resolve { host: String, port: u16, message: String },
    #[error("socket: {0}")]
    Io(#[source] io::Error),
    /// The sink refused the data (disk full): not a network problem.
    #[error("writing the data: {0}")]
    Sink(#[source] io::Error),
}

impl TftpError {
    /// Errors that another attempt will not fix (the file is not there, or
    /// the server forbids it, or the sink failed).
    pub fn is_permanent(&self) -> bool {
        matches!(self, TftpError::Server { code: 1 | 2, .. } | TftpError::Sink(_))
    }
}

/// The next block number after `b`: 65535 rolls over to 0.
pub fn next_block(b: u16) -> u16 {
    b.wrapping_add(1)
}

/// The 16-bit block number of the `n`-th block (1-based) of a transfer.
pub fn block_number(n: u64) -> u16 {
    (n % 65536) as u16
}

/// What the driver does after a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Give `data` to the sink, then send `ack`; `last` ends the transfer.
    Data { data: &'a [u8], ack: Vec<u8>, last: bool },
    /// Send this packet (ACK 0 for an OACK, or a repeated ACK for a duplicate block).
    Send(Vec<u8>),
    /// Nothing to do (stray or stale packet).
    Ignore(&'static str),
}

/// The receiving side of one read transfer, without I/O.
#[derive(Debug)]
pub struct Receiver {
    asked_blksize: Option<u16>,
    asked_tsize: bool,
    blksize: usize,
    tsize: Option<u64>,
    oack: bool,
    /// Blocks delivered so far.
    blocks: u64,
    bytes: u64,
    done: bool,
    last_sent: Vec<u8>,
}

impl Receiver {
    /// A receiver for `file` and the RRQ that starts it.
    pub fn new(file: &str, opts: &Options) -> Receiver {
        let asked_blksize = (opts.blksize != DEFAULT_BLKSIZE).then_some(opts.blksize.clamp(8, 65464));
        let mut options = Vec::new();
        if let Some(b) = asked_blksize {
            options.push(("blksize".to_string(), b.to_string()));
        }
        if opts.tsize {
            // In a read request the client sends 0; the server answers with the size.
            options.push(("tsize".to_string(), "0".to_string()));
        }
        let rrq = Packet::Rrq { file: file.to_string(), mode: "octet".to_string(), options }.encode();
        Receiver {
            asked_blksize,
            asked_tsize: opts.tsize,
            blksize: DEFAULT_BLKSIZE as usize,
            tsize: None,
            oack: false,
            blocks: 0,
            bytes: 0,
            done: false,
            last_sent: rrq,
        }
    }

    /// The packet to send (first, or again after a timeout): the RRQ, then the latest ACK.
    pub fn last_sent(&self) -> &[u8] {
        &self.last_sent
    }

    /// File size announced by the server (`tsize`), if any.
    pub fn tsize(&self) -> Option<u64> {
        self.tsize
    }

    pub fn blksize(&self) -> usize {
        self.blksize
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// Whether the server has answered at all (its port is then the transfer ID).
    pub fn started(&self) -> bool {
        self.oack || self.blocks > 0
    }

    /// The 16-bit number of the next expected DATA block.
    pub fn expected(&self) -> u16 {
        block_number(self.blocks + 1)
    }

    /// Handles one received datagram.
    pub fn handle<'a>(&mut self, datagram: &'a [u8]) -> Result<Step<'a>, TftpError> {
        if self.done {
            return Ok(Step::Ignore("transfer already complete"));
        }
        let Some(p) = Packet::decode(datagram) else {
            return Ok(Step::Ignore("malformed packet"));
        };
        match p {
            Packet::Error { code, message } => Err(TftpError::Server { code, message }),
            Packet::Oack { options } => {
                if self.blocks > 0 {
                    return Ok(Step::Ignore("late OACK"));
                }
                if !self.oack {
                    self.accept_options(&options)?;
                    self.oack = true;
                }
                // A repeated OACK means our ACK 0 was lost: send it again.
                self.last_sent = Packet::Ack { block: 0 }.encode();
                Ok(Step::Send(self.last_sent.clone()))
            }
            Packet::Data { block, data } => {
                if block == self.expected() {
                    if !self.oack && self.blocks == 0 {
                        // The server ignored our options (RFC 2347 allows it).
                        self.blksize = DEFAULT_BLKSIZE as usize;
                    }
                    if data.len() > self.blksize {
                        return Err(TftpError::Protocol(format!(
                            "block {block} has {} bytes, more than the block size {}",
                            data.len(),
                            self.blksize
                        )));
                    }
                    self.blocks += 1;
                    self.bytes += data.len() as u64;
                    let last = data.len() < self.blksize;
                    if last {
                        if let Some(t) = self.tsize.filter(|t| *t != self.bytes) {
                            return Err(TftpError::Protocol(format!(
                                "got {} bytes, server announced tsize {t}",
                                self.bytes
                            )));
                        }
                        self.done = true;
                    }
                    self.last_sent = Packet::Ack { block }.encode();
                    Ok(Step::Data { data, ack: self.last_sent.clone(), last })
                } else if self.blocks > 0 && block == block_number(self.blocks) {
                    // Our ACK was lost and the server sent the block again.
                    Ok(Step::Send(self.last_sent.clone()))
                } else {
                    Ok(Step::Ignore("unexpected block number"))
                }
            }
            Packet::Ack { .. } | Packet::Rrq { .. } => Ok(Step::Ignore("not for a reader")),
        }
    }

    fn accept_options(&mut self, options: &[(String, String)]) -> Result<(), TftpError> {
        let mut blksize = DEFAULT_BLKSIZE as usize;
        for (k, v) in options {
            match k.to_ascii_lowercase().as_str() {
                "blksize" => {
                    let b: u16 = v
                        .parse()
                        .ok()
                        .filter(|b| (8..=self.asked_blksize.unwrap_or(0)).contains(b))
                        .ok_or_else(|| TftpError::Protocol(format!("server offered blksize {v:?}")))?;
                    blksize = b as usize;
                }
                "tsize" if self.asked_tsize => {
                    let t = v.parse().map_err(|_| TftpError::Protocol(format!("server offered tsize {v:?}")))?;
                    self.tsize = Some(t);
                }
                // RFC 2347: the server must not add options the client did not ask for;
                // other servers echo `timeout`. Tolerate and ignore.
                _ => {}
            }
        }
        self.blksize = blksize;
        Ok(())
    }
}

/// Receives the file's bytes as they arrive.
pub trait Sink {
    /// The server announced the file size.
    fn size_known(&mut self, bytes: u64);
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
}

/// What [`read`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub bytes: u64,
    pub blocks: u64,
    pub blksize: usize,
    pub retransmits: u64,
}

impl fmt::Display for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes in {} blocks of {}", self.bytes, self.blocks, self.blksize)
    }
}

/// Reads `url` into `sink`: one attempt, with per-packet retransmission.
pub fn read(url: &TftpUrl, opts: &Options, sink: &mut dyn Sink) -> Result<Transfer, TftpError> {
    let server = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| TftpError::Resolve { host: url.host.clone(), port: url.port, message: e.to_string() })?
        .next()
        .ok_or_else(|| TftpError::Resolve { host: url.host.clone(), port: url.port, message: "no address".into() })?;
    let local: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|_| TftpError::Io(io::Error::new(io::ErrorKind::InvalidInput, "local address")))?;
    let sock = UdpSocket::bind(local).map_err(TftpError::Io)?;
    let mut rx = Receiver::new(&url.path, opts);
    // The server answers from a new port (its transfer ID); until then, the well-known port.
    let mut peer = server;
    let mut buf = vec![0u8; 65536];
    let mut retransmits = 0u64;
    let mut tries = 0u32;
    sock.send_to(rx.last_sent(), peer).map_err(TftpError::Io)?;
    let mut deadline = Instant::now() + opts.timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            if tries >= opts.retries {
                let what = if rx.started() {
                    format!("waiting for block {}", rx.expected())
                } else {
                    format!("read request for {:?}", url.path)
                };
                let secs = opts.timeout.as_secs() * (u64::from(opts.retries) + 1);
                return Err(TftpError::Timeout { peer, secs, what, blocks: rx.blocks() });
            }
            tries += 1;
            retransmits += 1;
            sock.send_to(rx.last_sent(), peer).map_err(TftpError::Io)?;
            deadline = Instant::now() + opts.timeout;
            continue;
        }
        sock.set_read_timeout(Some(deadline - now)).map_err(TftpError::Io)?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TftpError::Io(e)),
        };
        if rx.started() {
            if from != peer {
                let e = Packet::Error { code: 5, message: "unknown transfer ID".into() }.encode();
                let _ = sock.send_to(&e, from);
                continue;
            }
        } else if from.ip() != server.ip() {
            continue;
        }
        let was_started = rx.started();
        let step = rx.handle(&buf[..n])?;
        if !was_started && rx.started() {
            peer = from;
            if let Some(t) = rx.tsize() {
                sink.size_known(t);
            }
        }
        match step {
            Step::Data { data, ack, last } => {
                if let Err(e) = sink.write(data) {
                    let _ = sock.send_to(&Packet::Error { code: 3, message: e.to_string() }.encode(), peer);
                    return Err(TftpError::Sink(e));
                }
                sock.send_to(&ack, peer).map_err(TftpError::Io)?;
                tries = 0;
                deadline = Instant::now() + opts.timeout;
                if last {
                    return Ok(Transfer { bytes: rx.bytes(), blocks: rx.blocks(), blksize: rx.blksize(), retransmits });
                }
            }
            Step::Send(p) => {
                sock.send_to(&p, peer).map_err(TftpError::Io)?;
            }
            Step::Ignore(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(block: u16, payload: &[u8]) -> Vec<u8> {
        Packet::Data { block, data: payload }.encode()
    }

    #[test]
    fn packets_roundtrip() {
        let rrq = Packet::Rrq {
            file: "os/x/filesystem.squashfs".into(),
            mode: "octet".into(),
            options: vec![("blksize".into(), "1468".into()), ("tsize".into(), "0".into())],
        };
        let b = rrq.encode();
        assert_eq!(&b[..2], &[0, 1]);
        assert_eq!(&b[2..], b"os/x/filesystem.squashfs\0octet\0blksize\x001468\0tsize\x000\0");
        assert_eq!(Packet::decode(&b), Some(rrq));
        for p in [
            Packet::Data { block: 65535, data: b"abc" },
            Packet::Data { block: 0, data: b"" },
            Packet::Ack { block: 7 },
            Packet::Error { code: 1, message: "File not found".into() },
            Packet::Oack { options: vec![("tsize".into(), "126877696".into())] },
        ] {
            assert_eq!(Packet::decode(&p.encode()), Some(p.clone()), "{p:?}");
        }
        assert_eq!(Packet::Ack { block: 0x0102 }.encode(), vec![0, 4, 1, 2]);
        // Lenient about a missing NUL in ERROR; strict elsewhere.
        assert_eq!(Packet::decode(b"\0\x05\0\x01nope"), Some(Packet::Error { code: 1, message: "nope".into() }));
        for bad in [&b""[..], b"\0", b"\0\x03\0", b"\0\x04\0", b"\0\x06blksize\x00512", b"\0\x09\0\0", b"\0\x06a\0"] {
            assert_eq!(Packet::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn wraparound_arithmetic() {
        assert_eq!(next_block(65535), 0);
        assert_eq!(next_block(0), 1);
        assert_eq!(block_number(65535), 65535);
        assert_eq!(block_number(65536), 0);
        assert_eq!(block_number(65537), 1);
        // A 121 MiB image at 1468-byte blocks needs more than 65535 blocks.
        let blocks = (121u64 * 1048576).div_ceil(1468);
        assert!(blocks > 65535, "{blocks}");
        assert_eq!(block_number(blocks), (blocks - 65536) as u16);
    }

    #[test]
    fn negotiated_transfer_with_rollover() {
        let opts = Options { blksize: 8, ..Options::default() };
        let mut rx = Receiver::new("f", &opts);
        assert!(rx.last_sent().ends_with(b"blksize\x008\0tsize\x000\0"));
        let total_blocks = 70_000u64;
        let size = total_blocks * 8 - 3;
        let oack = Packet::Oack { options: vec![("blksize".into(), "8".into()), ("tsize".into(), size.to_string())] };
        assert_eq!(rx.handle(&oack.encode()).expect("oack"), Step::Send(vec![0, 4, 0, 0]));
        assert_eq!(rx.tsize(), Some(size));
        assert_eq!(rx.blksize(), 8);
        let mut got = 0u64;
        for n in 1..=total_blocks {
            let len = if n == total_blocks { 5 } else { 8 };
            let d = data(block_number(n), &[0u8; 8][..len]);
            match rx.handle(&d).expect("data") {
                Step::Data { data, ack, last } => {
                    got += data.len() as u64;
                    assert_eq!(ack, Packet::Ack { block: block_number(n) }.encode());
                    assert_eq!(last, n == total_blocks);
                }
                other => panic!("block {n}: {other:?}"),
            }
            if n == 65536 {
                // Block 0 after the rollover; a stale 65535 is re-acked, not written.
                assert_eq!(rx.expected(), 1);
                assert_eq!(rx.handle(&data(0, &[0; 8])).expect("dup"), Step::Send(vec![0, 4, 0, 0]));
                assert_eq!(rx.handle(&data(65535, &[0; 8])).expect("old"), Step::Ignore("unexpected block number"));
            }
        }
        assert_eq!(got, size);
        assert!(rx.done());
    }

    #[test]
    fn server_without_options_and_errors() {
        let mut rx = Receiver::new("f", &Options::default());
        // Out of order first: ignored.
        assert_eq!(rx.handle(&data(2, b"x")).expect("stray"), Step::Ignore("unexpected block number"));
        let full = vec![1u8; 512];
        assert!(matches!(rx.handle(&data(1, &full)).expect("d1"), Step::Data { last: false, .. }));
        assert_eq!(rx.blksize(), 512);
        assert_eq!(rx.tsize(), None);
        // A duplicate of block 1 is re-acked.
        assert_eq!(rx.handle(&data(1, &full)).expect("dup"), Step::Send(vec![0, 4, 0, 1]));
        let too_big = vec![0u8; 513];
        assert!(matches!(rx.handle(&data(2, &too_big)), Err(TftpError::Protocol(_))));

        let mut rx = Receiver::new("missing", &Options::default());
        let e = rx.handle(&Packet::Error { code: 1, message: "file not found".into() }.encode()).expect_err("err");
        assert!(e.is_permanent());
        assert!(e.to_string().contains("file not found"), "{e}");

        // A server offering a bigger block than asked, or a bad tsize, is refused.
        let mut rx = Receiver::new("f", &Options::default());
        let oack = Packet::Oack { options: vec![("blksize".into(), "9000".into())] };
        assert!(matches!(rx.handle(&oack.encode()), Err(TftpError::Protocol(_))));
        let mut rx = Receiver::new("f", &Options::default());
        let oack = Packet::Oack { options: vec![("tsize".into(), "x".into())] };
        assert!(matches!(rx.handle(&oack.encode()), Err(TftpError::Protocol(_))));

        // tsize disagreeing with what arrived.
        let mut rx = Receiver::new("f", &Options::default());
        let oack = Packet::Oack { options: vec![("tsize".into(), "10".into())] };
        rx.handle(&oack.encode()).expect("oack");
        assert_eq!(rx.blksize(), 512, "no blksize in the OACK: the default");
        assert!(matches!(rx.handle(&data(1, b"abc")), Err(TftpError::Protocol(m)) if m.contains("tsize 10")));
    }

    #[test]
    fn repeated_oack_is_reacked() {
        let mut rx = Receiver::new("f", &Options::default());
        let oack = Packet::Oack { options: vec![("blksize".into(), "1468".into())] }.encode();
        assert_eq!(rx.handle(&oack).expect("1"), Step::Send(vec![0, 4, 0, 0]));
        assert_eq!(rx.handle(&oack).expect("2"), Step::Send(vec![0, 4, 0, 0]));
        assert!(matches!(rx.handle(&data(1, b"end")).expect("d"), Step::Data { last: true, .. }));
        assert_eq!(rx.handle(&data(1, b"end")).expect("after"), Step::Ignore("transfer already complete"));
    }

    struct Mem(Vec<u8>, Option<u64>);
    impl Sink for Mem {
        fn size_known(&mut self, bytes: u64) {
            self.1 = Some(bytes);
        }
        fn write(&mut self, data: &[u8]) -> io::Result<()> {
            self.0.extend_from_slice(data);
            Ok(())
        }
    }

    /// A loopback server answering from a new port, dropping the first ACK
    /// of block 2 (so the client's retransmission path runs).
    #[test]
    fn loopback_transfer_with_loss() {
        let listen = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = listen.local_addr().expect("addr").port();
        let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let content = body.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, client) = listen.recv_from(&mut buf).expect("rrq");
            assert!(matches!(Packet::decode(&buf[..n]), Some(Packet::Rrq { .. })));
            let s = UdpSocket::bind("127.0.0.1:0").expect("tid");
            s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            let oack = Packet::Oack {
                options: vec![("blksize".into(), "1000".into()), ("tsize".into(), content.len().to_string())],
            };
            let mut last = oack.encode();
            s.send_to(&last, client).expect("oack");
            let mut dropped = false;
            let mut block = 0u16;
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, _)) => match Packet::decode(&buf[..n]) {
                        Some(Packet::Ack { block: b }) if b == block => {
                            if b == 2 && !dropped {
                                dropped = true;
                                continue;
                            }
                            let start = block as usize * 1000;
                            if start > content.len() {
                                return;
                            }
                            block += 1;
                            let end = (start + 1000).min(content.len());
                            last = Packet::Data { block, data: &content[start..end] }.encode();
                            s.send_to(&last, client).expect("data");
                        }
                        _ => {}
                    },
                    Err(_) => {
                        let _ = s.send_to(&last, client);
                    }
                }
            }
        });
        let url = TftpUrl::parse(&format!("tftp://127.0.0.1:{port}/f")).expect("url");
        let opts = Options { blksize: 1000, timeout: Duration::from_millis(300), ..Options::default() };
        let mut sink = Mem(Vec::new(), None);
        let t = read(&url, &opts, &mut sink).expect("read");
        assert_eq!(sink.0, body);
        assert_eq!(sink.1, Some(3000));
        assert_eq!((t.bytes, t.blocks, t.blksize), (3000, 4, 1000));
    }

    #[test]
    fn loopback_silence_times_out() {
        let quiet = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let url = TftpUrl::parse(&format!("tftp://{}/f", quiet.local_addr().expect("a"))).expect("url");
        let opts = Options { timeout: Duration::from_millis(50), retries: 2, ..Options::default() };
        let e = read(&url, &opts, &mut Mem(Vec::new(), None)).expect_err("timeout");
        assert!(matches!(e, TftpError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("read request for \"f\""), "{e}");
        assert!(!e.is_permanent());
    }
}
