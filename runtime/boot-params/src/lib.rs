//! Typed view of the kernel command line that booter writes for a Linux CN
//! (`boot.ipxe`, see ../shared/triton-contracts.md section 2.3).
//!
//! Pure: no I/O. `parse` splits and classifies words; typed accessors validate
//! the values that stage 1 acts on (`BOOTIF`, `ip=`, `fetch=`).

mod cmdline;
pub mod identity;
mod ip;
pub mod networking;
pub mod node_config;

pub use cmdline::{split_words, Cmdline};
pub use ip::{netmask_prefix, IpConfig, IpParseError};
pub use networking::NetworkingJson;
pub use node_config::NodeConfig;

use std::fmt;

/// A MAC address (6 octets).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (case-insensitive).
    pub fn parse(s: &str) -> Option<Mac> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.len() != 2 {
                return None;
            }
            out[n] = u8::from_str_radix(part, 16).ok()?;
            n += 1;
        }
        (n == 6).then_some(Mac(out))
    }

    /// Parses booter's `BOOTIF=01-aa-bb-cc-dd-ee-ff` value (ARP type 01 = Ethernet).
    pub fn from_bootif(s: &str) -> Option<Mac> {
        let rest = s.strip_prefix("01-")?;
        Mac::parse(rest).filter(|_| rest.contains('-'))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where stage 1 gets the root image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchSource {
    Http(String),
    Tftp(TftpUrl),
}

impl FetchSource {
    /// The URL as given on the command line.
    pub fn url(&self) -> &str {
        match self {
            FetchSource::Http(u) => u,
            FetchSource::Tftp(t) => &t.url,
        }
    }

    /// `"http"` or `"tftp"` (for events and messages).
    pub fn proto(&self) -> &'static str {
        match self {
            FetchSource::Http(_) => "http",
            FetchSource::Tftp(_) => "tftp",
        }
    }
}

/// A `tftp://host[:port]/path` URL (RFC 3617 without the `;mode=` suffix),
/// as booter writes `fetch=` when its HTTP boot setting is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpUrl {
    /// The URL as given.
    pub url: String,
    /// An IPv4/IPv6 literal (booter writes its admin IP) or a host name.
    pub host: String,
    /// 69 unless given.
    pub port: u16,
    /// The file name sent in the read request: the URL path without its
    /// leading `/`, percent-decoded (what iPXE and curl send, and what
    /// booter's TFTP server resolves under its root).
    pub path: String,
}

impl TftpUrl {
    /// The TFTP well-known port.
    pub const PORT: u16 = 69;

    /// Parses `tftp://host[:port]/path`; `host` may be `[v6]`.
    pub fn parse(url: &str) -> Option<TftpUrl> {
        let rest = url.strip_prefix("tftp://")?;
        let (authority, path) = rest.split_once('/')?;
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':')?)),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => TftpUrl::PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        };
        let valid_host =
            !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        // `;mode=...` (RFC 3617) is not supported: octet is the only sane mode for an image.
        if !valid_host || path.is_empty() || path.contains(';') {
            return None;
        }
        Some(TftpUrl { url: url.to_string(), host: host.to_string(), port, path: percent_decode(path)? })
    }
}

impl fmt::Display for TftpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// `%XX` → byte; `None` on a malformed escape, a NUL (it would end the TFTP
/// file name) or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Errors in the boot parameters stage 1 needs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootParamError {
    #[error("BOOTIF={0:?} is not of the form 01-aa-bb-cc-dd-ee-ff")]
    BadBootif(String),
    #[error("ip={value:?}: {source}")]
    BadIp {
        value: String,
        #[source]
        source: IpParseError,
    },
    #[error("fetch={0:?}: only http:// and tftp:// URLs are supported")]
    BadFetch(String),
    #[error("fetch={0:?}: not a valid tftp://<host>[:<port>]/<path> URL")]
    BadTftpUrl(String),
}

impl Cmdline {
    /// The MAC of the NIC that PXE-booted (`BOOTIF=`), if given.
    pub fn bootif(&self) -> Result<Option<Mac>, BootParamError> {
        match self.get("BOOTIF") {
            None => Ok(None),
            Some(v) => Mac::from_bootif(v).map(Some).ok_or_else(|| BootParamError::BadBootif(v.to_string())),
        }
    }

    /// The static admin address from `ip=` (absent, `dhcp` etc. → `None`).
    pub fn ip(&self) -> Result<Option<IpConfig>, BootParamError> {
        match self.get("ip") {
            None => Ok(None),
            Some(v) => IpConfig::parse(v).map_err(|source| BootParamError::BadIp { value: v.to_string(), source }),
        }
    }

    /// The root image URL from `fetch=`.
    pub fn fetch(&self) -> Result<Option<FetchSource>, BootParamError> {
        match self.get("fetch") {
            None => Ok(None),
            Some(v) if v.starts_with("http://") && v.len() > "http://".len() => {
                Ok(Some(FetchSource::Http(v.to_string())))
            }
            Some(v) if v.starts_with("tftp://") => TftpUrl::parse(v)
                .map(|t| Some(FetchSource::Tftp(t)))
                .ok_or_else(|| BootParamError::BadTftpUrl(v.to_string())),
            Some(v) => Err(BootParamError::BadFetch(v.to_string())),
        }
    }

    /// `triton.rescue` (or `triton.rescue=1|true|yes`): stop in a shell before switching root.
    pub fn rescue(&self) -> bool {
        self.flag("triton.rescue")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms() {
        let m = Mac::parse("10:DD:b1:a2:57:bf").expect("mac");
        assert_eq!(m.to_string(), "10:dd:b1:a2:57:bf");
        assert_eq!(Mac::parse("10-dd-b1-a2-57-bf"), Some(m));
        assert_eq!(Mac::from_bootif("01-10-dd-b1-a2-57-bf"), Some(m));
        for bad in ["", "10:dd:b1:a2:57", "10:dd:b1:a2:57:bf:00", "zz:dd:b1:a2:57:bf", "1:2:3:4:5:6"] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
        assert_eq!(Mac::from_bootif("10-dd-b1-a2-57-bf"), None);
        assert_eq!(Mac::from_bootif("01-10:dd:b1:a2:57:bf"), None);
    }

    #[test]
    fn booter_linux_kernel_line() {
        // The kernel line booter writes for a Linux CN (contracts 2.3).
        let c = Cmdline::parse(
            "boot=live console=tty0 console=ttyS1,115200n8 BOOTIF=01-10-dd-b1-a2-57-bf \
             ip=10.99.99.124:::255.255.255.0:: hostname=cn1 rabbitmq=guest:guest:10.99.99.16:5672 \
             admin_nic=10:dd:b1:a2:57:bf aggr1_aggr=\"00:00:00:00:00:01,00:00:00:00:00:02\" \
             fetch=http://10.99.99.9/os/20210731T223008Z/platform/x86_64/filesystem.squashfs",
        );
        assert_eq!(c.bootif(), Ok(Mac::parse("10:dd:b1:a2:57:bf")));
        let ip = c.ip().expect("ip").expect("some ip");
        assert_eq!(ip.address.to_string(), "10.99.99.124");
        assert_eq!(ip.prefix_len, 24);
        assert_eq!(ip.gateway, None);
        assert_eq!(c.get("hostname"), Some("cn1"));
        assert_eq!(c.get("aggr1_aggr"), Some("00:00:00:00:00:01,00:00:00:00:00:02"));
        assert_eq!(c.get_all("console"), vec!["tty0", "ttyS1,115200n8"]);
        assert!(matches!(c.fetch(), Ok(Some(FetchSource::Http(u))) if u.ends_with("filesystem.squashfs")));
        assert!(!c.rescue());
    }

    #[test]
    fn bad_values_name_the_key() {
        let c = Cmdline::parse("BOOTIF=52:54:00:12:34:56 ip=10.0.0.1:::300.0.0.0:: fetch=ftp://x/y");
        assert!(c.bootif().expect_err("bad").to_string().contains("BOOTIF"));
        let e = c.ip().expect_err("bad ip").to_string();
        assert!(e.contains("ip=") && e.contains("netmask"), "{e}");
        assert!(c.fetch().expect_err("bad").to_string().contains("http://"));
    }

    #[test]
    fn tftp_urls() {
        let c = Cmdline::parse("fetch=tftp://10.99.99.9/os/20210731T223008Z/platform/x86_64/filesystem.squashfs");
        let Ok(Some(FetchSource::Tftp(t))) = c.fetch() else { panic!("tftp source") };
        assert_eq!(t.host, "10.99.99.9");
        assert_eq!(t.port, 69);
        assert_eq!(t.path, "os/20210731T223008Z/platform/x86_64/filesystem.squashfs");
        assert_eq!(c.fetch().expect("ok").expect("some").proto(), "tftp");
        assert_eq!(t.to_string(), "tftp://10.99.99.9/os/20210731T223008Z/platform/x86_64/filesystem.squashfs");

        let t = TftpUrl::parse("tftp://boot.example.com:6969/a%20b/c").expect("port");
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("boot.example.com", 6969, "a b/c"));
        let t = TftpUrl::parse("tftp://[fd00::1]:70/f").expect("v6");
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("fd00::1", 70, "f"));
        let t = TftpUrl::parse("tftp://[fd00::1]/f").expect("v6 no port");
        assert_eq!(t.port, 69);

        for bad in [
            "tftp://",
            "tftp://host",
            "tftp://host/",
            "tftp:///path",
            "tftp://host:0/f",
            "tftp://host:99999/f",
            "tftp://host:x/f",
            "tftp://host/f;mode=netascii",
            "tftp://host/%zz",
            "tftp://host/a%00b",
            "tftp://ho st/f",
            "tftp://[fd00::1/f",
        ] {
            assert_eq!(TftpUrl::parse(bad), None, "{bad}");
        }
        let e = Cmdline::parse("fetch=tftp://host").fetch().expect_err("no path");
        assert!(e.to_string().contains("tftp://<host>"), "{e}");
        assert_eq!(Cmdline::parse("fetch=http://h/x").fetch().expect("ok").expect("some").url(), "http://h/x");
    }

    #[test]
    fn rescue_flag_forms() {
        assert!(Cmdline::parse("triton.rescue").rescue());
        assert!(Cmdline::parse("triton.rescue=1").rescue());
        assert!(!Cmdline::parse("triton.rescue=0").rescue());
        assert!(!Cmdline::parse("triton.rescue=false").rescue());
    }
}
