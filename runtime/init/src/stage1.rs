//! Stage 1, in the initrd: from the kernel to the real root.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use boot_params::Cmdline;
use serde_json::json;

use crate::console::{self, phase};
use crate::dhcp;
use crate::fetch::{self, Policy};
use crate::hashes::{sha256_file, Sha256Hex};
use crate::kmod::Loader;
use crate::mounts;
use crate::net;
use crate::rootfs::{self, Layout};

/// The stage-2 binary in the real root.
pub const STAGE2: &str = "/usr/sbin/triton-init";
/// A root image embedded in the initrd (standalone initrd for direct-kernel
/// and USB boots), used when there is no `fetch=`.
const EMBEDDED: &str = "/filesystem.squashfs";
/// Where the fetched image is kept (tmpfs; moved into the real root's /run).
const IMAGE: &str = "/run/triton/filesystem.squashfs";
/// The DHCP lease stage 1 obtained, for stage 2 (which does not renew it).
const DHCP_RECORD: &str = "/run/triton/dhcp.json";
/// Modules stage 1 always loads (the NIC drivers come by modalias).
const BASE_MODULES: &[&str] = &["loop", "squashfs", "overlay"];

pub fn run() -> anyhow::Result<std::convert::Infallible> {
    let root = Path::new("/");
    mounts::apply(&mounts::stage1_table(root)).context("mounting API filesystems")?;
    let cmdline_text = fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let cmdline = Cmdline::parse(&cmdline_text);
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).context("uname")?;
    console::line(&format!("triton-init stage 1 on Linux {release}"));

    phase("modules", || {
        let mut loader = Loader::new(root, &release).context("reading the initrd's module tables")?;
        for m in BASE_MODULES {
            loader.load(m).with_context(|| format!("loading {m}"))?;
        }
        let (loaded, errors) = loader.coldplug(Path::new("/sys"), 4);
        for e in &errors {
            console::line(&format!("warning: {e}"));
        }
        Ok(((), json!({ "loaded": loaded, "failed": errors.len() })))
    })?;

    let source = cmdline.fetch()?;
    if source.is_some() {
        phase("network", || network(&cmdline))?;
    }

    let pinned = read_pinned_hash(root)?;
    let embedded = Path::new(EMBEDDED);
    let (image, fetched) = match source {
        Some(src) => {
            let image = Path::new(IMAGE);
            let got = phase("fetch", || {
                fs::create_dir_all(image.parent().unwrap_or(root)).context("creating /run/triton")?;
                console::line(&format!("fetching root image {}", src.url()));
                let got = fetch::fetch(&src, image, &Policy::default(), &mut |l| console::line(l))?;
                let fields =
                    json!({ "url": src.url(), "proto": got.proto, "bytes": got.bytes, "attempts": got.attempts });
                Ok((got.sha256, fields))
            })?;
            (image, got)
        }
        None => {
            let got = phase("embedded", || {
                if !embedded.is_file() {
                    bail!("no fetch=<url> on the kernel command line and this initrd has no embedded root image");
                }
                let sha = sha256_file(embedded).with_context(|| format!("reading {EMBEDDED}"))?;
                Ok((sha, json!({ "path": EMBEDDED })))
            })?;
            (embedded, got)
        }
    };

    phase("verify", || {
        let actual = fetched.clone();
        if actual != pinned {
            let _ = fs::remove_file(image);
            bail!(
                "root image sha256 mismatch: got {actual}, this initrd expects {pinned}. \
                 The squashfs on the boot server does not belong to this initrd: \
                 reinstall the platform (sdcadm platform install) or check the booter's files"
            );
        }
        let mut checked = vec!["initrd"];
        if let Ok(text) = fs::read_to_string("/filesystem.squashfs.hash") {
            let injected = Sha256Hex::parse_file("/filesystem.squashfs.hash", &text)?;
            if injected != actual {
                bail!("root image sha256 {actual} differs from booter's filesystem.squashfs.hash {injected}");
            }
            checked.push("booter");
        }
        Ok(((), json!({ "sha256": actual.as_str(), "checked": checked })))
    })?;

    let newroot = Path::new("/root");
    phase("rootfs", || {
        let dev = rootfs::attach_loop(image)?;
        let layout = Layout::new(Path::new("/run"), newroot);
        rootfs::mount_root(&layout, &dev)?;
        let carried = rootfs::carry_files(root, newroot)?;
        if !newroot.join(STAGE2.trim_start_matches('/')).exists() {
            bail!("the root image has no {STAGE2}: it is not a Triton platform image");
        }
        Ok(((), json!({ "loop": dev, "carried": carried })))
    })?;

    console::event("switch-root", true, json!({ "uptime_ms": console::uptime_ms() }));
    rootfs::switch_root(newroot)?;
    let err = Command::new(STAGE2).arg0("init").exec();
    Err(anyhow!("exec {STAGE2}: {err}"))
}

/// The network phase: pick the admin NIC, set it up, then the static
/// `ip=` address or a DHCP lease.
///
/// NIC: the one with the `BOOTIF=` MAC (booter always passes it); without
/// `BOOTIF=` (hand-written command lines, other PXE setups) the first NIC by
/// ifindex that gets carrier, after setting them all up.
fn network(cmdline: &Cmdline) -> anyhow::Result<((), serde_json::Value)> {
    let sys = Path::new("/sys");
    let bootif = cmdline.bootif()?;
    let ip = cmdline.ip()?;
    let wait = Duration::from_secs(30);
    let (iface, carrier, selected) = match bootif {
        Some(mac) => {
            let iface = net::wait_for_mac(sys, mac, wait)?;
            net::configure(&iface, None)?;
            let carrier = net::wait_for_carrier(sys, &iface.name, wait);
            if !carrier {
                console::line(&format!("warning: no carrier on {} after 30 s; trying anyway", iface.name));
            }
            (iface, carrier, "bootif")
        }
        None => (net::wait_for_any_carrier(sys, wait)?, true, "first-with-carrier"),
    };
    let Some(mac) = iface.mac else {
        bail!("network interface {} has no MAC address", iface.name);
    };
    let mut fields = json!({
        "ifname": iface.name,
        "mac": mac.to_string(),
        "selected": selected,
        "carrier": carrier,
    });
    let (config, extra) = match ip {
        Some(ip) => (ip, json!({ "method": "static" })),
        None => {
            console::line(&format!("no static ip= on the kernel command line: DHCP on {} ({mac})", iface.name));
            let lease = dhcp::obtain(&iface.name, mac, &dhcp::Timing::default(), &mut |l| console::line(l))?;
            if let Err(e) = dhcp::write_record(Path::new(DHCP_RECORD), &iface.name, mac, &lease) {
                console::line(&format!("warning: recording the DHCP lease in {DHCP_RECORD}: {e}"));
            }
            let extra = json!({
                "method": "dhcp",
                "server": lease.server.to_string(),
                "dns": lease.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "lease_s": lease.lease_secs,
            });
            (lease.ip_config(), extra)
        }
    };
    net::configure(&iface, Some(&config))?;
    if let (serde_json::Value::Object(f), serde_json::Value::Object(e)) = (&mut fields, extra) {
        f.extend(e);
        f.insert("address".into(), config.address.to_string().into());
        f.insert("ip".into(), format!("{}/{}", config.address, config.prefix_len).into());
        f.insert("gateway".into(), config.gateway.map(|g| g.to_string()).into());
    }
    Ok(((), fields))
}

fn read_pinned_hash(root: &Path) -> anyhow::Result<Sha256Hex> {
    let p = root.join("etc/triton/filesystem.squashfs.sha256");
    let text = fs::read_to_string(&p)
        .with_context(|| format!("reading {} (initrd built without a pinned hash?)", p.display()))?;
    Ok(Sha256Hex::parse_file(&p.to_string_lossy(), &text)?)
}
