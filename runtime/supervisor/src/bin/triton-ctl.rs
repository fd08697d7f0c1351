//! `triton-ctl`: talks to PID 1 over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use supervisor::protocol::{self, Request};

#[derive(Debug, Parser)]
#[command(name = "triton-ctl", about = "Control the services supervised by Triton's init", version)]
struct Cli {
    /// init's control socket
    #[arg(long, global = true, default_value = "/run/triton/init.sock", env = "TRITON_INIT_SOCKET")]
    socket: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List services: state, pid, restarts, uptime, last exit
    Status {
        /// Print init's JSON answer instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Start a service
    Start { service: String },
    /// Stop a service (returns once it has exited)
    Stop { service: String },
    /// Restart a service
    Restart { service: String },
    /// Stop every service, export the pool and reboot
    Reboot,
    /// Stop every service, export the pool and power off
    Poweroff,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (req, timeout) = match &cli.cmd {
        Cmd::Status { .. } => (Request::Status, Some(Duration::from_secs(30))),
        Cmd::Start { service } => (Request::Start { service: service.clone() }, Some(Duration::from_secs(60))),
        // A stop waits for the service's stop_timeout (up to an hour).
        Cmd::Stop { service } => (Request::Stop { service: service.clone() }, None),
        Cmd::Restart { service } => (Request::Restart { service: service.clone() }, None),
        Cmd::Reboot => (Request::Reboot, Some(Duration::from_secs(30))),
        Cmd::Poweroff => (Request::Poweroff, Some(Duration::from_secs(30))),
    };
    let resp = match protocol::call(&cli.socket, &req, timeout) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("triton-ctl: {e}");
            return ExitCode::from(2);
        }
    };
    if let Cmd::Status { json: true } = cli.cmd {
        print!("{}", resp.to_line());
    } else if !resp.ok {
        eprintln!("triton-ctl: {}", resp.error.as_deref().unwrap_or("failed"));
    } else if let Some(services) = &resp.services {
        if let (Some(mode), Some(conds)) = (&resp.mode, &resp.conditions) {
            println!("mode: {mode}   conditions: {}\n", if conds.is_empty() { "-".into() } else { conds.join(", ") });
        }
        print!("{}", protocol::status_table(services));
    } else if let Some(m) = &resp.message {
        println!("{m}");
    }
    if resp.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands() {
        let c = Cli::try_parse_from(["triton-ctl", "--socket", "/tmp/s", "stop", "cn-agent"]).expect("parse");
        assert_eq!(c.socket, PathBuf::from("/tmp/s"));
        assert!(matches!(c.cmd, Cmd::Stop { ref service } if service == "cn-agent"));
        let c = Cli::try_parse_from(["triton-ctl", "status", "--json"]).expect("parse");
        assert!(matches!(c.cmd, Cmd::Status { json: true }));
        assert!(Cli::try_parse_from(["triton-ctl", "start"]).is_err());
    }
}
