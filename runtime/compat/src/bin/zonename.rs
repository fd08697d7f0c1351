//! `zonename`: a Linux CN runs everything in what SmartOS calls the global
//! zone, so this always prints `global` (the headnode scripts use it to tell
//! a real CN from a mock one).
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: zonename (prints the current zone's name: always \"global\" on a Linux CN)");
        return ExitCode::from(2);
    }
    match writeln!(std::io::stdout().lock(), "global") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("zonename: writing to stdout: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}
