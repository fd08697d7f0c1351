//! `bootparams`: see [`compat::bootparams`]. Reads `/proc/cmdline`, or the
//! file named by `$BOOTPARAMS_CMDLINE`.
use std::io::Write;
use std::process::ExitCode;

use compat::bootparams::{render, CMDLINE_ENV, DEFAULT_CMDLINE};

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: bootparams (prints the kernel command line's key=value parameters, one per line)");
        return ExitCode::from(2);
    }
    let path = std::env::var_os(CMDLINE_ENV).unwrap_or_else(|| DEFAULT_CMDLINE.into());
    let line = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            eprintln!("bootparams: cannot read {}: {e}", std::path::Path::new(&path).display());
            return ExitCode::FAILURE;
        }
    };
    match std::io::stdout().lock().write_all(render(&line).as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootparams: writing to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
