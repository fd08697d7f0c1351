//! `sysinfo`: prints the node's sysinfo JSON from the cache
//! (`/run/triton/sysinfo.json`), collecting and caching it first when the
//! cache is missing or damaged. `-u` collects and rewrites the cache and
//! prints nothing; `-p` prints SmartOS's `Key='value'` form.
mod cli;

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context;
use clap::Parser;
use sysinfo::{HostPaths, PoolDetails, CACHE_FILE, TRITON_POOL};

/// `triton-pool status` stdout, or `None` (with a note) when it fails: the
/// pool keys are then left out.
fn pool_status() -> Option<String> {
    let out = Command::new(TRITON_POOL).arg("status").stdin(Stdio::null()).stderr(Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).ok(),
        Ok(o) => {
            eprintln!("sysinfo: {TRITON_POOL} status failed ({}); no pool keys", o.status);
            None
        }
        Err(e) => {
            eprintln!("sysinfo: cannot run {TRITON_POOL}: {e}; no pool keys");
            None
        }
    }
}

/// stdout of a command, or `None` with a note on stderr.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output() {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).ok(),
        Ok(o) => {
            eprintln!("sysinfo: {program} {} failed ({}); pool details left out", args.join(" "), o.status);
            None
        }
        Err(e) => {
            eprintln!("sysinfo: cannot run {program}: {e}; pool details left out");
            None
        }
    }
}

/// Size, layout, creation and encryption of the imported pool.
fn pool_details(pool: &str) -> Option<PoolDetails> {
    Some(PoolDetails {
        zpool_list: output_of("/usr/sbin/zpool", &["list", "-Hpv", "-P", "-o", "name,size", pool])?,
        zfs_get: output_of("/usr/sbin/zfs", &["get", "-Hp", "-o", "property,value", "creation,encryption", pool])?,
    })
}

/// Collects, writes the cache (a failure is reported, not fatal) and returns the JSON.
fn refresh(cache: &Path) -> anyhow::Result<String> {
    let status = pool_status();
    let mut paths = HostPaths::real(Path::new("/"), status.clone());
    paths.pool_details = status.as_deref().and_then(sysinfo::imported_pool).and_then(|p| pool_details(&p));
    let info = sysinfo::collect(&paths);
    for w in &info.warnings {
        eprintln!("sysinfo: warning: {w}");
    }
    let json = info.to_json().context("serialising sysinfo")?;
    if let Err(e) = sysinfo::write_cache(cache, &json) {
        eprintln!("sysinfo: warning: {e}");
    }
    Ok(json)
}

fn run(cli: &cli::Cli) -> anyhow::Result<()> {
    let cache = Path::new(CACHE_FILE);
    if cli.update {
        refresh(cache)?;
        return Ok(());
    }
    let json = match sysinfo::read_cache(cache) {
        Some(j) => j,
        None => refresh(cache)?,
    };
    let text = if cli.parseable { sysinfo::parseable(&json).context("formatting sysinfo -p")? } else { json };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing to stdout")?;
    Ok(())
}

fn main() -> ExitCode {
    match run(&cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysinfo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
