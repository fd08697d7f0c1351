//! The command lines of `disklayout` and `mkzpool`, as joysetup.sh calls them:
//!
//! ```text
//! disklayout [-c] [-s <spares>] [-w <width>] [-e <disks>] [-f <diskinfo file>] [layout] > pool.json
//! mkzpool [-B] [-f] [-e] <pool> <pool.json>
//! ```
//!
//! joysetup.sh passes each option and its value as one word (`"-s 2"`), so values are
//! trimmed; `-e` takes names separated by commas and/or spaces and may be repeated.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::inventory;
use crate::layout::{self, LayoutKind, Options, SkipReason, SUPPORTED_LAYOUTS};
use crate::pool::{self, Created, Env, HostRunner, MkzpoolError, Request};

#[derive(Debug, Parser)]
#[command(
    name = "disklayout",
    about = "Choose the zones pool layout from the disks present and print it as JSON",
    after_help = format!("Layouts: {SUPPORTED_LAYOUTS}. Without one, the layout follows the number and kind of disks.")
)]
pub struct DisklayoutCli {
    /// Never use disks as cache (L2ARC) devices
    #[arg(short = 'c')]
    pub no_cache: bool,
    /// Exact number of hot spares
    #[arg(short = 's', value_name = "SPARES", value_parser = parse_count)]
    pub spares: Option<usize>,
    /// Exact stripe width: disks per mirror or raidz group (at least 2)
    #[arg(short = 'w', value_name = "WIDTH", value_parser = parse_width)]
    pub width: Option<usize>,
    /// Disks to leave alone, e.g. "sda,nvme1n1"
    #[arg(short = 'e', value_name = "DISKS")]
    pub exclude: Vec<String>,
    /// Plan for the disks listed in a SmartOS `diskinfo -Hp` file instead of this node's
    #[arg(short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Root of the /sys and /proc trees to read (tests)
    #[arg(long, default_value = "/", hide = true)]
    pub root: PathBuf,
    /// Layout to use instead of the automatic choice
    #[arg(value_name = "LAYOUT")]
    pub layout: Option<LayoutKind>,
}

fn parse_count(s: &str) -> Result<usize, String> {
    s.trim().parse().map_err(|_| format!("{:?} is not a whole number", s.trim()))
}

fn parse_width(s: &str) -> Result<usize, String> {
    match parse_count(s)? {
        w if w < 2 => Err(format!("{w} is too narrow; a stripe width is at least 2")),
        w => Ok(w),
    }
}

/// What disklayout prints: the JSON (stdout) and notes for the operator (stderr).
#[derive(Debug)]
pub struct DisklayoutOutput {
    pub json: String,
    pub notes: Vec<String>,
}

/// Reads the inventory, plans, and renders the layout.
pub fn disklayout(cli: &DisklayoutCli) -> anyhow::Result<DisklayoutOutput> {
    let disks = match &cli.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            inventory::parse_diskinfo(path, &text)?
        }
        None => inventory::read_disks(&cli.root)?,
    };
    let exclude = cli
        .exclude
        .iter()
        .flat_map(|e| e.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    let opts = Options { layout: cli.layout, spares: cli.spares, width: cli.width, cache: !cli.no_cache, exclude };
    let plan = layout::plan(&disks, &opts)?;

    let mut notes: Vec<String> = plan
        .skipped
        .iter()
        .filter(|s| !matches!(s.reason, SkipReason::NotADisk(_)))
        .map(|s| format!("not using {}: {}", s.name, s.reason))
        .collect();
    if !plan.unused.is_empty() {
        notes.push(format!("left unused by this layout: {}", plan.unused.join(", ")));
    }
    if !plan.unknown_excludes.is_empty() {
        notes.push(format!("-e names no disk here: {}", plan.unknown_excludes.join(", ")));
    }
    let json = plan.layout.to_json().context("cannot render the layout as JSON")?;
    Ok(DisklayoutOutput { json, notes })
}

#[derive(Debug, Parser)]
#[command(name = "mkzpool", about = "Create a ZFS pool from a disklayout JSON file and mount it at /<pool>")]
pub struct MkzpoolCli {
    /// Make the pool bootable with an EFI system partition (refused on Linux: retry without)
    #[arg(short = 'B')]
    pub bootable: bool,
    /// Encrypt the pool (refused on Linux compute nodes: no kbmadm/KBMAPI)
    #[arg(short = 'e')]
    pub encrypt: bool,
    /// Force: use disks that look in use by another pool or partition table
    #[arg(short = 'f')]
    pub force: bool,
    /// Root of the /sys tree used to check that the disks exist (tests)
    #[arg(long, default_value = "/", hide = true)]
    pub root: PathBuf,
    #[arg(long, env = "MKZPOOL_ZPOOL", default_value = "/usr/sbin/zpool", hide = true)]
    pub zpool: PathBuf,
    #[arg(long, env = "MKZPOOL_ZFS", default_value = "/usr/sbin/zfs", hide = true)]
    pub zfs: PathBuf,
    /// Pool name (joysetup.sh uses "zones")
    pub pool: String,
    /// Layout file written by disklayout
    pub layout: PathBuf,
}

/// Validates the request and the layout, then creates the pool with the host's zpool/zfs.
pub fn mkzpool(cli: &MkzpoolCli) -> Result<Created, MkzpoolError> {
    let req = Request {
        pool: cli.pool.clone(),
        layout: cli.layout.clone(),
        force: cli.force,
        encrypt: cli.encrypt,
        bootable: cli.bootable,
    };
    let env = Env { root: cli.root.clone(), zpool: cli.zpool.clone(), zfs: cli.zfs.clone() };
    pool::create(&req, &env, &HostRunner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn commands_are_well_formed() {
        DisklayoutCli::command().debug_assert();
        MkzpoolCli::command().debug_assert();
    }

    #[test]
    fn joysetup_style_words_parse() {
        // joysetup.sh builds `dlargs+=("-s ${CONFIG_spares}")`: option and value in one word.
        let cli = DisklayoutCli::try_parse_from([
            "disklayout",
            "-c",
            "-s 2",
            "-w 3",
            "-e sda,sdb",
            "-e",
            "nvme0n1 sdc",
            "raidz",
        ])
        .unwrap();
        assert!(cli.no_cache);
        assert_eq!((cli.spares, cli.width, cli.layout), (Some(2), Some(3), Some(LayoutKind::Raidz1)));
        assert_eq!(cli.exclude, [" sda,sdb", "nvme0n1 sdc"]);
        let err = DisklayoutCli::try_parse_from(["disklayout", "raid10"]).unwrap_err().to_string();
        assert!(err.contains("unknown layout \"raid10\"") && err.contains("raidz3"), "{err}");
        assert!(DisklayoutCli::try_parse_from(["disklayout", "-w", "1"]).is_err());
        assert!(DisklayoutCli::try_parse_from(["disklayout", "-s", "-1"]).is_err());
        let m = MkzpoolCli::try_parse_from(["mkzpool", "-Bf", "-e", "zones", "/tmp/pool.json"]).unwrap();
        assert!(m.bootable && m.force && m.encrypt);
        assert_eq!(m.pool, "zones");
    }

    #[test]
    fn disklayout_from_a_diskinfo_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("diskinfo");
        let rows: String =
            ["sda", "sdb", "sdc"].iter().map(|n| format!("SCSI\t{n}\tATA\tHDD\t1000204886016\tno\tno\n")).collect();
        std::fs::write(&file, rows).unwrap();
        let args = ["disklayout", "-f", file.to_str().unwrap(), "-e sdc", "-e", "sdq", "mirror"];
        let out = disklayout(&DisklayoutCli::try_parse_from(args).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out.json).unwrap();
        assert_eq!(v["vdevs"][0]["type"], "mirror");
        assert_eq!(v["capacity"], 1_000_204_886_016u64);
        assert_eq!(out.notes, ["not using sdc: excluded by -e (disk_exclude)", "-e names no disk here: sdq"]);
    }
}
