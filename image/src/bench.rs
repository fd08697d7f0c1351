//! `triton-pi bench`: build figures next to the targets of the issue.
//!
//! * warm: a rebuild after touching one runtime source file (layers cached);
//! * cold (`--cold`): a build with an empty cache directory (mkosi's tools
//!   tree, package downloads, layers, cargo target all from scratch), as on
//!   a fresh machine after `ci/setup.sh`;
//! * sizes of vmlinuz, initrd, squashfs and tarball.

use std::time::Instant;

use std::fs;
use std::process::Command;

use anyhow::Context;

use crate::build::{run_with, source_root, Internal, Summary};
use crate::cli::{BenchArgs, BuildArgs};
use crate::layers::remove_tree;

const MIB: f64 = 1048576.0;

fn touch_runtime_file() -> anyhow::Result<()> {
    let p = source_root()?.join("runtime/init/src/lib.rs");
    let f = std::fs::OpenOptions::new().append(true).open(&p).with_context(|| format!("opening {}", p.display()))?;
    f.set_modified(std::time::SystemTime::now()).with_context(|| format!("touching {}", p.display()))
}

fn row(name: &str, value: String, target: &str) {
    println!("{name:<34} {value:>14}   target {target}");
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let b = &args.build;
    // Make sure everything is cached before the warm measurement.
    let _ = run_with(b, &Internal::default())?;
    let mut cold: Option<(f64, Summary)> = None;
    if args.cold {
        let scratch = b.cache.join("bench-cold");
        remove_tree(&scratch)?;
        // Only the unpacked mkosi program (what ci/setup.sh installs) is kept.
        fs::create_dir_all(scratch.join("tools")).context("creating the cold cache")?;
        crate::host::run(
            Command::new("cp").arg("-a").arg(b.cache.join("tools/mkosi")).arg(scratch.join("tools/mkosi")),
        )?;
        let t = Instant::now();
        let cold_args = BuildArgs { cache: scratch.clone(), out: b.out.join("bench-cold"), ..b.clone() };
        let s = run_with(&cold_args, &Internal::default())?;
        cold = Some((t.elapsed().as_secs_f64(), s));
        remove_tree(&scratch)?;
    }
    touch_runtime_file()?;
    let t = Instant::now();
    let warm = run_with(b, &Internal::default())?;
    let warm_secs = t.elapsed().as_secs_f64();

    println!(
        "\nPI build benchmark ({} cores), platform {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        warm.stamp
    );
    match &cold {
        Some((secs, _)) => row("cold build (empty cache)", format!("{secs:.0} s"), "<= 900 s"),
        None => row("cold build (empty cache)", "not run".into(), "<= 900 s (use --cold)"),
    }
    row("warm rebuild (one runtime file)", format!("{warm_secs:.0} s"), "<= 60 s");
    for (n, s) in &warm.timings.0 {
        println!("    {n:<44} {s:>6.1} s");
    }
    for a in &warm.artifacts {
        let name = a.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let target = match name.as_str() {
            "initrd" => "<= 12 MiB",
            "filesystem.squashfs" => "<= 160 MiB",
            _ => "-",
        };
        row(&name, format!("{:.1} MiB", a.bytes as f64 / MIB), target);
    }
    row("platform tarball", format!("{:.1} MiB", warm.tarball.bytes as f64 / MIB), "-");
    Ok(())
}
