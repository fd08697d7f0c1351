//! Boot benchmark: boots the built PI in QEMU (TCG, direct kernel, squashfs
//! over HTTP on loopback) and prints per-phase times from the TRITON-EVENT
//! lines, kernel start to node ready, PID 1 RSS and RAM used, next to the
//! targets. Usage: `cargo run -p ci --bin boot-bench [-- <runs>]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use ci::cn::{slirp_networking, Cn, PASSWORD};
use ci::http::HttpServer;
use ci::platform::Platform;

const PHASES: &[&str] =
    &["modules", "network", "fetch", "verify", "rootfs", "udev", "identity", "zfs", "networking", "pool"];

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
        // A CN as booter serves it (node.config, networking.json) with one
        // blank disk: the unsetup path a new CN takes.
        let mut cn = Cn::new(&p, &http, &format!("bench{i}"), mac, Some(&slirp_networking(mac)));
        cn.add_disk(4)?;
        let vm = cn.boot(1)?;
        let ready = vm.wait_event("ready", Duration::from_secs(600))?;
        let mut row = Vec::new();
        for ph in PHASES {
            let ev = vm.wait_event(ph, Duration::from_secs(1))?;
            anyhow::ensure!(ev["ok"] == true, "phase {ph} failed: {ev}");
            row.push((ph.to_string(), ev["ms"].as_f64().unwrap_or(f64::NAN)));
        }
        row.push(("kernel start → node ready".into(), ready["uptime_ms"].as_f64().unwrap_or(f64::NAN)));
        row.push(("PID 1 RSS (KiB)".into(), ready["pid1_rss_kib"].as_f64().unwrap_or(f64::NAN)));
        // Settled RAM use: a few seconds after ready, from the console.
        std::thread::sleep(Duration::from_secs(10));
        let mut vm = vm;
        vm.login(PASSWORD)?;
        let (out, _) = vm.sh("grep -E '^(MemTotal|MemAvailable|Shmem):' /proc/meminfo", Duration::from_secs(60))?;
        let field = |k: &str| {
            out.iter()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        row.push(("RAM used (KiB)".into(), field("MemTotal:") - field("MemAvailable:")));
        row.push(("  of which tmpfs/shmem (KiB)".into(), field("Shmem:")));
        rows.push(row);
    }
    println!(
        "boot benchmark: QEMU TCG, 1 vCPU, 2 GiB, virtio-net, one blank virtio disk (unsetup CN), {runs} run(s); median"
    );
    println!("{:<32} {:>12}   target", "phase / figure", "value");
    for (i, (name, _)) in rows[0].iter().enumerate() {
        let mut v: Vec<f64> = rows.iter().map(|r| r[i].1).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let med = v[v.len() / 2];
        let (value, target) = match name.as_str() {
            "RAM used (KiB)" => (format!("{:.0} MiB", med / 1024.0), "<= 300 MiB with no instances"),
            "PID 1 RSS (KiB)" => (format!("{:.1} MiB", med / 1024.0), "-"),
            "  of which tmpfs/shmem (KiB)" => (format!("{:.0} MiB", med / 1024.0), "(the squashfs lives in RAM)"),
            _ => (format!("{:.0} ms", med), "-"),
        };
        println!("{name:<32} {value:>12}   {target}");
    }
    Ok(())
}
