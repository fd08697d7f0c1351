//! `systemctl` shim over `triton-ctl`: see [`compat::systemctl`].
//! `$TRITON_CTL` names another `triton-ctl` (for tests).
use std::io::Write;
use std::process::{Command, ExitCode, Stdio};

use compat::systemctl::{self, Step, DEFAULT_TRITON_CTL, TRITON_CTL_ENV};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inv = match systemctl::parse(&args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("systemctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctl = std::env::var_os(TRITON_CTL_ENV).unwrap_or_else(|| DEFAULT_TRITON_CTL.into());
    let services = if systemctl::needs_services(&inv) {
        let out = Command::new(&ctl).args(["status", "--json"]).stdin(Stdio::null()).stderr(Stdio::inherit()).output();
        let parsed = match out {
            Ok(o) if o.status.success() => systemctl::parse_status(&String::from_utf8_lossy(&o.stdout)),
            Ok(o) => Err(format!("`triton-ctl status --json` failed ({})", o.status)),
            Err(e) => Err(format!("cannot run {}: {e}", std::path::Path::new(&ctl).display())),
        };
        match parsed {
            Ok(s) => s,
            Err(e) => {
                eprintln!("systemctl: cannot list the services of triton init: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Vec::new()
    };
    let plan = systemctl::plan(&inv, &services);
    for step in &plan.steps {
        match step {
            Step::Stdout(t) => {
                // A closed stdout (e.g. `| head -0`) is not worth failing for.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(t.as_bytes()).and_then(|_| out.flush());
            }
            Step::Stderr(t) => eprintln!("{t}"),
            Step::Ctl(a) => match Command::new(&ctl).args(a).stdin(Stdio::null()).status() {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    eprintln!("systemctl: `triton-ctl {}` failed ({s})", a.join(" "));
                    return ExitCode::FAILURE;
                }
                Err(e) => {
                    eprintln!("systemctl: cannot run {}: {e}", std::path::Path::new(&ctl).display());
                    return ExitCode::FAILURE;
                }
            },
        }
    }
    ExitCode::from(plan.exit)
}
