//! Side-by-side netboot benchmark: our PI and the baseline (the same
//! package set booted the conventional way: live-boot initramfs, systemd as
//! PID 1; `triton-pi baseline`), each netbooted N times through the dev
//! booter (iPXE → booter's boot.ipxe → kernel/initrd → squashfs over HTTP)
//! on the same VM settings, to the same `ready` marker. Prints the median
//! kernel → ready time and RAM used at ready for both, and the ratio.
//!
//! Usage: `cargo run --release -p ci --bin netboot-bench [-- <runs> [<baseline dir>]]`
//! (root; needs `out/latest` and `out/baseline-<STAMP>`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use booter_config::cmd::default_pi;
use booter_config::config::dev_default;
use booter_config::{DevBooter, DevBooterOpts};

const FILES: [&str; 5] = ["vmlinuz", "initrd", "filesystem.squashfs", "filesystem.squashfs.hash", "initrd.hash"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netboot-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The newest `out/baseline-*` directory next to the PI.
fn find_baseline(pi: &Path) -> anyhow::Result<PathBuf> {
    let out = pi.parent().context("the PI directory has no parent")?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("baseline-")))
        .filter(|p| p.join("x86_64/vmlinuz").is_file())
        .collect();
    dirs.sort();
    dirs.pop().with_context(|| format!("no baseline image under {}: build it with `triton-pi baseline`", out.display()))
}

/// One netboot to `ready`: (kernel start → ready ms, RAM used KiB at ready).
fn boot_once(pi: &Path, baseline: Option<&Path>, label: &str, run: usize) -> anyhow::Result<(f64, f64)> {
    let work = tempfile::Builder::new().prefix("netboot-bench-").tempdir_in("/var/tmp").context("work dir")?;
    let cfg = dev_default(1).validate().context("default config")?;
    let mut opts = DevBooterOpts::new(work.path());
    opts.netns = format!("tbench-{}-{run}", std::process::id());
    opts.qemu.no_reboot = true;
    let mut b = DevBooter::start(opts, cfg.dc.clone(), pi).context("starting the dev booter")?;
    if let Some(dir) = baseline {
        // Same boot.ipxe, same URLs: only the files behind them differ.
        let x86 = b.root.dir.join("os").join(&b.platform).join("platform/x86_64");
        for f in FILES {
            let dst = x86.join(f);
            // The install hard-links the PI: unlink first, never write through.
            let _ = std::fs::remove_file(&dst);
            let src = dir.join("x86_64").join(f);
            if src.is_file() {
                std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
            }
        }
    }
    let cn = cfg.cns[0].clone();
    b.add_cn(cn.clone()).context("adding the CN")?;
    let console = b.boot(&cn.hostname).context("booting")?.console.clone();
    let ready = console.wait_event("ready", Duration::from_secs(900));
    let artifacts = b.opts.artifacts.clone();
    b.stop();
    let ready =
        ready.with_context(|| format!("{label} run {run}: no ready marker (artifacts: {})", artifacts.display()))?;
    let ms = ready["uptime_ms"].as_f64().unwrap_or(f64::NAN);
    let kib = ready["mem_used_kib"].as_f64().unwrap_or(f64::NAN);
    eprintln!("{label} run {run}: ready at {:.1} s, {:.0} MiB used", ms / 1000.0, kib / 1024.0);
    Ok((ms, kib))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|a| a.parse()).transpose().context("runs must be a number")?.unwrap_or(3);
    if runs == 0 {
        bail!("runs must be at least 1");
    }
    let pi = default_pi();
    if !pi.join("x86_64/vmlinuz").is_file() {
        bail!("no built PI at {} (cargo run --release -p image -- build)", pi.display());
    }
    let baseline = match args.next() {
        Some(d) => PathBuf::from(d),
        None => find_baseline(&pi)?,
    };
    let mut results = Vec::new();
    for (label, base) in [("triton", None), ("baseline", Some(baseline.as_path()))] {
        let mut times = Vec::new();
        let mut mems = Vec::new();
        for run in 0..runs {
            let (ms, kib) = boot_once(&pi, base, label, run)?;
            times.push(ms);
            mems.push(kib);
        }
        results.push((label, median(times), median(mems)));
    }
    let (_, t_ours, m_ours) = results[0];
    let (_, t_base, m_base) = results[1];
    println!(
        "netboot benchmark: dev booter (iPXE, booter's boot.ipxe), QEMU TCG, 1 vCPU, 2 GiB, one blank disk; median of {runs}"
    );
    println!("baseline: {}", baseline.display());
    println!("{:<28} {:>12} {:>12} {:>8}   target", "figure", "triton", "baseline", "ratio");
    println!(
        "{:<28} {:>10.1} s {:>10.1} s {:>8.2}   <= 0.50",
        "kernel start → ready",
        t_ours / 1000.0,
        t_base / 1000.0,
        t_ours / t_base
    );
    println!(
        "{:<28} {:>8.0} MiB {:>8.0} MiB {:>8.2}   triton <= 300 MiB",
        "RAM used at ready",
        m_ours / 1024.0,
        m_base / 1024.0,
        m_ours / m_base
    );
    Ok(())
}
