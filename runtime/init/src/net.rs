//! Stage-1 admin NIC bring-up: find the `BOOTIF` NIC, wait for carrier, add
//! the `ip=` address (and gateway) through rtnetlink.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boot_params::{IpConfig, Mac};
use futures::TryStreamExt;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no network interface with MAC {mac} appeared within {secs} s (interfaces seen: {seen}); is its driver in the initrd's module list?")]
    NoSuchMac { mac: Mac, secs: u64, seen: String },
    #[error("no BOOTIF= on the kernel command line and no usable NIC found")]
    NoNic,
    #[error(
        "no BOOTIF= on the kernel command line and no NIC got carrier within {secs} s (NICs: {seen}); \
             check the cabling, or add BOOTIF=01-<mac-with-dashes>"
    )]
    NoCarrier { secs: u64, seen: String },
    #[error("netlink {op} on {ifname}: {message}")]
    Netlink { op: &'static str, ifname: String, message: String },
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A network interface as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: Option<Mac>,
}

/// Lists `<sys>/class/net/*` (name, ifindex, MAC).
pub fn list_ifaces(sys: &Path) -> Vec<Iface> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(sys.join("class/net")) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| fs::read_to_string(p.join(f)).map(|s| s.trim().to_string()).ok();
        let Some(index) = read("ifindex").and_then(|s| s.parse().ok()) else {
            continue;
        };
        out.push(Iface { name, index, mac: read("address").and_then(|a| Mac::parse(&a)) });
    }
    out.sort_by_key(|i| i.index);
    out
}

/// Waits for the NIC with `mac` to appear.
pub fn wait_for_mac(sys: &Path, mac: Mac, timeout: Duration) -> Result<Iface, NetError> {
    let start = Instant::now();
    loop {
        let ifaces = list_ifaces(sys);
        if let Some(i) = ifaces.iter().find(|i| i.mac == Some(mac)) {
            return Ok(i.clone());
        }
        if start.elapsed() >= timeout {
            let seen = ifaces
                .iter()
                .map(|i| format!("{}={}", i.name, i.mac.map(|m| m.to_string()).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(NetError::NoSuchMac { mac, secs: timeout.as_secs(), seen });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// NICs stage 1 may use without `BOOTIF=`: everything but loopback (a MAC,
/// not all zeros).
pub fn candidates(sys: &Path) -> Vec<Iface> {
    list_ifaces(sys).into_iter().filter(|i| i.name != "lo" && i.mac.is_some_and(|m| m.0 != [0; 6])).collect()
}

/// Without `BOOTIF=`: sets every candidate NIC up (also ones that appear
/// while waiting) and returns the first, by ifindex, with carrier.
pub fn wait_for_any_carrier(sys: &Path, timeout: Duration) -> Result<Iface, NetError> {
    let start = Instant::now();
    let mut up: Vec<u32> = Vec::new();
    loop {
        let all = candidates(sys);
        for i in &all {
            if !up.contains(&i.index) {
                configure(i, None)?;
                up.push(i.index);
            }
        }
        if let Some(i) = all.iter().find(|i| has_carrier(sys, &i.name)) {
            return Ok(i.clone());
        }
        if start.elapsed() >= timeout {
            let seen = all.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(NetError::NoCarrier { secs: timeout.as_secs(), seen });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn has_carrier(sys: &Path, ifname: &str) -> bool {
    fs::read_to_string(sys.join("class/net").join(ifname).join("carrier")).map(|s| s.trim() == "1").unwrap_or(false)
}

/// Waits for carrier on `ifname`; returns whether it came up in time.
pub fn wait_for_carrier(sys: &Path, ifname: &str, timeout: Duration) -> bool {
    let path: PathBuf = sys.join("class/net").join(ifname).join("carrier");
    let start = Instant::now();
    while start.elapsed() < timeout {
        if fs::read_to_string(&path).is_ok_and(|s| s.trim() == "1") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn nl_err<'a>(op: &'static str, ifname: &'a str) -> impl FnOnce(rtnetlink::Error) -> NetError + 'a {
    move |e| NetError::Netlink { op, ifname: ifname.to_string(), message: e.to_string() }
}

/// Sets `iface` (and `lo`) up and, with `ip`, adds its address and gateway.
pub fn configure(iface: &Iface, ip: Option<&IpConfig>) -> Result<(), NetError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(NetError::Runtime)?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Runtime)?;
        tokio::spawn(conn);
        let name = iface.name.as_str();
        let mut lo = handle.link().get().match_name("lo".into()).execute();
        if let Ok(Some(l)) = lo.try_next().await {
            handle.link().set(l.header.index).up().execute().await.map_err(nl_err("link up", "lo"))?;
        }
        handle.link().set(iface.index).up().execute().await.map_err(nl_err("link up", name))?;
        if let Some(ip) = ip {
            let res = handle.address().add(iface.index, IpAddr::V4(ip.address), ip.prefix_len).execute().await;
            match res {
                Ok(()) => {}
                // Already there (stage 1 retried after a rescue shell).
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(nl_err("add address", name)(e)),
            }
            if let Some(gw) = ip.gateway.filter(|g| *g != Ipv4Addr::UNSPECIFIED) {
                let res = handle.route().add().v4().gateway(gw).execute().await;
                match res {
                    Ok(()) => {}
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                    Err(e) => return Err(nl_err("add default route", name)(e)),
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sysfs_ifaces() {
        let d = tempfile::tempdir().expect("tmp");
        for (n, idx, mac) in [("eth0", "2", "52:54:00:12:34:56"), ("lo", "1", "00:00:00:00:00:00")] {
            let p = d.path().join("class/net").join(n);
            fs::create_dir_all(&p).expect("mkdir");
            fs::write(p.join("ifindex"), format!("{idx}\n")).expect("w");
            fs::write(p.join("address"), format!("{mac}\n")).expect("w");
        }
        let l = list_ifaces(d.path());
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].name, "lo");
        let c = candidates(d.path());
        assert_eq!(c.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), vec!["eth0"]);
        let mac = Mac::parse("52:54:00:12:34:56").expect("mac");
        let i = wait_for_mac(d.path(), mac, Duration::from_millis(10)).expect("found");
        assert_eq!(i.name, "eth0");
        let other = Mac::parse("52:54:00:00:00:01").expect("mac");
        let e = wait_for_mac(d.path(), other, Duration::from_millis(10)).expect_err("absent");
        assert!(e.to_string().contains("eth0=52:54:00:12:34:56"), "{e}");
    }
}
