//! Stage 2, PID 1 in the real root. For now: API filesystems, zfs, the
//! `stage2` event, a console login, and reaping forever.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::console;
use crate::mounts;

/// Loads zfs through the root's modprobe and returns the module version.
fn load_zfs() -> anyhow::Result<String> {
    let out = Command::new("/usr/sbin/modprobe").arg("zfs").output().context("running /usr/sbin/modprobe zfs")?;
    if !out.status.success() {
        bail!("modprobe zfs failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let v = fs::read_to_string("/sys/module/zfs/version").context("reading /sys/module/zfs/version")?;
    Ok(v.trim().to_string())
}

fn getty() -> std::io::Result<Child> {
    Command::new("/usr/sbin/agetty").args(["--noclear", "-L", "console", "linux"]).spawn()
}

pub fn run() -> anyhow::Result<std::convert::Infallible> {
    let t = Instant::now();
    mounts::apply(&mounts::stage2_table(Path::new("/"))).context("mounting stage-2 filesystems")?;
    let kernel = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).context("uname")?;
    let zfs = match load_zfs() {
        Ok(v) => v,
        Err(e) => {
            console::event("stage2", false, json!({ "kernel": kernel, "error": format!("{e:#}") }));
            return Err(e.context("the zfs module must load for this node to import its zones pool"));
        }
    };
    console::event(
        "stage2",
        true,
        json!({ "kernel": kernel, "zfs": zfs, "ms": t.elapsed().as_millis() as u64, "uptime_ms": console::uptime_ms() }),
    );
    supervise_console()
}

/// Keeps a login prompt on the console and reaps every child. Never returns.
fn supervise_console() -> ! {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;
    let mut backoff = Duration::from_secs(1);
    let mut getty_pid = None;
    loop {
        if getty_pid.is_none() {
            match getty() {
                Ok(c) => getty_pid = Some(Pid::from_raw(c.id() as i32)),
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
            Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) if Some(pid) == getty_pid => {
                getty_pid = None;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => getty_pid = None,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
