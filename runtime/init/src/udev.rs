//! Debian's systemd-udevd without systemd as PID 1: started as a child of
//! init, then a coldplug trigger and a bounded settle (ZFS needs the
//! /dev/disk/by-* links it creates).

use std::process::Child;

use anyhow::{bail, Context};

pub const UDEVD: &str = "/usr/lib/systemd/systemd-udevd";

pub fn start() -> anyhow::Result<Child> {
    crate::command(UDEVD).spawn().with_context(|| format!("starting {UDEVD}"))
}

fn udevadm(args: &[&str]) -> anyhow::Result<()> {
    let out = crate::command("/usr/bin/udevadm").args(args).output().context("running udevadm")?;
    if !out.status.success() {
        bail!("udevadm {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Replays the kernel's device events and waits (at most `timeout_s`) until
/// udev has handled them.
pub fn coldplug(timeout_s: u32) -> anyhow::Result<()> {
    udevadm(&["trigger", "--action=add", "--type=subsystems"])?;
    udevadm(&["trigger", "--action=add", "--type=devices"])?;
    udevadm(&["settle", &format!("--timeout={timeout_s}")])
}

/// Asks udevd to finish its queue and exit (`udevadm control --exit`), so
/// the supervisor can take it over as a service.
pub fn stop() -> anyhow::Result<()> {
    udevadm(&["control", "--exit"])
}
