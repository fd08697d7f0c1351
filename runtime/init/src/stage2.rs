//! Stage 2, PID 1 in the real root: API filesystems, udev, node identity
//! (hostid, hostname, root password), zfs with an ARC cap, then a console
//! login and reaping. Pool import, networking and services come next.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;
use boot_params::{identity, Cmdline, NetworkingJson, NodeConfig};
use serde_json::json;

use crate::console::{self, phase};
use crate::{mounts, node, udev, zfs_load};

fn getty() -> std::io::Result<Child> {
    Command::new("/usr/sbin/agetty").args(["--noclear", "-L", "console", "linux"]).spawn()
}

pub fn run() -> anyhow::Result<std::convert::Infallible> {
    let root = Path::new("/");
    mounts::apply(&mounts::stage2_table(root)).context("mounting stage-2 filesystems")?;
    let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).context("uname")?;
    let cmdline = Cmdline::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let node_config = NodeConfig::parse(&fs::read_to_string("/etc/node.config").unwrap_or_default());
    for (line, why) in &node_config.warnings {
        console::line(&format!("warning: /etc/node.config line {line}: {why} (ignored)"));
    }

    // udev is needed for the disk links ZFS uses; without it the node still
    // comes up (unsetup), so a failure is reported, not fatal.
    let udevd = phase("udev", || {
        let child = udev::start()?;
        udev::coldplug(60)?;
        Ok((child, json!({})))
    })
    .map_err(|e| console::line(&format!("warning: {e:#}")))
    .ok();

    let ident = phase("identity", || {
        let uuid = node::server_uuid(Path::new("/sys"));
        let hostid = match &uuid {
            Some(u) => Some(node::write_hostid(root, u)?),
            None => {
                console::line("warning: no usable SMBIOS UUID (all zeros or missing); /etc/hostid not written");
                None
            }
        };
        let net_mac = fs::read_to_string("/etc/triton-networking.json")
            .ok()
            .and_then(|t| NetworkingJson::parse(&t).ok())
            .and_then(|n| n.admin_mac());
        let admin_mac = net_mac.or(cmdline.bootif().ok().flatten());
        let hostname = identity::hostname(cmdline.get("hostname"), node_config.get("hostname"), admin_mac);
        if let Some(h) = &hostname {
            node::set_hostname(root, h, true)?;
        }
        let root_password = match node_config.get("root_shadow") {
            None => "locked (no root_shadow in node.config)".to_string(),
            Some(h) => match node::set_root_shadow(root, h) {
                Ok(()) => "from node.config".to_string(),
                Err(e) => {
                    console::line(&format!("warning: {e:#}"));
                    format!("locked ({e})")
                }
            },
        };
        let fields = json!({ "uuid": uuid, "hostid": hostid, "hostname": hostname, "root_password": root_password });
        Ok((fields.clone(), fields))
    })?;

    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let arc_override = cmdline.get("triton.zfs_arc_max").and_then(|v| v.parse().ok());
    let arc_max = zfs_load::arc_max(zfs_load::mem_total(&meminfo).unwrap_or(0), arc_override);
    let zfs = phase("zfs", || {
        let v = zfs_load::load(arc_max).context("the zfs module must load for this node to import its zones pool")?;
        Ok((v.clone(), json!({ "version": v, "arc_max": arc_max })))
    })?;

    networking();

    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mut fields = json!({
        "kernel": kernel, "zfs": zfs, "arc_max": arc_max, "uptime_ms": console::uptime_ms(),
        "pid1_rss_kib": kib_field(&status, "VmRSS:"),
        "mem_used_kib": kib_field(&meminfo, "MemTotal:").zip(kib_field(&meminfo, "MemAvailable:")).map(|(t, a)| t.saturating_sub(a)),
    });
    if let (Some(f), Some(i)) = (fields.as_object_mut(), ident.as_object()) {
        f.extend(i.clone());
    }
    console::event("stage2", true, fields);
    if cmdline.rescue() {
        // The operator asked to stop before the zones pool is touched.
        return Err(anyhow::anyhow!("triton.rescue is on the kernel command line: stopped before pool import"));
    }
    supervise(udevd)
}

/// Applies `/etc/triton-networking.json` (hash-checked) through rtnetlink.
/// Never fatal: with a missing, damaged or invalid file nothing is changed,
/// the admin address stage 1 configured from `BOOTIF`/`ip=` stays up, and
/// the event says why and which addresses the node kept.
fn networking() {
    let t = std::time::Instant::now();
    let res = net::configure(
        Path::new("/etc/triton-networking.json"),
        Path::new("/etc/triton-networking.json.hash"),
        Path::new("/etc/resolv.conf"),
    );
    let ms = t.elapsed().as_millis() as u64;
    match res {
        Ok(report) => {
            for w in &report.warnings {
                console::line(&format!("networking: warning: {w}"));
            }
            let mut fields = serde_json::to_value(&report).unwrap_or_else(|_| json!({}));
            if let Some(m) = fields.as_object_mut() {
                m.insert("ms".into(), ms.into());
                let n = report.ops.len();
                m.insert("changes".into(), n.into());
            }
            console::event("networking", true, fields);
        }
        Err(e) => {
            let kept = kept_addresses();
            console::line(&format!(
                "networking: {e}; keeping the boot address(es) {} so the node stays reachable",
                kept.join(", ")
            ));
            console::event("networking", false, json!({ "ms": ms, "error": e.to_string(), "kept": kept }));
        }
    }
}

/// `ifname=a.b.c.d/n` for every IPv4 address now configured (except lo).
fn kept_addresses() -> Vec<String> {
    use net::LinkApi;
    let Ok(mut api) = net::netlink::Netlink::new() else {
        return Vec::new();
    };
    let Ok(o) = api.observe() else {
        return Vec::new();
    };
    o.addrs
        .iter()
        .filter_map(|a| {
            let l = o.links.iter().find(|l| l.index == a.index)?;
            (l.name != "lo").then(|| format!("{}={}/{}", l.name, a.cidr.addr, a.cidr.prefix))
        })
        .collect()
}

/// A `<key> <n> kB` field of a /proc file.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Keeps a login prompt on the console and udevd running, and reaps every
/// child. Never returns.
fn supervise(udevd: Option<Child>) -> ! {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;
    let pid_of = |c: &Child| Pid::from_raw(c.id() as i32);
    let mut udevd_pid = udevd.as_ref().map(pid_of);
    let mut backoff = Duration::from_secs(1);
    let mut getty_pid = None;
    loop {
        if getty_pid.is_none() {
            match getty() {
                Ok(c) => getty_pid = Some(pid_of(&c)),
                Err(e) => {
                    console::line(&format!(
                        "cannot start agetty on the console: {e}; retrying in {}s",
                        backoff.as_secs()
                    ));
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            }
        }
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                if Some(pid) == getty_pid {
                    getty_pid = None;
                } else if Some(pid) == udevd_pid {
                    console::line("systemd-udevd exited; restarting it");
                    std::thread::sleep(Duration::from_secs(1));
                    udevd_pid = udev::start().ok().as_ref().map(pid_of);
                }
            }
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => getty_pid = None,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let t = "Name:\tinit\nVmRSS:\t    4200 kB\nMemTotal: 2000 kB\n";
        assert_eq!(kib_field(t, "VmRSS:"), Some(4200));
        assert_eq!(kib_field(t, "MemTotal:"), Some(2000));
        assert_eq!(kib_field(t, "Nope:"), None);
    }
}
