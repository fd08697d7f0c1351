//! `imgadm`: see the library docs. `$IMGADM_DIR` overrides the directory of
//! `imgadm.conf` (for tests).
use std::process::ExitCode;

use clap::Parser;
use imgadm::cli::Cli;
use imgadm::config::{Paths, DEFAULT_DIR, DIR_ENV};
use imgadm::sources::HttpPing;
use imgadm::ImgadmError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = std::env::var_os(DIR_ENV).unwrap_or_else(|| DEFAULT_DIR.into());
    let paths = Paths::new(dir);
    let mut out = std::io::stdout().lock();
    match imgadm::run(&cli, &paths, &HttpPing::default(), &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ImgadmError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgadm: error: {e}");
            ExitCode::FAILURE
        }
    }
}
