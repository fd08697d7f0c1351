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
    Tftp(String),
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
            Some(v) if v.starts_with("tftp://") && v.len() > "tftp://".len() => {
                Ok(Some(FetchSource::Tftp(v.to_string())))
            }
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
    fn rescue_flag_forms() {
        assert!(Cmdline::parse("triton.rescue").rescue());
        assert!(Cmdline::parse("triton.rescue=1").rescue());
        assert!(!Cmdline::parse("triton.rescue=0").rescue());
        assert!(!Cmdline::parse("triton.rescue=false").rescue());
    }
}
