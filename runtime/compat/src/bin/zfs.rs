//! `/usr/bin/zfs`: OpenZFS's `zfs` with illumos-only values translated (see
//! `compat::zfs`).
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, notes) = compat::zfs::translate(&args);
    for n in notes {
        eprintln!("{n}");
    }
    let real = std::env::var("COMPAT_ZFS").unwrap_or_else(|_| compat::zfs::REAL_ZFS.to_string());
    let err = Command::new(&real).args(&args).exec();
    eprintln!("zfs: cannot run {real}: {err}");
    ExitCode::from(127)
}
