//! Boot benchmark: boots the built PI in QEMU (TCG, direct kernel, squashfs
//! over HTTP on loopback) and prints per-phase times from the TRITON-EVENT
//! lines, kernel start to node ready, PID 1 RSS and RAM used, next to the
//! targets. Usage: `cargo run -p ci --bin boot-bench [-- <runs>]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use ci::http::HttpServer;
use ci::platform::Platform;
use ci::qemu::{Vm, VmSpec};

const PHASES: &[&str] = &["modules", "network", "fetch", "verify", "rootfs", "udev", "identity", "zfs"];

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
    let runs: usize =
        std::env::args().nth(1).map(|a| a.parse()).transpose().context("runs must be a number")?.unwrap_or(1);
    let p = Platform::locate()?;
    let http = HttpServer::serve_dir(&p.dir)?;
    let mac = "52:54:00:12:34:60";
    let mut rows: Vec<Vec<(String, f64)>> = Vec::new();
    for i in 0..runs {
        let spec = VmSpec::netboot(&p, mac, "virtio-net-pci", &http.guest_url("x86_64/filesystem.squashfs"));
        let vm = Vm::start(&format!("bench{i}"), &spec)?;
        let stage2 = vm.wait_event("stage2", Duration::from_secs(600))?;
        anyhow::ensure!(stage2["ok"] == true, "boot failed: {stage2}");
        let mut row = Vec::new();
        for ph in PHASES {
            let ev = vm.wait_event(ph, Duration::from_secs(1))?;
            row.push((ph.to_string(), ev["ms"].as_f64().unwrap_or(f64::NAN)));
        }
        row.push(("kernel start → stage 2 ready".into(), stage2["uptime_ms"].as_f64().unwrap_or(f64::NAN)));
        row.push(("PID 1 RSS (KiB)".into(), stage2["pid1_rss_kib"].as_f64().unwrap_or(f64::NAN)));
        row.push(("RAM used (KiB)".into(), stage2["mem_used_kib"].as_f64().unwrap_or(f64::NAN)));
        rows.push(row);
    }
    println!("boot benchmark: QEMU TCG, 1 vCPU, 2 GiB, virtio-net, {runs} run(s); median of runs");
    println!("{:<32} {:>12}   target", "phase / figure", "value");
    for (i, (name, _)) in rows[0].iter().enumerate() {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i].1).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let med = v[v.len() / 2];
        let (value, target) = match name.as_str() {
            "RAM used (KiB)" => (format!("{:.0} MiB", med / 1024.0), "<= 300 MiB with no instances"),
            "PID 1 RSS (KiB)" => (format!("{:.1} MiB", med / 1024.0), "-"),
            _ => (format!("{:.0} ms", med), "-"),
        };
        println!("{name:<32} {value:>12}   {target}");
    }
    Ok(())
}
