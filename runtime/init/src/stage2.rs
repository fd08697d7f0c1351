//! Stage 2, PID 1 in the real root: API filesystems, udev, node identity
//! (hostid, hostname, root password), zfs with an ARC cap, then a console
//! login and reaping. Pool import, networking and services come next.

use std::fs;
use std::path::Path;

use anyhow::Context;
use boot_params::{identity, Cmdline, NetworkingJson, NodeConfig};
use serde_json::json;

use crate::console::{self, phase};
use crate::{mounts, node, udev, zfs_load};

/// Where services are described: the image's own, then those installed
/// on the pool (agents, after server setup).
const MANIFEST_DIRS: [&str; 2] = ["/usr/lib/triton/services", "/opt/triton/services"];
/// The control socket `triton-ctl` talks to.
pub const CONTROL_SOCKET: &str = "/run/triton/init.sock";
const TRITON_POOL: &str = "/usr/bin/triton-pool";

pub fn run() -> anyhow::Result<std::convert::Infallible> {
    // First, before any thread: the supervisor reads SIGCHLD/SIGTERM/SIGINT
    // from a signalfd; children get the default mask (crate::command).
    supervisor::block_signals().context("blocking signals for the supervisor")?;
    // The kernel starts init without PATH; children (and the console
    // login's environment) expect one.
    std::env::set_var("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    // ctrl-alt-del sends SIGINT to PID 1 (an orderly reboot), not an
    // immediate reboot.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        console::line(&format!("warning: cannot route ctrl-alt-del to init: {e}"));
    }
    let root = Path::new("/");
    mounts::apply(&mounts::stage2_table(root)).context("mounting stage-2 filesystems")?;
    for f in mounts::dev_links(root) {
        console::line(&format!("warning: cannot create {f}"));
    }
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
    let (mode, pool_imported) = pool_phase();
    match crate::node::triton_config(root) {
        Ok(what) => console::event("triton_config", true, json!({ "config": what })),
        Err(e) => {
            console::line(&format!("warning: /usr/triton/config: {e:#}; the setup scripts may not find node.config"))
        }
    }
    supervise(mode, pool_imported, udevd.is_some())
}

/// Runs `triton-pool boot` (libzfs lives in that process, not in PID 1):
/// import `zones` unless told not to, factory reset, the Triton dataset
/// mounts, swap. Its JSON report becomes the `pool` event. Nothing here
/// stops the boot: a missing, faulted or foreign pool → unsetup, with why.
fn pool_phase() -> (supervisor::Mode, bool) {
    let t = std::time::Instant::now();
    let out = crate::command(TRITON_POOL).arg("boot").stderr(std::process::Stdio::inherit()).output();
    let ms = t.elapsed().as_millis() as u64;
    let report: Result<serde_json::Value, String> = match out {
        Err(e) => Err(format!("cannot run {TRITON_POOL}: {e}")),
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            match serde_json::from_str::<serde_json::Value>(text.trim()) {
                Ok(v) if v.is_object() => Ok(v),
                _ => Err(format!("{TRITON_POOL} boot failed ({}) without a report: {}", o.status, text.trim())),
            }
        }
    };
    let (mode, imported, reason) = match report {
        Ok(mut v) => {
            let outcome = v["outcome"].as_str().unwrap_or("error").to_string();
            let ok = !matches!(outcome.as_str(), "faulted" | "foreign" | "error");
            let mode = if v["mode"] == "setup" { supervisor::Mode::Setup } else { supervisor::Mode::Unsetup };
            let reason = v["reason"].as_str().map(str::to_string);
            if let Some(m) = v.as_object_mut() {
                m.insert("ms".into(), ms.into());
            }
            if !ok {
                console::line(&format!(
                    "pool: {outcome}: {}; this node comes up unsetup",
                    reason.as_deref().unwrap_or("no reason given")
                ));
            }
            console::event("pool", ok, v);
            (mode, outcome == "imported", reason)
        }
        Err(e) => {
            console::line(&format!("pool: {e}; this node comes up unsetup"));
            console::event("pool", false, json!({ "ms": ms, "outcome": "error", "error": e }));
            (supervisor::Mode::Unsetup, false, Some(e))
        }
    };
    let name = match mode {
        supervisor::Mode::Setup => "setup",
        supervisor::Mode::Unsetup => "unsetup",
    };
    console::event("mode", true, json!({ "mode": name, "reason": reason, "pool_imported": imported }));
    match mode {
        supervisor::Mode::Setup => console::line("This compute node is set up: starting its services."),
        supervisor::Mode::Unsetup => console::line(&format!(
            "This compute node is unsetup ({}): waiting for server setup from the headnode.",
            reason.as_deref().unwrap_or("no setup state")
        )),
    }
    (mode, imported)
}

/// Hands the node to the supervisor: console login, udevd, the services
/// of this mode; the control socket; ordered shutdown that exports the
/// pool. Never returns.
fn supervise(
    mode: supervisor::Mode,
    pool_imported: bool,
    udevd_running: bool,
) -> anyhow::Result<std::convert::Infallible> {
    use supervisor::{Config, LogTarget, PowerAction, ServiceSpec, Supervisor};
    let _ = fs::create_dir_all("/run/triton");
    let mut cfg = Config::new("/var/log", CONTROL_SOCKET, MANIFEST_DIRS.iter().map(Into::into).collect(), mode);
    cfg.conditions.insert("network".into());
    if pool_imported {
        cfg.conditions.insert("pool".into());
    }
    let mut sup = Supervisor::new(cfg).context("starting the supervisor")?;
    let both: std::collections::BTreeSet<_> = [supervisor::Mode::Setup, supervisor::Mode::Unsetup].into();
    // udevd was started early for the coldplug; it hands over to the
    // supervised one after draining its queue.
    if udevd_running {
        if let Err(e) = udev::stop() {
            console::line(&format!("warning: {e:#}"));
        }
    }
    let mut udevd = ServiceSpec::new("udevd", [udev::UDEVD]);
    udevd.order = -100;
    udevd.modes = both.clone();
    let mut getty = ServiceSpec::new("getty-console", ["/usr/sbin/agetty", "--noclear", "-L", "console", "linux"]);
    getty.log = LogTarget::Inherit;
    getty.modes = both;
    for spec in [udevd, getty] {
        sup.add_service(spec).context("adding a built-in service")?;
    }
    for e in sup.load_manifests() {
        console::line(&format!("warning: service manifest: {e}"));
    }
    let handle = sup.handle();
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    console::event(
        "ready",
        true,
        json!({
            "uptime_ms": console::uptime_ms(),
            "pid1_rss_kib": kib_field(&status, "VmRSS:"),
            "mem_used_kib": kib_field(&meminfo, "MemTotal:").zip(kib_field(&meminfo, "MemAvailable:")).map(|(t, a)| t.saturating_sub(a)),
            "control_socket": CONTROL_SOCKET,
        }),
    );
    let hook = move |action: PowerAction| -> Result<(), supervisor::HookError> {
        let t = std::time::Instant::now();
        let mut cmd = crate::command(TRITON_POOL);
        cmd.arg("export");
        let res = handle.helper_output(cmd);
        let (ok, detail) = match &res {
            Ok(o) if o.status.success() => (true, String::from_utf8_lossy(&o.stdout).trim().to_string()),
            Ok(o) => (false, format!("{}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => (false, e.to_string()),
        };
        console::event(
            "shutdown",
            ok,
            json!({ "action": format!("{action:?}").to_lowercase(), "pool_export": detail, "ms": t.elapsed().as_millis() as u64 }),
        );
        if ok {
            Ok(())
        } else {
            Err(format!("exporting the zones pool: {detail}").into())
        }
    };
    sup.run(hook)
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
