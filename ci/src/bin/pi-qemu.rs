//! Boots the built platform in QEMU (TCG) with its console on this terminal:
//! the squashfs is served over HTTP on loopback and passed as `fetch=`, the
//! way booter passes it. Quit QEMU with Ctrl-A X.
//!
//! Usage: `cargo run -p ci --bin pi-qemu [-- extra kernel args...]`

use std::process::{Command, ExitCode};

use anyhow::Context;

use ci::http::HttpServer;
use ci::platform::Platform;
use ci::qemu::VmSpec;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let p = Platform::locate()?;
    let http = HttpServer::serve_dir(&p.dir)?;
    let mac = "52:54:00:12:34:56";
    let extra: Vec<String> = std::env::args().skip(1).collect();
    let mut spec = VmSpec::netboot(&p, mac, "virtio-net-pci", &http.guest_url("x86_64/filesystem.squashfs"));
    spec.append = format!("{} {}", spec.append, extra.join(" ")).trim_end().to_string();
    spec.cpus = 2;
    let mut args = spec.args();
    // Interactive: serial and the QEMU monitor multiplexed on this terminal.
    if let Some(i) = args.iter().position(|a| a == "stdio") {
        args[i] = "mon:stdio".into();
    }
    if let Some(i) = args.iter().position(|a| a == "-monitor") {
        args.drain(i..i + 2);
    }
    eprintln!("booting {} (Ctrl-A X quits)", p.dir.display());
    let status = Command::new("qemu-system-x86_64").args(&args).status().context("starting qemu-system-x86_64")?;
    anyhow::ensure!(status.success(), "qemu exited with {status}");
    Ok(())
}
