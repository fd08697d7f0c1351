//! `triton-pool`: the zones pool at boot and shutdown, for PID 1.
//!
//! * `boot`: scan, import (or not), destroy on factory reset, mount the
//!   Triton layout, swap on; prints ONE JSON object (`pool::BootReport`) on
//!   stdout and exits 0 whatever the outcome (1 only for internal errors).
//! * `export [--force]`: swap off, unmount, export (shutdown/reboot).
//! * `status`: JSON view of the pool, importable pools and datasets.
//!
//! Human-readable progress goes to stderr.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use pool::{BootFlags, BootReport, Mode, Outcome, WaitPolicy, SYSTEM_POOL};
use zfs::host::{read_hostid, LibzfsHost};
use zfs::Zfs;

/// The Triton system pool at boot and shutdown.
#[derive(Debug, Parser)]
#[command(name = "triton-pool", version)]
struct Cli {
    /// Pool to act on.
    #[arg(long, global = true, default_value = SYSTEM_POOL)]
    pool: String,
    /// Root of the system the paths (/var, /opt, /zones, /proc/sys) are under.
    #[arg(long, global = true, default_value = "/")]
    root: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Import and mount the pool as the boot needs it; print one JSON object.
    Boot {
        /// Kernel command line to read the flags from.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
    },
    /// Swap off, unmount and export the pool (shutdown, reboot).
    Export {
        /// Unmount busy filesystems forcibly.
        #[arg(long)]
        force: bool,
    },
    /// Print the pool's state, importable pools and datasets as JSON.
    Status,
}

fn boot(cli: &Cli, cmdline: &Path) -> anyhow::Result<BootReport> {
    let start = Instant::now();
    let line = std::fs::read_to_string(cmdline).with_context(|| format!("reading {}", cmdline.display()))?;
    let flags = BootFlags::from_cmdline(&line);
    eprintln!("triton-pool: boot, pool {} ({flags:?})", cli.pool);
    let zfs = match Zfs::open() {
        Ok(z) => z,
        Err(e) => {
            // Without libzfs there is nothing to import; noimport still means noimport.
            let (outcome, reason) = if flags.noimport {
                (
                    Outcome::NoImport,
                    format!("noimport is on the kernel command line: pool {} was not imported", cli.pool),
                )
            } else {
                (Outcome::Error, e.to_string())
            };
            return Ok(BootReport {
                pool: cli.pool.clone(),
                outcome,
                mode: Mode::Unsetup,
                reason: Some(reason),
                mounts: Vec::new(),
                swap: None,
                var_seeded: None,
                warnings: Vec::new(),
                ms: start.elapsed().as_millis() as u64,
            });
        }
    };
    let mut host = LibzfsHost { zfs: &zfs, root: cli.root.clone(), start, device_wait: Duration::from_secs(5) };
    Ok(pool::run_boot(&mut host, &cli.pool, &flags, &cli.root, &WaitPolicy::default()))
}

fn export(cli: &Cli, force: bool) -> anyhow::Result<(serde_json::Value, bool)> {
    let start = Instant::now();
    let zfs = Zfs::open()?;
    if zfs.pool(&cli.pool)?.is_none() {
        let v = json!({"pool": cli.pool, "exported": false, "reason": "not imported", "ms": start.elapsed().as_millis() as u64});
        return Ok((v, true));
    }
    let swap = PathBuf::from(format!("/dev/zvol/{}/swap", cli.pool));
    if let Err(e) = zfs::sys::swapoff(&swap) {
        eprintln!("triton-pool: {e} (continuing)");
    }
    eprintln!("triton-pool: exporting {}{}", cli.pool, if force { " (forced)" } else { "" });
    let res = zfs.export(&cli.pool, force);
    let ok = res.is_ok();
    let v = json!({
        "pool": cli.pool,
        "exported": ok,
        "error": res.err().map(|e| e.to_string()),
        "ms": start.elapsed().as_millis() as u64,
    });
    Ok((v, ok))
}

fn status(cli: &Cli) -> anyhow::Result<serde_json::Value> {
    let zfs = Zfs::open()?;
    let imported = zfs.pool(&cli.pool)?;
    let datasets = if imported.is_some() { zfs.datasets(&cli.pool)? } else { Vec::new() };
    Ok(json!({
        "pool": cli.pool,
        "hostid": format!("{:08x}", read_hostid(&cli.root)),
        "imported": imported,
        "importable": zfs.importable()?,
        "datasets": datasets,
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Boot { cmdline } => boot(&cli, cmdline).and_then(|r| {
            eprintln!(
                "triton-pool: {} -> {:?}, {:?}{}",
                r.pool,
                r.outcome,
                r.mode,
                r.reason.as_deref().map(|s| format!(": {s}")).unwrap_or_default()
            );
            // Serialised from the struct (not a Value) to keep the field order.
            Ok((serde_json::to_string(&r)?, true))
        }),
        Cmd::Export { force } => export(&cli, *force).map(|(v, ok)| (v.to_string(), ok)),
        Cmd::Status => status(&cli).map(|v| (v.to_string(), true)),
    };
    match result {
        Ok((v, ok)) => {
            println!("{v}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("triton-pool: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::parse_from(["triton-pool", "boot", "--root", "/mnt", "--cmdline", "/tmp/c"]);
        assert_eq!(c.root, PathBuf::from("/mnt"));
        assert!(matches!(c.command, Cmd::Boot { ref cmdline } if cmdline == Path::new("/tmp/c")));
        let c = Cli::parse_from(["triton-pool", "export", "--force"]);
        assert!(matches!(c.command, Cmd::Export { force: true }));
        assert_eq!(c.pool, "zones");
    }
}
