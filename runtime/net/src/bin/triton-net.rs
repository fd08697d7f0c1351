//! `triton-net`: show or apply the node's networking from
//! `/etc/triton-networking.json`. `plan` prints what applying would change
//! (nothing when the node matches the file); `apply` changes it, as init
//! does at boot.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use net::LinkApi;

#[derive(Debug, Parser)]
#[command(name = "triton-net", about = "Plan or apply this node's networking from triton-networking.json")]
struct Cli {
    /// The networking file booter served.
    #[arg(long, default_value = "/etc/triton-networking.json")]
    file: PathBuf,
    /// Its SHA-1 (checked when present).
    #[arg(long, default_value = "/etc/triton-networking.json.hash")]
    hash: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the operations applying the file would perform.
    Plan,
    /// Apply the file and write resolv.conf.
    Apply {
        #[arg(long, default_value = "/etc/resolv.conf")]
        resolv_conf: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triton-net: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::Plan => {
            let d = net::load(&cli.file, &cli.hash)?;
            let mut api = net::netlink::Netlink::new()?;
            let observed = api.observe()?;
            let p = net::plan_full(&d, &observed);
            if cli.json {
                println!("{}", serde_json::json!({ "ops": p.ops, "warnings": p.warnings, "vnics": p.placements }));
            } else {
                for w in &p.warnings {
                    println!("warning: {w}");
                }
                if p.ops.is_empty() {
                    println!("in sync: no changes needed");
                }
                for op in &p.ops {
                    println!("{op}");
                }
            }
        }
        Cmd::Apply { resolv_conf } => {
            let report = net::configure(&cli.file, &cli.hash, resolv_conf)?;
            if cli.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for w in &report.warnings {
                    println!("warning: {w}");
                }
                println!("{} change(s) applied", report.ops.len());
                for op in &report.ops {
                    println!("  {op}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
